"""Typed configuration of the open-vocabulary detector (method reference §6.1-6.5).

``recipe`` picks the official COCO or LVIS settings; every recipe-dependent field defaults to ``None``,
meaning "as the recipe says", and can be set explicitly to override it. :func:`resolve_recipe` fills the
``None`` fields once, at build time.

| field            | COCO                    | LVIS                       |
|------------------|-------------------------|----------------------------|
| cls_loss         | focal (gamma 0.5)       | weighted_ce                |
| bg_loss_weight   | 0.2                     | 0.8                        |
| mask_on          | False                   | True                       |
| score_thresh     | 0.001                   | 0.02                       |
| nms              | soft (sigma 0.5)        | soft                       |
| max_dets         | 100                     | 300                        |
| score_fusion     | none                    | logit (sqrt(p * logit))    |

Zero-shot inference (method reference §7) has ONE recipe, :func:`zero_shot_config`: hard per-class NMS at
0.5, regions used as they are (no box deltas), no mask head, RPN-score fusion ``logit`` with RPN proposals
and ``none`` with given (GT) boxes; score threshold 0.001 on COCO, and on LVIS 0.02 with the RPN or 0.0001
with GT boxes (the official scripts); 100 (COCO) or 300 (LVIS) detections from the recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from regionclip.config import config_from_dict

RECIPES: dict[str, dict[str, object]] = {
    "coco": {
        "cls_loss": "focal",
        "bg_loss_weight": 0.2,
        "mask_on": False,
        "score_thresh": 0.001,
        "nms": "soft",
        "max_dets": 100,
        "score_fusion": "none",
    },
    "lvis": {
        "cls_loss": "weighted_ce",
        "bg_loss_weight": 0.8,
        "mask_on": True,
        "score_thresh": 0.02,
        "nms": "soft",
        "max_dets": 300,
        "score_fusion": "logit",
    },
}


@dataclass
class DetectorConfig:
    recipe: Literal["coco", "lvis"] = "coco"  # official recipe filling the fields left at None below
    freeze_at: int = 2  # frozen backbone stages: 2 = stem + layer1 (official FREEZE_AT)
    temperature: float = 0.01  # τ of the cosine classifier
    learnable_background: bool = False  # official: fixed zero background embedding (logit exactly 0)
    rois_per_image: int = 512  # sampled RoIs per training image
    positive_fraction: float = 0.25  # max foreground fraction of the sampled RoIs
    fg_iou_thresh: float = 0.5  # IoU >= this with a GT box is foreground, else background
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)  # Box2Box transform weights
    cls_loss: Literal["focal", "weighted_ce"] | None = None  # classification loss (None: recipe)
    focal_gamma: float = 0.5  # gamma of the focal-scaled CE
    bg_loss_weight: float | None = None  # background weight in the classification loss (None: recipe)
    mask_on: bool | None = None  # build the class-agnostic mask head (None: recipe)
    score_thresh: float | None = None  # test score threshold (None: recipe)
    nms: Literal["soft", "hard"] | None = None  # per-class NMS at test time (None: recipe)
    nms_thresh: float = 0.5  # IoU threshold of hard NMS
    soft_nms_sigma: float = 0.5  # Gaussian soft-NMS: decay exp(-IoU^2 / sigma) (official, no factor 2)
    soft_nms_prune: float = 0.001  # soft-NMS drops candidates whose decayed score is <= this
    max_dets: int | None = None  # detections per image (None: recipe)
    score_fusion: Literal["none", "logit", "sigmoid"] | None = None  # RPN score fusion (None: recipe)
    apply_box_deltas: bool = True  # move proposals by the predicted deltas at test time (False: zero-shot)
    batched_inference: bool = False  # test trunk + RPN on the padded batch (official: per image, exact)


ZERO_SHOT: dict[str, object] = {
    "mask_on": False,
    "nms": "hard",
    "nms_thresh": 0.5,
    "apply_box_deltas": False,
}  # official zero-shot settings common to both box sources and both recipes (§7)
ZERO_SHOT_SCORE_THRESH = {
    ("coco", "rpn"): 0.001,
    ("coco", "gt"): 0.001,
    ("lvis", "rpn"): 0.02,
    ("lvis", "gt"): 0.0001,
}


def zero_shot_config(
    recipe: Literal["coco", "lvis"] = "coco", box_source: Literal["rpn", "gt"] = "rpn", **overrides: object
) -> DetectorConfig:
    """The detector settings of zero-shot inference (see the module doc) for the ``recipe`` and the region
    source (``"rpn"``: RPN proposals; ``"gt"``: boxes given with each image); ``overrides`` (DetectorConfig
    fields) win. The only definition of the zero-shot recipe."""
    if recipe not in RECIPES or box_source not in ("rpn", "gt"):
        raise ValueError(f"zero-shot recipe: expected coco|lvis and rpn|gt, got {recipe!r}, {box_source!r}")
    fields = {
        "recipe": recipe,
        **ZERO_SHOT,
        "score_fusion": "logit" if box_source == "rpn" else "none",
        "score_thresh": ZERO_SHOT_SCORE_THRESH[(recipe, box_source)],
        **overrides,
    }
    return config_from_dict(DetectorConfig, fields)


def resolve_recipe(cfg: DetectorConfig) -> DetectorConfig:
    """A copy of ``cfg`` whose ``None`` fields are filled from ``RECIPES[cfg.recipe]``."""
    recipe = RECIPES[cfg.recipe]
    updates = {name: value for name, value in recipe.items() if getattr(cfg, name) is None}
    return dataclasses.replace(cfg, **updates)
