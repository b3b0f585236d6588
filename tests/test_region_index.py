"""Tests of the region index (``regionclip index`` / ``regionclip search``, :mod:`regionclip.region_index`):
search without the backbone, detections equal to ``detect`` on the same boxes, append / resume without
duplicates, sharding by rank, bad shards and foreign models, FAISS against torch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from regionclip.cli import main
from regionclip.detect.api import Detector
from regionclip.region_index import (
    RegionSearcher,
    SearchConfig,
    build_index,
    detect_in_index,
    ivf_cache_path,
    load_index,
    model_identity,
)

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_detector import make_detector_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_detector_checkpoint(tmp_path_factory.mktemp("det"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.jpg")
    return folder


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REGIONCLIP_CACHE", str(tmp_path / "cache"))


def _faiss_or_skip() -> None:
    """FAISS is in the test extra: in CI (``CI`` set) a missing FAISS fails; elsewhere the test is skipped."""
    if os.environ.get("CI"):
        import faiss  # noqa: F401
    else:
        pytest.importorskip("faiss")


def _index(ckpt, inputs, out, *extra):
    return main(["index", *map(str, inputs), "--checkpoint", str(ckpt), "--out", str(out), *extra])


def test_search_ranks_regions_without_the_backbone(ckpt, photos, tmp_path, monkeypatch, capsys):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "idx"
    assert _index(ckpt, [photos, tmp_path / "broken.jpg"], out) == 0
    assert "broken.jpg" in capsys.readouterr().err
    index = load_index(out)
    assert len(index.images) == 4 and len(index) == index.manifest["regions"] > 4
    assert index.embeddings.dtype == torch.float16
    assert torch.allclose(index.embeddings.float().norm(dim=1), torch.ones(len(index)), atol=2e-3)

    import regionclip.regions

    def no_backbone(*args, **kwargs):
        raise AssertionError("search ran the image backbone")

    monkeypatch.setattr(regionclip.regions.RegionEncoder, "trunk", no_backbone)
    res = tmp_path / "res"
    code = main(["search", str(out), "cat", "coffee cup", "--top", "5", "--out", str(res)])
    assert code == 0
    payload = json.loads((res / "search.json").read_text())
    assert payload["queries"] == ["cat", "coffee cup"] and payload["backend"] == "torch"
    det = Detector.from_pretrained(ckpt)
    text = det.vocabulary_bank(["cat", "coffee cup"]).embeddings
    for qi, q in enumerate(payload["queries"]):
        hits = payload["results"][q]
        assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True)
        exact = (index.embeddings.float() @ torch.nn.functional.normalize(text[qi], dim=0)).topk(5).values
        assert np.allclose(scores, exact.tolist(), atol=1e-4)
        assert all(Path(h["file_name"]).parent == photos.resolve() for h in hits)
    with Image.open(res / "search.png") as sheet:
        assert sheet.width > 5 * 128 and sheet.height > 2 * 128


def test_index_detections_equal_detect_on_the_same_boxes(ckpt, photos, tmp_path):
    out = tmp_path / "idx"
    assert _index(ckpt, [photos], out) == 0
    res = tmp_path / "res"
    assert main(["search", str(out), "--vocab", "cat,mug,person", "--out", str(res), "--no-png"]) == 0
    assert not (res / "search.png").exists()
    dets = json.loads((res / "detections.json").read_text())
    summary = json.loads((res / "summary.json").read_text())
    det = Detector.from_pretrained(ckpt)
    assert len(summary["images"]) == 4
    for image in summary["images"]:
        ref = det(image["file_name"], "cat,mug,person")[0].to_coco(image["id"])
        got = [d for d in dets if d["image_id"] == image["id"]]
        assert len(got) == len(ref) > 0
        assert got[0]["category_id"] == ref[0]["category_id"]
        assert got[0]["score"] == pytest.approx(ref[0]["score"], rel=1e-2)
        # (random weights give near-tied scores: fp16 may swap neighbours and change their soft-NMS decays)
    # without suppression (hard NMS at IoU > 1 keeps every box-class pair) they agree pair for pair
    index = load_index(out)
    bank = det.vocabulary_bank("cat,mug,person")
    det.model.inference = det.model.inference.replace(nms_thresh=1.01)
    found = detect_in_index(index, bank.embeddings, nms="hard", nms_thresh=1.01, max_dets=10_000)
    for record, mine in found:
        ref = det(record["file"], bank, nms="hard", max_dets=10_000)[0]
        assert len(mine) == len(ref) == index.image_rows()[index.images.index(record)].numel() * 3
        for k in range(3):  # per class, sorted scores and box coordinates (sorting is 1-Lipschitz)
            mk, rk = mine.labels == k, ref.labels == k
            assert torch.allclose(
                mine.scores[mk].sort().values, ref.scores[rk].sort().values, rtol=1e-2, atol=1e-7
            )
            assert torch.allclose(
                mine.boxes[mk].sort(dim=0).values, ref.boxes[rk].sort(dim=0).values, atol=0.05
            )


def test_given_boxes_detections_equal_detect(tmp_path, photos):
    ckpt = make_detector_checkpoint(tmp_path / "gt", with_rpn=False, score_fusion="none")
    boxes = {"chelsea.jpg": [[10, 20, 200, 250], [150, 40, 400, 290], [0, 0, 451, 300]],
             "coffee.jpg": [[30, 30, 300, 300], [200, 100, 600, 380]]}  # fmt: skip
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    out = tmp_path / "idx"
    files = [photos / "chelsea.jpg", photos / "coffee.jpg", photos / "rocket.jpg"]
    assert _index(ckpt, files, out, "--boxes", str(tmp_path / "boxes.json")) == 0
    index = load_index(out)
    assert len(index.images) == 2 and len(index) == 5  # rocket.jpg has no boxes: skipped
    assert main(["search", str(out), "--vocab", "cat,cup", "--out", str(tmp_path / "r"), "--no-png"]) == 0
    dets = json.loads((tmp_path / "r" / "detections.json").read_text())
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    det = Detector.from_pretrained(ckpt)
    for image in summary["images"]:
        given = torch.tensor(boxes[Path(image["file_name"]).name], dtype=torch.float32)
        ref = det(image["file_name"], "cat,cup", boxes=[given])[0].to_coco(image["id"])
        got = [d for d in dets if d["image_id"] == image["id"]]
        assert [d["category_id"] for d in got] == [d["category_id"] for d in ref]
        assert np.allclose([d["score"] for d in got], [d["score"] for d in ref], rtol=1e-2, atol=2e-5)


def test_append_and_resume_never_duplicate(ckpt, photos, tmp_path):
    det = Detector.from_pretrained(ckpt)
    model = model_identity(det, ckpt, None)
    files = sorted(photos.iterdir())
    out = tmp_path / "idx"
    build_index(det, files[:1], out, model, shard_size=1)

    class Killed(Exception):
        pass

    def kill_after_two(count):
        if count == 2:
            raise Killed

    with pytest.raises(Killed):  # interrupted after two images of three
        build_index(det, files, out, model, shard_size=1, on_image=kill_after_two)
    assert len(load_index(out).images) == 3
    report = build_index(det, files + files[:2], out, model, shard_size=1)  # resume, with repeats
    assert (report.added, report.skipped_existing) == (1, 5)
    index = load_index(out)
    ids = [r["id"] for r in index.images]
    assert len(ids) == len(set(ids)) == 4
    assert json.loads((out / "index.json").read_text())["images"] == 4
    # a copy of an image under another name is the same image
    (tmp_path / "copy.jpg").write_bytes(files[0].read_bytes())
    assert build_index(det, [tmp_path / "copy.jpg"], out, model).added == 0


def test_ranks_index_disjoint_shares(ckpt, photos, tmp_path):
    det = Detector.from_pretrained(ckpt)
    model = model_identity(det, ckpt, None)
    files = sorted(photos.iterdir())
    out = tmp_path / "idx"
    sync = threading.Barrier(2, timeout=60)  # two "ranks" in threads, with a real barrier between phases
    reports = {}

    def rank_main(rank):
        reports[rank] = build_index(
            det, files, out, model, shard_size=1, rank=rank, world_size=2, barrier=sync.wait
        )

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert reports[0].added == reports[1].added == 2
    names = sorted(p.name for p in out.glob("shard-*"))
    assert names == ["shard-r0-00000.safetensors", "shard-r0-00001.safetensors",
                     "shard-r1-00000.safetensors", "shard-r1-00001.safetensors"]  # fmt: skip
    index = load_index(out)
    assert sorted(Path(r["file"]).name for r in index.images) == sorted(f.name for f in files)


@pytest.mark.slow
def test_torchrun_two_ranks(ckpt, photos, tmp_path):
    out = tmp_path / "idx"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REGIONCLIP_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "regionclip", "index", str(photos), "--checkpoint", str(ckpt), "--out", str(out),
           "--shard-size", "1"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks
        raise
    assert proc.returncode == 0, output.decode(errors="replace")[-2000:]
    ranks = {p.name.split("-")[1] for p in out.glob("shard-*")}
    assert ranks == {"r0", "r1"}
    manifest = json.loads((out / "index.json").read_text())
    assert manifest["images"] == 4 and len(manifest["shards"]) == 4


def test_corrupt_shard_and_other_model_are_clear_errors(ckpt, photos, tmp_path, capsys):
    out = tmp_path / "idx"
    assert _index(ckpt, [photos / "chelsea.jpg"], out) == 0
    other = make_detector_checkpoint(tmp_path / "other", seed=1)
    capsys.readouterr()
    assert _index(other, [photos / "coffee.jpg"], out) == 2
    err = capsys.readouterr().err.strip()
    assert "index built with another model" in err and "index.json" in err and len(err.splitlines()) == 1
    assert main(["search", str(out), "cat", "--checkpoint", str(other), "--out", str(tmp_path / "r")]) == 2
    assert "another model" in capsys.readouterr().err
    shard = next(out.glob("shard-*"))
    shard.write_bytes(shard.read_bytes()[:100])
    assert main(["search", str(out), "cat", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert shard.name in err and "corrupt index shard" in err and len(err.splitlines()) == 1
    assert main(["search", str(tmp_path), "cat"]) == 2
    assert "not a region index" in capsys.readouterr().err


def test_faiss_and_torch_return_the_same_top_k():
    _faiss_or_skip()
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(3000, 64, generator=g), dim=1).half()
    queries = torch.randn(4, 64, generator=g)
    s_t, i_t = RegionSearcher(emb, SearchConfig("torch")).search(queries, 10)
    for cfg in (SearchConfig("flat"), SearchConfig("ivf", nlist=8, nprobe=8)):
        searcher = RegionSearcher(emb, cfg)
        assert searcher.backend == cfg.backend
        s, i = searcher.search(queries, 10)
        assert torch.equal(i, i_t)
        assert torch.allclose(s, s_t, atol=1e-3)
    auto = RegionSearcher(emb, SearchConfig(torch_limit=1000, ivf_limit=2000))
    assert auto.backend == "ivf"
    assert RegionSearcher(emb, SearchConfig(torch_limit=1000, ivf_limit=5000)).backend == "flat"


def test_ivf_is_cached_by_index_content(ckpt, photos, tmp_path, monkeypatch):
    _faiss_or_skip()
    out = tmp_path / "idx"
    assert _index(ckpt, [photos], out) == 0
    index = load_index(out)
    cache = ivf_cache_path(index)
    first = RegionSearcher(index.embeddings, SearchConfig("ivf", nlist=4, nprobe=4), cache=cache)
    files = list(out.glob("faiss-ivf-*-4.index"))
    assert len(files) == 1
    q = torch.randn(2, index.embeddings.shape[1])
    monkeypatch.setattr("faiss.IndexIVFScalarQuantizer.train", lambda *a: pytest.fail("retrained"))
    again = RegionSearcher(index.embeddings, SearchConfig("ivf", nlist=4, nprobe=4), cache=cache)
    assert torch.equal(again.search(q, 5)[1], first.search(q, 5)[1])
