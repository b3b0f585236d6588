"""Tests of regionclip.convert and `regionclip convert` on checkpoints fabricated with the official key names.

Official RN50 / RN50x4 sizes are checked on the meta device (keys and shapes only); the numerical round trip
uses RN-micro-sized towers and a micro detectron2 RPN with random weights and statistics.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

import regionclip
from regionclip.checkpoint import load_checkpoint
from regionclip.cli import main
from regionclip.clip.checkpoint import load_clip
from regionclip.clip.model import CLIP
from regionclip.clip.presets import get_preset
from regionclip.convert import _rpn_tensors, infer_clip_preset, infer_rpn_config
from regionclip.proposals.detectron2 import Detectron2RPNConfig, build_detectron2_rpn
from regionclip.proposals.loading import load_detectron2_rpn
from regionclip.structures import ImageBatch

TEXT_PREFIXES = ("transformer.", "token_embedding.", "positional_embedding", "ln_final.", "text_projection")


def d2_resnet_shapes(prefix: str, width: int, blocks: list[int], norm_extra: bool = False) -> dict:
    """detectron2 ResNet key -> shape, written from the architecture (independent of the module code)."""
    shapes = {f"{prefix}stem.conv1.weight": (width, 3, 7, 7)}
    bn = ("weight", "bias", "running_mean", "running_var") + (("num_batches_tracked",) if norm_extra else ())

    def norm(name, c):
        for b in bn:
            shapes[f"{name}.norm.{b}"] = () if b == "num_batches_tracked" else (c,)

    norm(f"{prefix}stem.conv1", width)
    cin = width
    for s, n in enumerate(blocks):
        mid, cout = width * 2**s, width * 4 * 2**s
        for i in range(n):
            base = f"{prefix}res{s + 2}.{i}"
            shapes[f"{base}.conv1.weight"] = (mid, cin, 1, 1)
            shapes[f"{base}.conv2.weight"] = (mid, mid, 3, 3)
            shapes[f"{base}.conv3.weight"] = (cout, mid, 1, 1)
            for c, ch in (("conv1", mid), ("conv2", mid), ("conv3", cout)):
                norm(f"{base}.{c}", ch)
            if i == 0:
                shapes[f"{base}.shortcut.weight"] = (cout, cin, 1, 1)
                norm(f"{base}.shortcut", cout)
            cin = cout
    return shapes


def d2_fpn_rpn_shapes(bb: str, gen: str, width=64, blocks=(3, 4, 6, 3), ch=256, lsj=False) -> dict:
    shapes = d2_resnet_shapes(bb + "bottom_up.", width, list(blocks), norm_extra=lsj)
    for lvl in range(2, 6):
        cin = width * 4 * 2 ** (lvl - 2)
        for name, shape in ((f"fpn_lateral{lvl}", (ch, cin, 1, 1)), (f"fpn_output{lvl}", (ch, ch, 3, 3))):
            shapes[f"{bb}{name}.weight"] = shape
            if lsj:
                for b in ("weight", "bias", "running_mean", "running_var"):
                    shapes[f"{bb}{name}.norm.{b}"] = (ch,)
                shapes[f"{bb}{name}.norm.num_batches_tracked"] = ()
            else:
                shapes[f"{bb}{name}.bias"] = (ch,)
    convs = ["conv.conv0", "conv.conv1"] if lsj else ["conv"]
    for c in convs:
        shapes[f"{gen}rpn_head.{c}.weight"] = (ch, ch, 3, 3)
        shapes[f"{gen}rpn_head.{c}.bias"] = (ch,)
    shapes[f"{gen}rpn_head.objectness_logits.weight"] = (3, ch, 1, 1)
    shapes[f"{gen}rpn_head.objectness_logits.bias"] = (3,)
    shapes[f"{gen}rpn_head.anchor_deltas.weight"] = (12, ch, 1, 1)
    shapes[f"{gen}rpn_head.anchor_deltas.bias"] = (12,)
    return shapes


def d2_c4_rpn_shapes(bb: str, gen: str, width=64, blocks=(3, 4, 6)) -> dict:
    shapes = d2_resnet_shapes(bb, width, list(blocks))
    ch = width * 16
    shapes[f"{gen}rpn_head.conv.weight"] = (ch, ch, 3, 3)
    shapes[f"{gen}rpn_head.conv.bias"] = (ch,)
    shapes[f"{gen}rpn_head.objectness_logits.weight"] = (15, ch, 1, 1)
    shapes[f"{gen}rpn_head.objectness_logits.bias"] = (15,)
    shapes[f"{gen}rpn_head.anchor_deltas.weight"] = (60, ch, 1, 1)
    shapes[f"{gen}rpn_head.anchor_deltas.bias"] = (60,)
    return shapes


def meta_clip_state(preset: str) -> dict:
    with torch.device("meta"):
        return CLIP(get_preset(preset)).state_dict()


def official_regionclip_state(clip_state: dict, rpn_state: dict, text: bool = True) -> dict:
    """A pretrained RegionCLIP checkpoint's model dict: student, teacher, language encoder, offline RPN."""
    out = {}
    for k, v in clip_state.items():
        if k.startswith("visual."):
            out["backbone." + k[len("visual.") :]] = v
            out["teacher_backbone." + k[len("visual.") :]] = v
        elif text and k.startswith(TEXT_PREFIXES):
            out["lang_encoder." + k] = v
    out.update(rpn_state)
    return out


