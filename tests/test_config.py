"""Typed configs: YAML + dotted overrides, unknown keys and wrong types named by their dotted path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from regionclip.config import config_to_dict, load_config, save_config
from regionclip.engine.loop import TrainConfig
from regionclip.errors import ConfigError


@dataclass
class _Inner:
    size: int = 3  # a size
    kind: Literal["a", "b"] = "a"  # a choice


@dataclass
class _Outer:
    name: str = "x"  # a name
    weights: str | None = None  # optional path
    inner: _Inner = field(default_factory=_Inner)  # nested
    train: TrainConfig = field(default_factory=TrainConfig)  # the engine's config


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: y\ninner:\n  size: 5\ntrain:\n  lr: 0.01\n  lr_milestones: [0.6, 0.9]\n")
    cfg = load_config(_Outer, path, ["inner.kind=b", "train.max_steps=7", "weights=/a/b"])
    assert cfg.name == "y" and cfg.inner.size == 5 and cfg.inner.kind == "b"
    assert cfg.train.lr == 0.01 and cfg.train.max_steps == 7 and cfg.train.lr_milestones == (0.6, 0.9)
    assert cfg.weights == "/a/b"
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(_Outer, tmp_path / "resolved.yaml") == cfg
    assert config_to_dict(cfg)["train"]["lr_milestones"] == [0.6, 0.9]


@pytest.mark.parametrize(
    "override,message",
    [
        ("inner.sise=4", "unknown config key 'inner.sise'"),
        ("inner.size=big", "'inner.size': expected an integer"),
        ("inner.kind=c", "'inner.kind': expected one of"),
        ("train.lr=fast", "'train.lr': expected a number"),
        ("nokey", "expected key=value"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_Outer, None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(_Outer, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml: expected a mapping"):
        load_config(_Outer, bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("trian:\n  lr: 1\n")
    with pytest.raises(ConfigError, match="typo.yaml: unknown config key 'trian'"):
        load_config(_Outer, typo)
