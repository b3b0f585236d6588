"""Loading CLIP weights from local files: OpenAI's released formats and the project's own.

OpenAI released CLIP as TorchScript archives (``RN50.pt``) whose weights are partly fp16; a plain
``torch.save`` state dict with the same key names is the other common form. Both load here without
executing pickled code (a TorchScript archive is read by ``torch.jit.load``, which never unpickles Python
objects; a plain state dict by ``torch.load(weights_only=True)``). fp16 weights become fp32; the
non-parameter entries ``input_resolution``, ``context_length``, ``vocab_size`` and BatchNorm's
``num_batches_tracked`` are dropped.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from regionclip.checkpoint import load_checkpoint, load_state_dict_strict, save_checkpoint
from regionclip.errors import CheckpointError

OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from a TorchScript archive or a ``torch.save`` file, without executing code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if _is_torchscript(path):
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused to load: the file contains pickled objects other than tensors "
            f"(loading it could execute code): {str(err).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({str(err).splitlines()[0]})"
        ) from None
    if isinstance(loaded, dict) and "state_dict" in loaded and isinstance(loaded["state_dict"], dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), got {type(loaded).__name__}")
    return loaded


def openai_to_regionclip(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """OpenAI CLIP keys -> this project's CLIP keys (identical names); fp32; extras dropped."""
    out = {}
    for key, value in state_dict.items():
        if key in OPENAI_EXTRA_KEYS or key.endswith("num_batches_tracked"):
            continue
        out[key] = value.float() if value.is_floating_point() else value
    return out


def load_clip_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load OpenAI-format or regionclip CLIP weights from ``path`` into ``model`` (strict keys and shapes)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        ckpt = load_checkpoint(path, kind="clip")
        preset = ckpt.config.get("preset", {}).get("name")
        if preset is not None and preset != model.preset.name:
            raise CheckpointError(f"{path}: holds a '{preset}' model, not '{model.preset.name}'")
        state_dict = ckpt.state_dict
    else:
        state_dict = openai_to_regionclip(read_state_dict(path))
    load_state_dict_strict(model, state_dict, str(path))


def save_clip(model: torch.nn.Module, path: str | Path, extra: dict | None = None) -> Path:
    """Save a CLIP model as a regionclip checkpoint (kind ``clip``) carrying its preset."""
    return save_checkpoint(
        path, model.state_dict(), "clip", {"preset": model.preset.to_dict(), **(extra or {})}
    )


def load_clip(path: str | Path) -> torch.nn.Module:
    """Build and load a CLIP model from a regionclip ``clip`` checkpoint alone (the preset is inside)."""
    from regionclip.clip.model import CLIP
    from regionclip.clip.presets import ModelPreset

    ckpt = load_checkpoint(path, kind="clip")
    model = CLIP(ModelPreset.from_dict(ckpt.config["preset"]))
    load_state_dict_strict(model, ckpt.state_dict, str(path))
    return model.eval()
