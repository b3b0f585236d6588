"""Numeric precision of the networks: ``precision: fp32 | bf16 | auto``, resolved once against the device.

``bf16`` runs the convolution / transformer towers under ``torch.autocast(dtype=torch.bfloat16)`` with
channels_last weights; everything after them stays fp32: each autocast region casts its outputs back to
float32, so losses, the softmax over concepts, box decoding, (soft-)NMS and evaluation see fp32 tensors.
The weights themselves stay fp32 (autocast casts per operation), so checkpoints do not change.

``auto`` picks ``bf16`` where the hardware computes it natively and fast: a CUDA GPU with bf16 support
(``torch.cuda.is_bf16_supported()``: Ampere and later), or a CPU with AMX-BF16 or AVX512-BF16 (read from
``/proc/cpuinfo``, confirmed by ``torch.backends.cpu.get_cpu_capability()``); ``fp32`` elsewhere. It says
what it picked in one line on stderr. ``bf16`` asked for explicitly is honoured on any CPU (emulated,
slow where there is no native support); a GPU without bf16 is an error.

The autocast regions are the modules that carry a ``compute_dtype`` attribute (``None`` = fp32):
:class:`regionclip.regions.RegionEncoder` (trunk and region head), the CLIP towers
(:class:`regionclip.clip.model.CLIP`: ``encode_image`` / ``encode_text``) and the proposal networks
(:mod:`regionclip.proposals`). :func:`apply_precision` sets it on every such module of a model.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from regionclip.errors import ConfigError

PrecisionSetting = Literal["fp32", "bf16", "auto"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "auto")


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``name`` is ``fp32`` or ``bf16``; ``reason`` says why (for the log line)."""

    name: Literal["fp32", "bf16"]  # what runs
    device_type: str  # "cpu" or "cuda"
    requested: str = "fp32"  # the setting it was resolved from
    reason: str = ""  # why (hardware found)

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, ``None`` for fp32."""
        return torch.bfloat16 if self.name == "bf16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of this precision (a no-op for fp32)."""
        return autocast(self.device_type, self.dtype)


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags of the first processor in ``cpuinfo`` (empty when it cannot be read)."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bf16_hardware(flags: set[str] | None = None) -> str | None:
    """``"AMX-BF16"``, ``"AVX512-BF16"`` or ``None``: the CPU's native bf16 matrix instructions.

    flags: CPU feature flags (default: this machine's). torch's own dispatch level
    (``get_cpu_capability``) must also be AVX512 or better for its bf16 kernels to use them.
    """
    flags = cpu_flags() if flags is None else flags
    capability = torch.backends.cpu.get_cpu_capability()
    if "AVX512" not in capability:
        return None
    if "amx_bf16" in flags:
        return "AMX-BF16"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    return None


def resolve_precision(
    setting: str, device: torch.device | str, log: bool = True, flags: set[str] | None = None
) -> Precision:
    """Resolve ``setting`` (fp32, bf16, auto) for ``device``; with ``log``, say what ``auto`` picked."""
    if setting not in PRECISIONS:
        raise ConfigError(f"precision: expected one of {', '.join(PRECISIONS)}, got {setting!r}")
    device = torch.device(device)
    if device.type == "cuda":
        fast = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        hardware = torch.cuda.get_device_name(device) if fast else None
        if setting == "bf16" and not fast:
            raise ConfigError(
                f"precision: bf16 asked for, but {device} has no bf16 support; use fp32 or auto"
            )
    elif device.type == "cpu":
        hardware = cpu_bf16_hardware(flags)
        fast = hardware is not None
    else:
        hardware, fast = None, False
    if setting == "fp32" or (setting == "auto" and not fast):
        name = "fp32"
        reason = "asked for" if setting == "fp32" else f"no native bf16 on {device.type}"
    else:
        name = "bf16"
        reason = (
            f"{hardware} on {device.type}" if fast else f"asked for; {device.type} has no native bf16 (slow)"
        )
    precision = Precision(name, device.type, setting, reason)
    if log and setting == "auto":
        print(f"regionclip: precision auto -> {name} ({reason})", file=sys.stderr)
    return precision


def set_flush_denormal(enabled: bool) -> bool:
    """Flush denormal floats to zero on the CPU (x86 FTZ/DAZ) when ``enabled``, or keep them; returns whether
    the CPU supports the mode.

    Denormals (|x| < 1.2e-38 in fp32) appear in the backward pass of a saturated attention softmax (the
    attention pool's near-zero weights): matrix products over them run about 6x slower on x86 (measured: the
    attention pool's [2560, 1024] x [1024, 1024] gradient products, 180 ms -> 25 ms). Flushing changes only
    values below 1.2e-38. The setting is process-wide and stays after the call (``torch.set_flush_denormal``).
    """
    return bool(torch.set_flush_denormal(enabled))


def autocast(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on ``device_type``, or a no-op when ``dtype`` is ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def to_float(value: Any) -> Any:
    """``value`` with every floating tensor (also inside lists, tuples and dicts) cast to float32."""
    if isinstance(value, Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, list):
        return [to_float(v) for v in value]
    if isinstance(value, tuple):
        return tuple(to_float(v) for v in value)
    if isinstance(value, dict):
        return {k: to_float(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def compute_region(module: nn.Module, device_type: str) -> Iterator[None]:
    """Run the body under ``module.compute_dtype``'s autocast (no-op when it is ``None`` or absent).

    Used inside the modules that own an autocast region; the caller casts the outputs with :func:`to_float`.
    """
    dtype = getattr(module, "compute_dtype", None)
    with autocast(device_type, dtype):
        yield


def apply_precision(model: nn.Module, precision: Precision) -> nn.Module:
    """Set ``precision`` on every autocast region of ``model`` (see the module doc); bf16 also converts the
    4-d weights to channels_last. Returns ``model`` (changed in place)."""
    dtype = precision.dtype
    for module in model.modules():
        if hasattr(module, "compute_dtype"):
            module.compute_dtype = dtype
    if dtype is not None:
        model.to(memory_format=torch.channels_last)
    return model


def add_precision_argument(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """The ``--precision`` flag of a command (``default`` None: the config's value)."""
    shown = default if default is not None else "the config's"
    parser.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default=default,
        help=f"fp32, bf16 (autocast + channels_last; outputs, losses and NMS stay fp32) or auto "
        f"(bf16 where the CPU/GPU computes it natively); default: {shown}",
    )


def training_setting(precision: str, amp: str | None) -> str:
    """The precision setting of a training config, mapping the old ``amp`` key: ``amp: bf16`` (older
    configs; it was honoured on GPUs only) means ``precision: bf16``; ``amp: none`` leaves ``precision``."""
    if amp not in (None, "none", "bf16"):
        raise ConfigError(f"train.amp: expected none or bf16 (deprecated; use train.precision), got {amp!r}")
    return "bf16" if amp == "bf16" else precision


def precision_overrides(args: argparse.Namespace, key: str = "train.precision") -> list[str]:
    """The ``--precision`` flag of a training command as a config override (none when not given)."""
    value = getattr(args, "precision", None)
    return [] if value is None else [f"{key}={value}"]