@pytest.mark.parametrize(("preset", "pos_shape"), [("RN50", (50, 2048)), ("RN50x4", (82, 2560))])
def test_official_sizes_map_to_preset_and_rpn(preset, pos_shape):
    clip_state = meta_clip_state(preset)
    rpn_shapes = d2_fpn_rpn_shapes("offline_backbone.", "offline_proposal_generator.")
    state = official_regionclip_state(
        clip_state, {k: torch.empty(s, device="meta") for k, s in rpn_shapes.items()}
    )
    assert tuple(state["backbone.attnpool.positional_embedding"].shape) == pos_shape
    visual = {"visual." + k[9:]: v for k, v in state.items() if k.startswith("backbone.")}
    text = {k[13:]: v for k, v in state.items() if k.startswith("lang_encoder.")}
    assert infer_clip_preset(visual, text) == preset
    mapped, used = _rpn_tensors(state, "offline_backbone.", "offline_proposal_generator.")
    assert len(used) == len(rpn_shapes)
    cfg = infer_rpn_config(mapped, "x")
    assert (cfg.arch, cfg.width, cfg.stage_blocks, cfg.fpn_channels, cfg.fpn_norm, cfg.head_convs) == (
        "R50-FPN",
        64,
        (3, 4, 6, 3),
        256,
        False,
        1,
    )
    with torch.device("meta"):
        own = build_detectron2_rpn(cfg).state_dict()
    assert {k: tuple(v.shape) for k, v in own.items()} == {k: tuple(v.shape) for k, v in mapped.items()}


def test_official_c4_and_lsj_rpn_shapes():
    c4 = {
        k: torch.empty(s, device="meta")
        for k, s in d2_c4_rpn_shapes("backbone.", "proposal_generator.").items()
    }
    mapped, _ = _rpn_tensors(c4, "backbone.", "proposal_generator.")
    cfg = infer_rpn_config(mapped, "x")
    assert (cfg.arch, cfg.num_anchors, cfg.pre_nms_topk) == ("R50-C4", 15, 6000)
    with torch.device("meta"):
        own = build_detectron2_rpn(cfg).state_dict()
    assert {k: tuple(v.shape) for k, v in own.items()} == {k: tuple(v.shape) for k, v in mapped.items()}
    lsj = d2_fpn_rpn_shapes("backbone.", "proposal_generator.", lsj=True)
    lsj = {k: torch.empty(s, device="meta") for k, s in lsj.items()}
    mapped, _ = _rpn_tensors(lsj, "backbone.", "proposal_generator.")
    assert not any(k.endswith("num_batches_tracked") for k in mapped)
    cfg = infer_rpn_config(mapped, "x")
    assert (cfg.fpn_norm, cfg.head_convs) == (True, 2)
    with torch.device("meta"):
        own = build_detectron2_rpn(cfg).state_dict()
    assert set(own) == set(mapped)


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return module


