"""How a checkpoint's images are prepared at inference: the typed :class:`Preprocess` record that every
regionclip checkpoint (``clip``, ``rpn``, ``detector``) carries in its manifest (the safetensors metadata key
``preprocess``, :mod:`regionclip.checkpoint`), like open_clip's ``preprocess_cfg``.

Consumers (``Detector.from_pretrained``, ``regionclip eval``, ``regionclip eval-rpn``) read it back with
:func:`regionclip.checkpoint.read_preprocess` so they resize and normalise as the producer did. Files written
before the record existed still load: a detector's legacy ``input.min_size`` / ``input.max_size`` and an RPN's
``input.short_size`` / ``input.max_size`` (bilinear, CLIP statistics) are read in its place, and a file with
neither gets its consumer's old default (:data:`DETECTION_TEST` for detectors and CLIP models, images at
their own size for RPNs: :data:`OWN_SIZE`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from regionclip.errors import CheckpointError
from regionclip.structures import CLIP_PIXEL_MEAN, CLIP_PIXEL_STD

INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass(frozen=True)
class Preprocess:
    """Test-time image preparation: resize (detectron2 ``ResizeShortestEdge``, method reference §11 item 9),
    then ``(x - mean) / std`` on RGB values in [0, 1]."""

    short_size: int | None = 800  # shorter side after resizing, pixels (None: images keep their size)
    max_size: int = 1333  # cap of the longer side after resizing, pixels
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"  # PIL resampling of the resize
    mean: tuple[float, float, float] = CLIP_PIXEL_MEAN  # per-channel RGB mean of [0, 1] pixels
    std: tuple[float, float, float] = CLIP_PIXEL_STD  # per-channel RGB standard deviation

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Any, source: str = "preprocess") -> Preprocess:
        """The record ``data`` (a mapping of the fields), checked; errors name ``source``."""
        if not isinstance(data, dict) or set(data) - {f.name for f in dataclasses.fields(cls)}:
            raise CheckpointError(
                f"{source}: preprocess record: expected the fields of Preprocess, got {data!r}"
            )
        try:
            pre = cls(
                short_size=None if data.get("short_size") is None else int(data["short_size"]),
                max_size=int(data.get("max_size", 1333)),
                interpolation=str(data.get("interpolation", "bilinear")),  # type: ignore[arg-type]
                mean=tuple(float(v) for v in data.get("mean", CLIP_PIXEL_MEAN)),  # type: ignore[arg-type]
                std=tuple(float(v) for v in data.get("std", CLIP_PIXEL_STD)),  # type: ignore[arg-type]
            )
        except (TypeError, ValueError):
            raise CheckpointError(f"{source}: preprocess record has a malformed value: {data!r}") from None
        if pre.interpolation not in INTERPOLATIONS or len(pre.mean) != 3 or len(pre.std) != 3:
            raise CheckpointError(
                f"{source}: preprocess record: expected interpolation in {INTERPOLATIONS} and 3 means / stds, "
                f"got {data!r}"
            )
        return pre

    def check_normalisation(self, source: str) -> Preprocess:
        """``self`` when its statistics are CLIP's (the only normalisation the models apply), else a clear
        error naming ``source``."""
        ours, clip = tuple(self.mean) + tuple(self.std), CLIP_PIXEL_MEAN + CLIP_PIXEL_STD
        close = len(ours) == len(clip) and all(abs(a - b) < 1e-6 for a, b in zip(ours, clip, strict=True))
        if not close:
            raise CheckpointError(
                f"{source}: records pixel mean {list(self.mean)} / std {list(self.std)}; regionclip models "
                f"normalise with CLIP's ({list(CLIP_PIXEL_MEAN)} / {list(CLIP_PIXEL_STD)})"
            )
        return self

    def test_size(self, short_size: int | None = None, max_size: int | None = None) -> tuple[int, int]:
        """``(shorter side, longer-side cap)`` to test at: a caller's sizes where set, else the recorded ones;
        a record that keeps images at their own size gives the official 800 (:data:`DETECTION_TEST`)."""
        return short_size or self.short_size or int(
            DETECTION_TEST.short_size or 800
        ), max_size or self.max_size


DETECTION_TEST = Preprocess()  # the official detection test resize: 800 / 1333, bilinear (§6.5, §7)
OWN_SIZE = Preprocess(short_size=None)  # images at their own size (an RPN file that records no size)
LEGACY_SIZE_KEYS = {"detector": "min_size", "rpn": "short_size"}  # the old config["input"] key per kind


def legacy_preprocess(kind: str, config: dict) -> Preprocess | None:
    """The preprocessing an old file (no ``preprocess`` record) implies through ``config["input"]``, or None."""
    inp = config.get("input")
    key = LEGACY_SIZE_KEYS.get(kind)
    if key is None or not isinstance(inp, dict) or inp.get(key) is None:
        return None
    return Preprocess(short_size=int(inp[key]), max_size=int(inp.get("max_size", 1333)))
