"""Training-state checkpoints for exact resume.

One ``step_XXXXXXXX.pt`` per save under ``OUT/checkpoints/``, holding the task's weights, the optimizer
and scheduler state, the step, every RNG state and the resolved config. Written atomically (temporary file +
rename); only the last K are kept. Read with ``torch.load(weights_only=True)``: only tensors and plain
containers are stored (the numpy RNG state is converted to a tensor), so loading never executes code.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regionclip.errors import CheckpointError
from regionclip.io import atomic_write


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Training checkpoints in ``out_dir``, oldest first."""
    folder = checkpoint_dir(out_dir)
    return sorted(folder.glob("step_*.pt")) if folder.is_dir() else []


def save_training_state(out_dir: str | Path, step: int, state: dict[str, Any], keep_last: int) -> Path:
    path = checkpoint_dir(out_dir) / f"step_{step:08d}.pt"
    try:
        atomic_write(path, lambda tmp: torch.save({"step": step, **state, "rng": rng_state()}, tmp))
    except OSError as err:  # e.g. ENOSPC: the temp file is removed, earlier checkpoints are untouched
        previous = list_checkpoints(out_dir)
        kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint"
        raise CheckpointError(
            f"{path}: could not write the training checkpoint ({err.strerror or err}); {kept}"
        ) from None
    for old in list_checkpoints(out_dir)[:-keep_last] if keep_last > 0 else []:
        old.unlink(missing_ok=True)
    return path


def load_training_state(path: str | Path) -> dict[str, Any]:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported as such
        raise CheckpointError(
            f"{path}: unreadable training checkpoint ({str(err).splitlines()[0]})"
        ) from None
