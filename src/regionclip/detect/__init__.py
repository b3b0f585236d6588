"""The open-vocabulary detector (paper §3.3, method reference §6-7): a CLIP C4 Fast R-CNN whose classifier
is the text embeddings of a vocabulary given at inference time."""

from regionclip.detect.config import RECIPES, DetectorConfig, resolve_recipe, zero_shot_config
from regionclip.detect.detector import DetectionBatch, OpenVocabDetector, build_detector
from regionclip.detect.heads import BoxRegressor, BoxTransform, MaskHead, TextEmbeddingClassifier
from regionclip.detect.losses import (
    FocalScaledCrossEntropy,
    WeightedCrossEntropy,
    box_regression_loss,
    focal_scaled_cross_entropy,
    mask_loss,
    weighted_cross_entropy,
)
from regionclip.detect.postprocess import Detections, InferenceSettings, fuse_scores, postprocess_image
from regionclip.detect.sampling import RoISampler, SampledRoIs, match_proposals
from regionclip.detect.soft_nms import batched_soft_nms, soft_nms_reference

__all__ = [
    "RECIPES",
    "BoxRegressor",
    "BoxTransform",
    "DetectionBatch",
    "Detections",
    "DetectorConfig",
    "FocalScaledCrossEntropy",
    "InferenceSettings",
    "MaskHead",
    "OpenVocabDetector",
    "RoISampler",
    "SampledRoIs",
    "TextEmbeddingClassifier",
    "WeightedCrossEntropy",
    "batched_soft_nms",
    "box_regression_loss",
    "build_detector",
    "focal_scaled_cross_entropy",
    "fuse_scores",
    "mask_loss",
    "match_proposals",
    "postprocess_image",
    "resolve_recipe",
    "soft_nms_reference",
    "weighted_cross_entropy",
    "zero_shot_config",
]
