"""Tests of the concept pool (paper §3.1): parser rules, quality on a hand-labelled set, readers, CLI."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from regionclip.cli import main
from regionclip.concept_pool import (
    build_concept_pool,
    default_parser,
    extract_concepts,
    nouns_in_caption,
    threshold_concepts,
)
from regionclip.data.captions import CaptionStats, iter_captions, read_shard_captions
from regionclip.errors import RegionCLIPError

LABELLED = Path(__file__).parent / "data" / "captions_labelled.jsonl"


@pytest.fixture(scope="module")
def nlp():
    return default_parser()


@pytest.mark.parametrize("parse", [False, True], ids=["tags", "parse"])
def test_quality_on_hand_labelled_captions(nlp, parse):
    nlp = default_parser(parse) if parse else nlp
    rows = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) >= 120
    docs = nlp.pipe([row["caption"].lower() for row in rows])
    tp = fp = fn = 0
    for row, doc in zip(rows, docs, strict=True):
        got, want = set(nouns_in_caption(doc, nlp)), set(row["concepts"])
        tp, fp, fn = tp + len(got & want), fp + len(got - want), fn + len(want - got)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    print(
        f"concept extraction ({'parse' if parse else 'tags'}) on {len(rows)} labelled captions: "
        f"precision {precision:.3f} recall {recall:.3f}"
    )
    assert recall >= 0.9
    assert precision >= 0.85


def test_compounds_are_phrases(nlp):
    got = nouns_in_caption("A fire hydrant and a stop sign next to a teddy bear.", nlp)
    assert got == ["fire hydrant", "stop sign", "teddy bear"]
    assert nouns_in_caption("A man eating a hot dog.", nlp) == ["man", "hot dog"]
    assert nouns_in_caption("Two tennis rackets on a bench.", nlp) == ["tennis racket", "bench"]


def test_coordinated_nouns_are_separate(nlp):
    assert nouns_in_caption("Dogs and cats on a couch.", nlp) == ["dog", "cat", "couch"]


def test_plurals_are_lemmatised(nlp):
    assert nouns_in_caption("Three women with knives and leaves.", nlp) == ["woman", "knife", "leaf"]
    assert nouns_in_caption("A pair of scissors and some glasses.", nlp) == ["scissors", "glasses"]


def test_pronouns_numbers_and_quantities_are_dropped(nlp):
    assert nouns_in_caption("A group of people and a couple of dogs.", nlp) == ["people", "dog"]
    assert nouns_in_caption("He is holding it and someone is watching them.", nlp) == []
    assert nouns_in_caption("3 zebras and a bunch of bananas.", nlp) == ["zebra", "banana"]
    assert nouns_in_caption("A slice of pizza on top of a plate.", nlp) == ["pizza", "plate"]


def test_abstract_and_scene_words_are_dropped(nlp):
    assert nouns_in_caption("A close up photo of a cat on a sunny day.", nlp) == ["cat"]
    assert nouns_in_caption("A view of a bridge at night.", nlp) == ["bridge"]


def test_empty_caption_has_no_concepts(nlp):
    assert nouns_in_caption("", nlp) == []


def test_extract_counts_once_per_caption_occurrence(nlp):
    captions = ["A dog and another dog.", "A dog on a bed.", "a DOG on a  bed.", "A cat."]
    counts = extract_concepts(captions, nlp=nlp)
    assert counts == Counter({"dog": 3, "bed": 2, "cat": 1})
    assert extract_concepts(captions, nlp=nlp, cache_size=0) == counts
    assert extract_concepts([], nlp=nlp) == Counter()


def test_extract_with_two_workers_matches_one(nlp):
    captions = [f"A {w} next to a red fire truck." for w in ("dog", "cat", "horse", "dog")] * 5
    expected = Counter({"fire truck": 20, "dog": 10, "cat": 5, "horse": 5})
    assert extract_concepts(captions, nlp=nlp) == expected
    assert extract_concepts(captions, workers=2, chunk_size=8) == expected
    assert extract_concepts(captions, workers=2, chunk_size=8, parse=True) == expected


def test_threshold_and_ordering():
    counts = Counter({"dog": 5, "cat": 5, "bed": 7, "car": 2, "ant": 1})
    assert threshold_concepts(counts, 2) == [("bed", 7), ("cat", 5), ("dog", 5), ("car", 2)]
    assert threshold_concepts(counts, 8) == []
    with pytest.raises(RegionCLIPError, match="min-count"):
        threshold_concepts(counts, 0)


def _write_shard(path: Path, samples: list[dict[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for i, members in enumerate(samples):
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _write_inputs(folder: Path) -> tuple[Path, Path, Path]:
    coco = folder / "captions_val.json"
    coco.write_text(
        json.dumps({"images": [], "annotations": [{"id": 1, "image_id": 1, "caption": "A dog on a sofa."}]})
    )
    text = folder / "captions.txt"
    text.write_text("A dog with a ball.\n\nTwo cats on a sofa.\n", encoding="utf-8")
    shard = folder / "shard-000000.tar"
    _write_shard(
        shard,
        [
            {"jpg": b"\xff\xd8", "txt": b"A dog in a car."},
            {"jpg": b"\xff\xd8", "json": json.dumps({"caption": "A cat on a car."}).encode()},
            {"jpg": b"\xff\xd8", "json": json.dumps({"captions": ["A dog.", "x"]}).encode()},
            {"jpg": b"\xff\xd8", "json": json.dumps({"url": "no caption"}).encode()},
            {"jpg": b"\xff\xd8"},
        ],
    )
    return coco, text, shard


def test_readers_of_all_three_formats(tmp_path):
    coco, text, shard = _write_inputs(tmp_path)
    stats = CaptionStats()
    assert list(iter_captions([coco], stats)) == ["A dog on a sofa."]
    assert list(iter_captions([text], stats)) == ["A dog with a ball.", "Two cats on a sofa."]
    # every caption of a sample counts (like the five of a COCO image); json before txt, as pretraining reads
    assert list(read_shard_captions(shard, stats)) == ["A dog in a car.", "A cat on a car.", "A dog.", "x"]
    assert (stats.read, stats.skipped) == (3, 2)
    # a folder means its caption files, sorted: json, tar, txt
    stats = CaptionStats()
    assert len(list(iter_captions([tmp_path], stats, max_captions=4))) == 4
    assert stats.read == 4


def test_build_concept_pool_over_a_folder(tmp_path):
    _write_inputs(tmp_path)
    pool = build_concept_pool([tmp_path], min_count=2, workers=1)
    assert pool.names == ["dog", "car", "cat", "sofa"]
    assert pool.counts == [4, 2, 2, 2]
    assert (pool.captions_read, pool.captions_skipped) == (7, 2)


def test_shard_caption_rule_is_shared_with_pretraining(tmp_path):
    """The concept pool and the pretraining loader read the same captions from the same shard."""
    from regionclip.data.pairs import UnusableSample, iter_shard, sample_captions

    shard = tmp_path / "s.tar"
    _write_shard(
        shard,
        [
            {"json": json.dumps({"caption": "from json"}).encode(), "txt": b"from txt"},
            {"json": b"{not json", "txt": b" from txt "},
            {"en.txt": b"an English caption"},
            {"txt": "caf\u00e9".encode("latin-1")},  # not UTF-8: no usable caption
            {"json": json.dumps({"captions": [], "caption": "fallback"}).encode()},
        ],
    )
    expected = ["from json", "from txt", "an English caption", "fallback"]
    stats = CaptionStats()
    assert list(read_shard_captions(shard, stats)) == expected and stats.skipped == 1
    read = []
    for sample, tar in iter_shard(str(shard)):
        try:
            read.extend(sample_captions(tar, sample))
        except UnusableSample as err:  # the sample whose txt is not UTF-8
            assert "no usable caption" in str(err)
            assert sample.key == "000003"
    assert read == expected


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", b"", "no captions"),
        ("blank.txt", b"\n  \n", "no captions"),
        ("latin1.txt", "a caf\u00e9 table\n".encode("latin-1"), "not UTF-8"),
        ("noann.json", b'{"images": []}', "'annotations'"),
        ("badcap.json", b'{"annotations": [{"caption": 3}]}', "annotations\\[0\\].caption is int"),
        ("broken.json", b'{"annotations": [', "not valid JSON"),
        ("broken.tar", b"this is not a tar file at all" * 30, "not a readable tar"),
    ],
)
def test_bad_caption_files_are_refused_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(RegionCLIPError, match=message) as info:
        list(iter_captions([path]))
    assert name in str(info.value)


def test_missing_input_is_refused(tmp_path):
    with pytest.raises(RegionCLIPError, match="not found"):
        list(iter_captions([tmp_path / "nope.txt"]))


def test_cli_concepts_end_to_end(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    _write_inputs(tmp_path / "in")
    out = tmp_path / "out" / "concepts.txt"
    code = main(["concepts", str(tmp_path / "in"), "-o", str(out), "--min-count", "2", "--workers", "1"])
    assert code == 0
    assert out.read_text().splitlines() == ["dog", "car", "cat", "sofa"]
    assert (tmp_path / "out" / "concepts.tsv").read_text().splitlines()[0] == "dog\t4"
    summary = capsys.readouterr().out.strip()
    assert "captions read: 7, skipped: 2" in summary and "concepts kept: 4" in summary
    assert main(["concepts", str(tmp_path / "in" / "missing.txt"), "-o", str(out)]) == 2


def test_cli_embed_concepts_writes_a_bank(tmp_path):
    from regionclip.concepts import ConceptBank

    names = tmp_path / "concepts.txt"
    names.write_text("dog\nfire hydrant\ncat\n", encoding="utf-8")
    bank_path = tmp_path / "bank.safetensors"
    argv = [
        "embed-concepts",
        str(names),
        "--model",
        "RN-micro",
        "-o",
        str(bank_path),
        "--templates",
        "simple",
    ]
    assert main(argv) == 0
    bank = ConceptBank.load(bank_path)
    assert bank.names == ["dog", "fire hydrant", "cat"]
    assert tuple(bank.embeddings.shape) == (3, 32)


def test_cli_embed_concepts_refuses_empty_and_non_utf8_files(tmp_path, capsys):
    out = str(tmp_path / "bank.safetensors")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert main(["embed-concepts", str(empty), "--model", "RN-micro", "-o", out]) == 2
    assert "empty.txt" in capsys.readouterr().err
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\u00e9\n".encode("latin-1"))
    assert main(["embed-concepts", str(latin), "--model", "RN-micro", "-o", out]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    assert not Path(out).exists()
