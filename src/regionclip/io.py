"""Atomic file writes: every output and checkpoint is written to a temporary file and renamed into place,
so an interrupted run never leaves a half-written file where a complete one was; and :func:`check_file`,
the one check that a configured input file is set and exists."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from regionclip.errors import CheckpointError, ConfigError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and rename ``tmp_path`` to ``path`` (same folder, so the rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def check_file(path: str | Path | None, what: str) -> Path:
    """``path`` as a :class:`Path` when it names an existing file; else a one-line error naming the setting
    ``what`` (:class:`ConfigError` when unset, :class:`CheckpointError` when the file is missing)."""
    if not path:
        raise ConfigError(f"{what} is not set")
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{what}: file not found: {p}")
    return p
