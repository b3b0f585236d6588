"""The prepared GPU check `benchmarks/gpu.py` runs every section's code on the CPU (`--device cpu --tiny`), so
it cannot be broken before a GPU comes; its JSON has the fields docs/benchmarks.md describes."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_check_runs_its_code_paths_on_the_cpu(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    gpu = importlib.import_module("gpu")
    assert gpu.main(["--device", "cpu", "--tiny"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    c = report["correctness"]
    assert c["region_cosine_min_fp32"] > 0.9999 and c["region_cosine_min_bf16"] >= 0.999
    assert c["top1_equal"] and c["top20_label_agreement"] == 1.0
    for name in ("fp32", "bf16"):
        assert report["inference"][name]["images_per_s"] > 0 and report["inference"][name]["peak_mb"] > 0
    assert report["detector_training"]["images_per_s"] > 0
    batches = report["pretraining"]["batches"]
    assert [b["batch"] for b in batches] == [1, 2] and report["pretraining"]["best"]["images_per_s"] > 0
    assert report["pretraining"]["goal_images_per_s"] == 67.0
    sys.modules.pop("gpu", None)


def test_gpu_check_without_cuda_says_how_to_test_it(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    gpu = importlib.import_module("gpu")
    monkeypatch.setattr(gpu.torch.cuda, "is_available", lambda: False)
    assert gpu.main(["--device", "cuda"]) == 2
    assert "--device cpu --tiny" in json.loads(capsys.readouterr().out)["error"]
    sys.modules.pop("gpu", None)
