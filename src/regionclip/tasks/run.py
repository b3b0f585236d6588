"""The run setup shared by every training task: :func:`setup_run` starts the process group (or one process),
claims and locks the output folder (``engine/runs.py``), writes the resolved config (``OUT/config.yaml``) and
seeds torch, in that order, on the main rank for what writes files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from regionclip.config import config_to_dict, save_config
from regionclip.engine.distributed import DistInfo, init_distributed
from regionclip.engine.runs import claim_out_dir


@dataclass
class Run:
    """A started run: this process's :class:`DistInfo`, the claimed output folder and the resolved config."""

    dist: DistInfo  # rank, world size and device of this process
    out_dir: Path  # the output folder (claimed by the main rank)
    cfg: Any  # the run's typed config
    config: dict  # the resolved config as a dict (stored in the training checkpoints)

    def write_config(self) -> None:
        """Write ``out_dir/config.yaml`` on the main rank (atomically)."""
        if self.dist.is_main:
            save_config(self.cfg, self.out_dir / "config.yaml")


def setup_run(
    cfg: Any, out_dir: str | Path, device: str | None, seed: int | None = None, write_config: bool = True
) -> Run:
    """Start the run of ``cfg`` writing to ``out_dir``.

    device: ``cpu``, ``cuda`` or None (CUDA when available; torchrun ranks get their local GPU); seed: torch's
    global seed set after the setup (the initial weights, the same on every rank; None: left alone);
    write_config: write ``config.yaml`` now (False: the task calls :meth:`Run.write_config` after its eager
    checks, so that a refused run leaves an earlier config alone).
    """
    dist = init_distributed(device)
    run = Run(dist, Path(out_dir), cfg, config_to_dict(cfg))
    if dist.is_main:
        claim_out_dir(run.out_dir)  # one run per output folder (engine/runs.py)
    if write_config:
        run.write_config()
    if seed is not None:
        torch.manual_seed(seed)
    return run
