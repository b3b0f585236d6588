"""ONNX export of the image side (regionclip.export): onnxruntime on the CPU equals PyTorch for two
vocabularies of different sizes, without re-export."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch

import regionclip
from regionclip.cli import main
from regionclip.clip.checkpoint import save_clip
from regionclip.detect.api import Detector
from regionclip.export import ImageSide
from test_train_detector import trained, world  # noqa: F401 - module fixtures reused


def test_onnx_matches_pytorch_for_two_vocabularies(tmp_path, capsys):
    torch.manual_seed(0)
    save_clip(regionclip.create_model("RN-micro"), tmp_path / "clip.safetensors")
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(tmp_path / "clip.safetensors"),
                "--onnx",
                str(tmp_path / "m.onnx"),
                "--height",
                "64",
                "--width",
                "64",
            ]
        )
        == 0
    )
    assert "class_embeddings" in capsys.readouterr().out
    det = Detector.from_pretrained(tmp_path / "clip.safetensors")
    side = ImageSide(det.model).eval()
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for k, (h, w), r in [(2, (64, 80), 5), (9, (96, 64), 12)]:
        image = torch.randn(1, 3, h, w)
        props = torch.rand(r, 4) * 30
        props[:, 2:] += props[:, :2] + 4
        vocab = torch.randn(k, 32)
        with torch.no_grad():
            ref = side(image, props, vocab)
        out = sess.run(
            None, {"image": image.numpy(), "proposals": props.numpy(), "class_embeddings": vocab.numpy()}
        )
        assert out[0].shape == (r, k + 1)
        np.testing.assert_allclose(out[0].sum(axis=1), np.ones(r), atol=1e-5)
        for got, want in zip(out, ref, strict=True):
            np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=1e-4)


def test_onnx_with_the_frozen_ensemble_matches_pytorch(world, trained, tmp_path, capsys):  # noqa: F811
    import json

    import onnx

    out = tmp_path / "ens.onnx"
    argv = ["export", "--checkpoint", str(trained), "--onnx", str(out), "--height", "64", "--width", "64",
            "--ensemble", "frozen"]  # fmt: skip
    assert main(argv) == 0
    assert "ensemble_weights" in capsys.readouterr().out
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["training_classes"]) == ["red block", "blue block"]
    det = Detector.from_pretrained(trained, ensemble="frozen")
    side = ImageSide(det.model).eval()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [
        "image",
        "proposals",
        "class_embeddings",
        "ensemble_weights",
    ]
    for names, (h, w), r in [
        (["green block", "red block"], (64, 80), 5),
        (["a", "blue block", "c", "d"], (48, 96), 9),
    ]:
        image = torch.randn(1, 3, h, w)
        props = torch.rand(r, 4) * 40
        props[:, 2:] += props[:, :2] + 4  # some boxes leave the image: clipped for the frozen branch
        vocab = torch.randn(len(names), 32)
        weights = det.model.ensemble.class_weights(names)
        with torch.no_grad():
            ref = side(image, props, vocab, weights)
            plain = torch.softmax(det.model.classifier(det.model.backbone(image, [props]), vocab), dim=1)
        feeds = {"image": image.numpy(), "proposals": props.numpy(), "class_embeddings": vocab.numpy(),
                 "ensemble_weights": weights.numpy()}  # fmt: skip
        got = sess.run(None, feeds)
        assert got[0].shape == (r, len(names) + 1)
        np.testing.assert_allclose(
            got[0][:, -1], plain[:, -1].numpy(), atol=1e-5
        )  # background: the detector's
        assert not np.allclose(
            got[0][:, :-1], plain[:, :-1].numpy(), rtol=1e-3, atol=0.0
        )  # the ensemble changed them
        for g, want in zip(got, ref, strict=True):
            np.testing.assert_allclose(g, want.numpy(), atol=1e-5, rtol=1e-4)
