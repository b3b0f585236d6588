"""The official pretraining configs (``configs/pretrain_rn50_cc3m.yaml``, ``pretrain_rn50x4_cc3m.yaml``) run
one step on the CPU at official sizes with fabricated weights (method reference §4-5, §9, §13).

Everything the yaml points at is fabricated in the official formats: a random CLIP saved as an OpenAI-style
``torch.save`` state dict, a ``[N, D]`` concept-embedding ``.pth`` + names file, a detectron2-layout
R50-FPN RPN with the official LVIS RPN's anchors (what ``regionclip convert`` makes of ``rpn_lvis_866.pth``)
and two ~800 px webdataset samples. Only paths and the run length are overridden; the rest (800 px resize,
300 proposals -> 100 sampled, τ 0.01, 5.0 clipping, ...) is the real yaml. The run is a subprocess, so its
wall time and peak RSS are its own (printed; see ``/work/notes/pretrain_checks.md``).
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import regionclip
from regionclip.proposals.detectron2 import Detectron2RPNConfig, build_detectron2_rpn, save_detectron2_rpn

N_CONCEPTS = 50

# Runs ``regionclip`` in-process and prints the peak RSS of this process (the child) at the end.
_RUNNER = (
    "import resource, sys\n"
    "from regionclip.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "print('PEAK_RSS_MB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, flush=True)\n"
    "sys.exit(rc)\n"
)


def fabricate_official_inputs(root: Path, preset: str, embed_dim: int) -> dict[str, str]:
    """Random CLIP ``.pt``, concept ``.pth`` + names, R50-FPN RPN and two ~800 px shards under ``root``."""
    torch.manual_seed(0)
    clip = regionclip.create_model(preset)
    assert clip.embed_dim == embed_dim
    weights = root / f"{preset}.pt"
    torch.save(clip.state_dict(), weights)  # OpenAI key layout, plain state dict
    del clip

    names = [f"concept{i}" for i in range(N_CONCEPTS)]
    names_file = root / "nouns.txt"
    names_file.write_text("\n".join(names) + "\n", encoding="utf-8")
    bank = root / f"concept_emb_{preset}.pth"
    torch.save(torch.randn(N_CONCEPTS, embed_dim), bank)

    # the official pretraining RPN: detectron2 R50-FPN (rpn_lvis_866), anchors 32..512 on P2..P6,
    # 1000 pre-NMS boxes per level; the pretraining preset sets NMS 0.5 and 300 post-NMS
    rpn_cfg = Detectron2RPNConfig(arch="R50-FPN", pre_nms_topk=1000)
    torch.manual_seed(1)
    rpn = build_detectron2_rpn(rpn_cfg)
    with torch.no_grad():  # random but sane objectness/deltas: small deltas keep boxes near the anchors
        for p in rpn.rpn_head.parameters():
            p.mul_(0.01)
    rpn_path = save_detectron2_rpn(rpn, rpn_cfg, root / "rpn_lvis_866.safetensors")

    rng = np.random.default_rng(0)
    shards = []
    for s in range(2):
        shard = root / f"cc3m_{s:05d}.tar"
        with tarfile.open(shard, "w") as tar:
            buf = io.BytesIO()
            pixels = rng.integers(0, 255, (600, 800, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
            files = {"jpg": buf.getvalue(), "txt": f"a photo of a {names[s]} on a table".encode()}
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{s:09d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        shards.append(str(shard))
    return {
        "weights": str(weights),
        "bank": str(bank),
        "names": str(names_file),
        "rpn": str(rpn_path),
        "shards": json.dumps(shards),
    }


def run_official_one_step(tmp_path: Path, yaml: str, preset: str, embed_dim: int) -> dict:
    files = fabricate_official_inputs(tmp_path, preset, embed_dim)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-c",
        _RUNNER,
        "pretrain",
        "--config",
        yaml,
        f"model.weights={files['weights']}",
        f"concepts.bank={files['bank']}",
        f"concepts.names={files['names']}",
        f"proposals.rpn_checkpoint={files['rpn']}",
        f"data.shards={files['shards']}",
        "train.max_steps=1",
        "train.batch_size=1",
        "train.num_workers=0",
        "train.progress=false",
        "device=cpu",
        f"out_dir={out}",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    peak = float(proc.stdout.split("PEAK_RSS_MB")[-1].split()[0])

    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == 1 and logged[0]["step"] == 1
    for key in ("loss_region_concept", "loss_region_distill", "loss_image_text"):
        assert key in logged[0] and math.isfinite(logged[0][key]), (key, logged[0])
    assert logged[0]["regions"] == 100  # 300 RPN proposals, 100 sampled (official)
    student = regionclip.create_model(preset, str(out / "student.safetensors"))
    assert student.embed_dim == embed_dim
    assert (out / "checkpoints" / "step_00000001.pt").is_file()
    step_s = float(proc.stderr.split("pretrained 1 steps (resumed from 0) in ")[1].split(" s")[0])
    report = {"config": yaml, "wall_s": round(wall, 1), "train_s": step_s, "peak_rss_mb": round(peak)}
    print(json.dumps({**report, "losses": {k: v for k, v in logged[0].items() if k.startswith("loss")}}))
    return report


@pytest.mark.slow  # ~1-2 min on 2 shared cores: RN50 at 800x1067, 100 regions, R50-FPN RPN
def test_official_rn50_config_runs_one_step(tmp_path):
    run_official_one_step(tmp_path, "configs/pretrain_rn50_cc3m.yaml", "RN50", 1024)


@pytest.mark.slow  # ~3-5 min on 2 shared cores: RN50x4 (RoI 18x18) at 800x1067, 100 regions
def test_official_rn50x4_config_runs_one_step(tmp_path):
    run_official_one_step(tmp_path, "configs/pretrain_rn50x4_cc3m.yaml", "RN50x4", 640)
