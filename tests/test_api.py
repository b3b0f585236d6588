"""Tests of the user-facing Detector API (regionclip.detect.api) and vocabulary parsing (regionclip.vocab)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import regionclip
from regionclip.clip.checkpoint import save_clip
from regionclip.concepts import SIMPLE_TEMPLATES
from regionclip.detect.api import DetectionResult, Detector, read_image, resized_size
from regionclip.errors import RegionCLIPError
from regionclip.proposals.detectron2 import Detectron2RPNConfig, build_detectron2_rpn, save_detectron2_rpn
from regionclip.vocab import COCO_NAMES, COCO_NOVEL_NAMES, COCO_OVD_NAMES, parse_vocabulary

SMALL = dict(min_size=64, max_size=96, score_fusion="none", score_thresh=0.0)


@pytest.fixture(scope="module")
def micro_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("micro")
    torch.manual_seed(0)
    save_clip(regionclip.create_model("RN-micro"), folder / "clip.safetensors")
    cfg = Detectron2RPNConfig(arch="R50-C4", width=8, stage_blocks=(1, 1, 1, 1), post_nms_topk=30)
    save_detectron2_rpn(build_detectron2_rpn(cfg), cfg, folder / "rpn.safetensors")
    return folder


@pytest.fixture
def det(micro_folder, tmp_path):
    return Detector.from_pretrained(
        micro_folder, cache_dir=tmp_path / "cache", templates=SIMPLE_TEMPLATES, **SMALL
    )


def test_vocabulary_parsing(tmp_path):
    assert parse_vocabulary("cat, dog,") == ["cat", "dog"]
    assert parse_vocabulary(["a b", "c"]) == ["a b", "c"]
    f = tmp_path / "v.txt"
    f.write_text("cat\n\n  \ndog\n")
    assert parse_vocabulary(f) == ["cat", "dog"]
    assert parse_vocabulary(str(f)) == ["cat", "dog"]
    assert len(parse_vocabulary("coco")) == 80 and parse_vocabulary("coco")[0] == "person"
    assert len(COCO_NOVEL_NAMES) == 17 and len(COCO_OVD_NAMES) == 65 and len(set(COCO_NAMES)) == 80
    assert COCO_OVD_NAMES[:5] == ("person", "bicycle", "car", "motorcycle", "airplane")
    with pytest.raises(RegionCLIPError, match="empty"):
        parse_vocabulary(" , ")
    with pytest.raises(RegionCLIPError, match="'cat'.*'dog'"):
        parse_vocabulary("cat,dog,cat,dog,eel")
    with pytest.raises(RegionCLIPError, match="lvis-json"):
        parse_vocabulary("lvis")


def test_lvis_names_from_json(tmp_path):
    import json

    f = tmp_path / "lvis.json"
    f.write_text(json.dumps({"categories": [{"id": 2, "name": "b_b"}, {"id": 1, "name": "aerosol_can"}]}))
    assert parse_vocabulary("lvis", lvis_json=f) == ["aerosol_can", "b_b"]


def test_resized_size_follows_detectron2_rounding():
    assert resized_size(480, 640, 800, 1333) == (800, 1067)  # 640 * 800 / 480 = 1066.67 -> 1067
    assert resized_size(100, 1000, 800, 1333) == (133, 1333)  # capped by the longer side


def test_read_image_kinds(tmp_path):
    arr = (np.arange(2 * 3 * 3) % 255).astype(np.uint8).reshape(2, 3, 3)
    assert read_image(arr).size == (3, 2)
    assert np.array_equal(np.asarray(read_image(torch.from_numpy(arr).permute(2, 0, 1))), arr)
    assert read_image(arr.astype(np.float32) / 255.0).size == (3, 2)
    Image.fromarray(arr).save(tmp_path / "x.png")
    assert np.array_equal(np.asarray(read_image(tmp_path / "x.png")), arr)
    (tmp_path / "bad.jpg").write_text("nope")
    with pytest.raises(RegionCLIPError, match="bad.jpg"):
        read_image(tmp_path / "bad.jpg")


def test_detect_rescales_boxes_to_original(det):
    image = torch.rand(3, 60, 100)
    results = det([image, np.zeros((30, 40, 3), np.uint8)], vocabulary=["cat", "dog"])
    assert len(results) == 2 and all(isinstance(r, DetectionResult) for r in results)
    r = results[0]
    assert len(r) > 0 and r.boxes[:, 2].max() <= 100 + 1e-4 and r.boxes[:, 3].max() <= 60 + 1e-4
    assert r.boxes[:, [2, 3]].max() > 60  # boxes live in the original 100x60 frame, not the 64-px resized one
    assert set(r.label_names) <= {"cat", "dog"}
    coco = r.to_coco(7, category_ids=[17, 18])
    assert coco[0]["image_id"] == 7 and coco[0]["category_id"] in (17, 18) and len(coco[0]["bbox"]) == 4
    plot = r.plot()
    assert plot.size == (100, 60) and plot.mode == "RGB"


def test_given_boxes_and_encode_regions(det):
    image = torch.rand(3, 64, 64)
    emb = det.encode_regions(image, [[0, 0, 32, 32], [10, 10, 60, 50]])
    assert emb.shape == (2, 32)
    direct = det.model.backbone(
        regionclip.structures.ImageBatch.from_images([image]).tensor, [torch.tensor([[0.0, 0, 32, 32]])]
    )
    assert torch.allclose(emb[:1], direct, atol=1e-5)


def test_vocabulary_cache_skips_text_encoding(micro_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("REGIONCLIP_CACHE", str(tmp_path / "envcache"))
    calls = {"n": 0}

    def counting(self, tokens, _orig=regionclip.clip.model.CLIP.encode_text):
        calls["n"] += 1
        return _orig(self, tokens)

    monkeypatch.setattr(regionclip.clip.model.CLIP, "encode_text", counting)
    first = Detector.from_pretrained(micro_folder, templates=SIMPLE_TEMPLATES, **SMALL)
    assert first.cache_dir == tmp_path / "envcache"
    bank1 = first.vocabulary_bank(["zebra", "kite"])
    assert calls["n"] > 0
    calls["n"] = 0
    second = Detector.from_pretrained(micro_folder, templates=SIMPLE_TEMPLATES, **SMALL)
    bank2 = second.vocabulary_bank(["zebra", "kite"])
    assert calls["n"] == 0 and torch.equal(bank1.embeddings, bank2.embeddings)
    second.vocabulary_bank(["zebra", "owl"])
    assert calls["n"] > 0


def test_bad_vocabularies(det):
    with pytest.raises(RegionCLIPError, match="empty"):
        det(torch.rand(3, 32, 32), vocabulary=[])
    with pytest.raises(RegionCLIPError, match="duplicate"):
        det(torch.rand(3, 32, 32), vocabulary=["cat", "cat"])


def test_wrong_checkpoint_kind(micro_folder):
    with pytest.raises(RegionCLIPError, match="'rpn' checkpoint"):
        Detector.from_pretrained(micro_folder / "rpn.safetensors")
