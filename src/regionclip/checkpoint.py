"""The project's checkpoint format: one ``.safetensors`` file holding the weights and, in its metadata, a
JSON config (kind, model preset, and whatever the producer needs to rebuild the model) and, for image models,
a ``preprocess`` record (:class:`~regionclip.preprocess.Preprocess`: test size, interpolation, pixel
statistics; :func:`read_preprocess` reads it, or what an older file implies). A checkpoint loads
with no other file, and loading never executes code (safetensors stores raw tensors only). Files are
written atomically (temporary file + rename).

Training state for exact resume (optimizer, scheduler, RNG, data position) lives in the engine's separate
``.pt`` files, read with ``torch.load(weights_only=True)`` (see :mod:`regionclip.engine.checkpoints`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from regionclip.errors import CheckpointError
from regionclip.io import atomic_write
from regionclip.preprocess import Preprocess, legacy_preprocess

FORMAT = "regionclip"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``state_dict`` (name -> tensor), its ``kind`` and its ``config`` mapping."""

    state_dict: dict[str, Tensor]
    kind: str
    config: dict[str, Any]


def save_checkpoint(
    path: str | Path,
    state_dict: dict[str, Tensor],
    kind: str,
    config: dict[str, Any],
    preprocess: Preprocess | None = None,
) -> Path:
    """Write ``state_dict`` and ``config`` (JSON-serialisable) as a ``kind`` checkpoint, atomically;
    ``preprocess``: the images' test-time preparation, recorded in the manifest (image models; None: what a
    legacy ``config["input"]`` says, if anything)."""
    tensors = {}
    seen: dict[int, str] = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach().to("cpu").contiguous()
        key = tensor.untyped_storage().data_ptr()
        if key in seen and tensor.numel() > 0:
            tensor = tensor.clone()  # safetensors refuses tensors that share memory
        seen[key] = name
        tensors[name] = tensor
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "kind": kind,
        "config": json.dumps(config),
    }
    preprocess = preprocess or legacy_preprocess(kind, config)
    if preprocess is not None:
        metadata["preprocess"] = json.dumps(preprocess.to_dict())
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_checkpoint_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a regionclip checkpoint, or raise :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({err})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: a safetensors file but not a regionclip checkpoint (no 'format' metadata)"
        )
    return metadata


@overload
def read_preprocess(path: str | Path, default: Preprocess) -> Preprocess: ...
@overload
def read_preprocess(path: str | Path, default: None = None) -> Preprocess | None: ...
def read_preprocess(path: str | Path, default: Preprocess | None = None) -> Preprocess | None:
    """The :class:`~regionclip.preprocess.Preprocess` recorded in the checkpoint ``path`` (metadata only; the
    tensors are not read); for a file written before the record: what its legacy ``input`` config implies
    (detector ``min_size``, RPN ``short_size``), else ``default``."""
    metadata = read_checkpoint_metadata(path)
    if "preprocess" in metadata:
        try:
            data = json.loads(metadata["preprocess"])
        except ValueError:
            raise CheckpointError(f"{path}: the preprocess record is not JSON") from None
        return Preprocess.from_dict(data, str(path))
    try:
        config = json.loads(metadata.get("config", "{}"))
    except ValueError:
        raise CheckpointError(f"{path}: the config record is not JSON") from None
    return legacy_preprocess(metadata.get("kind", "?"), config) or default


def load_checkpoint(path: str | Path, kind: str | tuple[str, ...] | None = None) -> Checkpoint:
    """Load a regionclip checkpoint; with ``kind``, refuse a checkpoint of another kind."""
    path = Path(path)
    metadata = read_checkpoint_metadata(path)
    found = metadata.get("kind", "?")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and found not in kinds:
        raise CheckpointError(
            f"{path}: is a '{found}' checkpoint, expected {' or '.join(repr(k) for k in kinds)}"
        )
    try:
        config = json.loads(metadata.get("config", "{}"))
        with safe_open(str(path), framework="pt") as f:
            state_dict = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt checkpoint ({err})") from None
    return Checkpoint(state_dict, found, config)


def load_state_dict_strict(module: nn.Module, state_dict: dict[str, Tensor], source: str) -> None:
    """Load ``state_dict`` into ``module`` requiring the same keys and shapes.

    Raises :class:`CheckpointError` that names ``source`` and lists missing, unexpected and mismatching keys.
    Floating tensors are cast to the module's dtype.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if keys:
                shown = ", ".join(keys[:6]) + (f", ... ({len(keys)} in all)" if len(keys) > 6 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(f"{source}: does not fit the model ({'; '.join(parts)})")
    cast = {k: (v.to(own[k].dtype) if v.is_floating_point() else v) for k, v in state_dict.items()}
    module.load_state_dict(cast, strict=True)


def fingerprint(tensors: dict[str, Tensor]) -> str:
    """A short content hash of named tensors (used to key caches by model weights)."""
    import hashlib

    digest = hashlib.sha1()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]
