"""The one RPN loader and the proposal-source factory (method reference §4.1, §6.1, §7).

:func:`load_rpn` rebuilds any regionclip ``rpn`` checkpoint alone, frozen and in eval mode: a ``train-rpn``
:class:`~regionclip.proposals.rpn.ClassAgnosticRPN` or a converted official detectron2 RPN (config ``family:
detectron2``, :mod:`regionclip.proposals.detectron2`), with a proposal preset's NMS threshold and post-NMS top-k.
:func:`build_rpn_from_config` builds the same network unloaded from a stored config (detector checkpoints
embed their RPN's). :func:`build_proposal_generator` turns a :class:`ProposalConfig` into a proposal source.
"""

from __future__ import annotations

from pathlib import Path

from regionclip.checkpoint import load_checkpoint, load_state_dict_strict
from regionclip.config import config_from_dict
from regionclip.errors import CheckpointError, ConfigError
from regionclip.proposals.base import GivenBoxes, ProposalGenerator
from regionclip.proposals.config import ProposalConfig, RPNConfig, get_proposal_preset
from regionclip.proposals.detectron2 import (
    Detectron2RPNConfig,
    build_detectron2_rpn,
    is_detectron2_rpn_config,
)
from regionclip.proposals.random_boxes import RandomBoxes
from regionclip.proposals.rpn import build_rpn


def build_rpn_from_config(
    rpn_config: dict, preset: str | None = None, overrides: dict | None = None
) -> ProposalGenerator:
    """An (unloaded) frozen RPN in eval mode from the config of an ``rpn`` checkpoint.

    preset: a proposal preset name whose NMS threshold and post-NMS top-k apply (None: a detectron2 RPN keeps
    the stored ones, a ``train-rpn`` RPN takes ``transfer``); overrides: further detectron2 fields (e.g.
    ``{"post_nms_topk": 50}``).
    """
    if is_detectron2_rpn_config(rpn_config):
        fields = dict(rpn_config["rpn"])
        if preset is not None:
            p = get_proposal_preset(preset)
            fields.update(nms_thresh=p.nms_thresh, post_nms_topk=p.post_nms_topk)
        rpn = build_detectron2_rpn(config_from_dict(Detectron2RPNConfig, {**fields, **(overrides or {})}))
    else:
        if "rpn" not in rpn_config:
            raise CheckpointError("an 'rpn' checkpoint config without its 'rpn' section")
        if overrides:
            raise ConfigError(f"RPN overrides {sorted(overrides)} apply to detectron2-layout RPNs only")
        rpn = build_rpn(
            config_from_dict(RPNConfig, rpn_config["rpn"]), preset or "transfer", load_weights=False
        )
    rpn.requires_grad_(False)
    return rpn.eval()


def load_rpn(
    path: str | Path, preset: str | None = None, overrides: dict | None = None
) -> tuple[ProposalGenerator, dict]:
    """Any regionclip ``rpn`` checkpoint, frozen and in eval mode, and its config (see
    :func:`build_rpn_from_config` for ``preset`` and ``overrides``)."""
    ckpt = load_checkpoint(path, kind="rpn")
    try:
        rpn = build_rpn_from_config(ckpt.config, preset, overrides)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    load_state_dict_strict(rpn, ckpt.state_dict, str(path))
    return rpn.eval(), ckpt.config


def load_proposal_generator(path: str | Path, preset_name: str = "transfer") -> ProposalGenerator:
    """The RPN of the checkpoint ``path`` with the proposal preset ``preset_name`` (:func:`load_rpn`)."""
    return load_rpn(path, preset_name)[0]


def load_detectron2_rpn(path: str | Path, preset: str | None = None, overrides: dict | None = None):
    """The detectron2-layout RPN of the checkpoint ``path`` (:func:`load_rpn`); other RPNs are refused."""
    if not is_detectron2_rpn_config(load_checkpoint(path, kind="rpn").config):
        raise CheckpointError(f"{path}: an 'rpn' checkpoint but not a detectron2-layout RPN")
    return load_rpn(path, preset, overrides)[0]


def build_proposal_generator(cfg: ProposalConfig) -> ProposalGenerator:
    """The frozen proposal generator described by ``cfg`` (an RPN from its checkpoint, random or given boxes)."""
    if cfg.kind == "rpn":
        if not cfg.rpn_checkpoint:
            raise ConfigError("proposals.kind is 'rpn' but proposals.rpn_checkpoint is not set")
        return load_proposal_generator(cfg.rpn_checkpoint, cfg.preset)
    if cfg.kind == "random":
        r = cfg.random
        return RandomBoxes(r.count, r.min_size, r.grid, r.same_for_batch, r.seed, style=r.style)
    return GivenBoxes()
