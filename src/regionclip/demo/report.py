"""``results.md`` of the demo: the table, what it measures, and how the numbers were made."""

from __future__ import annotations

import datetime
import os
import platform

from regionclip.demo.calibrate import calibration_markdown
from regionclip.demo.context import DemoContext
from regionclip.results_table import ABLATIONS_END, ABLATIONS_START, ablation_block, results_block


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def results_markdown(ctx: DemoContext, results: dict, stage_seconds: dict[str, float]) -> str:
    """``results.md`` from the report's ``results`` dict (see :mod:`regionclip.results_table`)."""
    p = ctx.plan
    table = results_block(results)
    ablations = (
        ablation_block(results["ablations"]) if results.get("ablations") else "(not run: `--ablations`)"
    )
    world = ctx.results["world"]
    concepts = ctx.results["concepts"]
    recall = (ctx.results["rpn"]["recall"].get("recall") or {}).get("all", {})
    date = datetime.date.today().isoformat()
    timing = ", ".join(f"{name} {sec:.0f} s" for name, sec in stage_seconds.items())
    total = sum(stage_seconds.values())
    return f"""# regionclip demo: the miniature world ({p.world})

Run on {date}, {_cpu()}, {os.cpu_count()} cores, CPU only ({platform.platform()}); seed {ctx.seed} of every
training stage, world seed {ctx.world_seed}. Another CPU gives other digits for the same seed.

Every number is measured on the held-out **{results["split"]}** split ({results["n_images"]} images, generated
apart with its own seed stream and never used for a choice; val is for development): the point estimate on
the full split, its {int(100 * results["confidence"])}% bootstrap interval over test images
({results["resamples"]} resamples; region top-1 resamples images with all their regions, AP50 is recomputed
from per-image matches), and for RegionCLIP − CLIP the paired interval on the same resampled images. A
direction is stated only where the paired interval excludes 0.

{table}

**What is compared.** *CLIP* is a tiny CLIP ({p.model}) trained from scratch on the world's web pairs
(iconic single-object images with alt-text captions, {p.clip_steps} steps): it stands in for OpenAI CLIP,
which cannot be downloaded here. *RegionCLIP* is the same model after RegionCLIP pretraining
({p.pretrain_steps} steps) on the cluttered training scenes and their captions: the CLIP model is the frozen
teacher that pseudo-labels RPN regions against the concept pool parsed from the captions, and the student
learns region-concept alignment (contrastive + distillation) plus image-text alignment on the global box,
with the temperatures, threshold, loss weights and learning rates carried over from the official ones by the
rules of the next-but-one section.
Neither saw a box label of a novel class, and neither was told which nouns are categories.

**Rows.** *Zero-shot region classification*: each ground-truth box of the test set is classified among all
{len(world["base"]) + len(world["novel"])} category names (prompt-ensemble text embeddings; paper Fig. 1b).
*Zero-shot detection*: the RPN's proposals (NMS 0.9; the best {p.eval_proposals} per image instead of the
official 1000, to bound the CPU time) scored against all category names, no box regression, hard NMS 0.5
(method reference §7), RPN-score fusion sqrt(p · sigmoid(logit)) instead of the official sqrt(p · logit),
which drops every proposal with a negative logit (with this briefly trained RPN: most of them); AP50 by split.
*Transfer*: Faster R-CNN (C4) detectors initialised from each model, trained on the {len(world["base"])} base
classes only ({p.detector_steps} steps, COCO recipe: focal-scaled CE γ = 0.5, background weight 0.2, fixed
zero background embedding, τ = 1 / the teacher's logit scale as in pretraining (official 0.01 = 1 / OpenAI
CLIP's 100); {p.detector_rois} sampled RoIs per image instead of 512), evaluated
with all classes as vocabulary (generalized protocol, soft-NMS, 100 detections, {p.eval_proposals} proposals); AP50 on the {len(world["novel"])} novel classes (never boxed in training), the base
classes and all. The plain *Transfer* rows score each detection by the classifier alone (the official COCO
recipe); the *+ RPN score* rows evaluate the same detectors with the RPN objectness fused in as in the
zero-shot rows (the official LVIS recipe fuses too), the like-for-like comparison with zero-shot: after
{p.detector_steps} steps the classifier has not yet learnt to reject background on its own. The *+ frozen
ensemble* rows evaluate the same detectors as the plain rows with `detector.ensemble=frozen`: each class score
is p_det^(1-w) · p_frozen^w, p_frozen the softmax over the vocabulary of the frozen region encoder the
detector was initialised from (CLIP or RegionCLIP), w = 0.35 for base and 0.65 for novel classes, background
from the detector alone (F-VLM's ensemble).
Every evaluation's full protocol is recorded in `eval/*.json`.

**The world.** {world["counts"].get("train_images", "?")} training, {world["counts"].get("val_images", "?")}
validation and {world["counts"].get("test_images", "?")} test images of 160 px, 1-6 OpenMoji objects per cluttered scene, 3 captions per image that mention
only some of the objects (see docs/world.md). The concept pool parsed from the captions has
{concepts["num_concepts"]} nouns (frequency >= {p.min_count}), {concepts["categories_in_pool"]} of which are
category names; novel categories in the pool: {len(concepts["novel_in_pool"])} of {len(world["novel"])}.
RPN (trained on base boxes) recall on val: AR@100 {100 * recall.get("AR@100", float("nan")):.1f}%,
recall@1000 at IoU 0.5 {100 * recall.get("R@1000@0.5", float("nan")):.1f}%.

**Scale.** Everything is tiny: a {p.model} model, minutes of CPU training, 160-px images. The absolute
numbers say nothing about COCO or LVIS; what matters is the comparison, made with identical settings.

**Time.** {total:.0f} s in all ({timing}).

Figures: `figures/comparison.png` (the table's novel-class rows with their intervals as error bars),
`figures/detections.png` (the best transfer detector by AP50 all, {results.get("detections_figure", "?")}:
its detections with names and scores on test images, above their ground truth).

{calibration_markdown(ctx)}
## Ablations

{ABLATIONS_START}
{ablations}
{ABLATIONS_END}
"""
