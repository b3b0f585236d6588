"""The miniature-world demo: the RegionCLIP paper end to end on a CPU (``regionclip demo``).

Modules, bottom up: :mod:`~regionclip.demo.context` (the plans, the rules that scale the official schedules,
the run context), :mod:`~regionclip.demo.teacher` (the teacher's Fig. 1(b) report),
:mod:`~regionclip.demo.stages` (world, teacher, concepts, RPN, pretraining),
:mod:`~regionclip.demo.calibrate` (the scale-matched pretraining settings),
:mod:`~regionclip.demo.evaluation` / :mod:`~regionclip.demo.stats` / :mod:`~regionclip.demo.report`
(zero-shot and transfer evaluations on the test split, bootstrap intervals, ``results.md``),
:mod:`~regionclip.demo.index`, then :mod:`~regionclip.demo.run` (the cached stage driver) and on top
:mod:`~regionclip.demo.seeds` (``--seeds``) and :mod:`~regionclip.demo.ablations` (``--ablations``).
"""

from regionclip.demo.context import (
    PLANS,
    WORLD_SEED,
    DemoContext,
    DemoPlan,
    _cli,
    _world_paths,
    apply_stage_overrides,
    n_test_images,
)
from regionclip.demo.run import _stages, demo_context, run_demo, run_stages
from regionclip.demo.stages import _concept_captions, pretrain_config

__all__ = [
    "PLANS",
    "WORLD_SEED",
    "DemoContext",
    "DemoPlan",
    "_cli",
    "_concept_captions",
    "_stages",
    "_world_paths",
    "apply_stage_overrides",
    "demo_context",
    "n_test_images",
    "pretrain_config",
    "run_demo",
    "run_stages",
]
