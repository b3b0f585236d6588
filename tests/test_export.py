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
