"""Tests of regionclip.engine.runs and the loop's use of it: SIGINT / SIGTERM write a resumable checkpoint
and stop with one line, a failed checkpoint write (full disk) keeps the previous one, and an output folder
in use by a live run is refused while a stale lock is taken over."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from regionclip.cli import main
from regionclip.engine import checkpoints as ckpt_module
from regionclip.engine.checkpoints import list_checkpoints, load_training_state
from regionclip.engine.data import map_style_batches
from regionclip.engine.distributed import DistInfo
from regionclip.engine.loop import TrainConfig, train
from regionclip.engine.runs import LOCK_NAME, TrainingInterrupted, claim_out_dir
from regionclip.errors import CheckpointError, RegionCLIPError
from test_engine import _collate, _Noisy, _Task
from test_train_clip import _write_pairs


def _cfg(steps: int, every: int = 100) -> TrainConfig:
    return TrainConfig(
        max_steps=steps, batch_size=4, lr=0.05, warmup_steps=1, checkpoint_every=every, log_every=1,
        progress=False, seed=5,
    )  # fmt: skip


def _batches():
    return map_style_batches(_Noisy(), 4, seed=5, dist=DistInfo(), collate=_collate)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_writes_a_resumable_checkpoint_and_stops_with_one_line(tmp_path, sig):
    before = signal.getsignal(sig)

    def send_at_step_3(step, _logged):
        if step == 3:
            os.kill(os.getpid(), sig)

    torch.manual_seed(123)
    with pytest.raises(TrainingInterrupted) as err:
        train(_Task(), _batches(), _cfg(10), tmp_path, DistInfo(), on_log=send_at_step_3)
    message = str(err.value)
    assert "\n" not in message and f"{signal.Signals(sig).name} at step 3/10" in message
    assert "step_00000003.pt" in message and isinstance(err.value, RegionCLIPError)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003.pt"]
    assert signal.getsignal(sig) is before  # handlers restored
    # resuming continues from step 3 and ends where an uninterrupted run ends
    torch.manual_seed(123)
    resumed = _Task()
    result = train(resumed, _batches(), _cfg(10), tmp_path, DistInfo())
    assert result.resumed_from == 3 and result.steps == 10
    torch.manual_seed(123)
    straight = _Task()
    train(straight, _batches(), _cfg(10), tmp_path / "straight", DistInfo())
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values(), strict=True):
        assert torch.allclose(a, b)


def test_full_disk_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    torch.manual_seed(123)
    train(_Task(), _batches(), _cfg(2, every=2), tmp_path, DistInfo())
    good = list_checkpoints(tmp_path)[-1]
    good_bytes = good.read_bytes()
    real_save = torch.save

    def save_half_then_enospc(obj, path):
        real_save(obj, path)
        with open(path, "r+b") as f:  # half the file reached the disk, then it filled up
            f.truncate(os.path.getsize(path) // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt_module.torch, "save", save_half_then_enospc)
    torch.manual_seed(123)
    with pytest.raises(CheckpointError) as err:
        train(_Task(), _batches(), _cfg(4, every=2), tmp_path, DistInfo())
    message = str(err.value)
    assert "\n" not in message and "No space left on device" in message and good.name in message
    assert list_checkpoints(tmp_path) == [good] and good.read_bytes() == good_bytes
    assert load_training_state(good)["step"] == 2
    assert not [p for p in good.parent.iterdir() if p.suffix == ".tmp"]  # no half-written temp file left


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_output_folder_in_use_is_refused_and_a_stale_lock_taken_over(tmp_path):
    import socket

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / LOCK_NAME).write_text(f"{os.getppid()} {socket.gethostname()}\n")  # a live process
    with pytest.raises(RegionCLIPError, match=rf"in use by another run \(pid {os.getppid()}"):
        claim_out_dir(busy)
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / LOCK_NAME).write_text(f"{_dead_pid()} {socket.gethostname()}\n")
    lock = claim_out_dir(stale)
    assert lock.read_text().split()[0] == str(os.getpid())
    assert claim_out_dir(stale) == lock  # the same process may claim it again


def test_cli_refuses_a_folder_in_use_without_touching_it(tmp_path, capsys):
    import socket

    captions, images = _write_pairs(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{os.getppid()} {socket.gethostname()}\n")
    (out / "config.yaml").write_text("first run's config\n")
    code = main(["train-clip", "model=RN-micro", f"captions_json=[{captions}]", f"image_dir=[{images}]",
                 "train.max_steps=2", "train.batch_size=4", "train.progress=false", f"out_dir={out}", "device=cpu"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "in use by another run" in err
    assert (out / "config.yaml").read_text() == "first run's config\n"
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, "config.yaml"]


@pytest.mark.slow  # two CLI subprocesses (~35 s on 2 loaded cores); the in-process signal test is the fast case
def test_cli_sigint_during_train_clip_exits_nonzero_with_one_line_and_resumes(tmp_path):
    captions, images = _write_pairs(tmp_path)
    out = tmp_path / "run"
    args = [sys.executable, "-m", "regionclip", "train-clip", "model=RN-micro", f"captions_json=[{captions}]",
            f"image_dir=[{images}]", "train.batch_size=4", "train.warmup_steps=1", "train.progress=false",
            "train.log_every=1", f"out_dir={out}", "device=cpu"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*args, "train.max_steps=100000"], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while not (out / "metrics.jsonl").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr and len(lines) == 1 and "SIGINT at step" in lines[0]
    assert "run the same command again to resume" in lines[0]
    step = load_training_state(list_checkpoints(out)[-1])["step"]
    assert step >= 1 and not (out / LOCK_NAME).exists()  # the lock went with the process
    done = subprocess.run([*args, f"train.max_steps={step + 1}"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert (out / "clip.safetensors").is_file()