MICRO_RPN = dict(width=8, stage_blocks=(1, 1, 1, 1), fpn_channels=16, post_nms_topk=50)


def micro_rpn(arch: str, seed: int, **kw):
    cfg = Detectron2RPNConfig(arch=arch, **MICRO_RPN, **kw)
    return cfg, randomize(build_detectron2_rpn(cfg), seed)


def d2_names(rpn_state: dict, bb: str, gen: str) -> dict:
    return {(bb + k[9:] if k.startswith("backbone.") else gen + k): v for k, v in rpn_state.items()}


@pytest.fixture(scope="module")
def micro_clip():
    torch.manual_seed(0)
    return randomize(regionclip.create_model("RN-micro"), 1)


def test_regionclip_roundtrip_exact(tmp_path, micro_clip, capsys):
    cfg, rpn = micro_rpn("R50-FPN", 2)
    model_state = official_regionclip_state(
        micro_clip.state_dict(),
        d2_names(rpn.state_dict(), "offline_backbone.", "offline_proposal_generator."),
    )
    src = tmp_path / "regionclip_pretrained-cc_micro.pth"
    torch.save({"model": model_state, "iteration": 7}, src)
    assert main(["convert", str(src), "-o", str(tmp_path / "out")]) == 0
    assert "teacher_backbone" in capsys.readouterr().out
    clip = load_clip(tmp_path / "out" / "clip.safetensors")
    images = torch.randn(2, 3, 64, 64)
    tokens = micro_clip.tokenize(["a cat", "two dogs"])
    with torch.no_grad():
        assert (clip.encode_image(images) - micro_clip.encode_image(images)).abs().max() == 0
        assert (clip.encode_text(tokens) - micro_clip.encode_text(tokens)).abs().max() == 0
    test_time = {"post_nms_topk": 50, "pre_nms_topk": cfg.pre_nms_topk}
    rpn2 = load_detectron2_rpn(tmp_path / "out" / "rpn.safetensors", overrides=test_time)
    batch = ImageBatch.from_images([torch.rand(3, 70, 90), torch.rand(3, 50, 64)])
    for a, b in zip(rpn(batch), rpn2(batch), strict=True):
        assert len(a) > 0
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.objectness, b.objectness)
    report = json.loads((tmp_path / "out" / "convert-report.json").read_text())
    teacher = [k for k in model_state if k.startswith("teacher_backbone.")]
    assert teacher and set(teacher) <= set(report["unused"])
    assert not report["missing"]
    assert "backbone.attnpool.c_proj.weight" in report["mapped"]
    assert load_checkpoint(tmp_path / "out" / "clip.safetensors").config["text_tower"] == "present"


def test_finetuned_without_text_tower_reports_and_takes_text_weights(tmp_path, micro_clip):
    _, rpn = micro_rpn("R50-C4", 3)
    state = official_regionclip_state(
        micro_clip.state_dict(),
        d2_names(rpn.state_dict(), "offline_backbone.", "offline_proposal_generator."),
        text=False,
    )
    state = {k: v for k, v in state.items() if not k.startswith("teacher_")}
    src = tmp_path / "finetuned.pth"
    torch.save({"model": state}, src)
    from regionclip.convert import convert

    report = convert(src, tmp_path / "a")
    assert any("no text tower" in n for n in report.notes)
    assert any(k.startswith("transformer.") for k in report.missing)
    assert load_checkpoint(tmp_path / "a" / "clip.safetensors").config["text_tower"] == "missing"
    openai = tmp_path / "RN-micro.pt"
    torch.save(micro_clip.state_dict(), openai)
    report = convert(src, tmp_path / "b", text_weights=openai)
    assert not report.missing
    clip = load_clip(tmp_path / "b" / "clip.safetensors")
    tokens = micro_clip.tokenize(["a cat"])
    with torch.no_grad():
        assert torch.equal(clip.encode_text(tokens), micro_clip.encode_text(tokens))
    assert "C4" in " ".join(report.notes)


