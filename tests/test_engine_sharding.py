"""Sharded evaluation and detection (`regionclip.engine.sharding`): the strided shards, and `regionclip eval` /
`regionclip detect` under `torchrun --nproc_per_node 2` (gloo, CPU) giving exactly the results of one process,
with each rank loading only its share of the images (recorded by a launcher that wraps the image reader and
then runs the real command line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from regionclip.cli import main
from regionclip.data.coco import CocoDetection
from regionclip.engine.distributed import DistInfo
from regionclip.engine.sharding import gather_lists, inference_job, shard_indices
from test_evaluate import detector_ckpt  # noqa: F401 - module fixtures reused
from test_train_detector import make_set, world  # noqa: F401

LAUNCHER = """
import os, sys
import regionclip.data.coco as coco

_load = coco.CocoDetection.load


def load_and_record(self, index):
    path = os.path.join(os.environ["SEEN_DIR"], "rank" + os.environ.get("RANK", "0") + ".txt")
    with open(path, "a", encoding="utf-8") as f:
        f.write(self.images[index]["file_name"] + "\\n")
    return _load(self, index)


coco.CocoDetection.load = load_and_record
from regionclip.cli import main
from regionclip.data.coco import CocoDetection

sys.exit(main(sys.argv[1:]))
"""


def test_shards_are_strided_disjoint_and_complete():
    shards = [shard_indices(7, DistInfo(rank=r, world_size=3)) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(i for s in shards for i in s) == list(range(7))
    assert shard_indices(2, DistInfo(rank=2, world_size=3)) == []  # more ranks than items
    one = inference_job("cpu")  # no torchrun: one process on the device as given
    assert (one.rank, one.world_size, str(one.device)) == (0, 1, "cpu")
    assert gather_lists([1, 2], one) == [1, 2]


def _torchrun(args: list[str], seen: Path, launcher: Path | None) -> subprocess.CompletedProcess:
    target = [str(launcher)] if launcher else ["-m", "regionclip"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *target]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEEN_DIR": str(seen)}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow  # ~40 s: two torchrun jobs of two processes that each import torch
def test_torchrun_eval_and_detect_equal_one_process(world, detector_ckpt, tmp_path, monkeypatch):  # noqa: F811
    root = world["root"]
    val = make_set(root, "val5", 5, seed=7)  # 5 images: shards of 3 and 2
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER, encoding="utf-8")
    seen = tmp_path / "seen"
    seen.mkdir()
    common = ["--checkpoint", str(detector_ckpt), "--data", str(val), "--images", str(root / "val5"),
              "--device", "cpu", "--precision", "fp32", f"cache_dir={root / 'cache'}", "progress=false",
              "score_thresh=0.0"]  # fmt: skip

    assert main(["eval", "--out", str(tmp_path / "one.json"), *common]) == 0
    proc = _torchrun(["eval", "--out", str(tmp_path / "two.json"), *common], seen, launcher)
    assert proc.returncode == 0, proc.stderr[-4000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two["protocol"]["world_size"] == 2 and one["protocol"]["world_size"] == 1
    assert two["protocol"]["precision"] == "fp32"
    skip = {"seconds"}
    assert {k: v for k, v in two["metrics"].items() if k not in skip} == {
        k: v for k, v in one["metrics"].items() if k not in skip
    }
    dets_one = (tmp_path / "one_detections.json").read_text()
    assert dets_one == (tmp_path / "two_detections.json").read_text() and json.loads(dets_one)
    shares = [sorted((seen / f"rank{r}.txt").read_text().split()) for r in range(2)]
    assert shares == [["000.png", "002.png", "004.png"], ["001.png", "003.png"]]

    # detect: plain `torchrun -m regionclip detect`, same arguments as one process
    args = ["detect", str(root / "val5"), "--checkpoint", str(detector_ckpt), "--vocab", "red block,blue block",
            "--min-size", "64", "--max-size", "96", "--score-thresh", "0", "--precision", "fp32", "--no-png"]  # fmt: skip
    monkeypatch.setenv("REGIONCLIP_CACHE", str(root / "cache"))
    assert main([*args, "--out", str(tmp_path / "d1")]) == 0
    proc = _torchrun([*args, "--out", str(tmp_path / "d2")], seen, None)
    assert proc.returncode == 0, proc.stderr[-4000:]
    d1, d2 = (json.loads((tmp_path / d / "detections.json").read_text()) for d in ("d1", "d2"))
    assert d1 == d2 and d1
    s1, s2 = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("d1", "d2"))
    assert s1["images"] == s2["images"] and len(s1["images"]) == 5
    assert (s1["world_size"], s2["world_size"]) == (1, 2)


def test_two_ranks_in_one_process_merge_to_the_one_process_results(
    world,  # noqa: F811
    detector_ckpt,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    """The eval merge without torchrun: rank 1 runs first and its gathered share is handed to rank 0."""
    import regionclip.tasks.evaluate as evaluate

    root = world["root"]
    val = make_set(root, "val5f", 5, seed=7)
    common = ["--checkpoint", str(detector_ckpt), "--data", str(val), "--images", str(root / "val5f"),
              "--device", "cpu", "--precision", "fp32", f"cache_dir={root / 'cache'}", "progress=false",
              "score_thresh=0.0"]  # fmt: skip
    assert main(["eval", "--out", str(tmp_path / "one.json"), *common]) == 0
    parts, seen = {}, {}
    real_load = CocoDetection.load

    def run_rank(rank: int) -> None:
        dist = DistInfo(rank=rank, world_size=2)

        def gather(items, _dist):
            parts[rank] = items
            return [*parts.get(0, items), *parts[1]] if rank == 0 else items

        def load(self, index):
            seen.setdefault(rank, []).append(index)
            return real_load(self, index)

        monkeypatch.setattr(evaluate, "inference_job", lambda device: dist)
        monkeypatch.setattr(evaluate, "gather_lists", gather)
        monkeypatch.setattr(CocoDetection, "load", load)
        assert main(["eval", "--out", str(tmp_path / "two.json"), *common]) == 0

    run_rank(1)
    assert not (tmp_path / "two.json").exists()  # only rank 0 writes
    run_rank(0)
    assert seen == {0: [0, 2, 4], 1: [1, 3]}
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two["protocol"]["world_size"] == 2
    assert {k: v for k, v in two["metrics"].items() if k != "seconds"} == {
        k: v for k, v in one["metrics"].items() if k != "seconds"
    }
    assert (tmp_path / "one_detections.json").read_text() == (tmp_path / "two_detections.json").read_text()
