"""Loading CLIP models from local files: OpenAI's released formats and the project's own; the one CLIP
factory (:func:`create_model`, :func:`load_clip`) and the one way to attach a text tower
(:func:`attach_text_tower`, :func:`copy_text_tower`, :func:`text_state`).

OpenAI released CLIP as TorchScript archives (``RN50.pt``) whose weights are partly fp16; a plain
``torch.save`` state dict with the same key names is the other common form. Both load here without
executing pickled code (a TorchScript archive is read by ``torch.jit.load``, which never unpickles Python
objects; a plain state dict by ``torch.load(weights_only=True)``). fp16 weights become fp32; the
non-parameter entries ``input_resolution``, ``context_length``, ``vocab_size`` and BatchNorm's
``num_batches_tracked`` are dropped.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from regionclip.checkpoint import (
    load_checkpoint,
    load_state_dict_strict,
    read_checkpoint_metadata,
    save_checkpoint,
)
from regionclip.clip.model import CLIP
from regionclip.clip.presets import ModelPreset, get_preset
from regionclip.errors import CheckpointError
from regionclip.preprocess import DETECTION_TEST, Preprocess

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


def save_clip(
    model: torch.nn.Module,
    path: str | Path,
    extra: dict | None = None,
    preprocess: Preprocess = DETECTION_TEST,
) -> Path:
    """Save a CLIP model as a regionclip checkpoint (kind ``clip``) carrying its preset and its test-time
    preprocessing (default: the zero-shot detection resize, 800 / 1333 bilinear, CLIP statistics)."""
    return save_checkpoint(
        path, model.state_dict(), "clip", {"preset": model.preset.to_dict(), **(extra or {})}, preprocess
    )


def create_model(name: str, pretrained: str | None = None) -> CLIP:
    """Build the CLIP preset ``name`` (see ``list_models()``), randomly initialised or from a local file.

    pretrained: ``None`` or the path of an OpenAI-format checkpoint (TorchScript archive like ``RN50.pt``
    or a plain state dict) or of a regionclip ``.safetensors`` CLIP checkpoint. The model is in eval mode.
    """
    model = CLIP(get_preset(name))
    if pretrained is not None:
        load_clip_weights(model, pretrained)
    return model.eval()


def load_clip(path: str | Path, preset: str | ModelPreset | dict | None = None, what: str = "preset") -> CLIP:
    """The CLIP model of the file ``path``, in eval mode: every command and the library load CLIPs here.

    A regionclip ``clip`` checkpoint (``.safetensors``: a CLIP model or a pretrained student) rebuilds alone;
    its preset must equal ``preset`` when one is given. Any other file is an OpenAI CLIP (TorchScript
    ``.pt`` or a state dict) and needs ``preset`` (a name, a :class:`ModelPreset` or its dict); ``what``
    names the setting that gives it in the error message. Whether the text tower is real:
    :func:`has_text_tower`.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        kind = read_checkpoint_metadata(path).get("kind")
        if kind != "clip":
            raise CheckpointError(
                f"{path}: is a '{kind}' checkpoint, expected a 'clip' checkpoint "
                "(a CLIP model or the student.safetensors written by regionclip pretrain)"
            )
        ckpt = load_checkpoint(path, kind="clip")
        model = CLIP(ModelPreset.from_dict(ckpt.config["preset"]))
        wanted = _preset(preset)
        if wanted is not None and model.preset.name != wanted.name:
            raise CheckpointError(
                f"{path}: holds a '{model.preset.name}' model, not '{wanted.name}' ({what})"
            )
        load_state_dict_strict(model, ckpt.state_dict, str(path))
        return model.eval()
    wanted = _preset(preset)
    if wanted is None:
        raise CheckpointError(
            f"{path}: not a regionclip checkpoint; set {what} to its CLIP preset (e.g. RN50)"
        )
    model = CLIP(wanted)
    load_clip_weights(model, path)
    return model.eval()


def _preset(preset: str | ModelPreset | dict | None) -> ModelPreset | None:
    if preset is None or isinstance(preset, ModelPreset):
        return preset
    if isinstance(preset, dict):
        return ModelPreset.from_dict(preset)
    return get_preset(preset)


def has_text_tower(path: str | Path) -> bool:
    """Whether the CLIP file ``path`` has a real text tower (official converted students record
    ``text_tower: missing``; OpenAI files always have one)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return True
    config = json.loads(read_checkpoint_metadata(path).get("config", "{}"))
    return config.get("text_tower", "present") != "missing"


TEXT_EXCLUDED = ("visual.", "logit_scale")  # the keys of a CLIP state dict that are not its text tower


def text_state(clip: torch.nn.Module) -> dict[str, Tensor]:
    """The CLIP text-tower tensors (every non-visual key but ``logit_scale``), as detector checkpoints store them."""
    return {k: v for k, v in clip.state_dict().items() if not k.startswith(TEXT_EXCLUDED)}


def copy_text_tower(clip: torch.nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Copy the text-tower tensors ``state`` (CLIP key names) into ``clip``; every text key must be given,
    with its shape (errors name ``source``)."""
    own = text_state(clip)
    missing = [k for k in own if k not in state]
    if missing:
        raise CheckpointError(f"{source}: text encoder incomplete (missing {missing[:3]})")
    with torch.no_grad():
        for key, target in own.items():
            value = state[key]
            if value.shape != target.shape:
                raise CheckpointError(
                    f"{source}: text tensor {key} has shape {tuple(value.shape)}, expected {tuple(target.shape)}"
                )
            target.copy_(value)


def attach_text_tower(clip: torch.nn.Module, path: str | Path) -> bool:
    """Give ``clip`` the text tower of the CLIP file ``path`` (regionclip ``clip`` checkpoint of the same
    preset, or OpenAI ``.pt``); False (nothing copied) when that file has no real text tower."""
    if not has_text_tower(path):
        return False
    donor = load_clip(path, clip.preset, what=f"the CLIP preset of {path}")
    copy_text_tower(clip, text_state(donor), str(path))
    return True
