"""``regionclip pretrain`` killed with SIGKILL mid-run and resumed with the same command ends with the same
student as an uninterrupted run (engine: atomic checkpoints + RNG state + data position from the step), and
the command's bad-input errors are one line (method reference §4-5; project rules on errors).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from regionclip.clip.checkpoint import create_model, load_clip, save_clip
from regionclip.concepts import ConceptBank

NAMES = ["cat", "dog", "car", "tree", "cup", "boat"]


def write_shards(root: Path, n_shards: int, per_shard: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for s in range(n_shards):
        path = root / f"shard{s}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(per_shard):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
                key = f"{s:03d}{i:05d}"
                for ext, data in {
                    "jpg": buf.getvalue(),
                    "txt": f"a photo of a {NAMES[(s + i) % 6]}".encode(),
                }.items():
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(str(path))
    return paths


def micro_inputs(root: Path) -> tuple[str, str]:
    """An RN-micro CLIP (.safetensors) and a random 32-d concept bank over NAMES."""
    torch.manual_seed(0)
    clip = save_clip(create_model("RN-micro"), root / "clip.safetensors")
    bank = ConceptBank(NAMES, torch.randn(len(NAMES), 32)).save(root / "bank.safetensors")
    return str(clip), str(bank)


def pretrain_cmd(root: Path, out: Path, max_steps: int) -> list[str]:
    clip, bank = micro_inputs(root)
    shards = write_shards(root, 2, 6)
    return [
        sys.executable,
        "-m",
        "regionclip",
        "pretrain",
        "--config",
        "configs/pretrain_tiny.yaml",
        "model.preset=RN-micro",
        f"model.weights={clip}",
        f"concepts.bank={bank}",
        f"data.shards={shards}",
        "data.short_size=48",
        "data.max_size=80",
        f"train.max_steps={max_steps}",
        "train.checkpoint_every=2",
        "train.keep_last=100",
        "train.batch_size=2",
        f"out_dir={out}",
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow  # ~20-30 s: three subprocesses, each importing torch
def test_sigkill_then_resume_gives_the_uninterrupted_student(tmp_path):
    steps = 24
    full = tmp_path / "full"
    cmd_full = pretrain_cmd(tmp_path, full, steps)
    subprocess.run(cmd_full, check=True, capture_output=True, env=_env(), timeout=300)

    out = tmp_path / "killed"
    cmd = [a if not a.startswith("out_dir=") else f"out_dir={out}" for a in cmd_full]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    second = out / "checkpoints" / "step_00000004.pt"
    deadline = time.monotonic() + 240
    while not second.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL  # killed, not finished
    assert not (out / "student.safetensors").exists()
    done = sorted(p.name for p in (out / "checkpoints").glob("step_*.pt"))
    assert "step_00000004.pt" in done and f"step_{steps:08d}.pt" not in done
    assert not list((out / "checkpoints").glob("*.tmp*"))  # atomic writes: no partial file is visible

    resumed = subprocess.run(cmd, check=True, capture_output=True, text=True, env=_env(), timeout=300)
    last = int(done[-1][5:13])
    assert f"resumed from {last})" in resumed.stderr

    a = load_clip(full / "student.safetensors").state_dict()
    b = load_clip(out / "student.safetensors").state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit-identical
    init = create_model("RN-micro")
    assert not torch.equal(
        a["visual.layer4.0.downsample.0.weight"], init.state_dict()["visual.layer4.0.downsample.0.weight"]
    )


def test_pretrain_help_and_bad_inputs_give_one_line_errors(tmp_path, capsys):
    from regionclip.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--config" in help_text and "overrides" in help_text and "--no-resume" in help_text

    _, bank = micro_inputs(tmp_path)
    shards = write_shards(tmp_path, 1, 2)
    base = [
        "pretrain",
        "--config",
        "configs/pretrain_tiny.yaml",
        "model.preset=RN-micro",
        f"concepts.bank={bank}",
        f"data.shards={shards}",
        f"out_dir={tmp_path / 'run'}",
        "train.max_steps=1",
    ]

    def replace(key: str, value: str) -> list[str]:
        return [a if not a.startswith(f"{key}=") else f"{key}={value}" for a in base]

    cases = {  # expected text in the message -> arguments
        "concepts.bank: concept bank not found": replace("concepts.bank", f"{tmp_path}/no.safetensors"),
        "unknown model 'RN-nope'": [*base, "model.preset=RN-nope"],
        "'proposals.preset': expected one of": [*base, "proposals.kind=rpn", "proposals.preset=nope"],
        "no webdataset shards match": replace("data.shards", f"['{tmp_path}/none-*.tar']"),
        "webdataset shard not found": replace("data.shards", f"['{tmp_path}/s{{0..1}}.tar']"),
        "config file not found": ["pretrain", "--config", str(tmp_path / "missing.yaml")],
        "unknown config key 'train.max_stepz'": [*base, "train.max_stepz=3"],
    }
    for expect, args in cases.items():
        assert main(args) == 2, expect
        err = capsys.readouterr().err
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in err, (expect, err[-2000:])
        assert lines[0].startswith("regionclip pretrain: error: ") and expect in lines[0], (expect, lines[0])
