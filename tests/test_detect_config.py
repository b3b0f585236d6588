"""Tests of regionclip.detect.config: YAML/override loading and recipe resolution."""

import pytest

from regionclip.config import load_config
from regionclip.detect.config import RECIPES, DetectorConfig, resolve_recipe
from regionclip.errors import ConfigError


def test_overrides_and_recipe(tmp_path):
    path = tmp_path / "det.yaml"
    path.write_text("recipe: lvis\nnms: hard\n", encoding="utf-8")
    cfg = load_config(DetectorConfig, path, ["box_weights=[1, 2, 3, 4]", "score_fusion=sigmoid"])
    assert cfg.box_weights == (1.0, 2.0, 3.0, 4.0)
    resolved = resolve_recipe(cfg)
    assert resolved.nms == "hard" and resolved.score_fusion == "sigmoid"  # explicit values kept
    assert resolved.max_dets == RECIPES["lvis"]["max_dets"] == 300
    assert resolve_recipe(resolved) == resolved  # idempotent


def test_unknown_values_raise():
    with pytest.raises(ConfigError, match="nms"):
        load_config(DetectorConfig, None, ["nms=fast"])
    with pytest.raises(ConfigError, match="recipe"):
        load_config(DetectorConfig, None, ["recipe=voc"])
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(DetectorConfig, None, ["soft_nms_sgima=0.5"])
