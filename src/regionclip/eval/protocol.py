"""The evaluation protocol, recorded with every result (method reference §6.5-6.6; users.md: "protocols differ
silently", e.g. generalized vs novel-only COCO, max detections, box source).

``write_results`` writes ``{"metrics": ..., "protocol": ...}`` atomically, with NaN metrics (no GT of a
subset) as JSON ``null``.
"""

from __future__ import annotations

import datetime
import math
import platform
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from regionclip.io import atomic_write_json

_VERSIONED = ("regionclip", "torch", "torchvision", "open-clip-torch", "faster-coco-eval", "lvis", "numpy")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that can change a number (absent ones omitted)."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class Protocol:
    """Every choice that changes an evaluation number."""

    dataset: str  # evaluated set, e.g. "coco_2017_ovd_all_test" or a json path
    split: Literal["generalized", "novel-only", "base-only", "none"] = (
        "generalized"  # generalized: all classes scored together
    )
    vocabulary_size: int = 0  # classes the detector scores against (65, 17, 1203, ...)
    max_detections: int = 100  # detections kept per image (COCO 100, LVIS 300)
    score_threshold: float = 0.001  # detections below are dropped before NMS
    nms: Literal["hard", "soft-gaussian", "soft-linear", "none"] = "hard"  # second-stage per-class NMS kind
    nms_params: dict[str, float] = field(
        default_factory=dict
    )  # e.g. {"iou": 0.5} or {"sigma": 0.5, "prune": 0.001}
    box_source: Literal["rpn", "gt", "given"] = "rpn"  # where the regions come from
    score_fusion: Literal["none", "rpn-logit-sqrt"] = "none"  # official sqrt(p * rpn_logit) fusion on/off
    score_ensemble: Literal["none", "frozen"] = "none"  # F-VLM ensemble with the frozen region classifier
    ensemble_params: dict[str, Any] = field(
        default_factory=dict
    )  # weights (seen / unseen), τ, frozen checkpoint, shared trunk, seen classes in the vocabulary
    test_size: tuple[int, int] = (800, 1333)  # short side, max side of the test resize
    model: str = ""  # model preset / description
    checkpoint: str = ""  # checkpoint path (or fingerprint)
    metric: str = "bbox"  # iou type
    date: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    )
    versions: dict[str, str] = field(default_factory=package_versions)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["test_size"] = list(self.test_size)
        return d


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_results(
    path: str | Path, metrics: dict[str, Any], protocol: Protocol, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``{"metrics", "protocol", **extra}`` as JSON (atomic); NaN/inf become ``null``."""
    payload = {"metrics": metrics, "protocol": protocol.to_dict(), **(extra or {})}
    return atomic_write_json(path, _json_safe(payload))
