"""Command-line options shared by several sub-commands: the frozen-classifier ensemble of ``detect`` and
``export`` (:mod:`regionclip.detect.ensemble`), defined once so both commands spell and default it alike."""

from __future__ import annotations

import argparse

from regionclip.detect.ensemble import EnsembleConfig


def add_ensemble_arguments(parser: argparse.ArgumentParser, frozen_help: str) -> None:
    """``--ensemble {none,frozen}``, its two weights, its τ and ``--ensemble-checkpoint``; frozen_help: what
    ``frozen`` does for this command."""
    parser.add_argument("--ensemble", choices=["none", "frozen"], default="none", help=frozen_help)
    parser.add_argument("--ensemble-weight-seen", type=float, default=0.35, help="w of training classes")
    parser.add_argument("--ensemble-weight-unseen", type=float, default=0.65, help="w of the other classes")
    parser.add_argument(
        "--ensemble-temperature", type=float, default=0.01, help="τ of the frozen classifier (default 0.01)"
    )
    parser.add_argument(
        "--ensemble-checkpoint",
        help="frozen classifier (clip checkpoint; default: the detector's recorded init)",
    )


def ensemble_from_args(args: argparse.Namespace) -> EnsembleConfig:
    """The :class:`EnsembleConfig` of the options added by :func:`add_ensemble_arguments`."""
    return EnsembleConfig(
        args.ensemble,
        args.ensemble_weight_seen,
        args.ensemble_weight_unseen,
        ensemble_temperature=args.ensemble_temperature,
        ensemble_checkpoint=args.ensemble_checkpoint,
    )