def test_detectron2_rpn_checkpoint_c4(tmp_path):
    cfg, rpn = micro_rpn("R50-C4", 4)
    state = d2_names(rpn.state_dict(), "backbone.", "proposal_generator.")
    state["roi_heads.res5.0.conv1.weight"] = torch.zeros(4, 4, 1, 1)
    state["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(49, 4)
    state["proposal_generator.anchor_generator.cell_anchors.0"] = torch.zeros(15, 4)
    src = tmp_path / "rpn_coco_48.pth"
    torch.save({"model": state, "__author__": "someone"}, src)
    assert main(["convert", str(src), "-o", str(tmp_path / "rpn.safetensors")]) == 0
    report = json.loads((tmp_path / "rpn.report.json").read_text())
    assert "roi_heads.res5.0.conv1.weight" in report["unused"]
    assert "proposal_generator.anchor_generator.cell_anchors.0" in report["unused"]
    rpn2 = load_detectron2_rpn(tmp_path / "rpn.safetensors", overrides={"post_nms_topk": 50})
    batch = ImageBatch.from_images([torch.rand(3, 60, 80)])
    a, b = rpn(batch)[0], rpn2(batch)[0]
    assert len(a) > 0 and torch.equal(a.boxes, b.boxes)


def test_numpy_arrays_are_accepted(tmp_path):
    _, rpn = micro_rpn("R50-C4", 5)
    state = {k: v.numpy() for k, v in d2_names(rpn.state_dict(), "backbone.", "proposal_generator.").items()}
    src = tmp_path / "rpn_numpy.pth"
    torch.save({"model": state}, src)
    assert main(["convert", str(src), "-o", str(tmp_path / "r.safetensors"), "--kind", "rpn"]) == 0
    loaded = load_checkpoint(tmp_path / "r.safetensors", kind="rpn").state_dict
    assert torch.equal(loaded["rpn_head.conv.weight"], rpn.state_dict()["rpn_head.conv.weight"])


def test_openai_state_dict(tmp_path, micro_clip):
    state = {k: v.half() if v.is_floating_point() else v for k, v in micro_clip.state_dict().items()}
    state["input_resolution"] = torch.tensor(64)
    src = tmp_path / "clip.pt"
    torch.save(state, src)
    assert main(["convert", str(src), "-o", str(tmp_path / "c.safetensors")]) == 0
    clip = load_clip(tmp_path / "c.safetensors")
    assert clip.preset.name == "RN-micro"
    assert torch.equal(clip.visual.conv1.weight, micro_clip.visual.conv1.weight.half().float())
    report = json.loads((tmp_path / "c.report.json").read_text())
    assert report["unused"] == ["input_resolution"] and report["kind"] == "openai"


def test_concept_embeddings(tmp_path):
    emb = torch.randn(3, 32)
    src = tmp_path / "coco_3_cls_emb.pth"
    torch.save(emb, src)
    names = tmp_path / "names.txt"
    names.write_text("cat\n\ndog\nzebra\n")
    assert main(["convert", str(src), "-o", str(tmp_path / "bank.safetensors"), "--names", str(names)]) == 0
    bank = regionclip.concepts.ConceptBank.load(tmp_path / "bank.safetensors")
    assert bank.names == ["cat", "dog", "zebra"] and torch.equal(bank.embeddings, emb)


def test_concept_embeddings_need_names(tmp_path, capsys):
    src = tmp_path / "emb.pth"
    torch.save(torch.randn(3, 8), src)
    assert main(["convert", str(src), "-o", str(tmp_path / "b.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--names" in err and "\n" not in err


def test_wrong_kind_is_one_line_error(tmp_path, capsys):
    _, rpn = micro_rpn("R50-C4", 6)
    src = tmp_path / "rpn.pth"
    torch.save({"model": d2_names(rpn.state_dict(), "backbone.", "proposal_generator.")}, src)
    assert main(["convert", str(src), "-o", str(tmp_path / "x"), "--kind", "regionclip"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'rpn' checkpoint" in err and "\n" not in err
    other = tmp_path / "other.pth"
    torch.save({"model": {"foo.weight": torch.zeros(2)}}, other)
    assert main(["convert", str(other), "-o", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot tell" in err and "foo" in err and "\n" not in err


class Malicious:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pth"
    torch.save({"model": {"backbone.attnpool.x": torch.zeros(1)}, "payload": Malicious(marker)}, src)
    assert main(["convert", str(src), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "refused" in err and "\n" not in err
    assert not marker.exists()


def test_missing_file(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "nope.pth"), "-o", str(tmp_path / "x")]) == 2
    assert "not found" in capsys.readouterr().err


def test_finetuned_lvis_checkpoint_becomes_a_detector(tmp_path, micro_clip, monkeypatch):
    from regionclip.detect.api import Detector, load_detector

    monkeypatch.setenv("REGIONCLIP_CACHE", str(tmp_path / "cache"))
    _, rpn = micro_rpn("R50-FPN", 8, fpn_norm=True, head_convs=2)
    state = official_regionclip_state(
        micro_clip.state_dict(),
        d2_names(rpn.state_dict(), "offline_backbone.", "offline_proposal_generator."),
        text=False,
    )
    state = {k: v for k, v in state.items() if not k.startswith("teacher_")}
    box = "roi_heads.box_predictor."
    state[box + "cls_score.weight"] = torch.randn(5, 32)
    state[box + "cls_bg_score.weight"] = torch.zeros(1, 32)
    state[box + "test_cls_score.weight"] = torch.randn(3, 32)
    state[box + "bbox_pred.weight"] = torch.randn(4, 32)
    state[box + "bbox_pred.bias"] = torch.randn(4)
    state["roi_heads.mask_head.deconv.weight"] = torch.randn(256, 256, 2, 2)
    state["roi_heads.mask_head.deconv.bias"] = torch.randn(256)
    state["roi_heads.mask_head.predictor.weight"] = torch.randn(1, 256, 1, 1)
    state["roi_heads.mask_head.predictor.bias"] = torch.randn(1)
    src = tmp_path / "regionclip_finetuned-lvis_micro.pth"
    torch.save({"model": state}, src)
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nemu\n")
    assert main(["convert", str(src), "-o", str(tmp_path / "out"), "--names", str(names)]) == 0
    loaded = load_detector(tmp_path / "out" / "detector.safetensors")
    det_state = loaded.detector.state_dict()
    assert torch.equal(det_state["box_regressor.linear.weight"], state[box + "bbox_pred.weight"])
    assert torch.equal(det_state["train_class_embeddings"], state[box + "cls_score.weight"])
    assert torch.equal(det_state["mask_head.deconv.weight"], state["roi_heads.mask_head.deconv.weight"])
    assert loaded.detector.mask_head is not None and not loaded.has_text
    bank = regionclip.concepts.ConceptBank.load(tmp_path / "out" / "concepts.safetensors")
    assert bank.names == ["cat", "dog", "emu"] and torch.equal(
        bank.embeddings, state[box + "test_cls_score.weight"]
    )
    report = json.loads((tmp_path / "out" / "convert-report.json").read_text())
    assert not [k for k in report["unused"] if k.startswith("roi_heads.")]
    det = Detector.from_pretrained(
        tmp_path / "out", min_size=64, max_size=96, score_fusion="none", nms="hard"
    )
    with pytest.raises(regionclip.errors.RegionCLIPError, match="no text encoder"):
        det(torch.rand(3, 64, 64), vocabulary=["cat"])
    results = det(torch.rand(3, 64, 80), vocabulary=bank, score_thresh=0.0, max_dets=7)
    assert 0 < len(results[0]) <= 7 and results[0].names == ["cat", "dog", "emu"]
