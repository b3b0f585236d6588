"""Tests of `regionclip.precision`: resolving fp32 / bf16 / auto against the device, the old `amp` key,
and accuracy checked against fp32: region embeddings (RN-tiny; RN50 marked slow), detections' AP50 of a
trained RN-micro detector, and short pretraining / detector-training curves."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

import regionclip.precision as precision_mod
from regionclip.cli import main
from regionclip.clip import create_model
from regionclip.config import load_config
from regionclip.engine.loop import TrainConfig
from regionclip.errors import ConfigError
from regionclip.precision import (
    apply_precision,
    cpu_bf16_hardware,
    resolve_precision,
    set_flush_denormal,
    to_float,
    training_setting,
)
from regionclip.regions import RegionEncoder
from test_evaluate import detector_ckpt, run_eval  # noqa: F401 - module fixtures reused
from test_pretrain_task import make_batch, make_task
from test_train_detector import train_args, world  # noqa: F401


def test_auto_picks_bf16_only_with_native_bf16(monkeypatch, capsys):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert cpu_bf16_hardware({"avx512f", "amx_bf16", "avx512_bf16"}) == "AMX-BF16"
    assert cpu_bf16_hardware({"avx512f", "avx512_bf16"}) == "AVX512-BF16"
    assert cpu_bf16_hardware({"avx512f", "avx2"}) is None
    p = resolve_precision("auto", "cpu", flags={"amx_bf16"})
    assert p.name == "bf16" and p.dtype == torch.bfloat16 and "AMX-BF16" in p.reason
    assert "precision auto -> bf16 (AMX-BF16 on cpu)" in capsys.readouterr().err
    assert resolve_precision("auto", "cpu", flags={"avx2"}).name == "fp32"
    assert resolve_precision("fp32", "cpu", flags={"amx_bf16"}).dtype is None
    # bf16 asked for is honoured without native support (emulated), and says so
    p = resolve_precision("bf16", "cpu", flags=set(), log=False)
    assert p.name == "bf16" and "slow" in p.reason
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert cpu_bf16_hardware({"amx_bf16"}) is None  # torch's kernels would not use it
    with pytest.raises(ConfigError, match="precision: expected one of fp32, bf16, auto, got 'fp16'"):
        resolve_precision("fp16", "cpu")


def test_old_amp_key_maps_to_precision_bf16():
    cfg = load_config(TrainConfig, None, ["amp=bf16"])  # an old config still loads
    assert training_setting(cfg.precision, cfg.amp) == "bf16"
    cfg = load_config(TrainConfig, None, ["amp=none", "precision=auto"])
    assert training_setting(cfg.precision, cfg.amp) == "auto"
    assert TrainConfig().precision == "fp32"  # the training default (docs/configs.md says why)
    with pytest.raises(ConfigError, match="train.amp"):
        training_setting("fp32", "fp16")


def test_to_float_casts_nested_outputs():
    out = to_float({"a": [torch.ones(2, dtype=torch.bfloat16)], "b": (torch.ones(1, dtype=torch.long),)})
    assert out["a"][0].dtype == torch.float32 and out["b"][0].dtype == torch.long


def _region_cosine(preset: str, size: tuple[int, int], n: int) -> tuple[float, torch.dtype]:
    torch.manual_seed(0)
    enc = RegionEncoder(create_model(preset).visual).eval()
    enc16 = apply_precision(copy.deepcopy(enc), resolve_precision("bf16", "cpu", log=False))
    g = torch.Generator().manual_seed(0)
    h, w = size
    images = torch.randn(1, 3, h, w, generator=g)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
    boxes = [torch.cat([xy, xy + 24 + torch.rand(n, 2, generator=g) * (min(h, w) * 0.3)], dim=1)]
    with torch.no_grad():
        ref, low = enc(images, boxes), enc16(images, boxes)
    assert enc.compute_dtype is None and enc16.compute_dtype == torch.bfloat16
    assert enc16.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    return float(F.cosine_similarity(ref, low).min()), low.dtype


def test_bf16_region_embeddings_match_fp32_tiny():
    cosine, dtype = _region_cosine("RN-tiny", (128, 160), 12)
    assert dtype == torch.float32  # outputs of the autocast region are cast back
    assert cosine >= 0.999


@pytest.mark.slow
def test_bf16_region_embeddings_match_fp32_rn50():
    cosine, _ = _region_cosine("RN50", (320, 416), 8)
    assert cosine >= 0.999


def test_bf16_text_embeddings_match_fp32(micro_model):
    m16 = apply_precision(copy.deepcopy(micro_model), resolve_precision("bf16", "cpu", log=False))
    tokens = micro_model.tokenize(["a photo of a cat", "a red block", "itap of the dog"])
    with torch.no_grad():
        ref, low = micro_model.encode_text(tokens), m16.encode_text(tokens)
    assert low.dtype == torch.float32 and float(F.cosine_similarity(ref, low).min()) >= 0.999


def test_bf16_detections_ap50_within_half_a_point(world, detector_ckpt, tmp_path):  # noqa: F811
    ref = run_eval(world, tmp_path / "fp32.json", "--checkpoint", str(detector_ckpt), "--precision", "fp32")
    low = run_eval(world, tmp_path / "bf16.json", "--checkpoint", str(detector_ckpt), "--precision", "bf16")
    assert ref["metrics"]["num_detections"] > 0
    for key in ("AP50_all", "AP50_base", "AP50_novel"):
        assert abs(ref["metrics"][key] - low["metrics"][key]) <= 0.5, key


def test_bf16_detector_training_tracks_fp32(world, tmp_path):  # noqa: F811
    losses = {}
    for name in ("fp32", "bf16"):
        out = tmp_path / name
        assert main(train_args(world, out, "train.max_steps=4", "--precision", name)) == 0
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [r["loss_total"] for r in rows]
    assert len(losses["fp32"]) == 4
    for a, b in zip(losses["fp32"], losses["bf16"], strict=True):
        assert abs(a - b) <= 0.02 * abs(a) + 1e-3, losses


def test_bf16_pretraining_tracks_fp32():
    curves = {}
    for name in ("fp32", "bf16"):
        torch.manual_seed(0)  # same concepts and region sampling in both runs
        task = make_task()
        apply_precision(task, resolve_precision(name, "cpu", log=False))
        params = [p for p in task.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=2e-4, momentum=0.9)
        curve = []
        batch = make_batch(task)
        for _ in range(6):  # fit one batch: a smooth curve whose differences are the precision's
            out = task(batch)
            loss = sum(out.losses.values())
            assert all(v.dtype == torch.float32 for v in out.losses.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            curve.append(float(loss.detach()))
        curves[name] = curve
    assert curves["fp32"][-1] < curves["fp32"][0]  # it learns
    for a, b in zip(curves["fp32"], curves["bf16"], strict=True):
        assert abs(a - b) <= 0.05 * abs(a) + 1e-3, curves  # tau = 0.01 amplifies embedding differences


def test_precision_flag_on_every_network_command():
    import argparse
    import importlib

    from regionclip.cli import COMMANDS

    for name in ("detect", "eval", "eval-rpn", "pseudo-label", "pretrain", "train-detector", "train-rpn",
                 "train-clip", "embed-concepts"):  # fmt: skip
        parser = argparse.ArgumentParser()
        importlib.import_module(f"regionclip.commands.{COMMANDS[name][0]}").add_arguments(parser)
        flags = {a.dest: a for a in parser._actions}
        assert "precision" in flags and flags["precision"].choices == ["fp32", "bf16", "auto"], name
    assert precision_mod.PRECISIONS == ("fp32", "bf16", "auto")


def test_set_flush_denormal_flushes_and_restores():
    set_flush_denormal(False)  # a training run earlier in this process leaves the mode on
    denormal = torch.tensor([1e-39], dtype=torch.float32)
    assert denormal.item() != 0.0  # representable as a denormal
    if not set_flush_denormal(True):
        pytest.skip("this CPU has no flush-to-zero mode")  # not x86 with SSE3
    try:
        assert (denormal * 1.0).item() == 0.0
    finally:
        set_flush_denormal(False)
    assert (denormal * 1.0).item() != 0.0
