"""A battery of bad inputs across every command, as real datasets and users produce them.

Each case runs ``regionclip.cli.main`` in-process and asserts: a non-zero exit, exactly one line on stderr
that names the culprit (file, field or value), no traceback, and that nothing already written (a previous
run's outputs, sitting in the output folders the case points at) was lost or corrupted. A pickle that would
run code also checks that its payload never ran.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import regionclip
from regionclip.cli import main
from regionclip.clip.checkpoint import save_clip
from regionclip.concepts import build_concept_bank
from regionclip.proposals.detectron2 import Detectron2RPNConfig, build_detectron2_rpn, save_detectron2_rpn

SMALL = ["--min-size", "64", "--max-size", "96"]
# tqdm bars and logged warnings ("<date> <logger>: ...") on stderr are not the command's message
# progress bars, log lines and the one status line of ``precision auto`` are not the error message
PROGRESS = re.compile(
    r"\d+%\||\d+(\.\d+)?(it|img|step|batch)/s|^\d{4}-\d\d-\d\d \d\d:|^WARNING|^regionclip: precision auto -> "
)


class _RunsCode:
    """Unpickling this creates a file: proof that a loader executed code."""

    def __init__(self, sentinel: str):
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _coco(n_images: int = 2) -> dict:
    return {
        "images": [
            {"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 48} for i in range(n_images)
        ],
        "annotations": [
            {"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [4, 4, 30, 20], "iscrowd": 0}
            for i in range(n_images)
        ],
        "categories": [{"id": 1, "name": "cat", "split": "base"}, {"id": 2, "name": "dog", "split": "novel"}],
    }


def _json(path: Path, obj) -> str:
    path.write_text(json.dumps(obj))
    return str(path)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    clip = regionclip.create_model("RN-micro")
    save_clip(clip, root / "clip.safetensors")
    cfg = Detectron2RPNConfig(
        arch="R50-FPN", width=8, stage_blocks=(1, 1, 1, 1), fpn_channels=16, post_nms_topk=30
    )
    save_detectron2_rpn(build_detectron2_rpn(cfg), cfg, root / "rpn.safetensors")
    build_concept_bank(clip, ["cat", "dog", "cup"], ("{}.",)).save(root / "bank.safetensors")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(images / f"{i}.png")
    _json(root / "good.json", _coco())
    _json(root / "captions.json", {"images": _coco()["images"], "annotations": [
        {"id": 1, "image_id": 1, "caption": "a cat."}, {"id": 2, "image_id": 2, "caption": "a dog."}]})  # fmt: skip
    (root / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    (root / "bombdir").mkdir()
    (root / "bombdir" / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    good_jpg = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(good_jpg, format="JPEG")
    (root / "cut.jpg").write_bytes(good_jpg.getvalue()[:200])
    (root / "evil.pt").write_bytes(pickle.dumps(_RunsCode(str(root / "PWNED")), protocol=2))
    (root / "truncated.safetensors").write_bytes((root / "clip.safetensors").read_bytes()[:3000])
    (root / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (root / "empty.txt").write_text("\n \n")
    (root / "garbage.tar").write_bytes(b"this is not a tar archive" * 40)
    with tarfile.open(root / "nocaption.tar", "w") as tar:  # images without any caption
        for i in range(3):
            data = (images / "0.png").read_bytes()
            info = tarfile.TarInfo(f"s{i}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (root / "bad.yaml").write_text("train: [unclosed\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    # a previous run's outputs: every case points its outputs here, and they must survive untouched
    prev = root / "prev"
    prev.mkdir()
    (prev / "detections.json").write_text('[{"image_id": 1}]\n')
    (prev / "summary.json").write_text('{"images": []}\n')
    (prev / "config.yaml").write_text("earlier: run\n")
    (prev / "concepts.txt").write_text("cat\ndog\n")
    (prev / "bank.safetensors").write_bytes((root / "bank.safetensors").read_bytes())
    (prev / "model.onnx").write_bytes(b"earlier onnx")
    return root


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def _bad_json(r: Path, name: str, mutate) -> str:
    data = _coco()
    mutate(data)
    return _json(r / name, data)


def _eval(r, data, *extra):
    return ["eval", "--checkpoint", str(r / "clip.safetensors"), "--data", data, "--images", str(r / "images"),
            "--boxes", "gt", "--out", str(r / "prev" / "results.json"), *extra]  # fmt: skip


def _detect(r, *inputs, vocab=("--vocab", "cat,dog"), ckpt="clip.safetensors"):
    return ["detect", *[str(r / i) for i in inputs], "--checkpoint", str(r / ckpt), "--rpn", str(r / "rpn.safetensors"),
            *vocab, "--out", str(r / "prev"), *SMALL]  # fmt: skip


def _pretrain(r, *overrides):
    return ["pretrain", "model.preset=RN-micro", f"model.weights={r / 'clip.safetensors'}",
            f"concepts.bank={r / 'bank.safetensors'}", "proposals.kind=random", "train.max_steps=1",
            "train.batch_size=1", "train.progress=false", f"out_dir={r / 'prev'}", "device=cpu", *overrides]  # fmt: skip


def _train_detector(r, train_json, *overrides):
    return ["train-detector", "model.preset=RN-micro", f"model.weights={r / 'clip.safetensors'}", "proposals.kind=gt",
            f"data.train_json={train_json}", f"data.image_root={r / 'images'}", "train.max_steps=1",
            "train.progress=false", f"out_dir={r / 'prev'}", "device=cpu", *overrides]  # fmt: skip


def _train_clip(r, *overrides):
    return ["train-clip", "model=RN-micro", "train.max_steps=1", "train.batch_size=2", "train.progress=false",
            f"out_dir={r / 'prev'}", "device=cpu", *overrides]  # fmt: skip


def _pseudo(r, teacher="clip.safetensors", concepts="bank.safetensors"):
    return ["pseudo-label", "--teacher", str(r / teacher), "--concepts", str(r / concepts), "--images",
            str(r / "images"), "--out", str(r / "prev"), "--short-size", "64"]  # fmt: skip


# (case id, argv builder, substrings the one-line message must contain)
CASES = [
    # ---- images
    ("detect-decompression-bomb", lambda r: _detect(r, "bomb.png"), ["bomb.png", "pixels"]),
    ("detect-truncated-jpeg", lambda r: _detect(r, "cut.jpg"), ["cut.jpg", "cannot decode"]),
    ("detect-missing-image", lambda r: _detect(r, "nowhere.jpg"), ["no images found", "nowhere.jpg"]),
    (
        "pseudo-label-bomb-only",
        lambda r: [
            "pseudo-label",
            "--teacher",
            str(r / "clip.safetensors"),
            "--concepts",
            str(r / "bank.safetensors"),
            "--images",
            str(r / "bombdir"),
            "--out",
            str(r / "prev"),
        ],
        ["bomb.png", "pixels"],
    ),
    # ---- vocabularies
    (
        "detect-vocab-duplicates",
        lambda r: _detect(r, "images", vocab=("--vocab", "cat,dog,cat")),
        ["duplicate names: 'cat'"],
    ),
    ("detect-vocab-blank", lambda r: _detect(r, "images", vocab=("--vocab", " , ")), ["--vocab", "empty"]),
    (
        "detect-vocab-file-not-utf8",
        lambda r: _detect(r, "images", vocab=("--vocab-file", str(r / "latin1.txt"))),
        ["latin1.txt", "UTF-8"],
    ),
    (
        "detect-vocab-file-empty",
        lambda r: _detect(r, "images", vocab=("--vocab-file", str(r / "empty.txt"))),
        ["empty.txt", "empty"],
    ),
    (
        "detect-vocab-lvis-without-json",
        lambda r: _detect(r, "images", vocab=("--vocab", "lvis")),
        ["--lvis-json"],
    ),
    (
        "detect-lvis-json-not-json",
        lambda r: _detect(r, "images", vocab=("--vocab", "lvis", "--lvis-json", str(r / "latin1.txt"))),
        ["latin1.txt"],
    ),
    (
        "embed-concepts-names-missing",
        lambda r: [
            "embed-concepts",
            str(r / "nope.txt"),
            "--model",
            "RN-micro",
            "--weights",
            str(r / "clip.safetensors"),
            "-o",
            str(r / "prev" / "bank.safetensors"),
        ],
        ["nope.txt"],
    ),
    # ---- checkpoints
    (
        "detect-checkpoint-truncated",
        lambda r: _detect(r, "images", ckpt="truncated.safetensors"),
        ["truncated.safetensors"],
    ),
    ("detect-checkpoint-pickle-runs-code", lambda r: _detect(r, "images", ckpt="evil.pt"), ["evil.pt"]),
    (
        "detect-checkpoint-wrong-kind",
        lambda r: _detect(r, "images", ckpt="bank.safetensors"),
        ["bank.safetensors", "concept_bank"],
    ),
    (
        "detect-checkpoint-missing",
        lambda r: _detect(r, "images", ckpt="absent.safetensors"),
        ["absent.safetensors"],
    ),
    (
        "detect-rpn-wrong-kind",
        lambda r: [
            "detect",
            str(r / "images"),
            "--checkpoint",
            str(r / "clip.safetensors"),
            "--rpn",
            str(r / "bank.safetensors"),
            "--vocab",
            "cat",
            "--out",
            str(r / "prev"),
            *SMALL,
        ],
        ["bank.safetensors"],
    ),
    (
        "pseudo-label-teacher-truncated",
        lambda r: _pseudo(r, teacher="truncated.safetensors"),
        ["truncated.safetensors"],
    ),
    (
        "pseudo-label-concepts-wrong-kind",
        lambda r: _pseudo(r, concepts="rpn.safetensors"),
        ["rpn.safetensors"],
    ),
    (
        "convert-pickle-runs-code",
        lambda r: ["convert", str(r / "evil.pt"), "-o", str(r / "prev" / "converted")],
        ["evil.pt"],
    ),
    (
        "convert-missing-source",
        lambda r: ["convert", str(r / "absent.pth"), "-o", str(r / "prev" / "converted")],
        ["absent.pth"],
    ),
    (
        "export-wrong-kind",
        lambda r: [
            "export",
            "--checkpoint",
            str(r / "bank.safetensors"),
            "--onnx",
            str(r / "prev" / "model.onnx"),
        ],
        ["bank.safetensors"],
    ),
    (
        "eval-checkpoint-pickle-runs-code",
        lambda r: _eval(r, str(r / "good.json")) + ["--checkpoint", str(r / "evil.pt"), "preset=RN-micro"],
        ["evil.pt"],
    ),
    (
        "pretrain-bank-truncated",
        lambda r: _pretrain(
            r, f"data.shards=[{r / 'garbage.tar'}]", f"concepts.bank={r / 'truncated.safetensors'}"
        ),
        ["truncated.safetensors"],
    ),
    # ---- annotation JSON
    ("eval-json-not-json", lambda r: _eval(r, str(r / "latin1.txt")), ["latin1.txt", "JSON"]),
    (
        "eval-json-missing-images",
        lambda r: _eval(r, _bad_json(r, "noimages.json", lambda d: d.pop("images"))),
        ["noimages.json", "'images'"],
    ),
    (
        "eval-bbox-nan",
        lambda r: _eval(
            r, _bad_json(r, "nan.json", lambda d: d["annotations"][1].update(bbox=[1, 2, float("nan"), 4]))
        ),
        ["nan.json", "annotations[1].bbox"],
    ),
    (
        "eval-category-id-unknown",
        lambda r: _eval(r, _bad_json(r, "cat.json", lambda d: d["annotations"][0].update(category_id=77))),
        ["cat.json", "annotations[0].category_id 77"],
    ),
    (
        "eval-duplicate-image-id",
        lambda r: _eval(r, _bad_json(r, "dup.json", lambda d: d["images"].append(dict(d["images"][0])))),
        ["dup.json", "image id 1 appears twice"],
    ),
    (
        "eval-image-id-unknown",
        lambda r: _eval(r, _bad_json(r, "img.json", lambda d: d["annotations"][1].update(image_id=9))),
        ["img.json", "annotations[1].image_id 9"],
    ),
    (
        "eval-all-images-missing",
        lambda r: _eval(
            r,
            _bad_json(
                r, "gone.json", lambda d: [i.update(file_name=f"gone{i['id']}.png") for i in d["images"]]
            ),
        ),
        ["gone1.png"],
    ),
    ("train-detector-json-missing", lambda r: _train_detector(r, str(r / "absent.json")), ["absent.json"]),
    (
        "train-detector-no-trainable-box",
        lambda r: _train_detector(
            r, _bad_json(r, "crowd.json", lambda d: [a.update(iscrowd=1) for a in d["annotations"]])
        ),
        ["crowd.json", "no image has a box"],
    ),
    (
        "train-rpn-json-not-json",
        lambda r: [
            "train-rpn",
            f"data.train_json={r / 'latin1.txt'}",
            f"data.image_root={r / 'images'}",
            f"out_dir={r / 'prev'}",
        ],
        ["latin1.txt"],
    ),
    (
        "eval-rpn-json-missing",
        lambda r: [
            "eval-rpn",
            "--checkpoint",
            str(r / "rpn.safetensors"),
            "--data",
            str(r / "absent.json"),
            "--images",
            str(r / "images"),
            "--out",
            str(r / "prev" / "recall.json"),
        ],
        ["absent.json"],
    ),
    # ---- captions and shards
    (
        "pretrain-shards-match-nothing",
        lambda r: _pretrain(r, f"data.shards=[{r / 'none_*.tar'}]"),
        ["none_*.tar"],
    ),
    # (shards are read lazily, after config.yaml is written: these two runs get a fresh output folder)
    (
        "pretrain-shard-not-a-tar",
        lambda r: _pretrain(r, f"data.shards=[{r / 'garbage.tar'}]", f"out_dir={r / 'prev' / 'new1'}"),
        ["garbage.tar"],
    ),
    (
        "pretrain-shard-without-captions",
        lambda r: _pretrain(r, f"data.shards=[{r / 'nocaption.tar'}]", f"out_dir={r / 'prev' / 'new2'}"),
        ["nocaption.tar"],
    ),
    (
        "train-clip-captions-missing",
        lambda r: _train_clip(r, f"captions_json=[{r / 'absent.json'}]", f"image_dir=[{r / 'images'}]"),
        ["absent.json"],
    ),
    (
        "train-clip-captions-dirs-mismatch",
        lambda r: _train_clip(r, f"captions_json=[{r / 'captions.json'}]", "image_dir=[]"),
        ["image_dir"],
    ),
    (
        "train-clip-empty-captions",
        lambda r: _train_clip(
            r,
            "captions_json=["
            + _json(
                r / "nocap.json",
                {"images": _coco()["images"], "annotations": [{"id": 1, "image_id": 1, "caption": "  "}]},
            )
            + "]",
            f"image_dir=[{r / 'images'}]",
        ),
        ["nocap.json"],
    ),
    (
        "concepts-corpus-missing",
        lambda r: ["concepts", str(r / "absent_captions.json"), "-o", str(r / "prev" / "concepts.txt")],
        ["absent_captions.json"],
    ),
    # ---- configs
    ("eval-unknown-config-key", lambda r: _eval(r, str(r / "good.json"), "max_detz=3"), ["max_detz"]),
    (
        "eval-config-wrong-type",
        lambda r: _eval(r, str(r / "good.json"), "max_dets=many"),
        ["max_dets", "many"],
    ),
    ("pretrain-config-malformed-yaml", lambda r: ["pretrain", "--config", str(r / "bad.yaml")], ["bad.yaml"]),
    (
        "train-detector-config-not-a-mapping",
        lambda r: ["train-detector", "--config", str(r / "list.yaml")],
        ["list.yaml"],
    ),
    (
        "pretrain-config-bad-proposals-kind",
        lambda r: _pretrain(r, "proposals.kind=lasso"),
        ["proposals.kind", "lasso"],
    ),
    (
        "make-world-unknown-size",
        lambda r: ["make-world", str(r / "prev" / "world"), "--size", "galactic"],
        ["galactic"],
    ),
]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REGIONCLIP_CACHE", str(tmp_path / "cache"))


def test_the_battery_has_at_least_30_kinds():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("argv", "culprits"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_one_line_error_and_nothing_written_is_lost(env, capsys, argv, culprits):
    before = _snapshot(env / "prev")
    code = main(argv(env))
    captured = capsys.readouterr()
    lines = [ln for ln in re.split(r"[\r\n]+", captured.err) if ln.strip() and not PROGRESS.search(ln)]
    err = "\n".join(lines)
    assert code != 0, captured
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert len(lines) == 1, err
    for culprit in culprits:
        assert culprit in err, err
    assert not (env / "PWNED").exists()  # no pickle payload ever ran
    after = _snapshot(env / "prev")
    assert {k: v for k, v in after.items() if k in before} == before  # nothing already written changed
