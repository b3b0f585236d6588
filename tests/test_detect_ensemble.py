"""Tests of the frozen-classifier score ensemble (regionclip.detect.ensemble): the formula against a hand
computation, the background left to the detector, seen / unseen weights from the training classes stored in
the checkpoint, ``ensemble=none`` unchanged bit for bit, trunk sharing, and eval / detect end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from regionclip.cli import main
from regionclip.clip.checkpoint import load_clip, save_clip
from regionclip.detect.api import Detector, load_detector
from regionclip.detect.ensemble import EnsembleConfig, ensemble_scores
from regionclip.detect.postprocess import postprocess_image
from regionclip.errors import RegionCLIPError
from test_train_detector import trained, world  # noqa: F401 - module fixtures reused

LN2, LN3 = math.log(2.0), math.log(3.0)


def test_formula_against_a_hand_computation():
    # detector: logits (ln 2, 0 | 0) -> softmax (2, 1, 1) / 4 = (0.5, 0.25 | bg 0.25)
    # frozen:   logits (0, ln 3)     -> softmax (1, 3) / 4 = (0.25, 0.75)
    det = torch.tensor([[LN2, 0.0, 0.0]])
    frozen = torch.tensor([[0.0, LN3]])
    # class 0 seen (w = 0.35): 0.5^0.65 * 0.25^0.35 = 2^-0.65 * 2^-0.70 = 2^-1.35 = 0.392292
    # class 1 unseen (w = 0.65): 0.25^0.35 * 0.75^0.65 = 0.615572 * 0.829449 = 0.510586
    got = ensemble_scores(det, frozen, torch.tensor([0.35, 0.65]))
    assert got.shape == (1, 3)
    assert got[0, 0].item() == pytest.approx(0.392292, abs=1e-6)
    assert got[0, 1].item() == pytest.approx(0.510586, abs=1e-6)
    assert got[0, 2].item() == pytest.approx(0.25, abs=1e-7)  # background: the detector's alone
    # w = 0.5 and w = 1: sqrt(0.5 * 0.25) = 0.353553 and the frozen probability 0.75 itself
    got = ensemble_scores(det, frozen, torch.tensor([0.5, 1.0]))
    assert got[0].tolist() == pytest.approx([0.353553, 0.75, 0.25], abs=1e-6)
    # w = 0: the detector's probabilities unchanged
    got = ensemble_scores(det, frozen, torch.tensor([0.0, 0.0]))
    assert got[0].tolist() == pytest.approx([0.5, 0.25, 0.25], abs=1e-7)


def test_background_column_is_the_detectors_softmax():
    torch.manual_seed(0)
    det, frozen = torch.randn(7, 5) * 3, torch.randn(7, 4) * 3
    got = ensemble_scores(det, frozen, torch.tensor([0.35, 0.65, 0.65, 0.35]))
    torch.testing.assert_close(got[:, -1], det.softmax(dim=1)[:, -1])
    assert (got > 0).all() and torch.isfinite(got).all()


def test_postprocess_with_probs_equal_to_softmax_is_bit_identical():
    torch.manual_seed(1)
    logits, boxes = torch.randn(20, 4) * 2, torch.rand(20, 4) * 30
    boxes[:, 2:] += boxes[:, :2] + 2
    emb, obj = torch.randn(20, 8), torch.randn(20)
    a = postprocess_image(logits, boxes, obj, emb, (64, 64), score_thresh=0.0)
    b = postprocess_image(logits, boxes, obj, emb, (64, 64), score_thresh=0.0, probs=logits.softmax(dim=1))
    assert len(a) > 0
    for x, y in zip((a.boxes, a.scores, a.labels), (b.boxes, b.scores, b.labels), strict=True):
        assert torch.equal(x, y)


def _batch(world, det):  # noqa: F811
    image = Image.open(world["root"] / "val" / "001.png")
    _, batch, _ = det._prepare([image])
    return batch


def test_weights_follow_the_training_classes_stored_in_the_checkpoint(world, trained):  # noqa: F811
    det = Detector.from_pretrained(trained, ensemble="frozen", cache_dir=world["root"] / "cache")
    frozen = det.model.ensemble
    assert frozen.seen_classes == ["red block", "blue block"]  # the checkpoint's train_classes
    # by name (case and spacing ignored), whatever the vocabulary's order and size
    weights = frozen.class_weights(["green block", "Red  Block", "cat", "blue block"])
    assert weights.tolist() == pytest.approx([0.65, 0.35, 0.65, 0.35])
    # the init checkpoint recorded by train-detector is the frozen branch (layer2-3 were fine-tuned: no sharing)
    assert frozen.source == str(world["root"] / "clip.safetensors") and frozen.share_trunk is False
    init = load_clip(world["root"] / "clip.safetensors").visual.state_dict()
    mine = frozen.encoder.visual.state_dict()
    assert all(torch.equal(init[k], mine[k]) for k in init)
    custom = Detector.from_pretrained(
        trained, ensemble=EnsembleConfig("frozen", ensemble_weight_seen=0.2, ensemble_weight_unseen=0.9)
    )
    assert custom.model.ensemble.class_weights(["blue block", "green block"]).tolist() == pytest.approx(
        [0.2, 0.9]
    )


def test_none_is_unchanged_and_frozen_matches_the_formula(world, trained):  # noqa: F811
    plain = load_detector(trained).detector
    none = load_detector(trained, ensemble=EnsembleConfig()).detector
    assert none.ensemble is None
    names = ["red block", "green block", "blue block"]
    emb = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    det = Detector.from_pretrained(trained)
    batch = _batch(world, det)
    kw = {"score_thresh": 0.0, "class_names": names}
    a, b = plain.predict(batch, emb, **kw)[0], none.predict(batch, emb, **kw)[0]
    assert len(a) > 0 and torch.equal(a.scores, b.scores) and torch.equal(a.boxes, b.boxes)

    ens = load_detector(trained, ensemble=EnsembleConfig("frozen", 0.0, 0.0)).detector
    c = ens.predict(batch, emb, **kw)[0]  # w = 0 everywhere: the detector's scores (up to rounding)
    torch.testing.assert_close(c.scores, a.scores, atol=1e-5, rtol=1e-4)
    assert torch.equal(c.labels, a.labels)

    # w = 1 for every class: the foreground scores are the frozen classifier's softmax on the reported boxes
    ens1 = load_detector(trained, ensemble=EnsembleConfig("frozen", 1.0, 1.0)).detector
    d = ens1.predict(batch, emb, nms="hard", **kw)[0]
    init = load_clip(world["root"] / "clip.safetensors")
    from regionclip.regions import RegionEncoder

    frozen_emb = RegionEncoder(init.visual)(batch.tensor, [d.boxes])
    probs = torch.nn.functional.normalize(frozen_emb, dim=-1) @ torch.nn.functional.normalize(emb, dim=-1).t()
    probs = (probs / 0.01).softmax(dim=1)
    want = probs[torch.arange(len(d)), d.labels]
    torch.testing.assert_close(d.scores, want, atol=1e-4, rtol=1e-3)

    with pytest.raises(RegionCLIPError, match="name of every vocabulary class"):
        ens.predict(batch, emb, score_thresh=0.0)


def test_shared_trunk_gives_the_same_scores_as_a_second_pass(world, trained, tmp_path):  # noqa: F811
    # a frozen checkpoint whose trunk equals the detector's (head from the init model): res4 is shared
    loaded = load_detector(trained)
    init = load_clip(world["root"] / "clip.safetensors")
    own = init.visual.state_dict()
    for key, value in loaded.detector.backbone.visual.state_dict().items():
        if not key.startswith(("layer4.", "attnpool.")):
            own[key].copy_(value)
    save_clip(init, tmp_path / "same_trunk.safetensors")
    cfg = EnsembleConfig("frozen", ensemble_checkpoint=str(tmp_path / "same_trunk.safetensors"))
    shared = load_detector(trained, ensemble=cfg).detector
    assert shared.ensemble.share_trunk is True
    second = load_detector(trained, ensemble=cfg).detector
    second.ensemble.share_trunk = False
    det = Detector.from_pretrained(trained)
    batch = _batch(world, det)
    emb = torch.randn(3, 32, generator=torch.Generator().manual_seed(2))
    names = ["red block", "green block", "blue block"]
    a = shared.predict(batch, emb, score_thresh=0.0, class_names=names)[0]
    b = second.predict(batch, emb, score_thresh=0.0, class_names=names)[0]
    torch.testing.assert_close(a.scores, b.scores)


def test_missing_frozen_checkpoint_is_a_clear_error(world, trained, tmp_path):  # noqa: F811
    with pytest.raises(RegionCLIPError, match="ensemble_checkpoint: file not found"):
        load_detector(trained, ensemble=EnsembleConfig("frozen", ensemble_checkpoint=str(tmp_path / "x")))
    with pytest.raises(RegionCLIPError, match="'rpn' checkpoint"):
        load_detector(
            trained,
            ensemble=EnsembleConfig("frozen", ensemble_checkpoint=str(world["root"] / "rpn.safetensors")),
        )
    with pytest.raises(RegionCLIPError, match="already the frozen model"):
        Detector.from_pretrained(world["root"] / "clip.safetensors", ensemble="frozen")


def test_eval_and_detect_with_the_ensemble(world, trained, tmp_path, capsys):  # noqa: F811
    def run_eval(out, *extra):
        argv = ["eval", "--checkpoint", str(trained), "--data", str(world["val"]), "--images",
                str(world["root"] / "val"), "--out", str(out), "--device", "cpu",
                f"cache_dir={world['root'] / 'cache'}", "progress=false", "score_thresh=0.0", *extra]  # fmt: skip
        assert main(argv) == 0
        return json.loads(out.read_text())

    plain = run_eval(tmp_path / "plain.json")
    ens = run_eval(tmp_path / "ens.json", "detector.ensemble=frozen", "detector.ensemble_weight_unseen=0.7")
    assert plain["protocol"]["score_ensemble"] == "none" and plain["protocol"]["ensemble_params"] == {}
    p = ens["protocol"]
    assert p["score_ensemble"] == "frozen" and p["ensemble_params"]["weight_unseen"] == 0.7
    assert p["ensemble_params"]["weight_seen"] == 0.35 and p["ensemble_params"]["num_seen_in_vocabulary"] == 2
    assert p["ensemble_params"]["checkpoint"] == str(world["root"] / "clip.safetensors")
    assert math.isfinite(ens["metrics"]["AP50_all"]) and ens["metrics"]["num_detections"] > 0
    a = json.loads((tmp_path / "plain_detections.json").read_text())
    b = json.loads((tmp_path / "ens_detections.json").read_text())
    assert [d["score"] for d in a] != [d["score"] for d in b]
    assert "ensemble frozen" in capsys.readouterr().out

    out = tmp_path / "detect"
    code = main(["detect", str(world["root"] / "val"), "--checkpoint", str(trained), "--vocab",
                 "red block,green block", "--out", str(out), "--no-png", "--score-thresh", "0",
                 "--ensemble", "frozen"])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ensemble"]["weight_seen"] == 0.35 and len(summary["images"]) == 3

    capsys.readouterr()
    argv = ["eval", "--checkpoint", str(world["root"] / "clip.safetensors"), "--boxes", "gt", "--data",
            str(world["val"]), "--images", str(world["root"] / "val"), "--out", str(tmp_path / "z.json"),
            "detector.ensemble=frozen"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs a detector checkpoint" in err
