"""Tests of `regionclip eval`: transfer evaluation of a trained RN-micro detector, zero-shot evaluation of a
CLIP checkpoint with GT boxes and with an RPN, the novel-only vocabulary, the configs, and bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from regionclip.cli import main
from regionclip.config import load_config
from test_train_detector import make_set, train_args, world  # noqa: F401 - the module fixture is reused


@pytest.fixture(scope="module")
def detector_ckpt(world):  # noqa: F811
    out = world["root"] / "run_eval"
    assert main(train_args(world, out)) == 0
    return out / "detector.safetensors"


def run_eval(world, out: Path, *args: str) -> dict:  # noqa: F811
    """``regionclip eval`` on the val set; ``args`` mixes flags and key=value overrides (moved to the end)."""
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    flags = [a for a in args if a not in overrides]
    argv = ["eval", "--data", str(world["val"]), "--images", str(world["root"] / "val"), "--out", str(out),
            "--device", "cpu", *flags, f"cache_dir={world['root'] / 'cache'}", "progress=false", *overrides]  # fmt: skip
    assert main(argv) == 0
    return json.loads(out.read_text())


def test_transfer_eval_records_the_protocol(world, detector_ckpt, tmp_path, capsys):  # noqa: F811
    result = run_eval(world, tmp_path / "r.json", "--checkpoint", str(detector_ckpt), "score_thresh=0.0")
    p, m = result["protocol"], result["metrics"]
    assert p["mode"] == "transfer" and p["split"] == "generalized" and p["vocabulary_size"] == 3
    assert p["box_source"] == "rpn" and p["proposal_preset"] == "transfer" and p["apply_box_deltas"] is True
    assert p["nms"] == "soft-gaussian" and p["nms_params"] == {"sigma": 0.5, "prune": 0.001}
    assert p["max_detections"] == 100 and p["score_threshold"] == 0.0 and p["score_fusion"] == "none"
    assert p["templates"] == "simple" and p["test_size"] == [64, 96] and p["model"] == "RN-micro"
    assert p["novel_classes"] == ["green block"] and p["checkpoint"] == str(detector_ckpt) and p["date"]
    assert m["num_images"] == 3 and m["num_detections"] > 0
    for key in ("AP50_novel", "AP50_base", "AP50_all", "AP", "AP50", "seconds"):
        assert math.isfinite(m[key]), key
    assert "region_acc_top1" not in m  # only with --region-accuracy or GT boxes
    dets = json.loads((tmp_path / "r_detections.json").read_text())
    assert len(dets) == m["num_detections"] and {d["category_id"] for d in dets} <= {1, 2, 3}
    for d in dets:  # ORIGINAL pixels: the 64x48 images were evaluated at 85x64
        x, y, w, h = d["bbox"]
        assert x >= -1e-3 and x + w <= 64.01 and y >= -1e-3 and y + h <= 48.01
    out = capsys.readouterr().out
    assert "AP50_novel" in out and "transfer" in out


def test_zero_shot_with_gt_boxes_reports_region_accuracy(world, tmp_path):  # noqa: F811
    clip = world["root"] / "clip.safetensors"
    result = run_eval(world, tmp_path / "gt.json", "--checkpoint", str(clip), "--boxes", "gt",
                      "templates=simple", "data.test_short_size=64", "data.max_size=96")  # fmt: skip
    p, m = result["protocol"], result["metrics"]
    assert p["mode"] == "zero-shot" and p["box_source"] == "gt" and p["proposal_preset"] is None
    assert p["nms"] == "hard" and p["nms_params"] == {"iou": 0.5} and p["apply_box_deltas"] is False
    assert p["score_fusion"] == "none" and p["score_threshold"] == 0.001
    assert m["region_num_regions"] == 6.0  # 1 + 2 + 3 GT boxes in the three val images
    assert m["region_num_regions_base"] + m["region_num_regions_novel"] == 6.0
    assert 0.0 <= m["region_acc_top1"] <= 100.0 and math.isfinite(m["region_acc_top1_novel"])
    assert math.isfinite(m["AP50_all"])
    # GT boxes are used as they are: every detection box is a GT box, back in ORIGINAL pixels (64x48 images
    # evaluated at 85x64)
    gt = json.loads(world["val"].read_text())
    boxes = {}
    for a in gt["annotations"]:
        boxes.setdefault(a["image_id"], []).append(a["bbox"])
    dets = json.loads((tmp_path / "gt_detections.json").read_text())
    assert dets
    for d in dets:
        assert any(
            all(abs(u - v) < 0.01 for u, v in zip(d["bbox"], b, strict=True)) for b in boxes[d["image_id"]]
        ), d


def test_zero_shot_with_rpn_boxes(world, tmp_path):  # noqa: F811
    r = world["root"]
    result = run_eval(world, tmp_path / "rpn.json", "--checkpoint", str(r / "clip.safetensors"),
                      "--boxes", f"rpn:{r / 'rpn.safetensors'}", "templates=simple", "data.test_short_size=64",
                      "score_thresh=0.0", "--region-accuracy")  # fmt: skip
    p, m = result["protocol"], result["metrics"]
    assert p["box_source"] == "rpn" and p["proposal_preset"] == "zero_shot"
    assert p["score_fusion"] == "rpn-logit-sqrt" and p["nms"] == "hard"
    assert m["num_images"] == 3 and "region_acc_top1" in m and math.isfinite(m["AP50_all"])


def test_novel_only_protocol_changes_the_vocabulary(world, detector_ckpt, tmp_path):  # noqa: F811
    result = run_eval(
        world, tmp_path / "n.json", "--checkpoint", str(detector_ckpt), "--protocol", "novel_only"
    )
    p, m = result["protocol"], result["metrics"]
    assert p["split"] == "novel-only" and p["vocabulary_size"] == 1 and m["vocabulary_size"] == 1
    assert m["num_images"] == 2  # only the val images with a green block, like ovd_ins_val2017_t.json
    dets = json.loads((tmp_path / "n_detections.json").read_text())
    assert {d["category_id"] for d in dets} <= {3}
    assert m["AP50_base"] is None and math.isfinite(m["AP50_novel"])  # no base class evaluated: NaN -> null


def test_bad_inputs_are_one_line_errors(world, detector_ckpt, tmp_path, capsys):  # noqa: F811
    r = world["root"]
    nosplit = make_set(tmp_path, "nosplit", 2, seed=3, split_fields=False)
    base = [
        "eval",
        "--data",
        str(world["val"]),
        "--images",
        str(r / "val"),
        "--out",
        str(tmp_path / "x.json"),
    ]
    cases = [
        (base + ["--checkpoint", str(r / "missing.safetensors")], "not found"),
        (base + ["--checkpoint", str(r / "rpn.safetensors")], "'rpn' checkpoint"),
        (base + ["--checkpoint", str(r / "clip.safetensors")], "--boxes"),
        (base + ["--checkpoint", str(r / "clip.safetensors"), "--boxes", "yolo"], "rpn:PATH"),
        (["eval", "--checkpoint", str(r / "clip.safetensors"), "--boxes", "gt", "--data", str(nosplit),
          "--images", str(tmp_path / "nosplit"), "--protocol", "novel_only"], "novel_classes"),
        (["eval", "--checkpoint", str(detector_ckpt)], "data.json"),
    ]  # fmt: skip
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def test_configs_load():
    from regionclip.commands.evaluate import EvalConfig
    from regionclip.commands.train_detector import TrainDetectorConfig

    configs = Path(__file__).resolve().parents[1] / "configs"
    coco = load_config(TrainDetectorConfig, configs / "detector_coco_rn50.yaml")
    assert (
        coco.detector.recipe == "coco" and coco.train.max_steps == 90000 and coco.train.warmup_steps == 5000
    )
    assert coco.train.lr == 0.002 and coco.data.short_sizes == [640, 672, 704, 736, 768, 800]
    lvis = load_config(TrainDetectorConfig, configs / "detector_lvis_rn50x4.yaml")
    assert lvis.data.lvis and lvis.detector.recipe == "lvis" and lvis.model.preset == "RN50x4"
    assert lvis.train.max_steps == 180000 and lvis.data.repeat_threshold == 0.001
    # the engine rounds milestone fractions: official 60k/80k of 90k and 120k/160k of 180k
    assert [round(m * coco.train.max_steps) for m in coco.train.lr_milestones] == [60000, 80000]
    assert [round(m * lvis.train.max_steps) for m in lvis.train.lr_milestones] == [120000, 160000]
    for name in ("detector_coco_rn50x4", "detector_lvis_rn50", "detector_tiny"):
        load_config(TrainDetectorConfig, configs / f"{name}.yaml")
    evals = sorted(configs.glob("eval_*.yaml"))
    assert evals
    for path in evals:
        load_config(EvalConfig, path)


def make_lvis(world, tmp_path: Path) -> Path:  # noqa: F811
    """The val set as an LVIS v1 file: red frequent, blue common, green rare (= novel)."""
    data = json.loads(world["val"].read_text())
    freq = {"red block": "f", "blue block": "c", "green block": "r"}
    for c in data["categories"]:
        c.pop("split")
        c.update(frequency=freq[c["name"]], synonyms=[c["name"]], image_count=1, instance_count=1)
    for img in data["images"]:
        img.update(neg_category_ids=[], not_exhaustive_category_ids=[])
    for a in data["annotations"]:
        a.pop("iscrowd")
    path = tmp_path / "lvis_val.json"
    path.write_text(json.dumps(data))
    return path


def test_lvis_train_and_zero_shot_eval(world, tmp_path):  # noqa: F811
    lvis = make_lvis(world, tmp_path)
    r = world["root"]
    out = tmp_path / "run"
    argv = train_args(world, out, f"data.train_json={lvis}", f"data.image_root={r / 'val'}", "data.lvis=true",
                      "detector.recipe=lvis", "train.max_steps=1", "train.batch_size=1")  # fmt: skip
    assert main(argv) == 0
    from regionclip.checkpoint import read_checkpoint_metadata

    config = json.loads(read_checkpoint_metadata(out / "detector.safetensors")["config"])
    assert config["train_classes"] == ["red block", "blue block"]  # rare classes are not trained on
    assert config["split"]["novel"] == ["green block"]

    result = run_eval(world, tmp_path / "l.json", "--checkpoint", str(out / "detector.safetensors"), "--lvis",
                      f"--data={lvis}", "score_thresh=0.0")  # fmt: skip
    p, m = result["protocol"], result["metrics"]
    assert p["vocabulary_size"] == 3 and p["max_detections"] == 300 and p["score_fusion"] == "rpn-logit-sqrt"
    for key in ("AP", "APr", "APc", "APf"):
        assert m[key] is None or math.isfinite(m[key]), key
    assert m["num_images"] == 3


def _same(a: dict, b: dict, drop: tuple[str, ...]) -> None:
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def test_variants_of_one_pass_equal_separate_runs(world, detector_ckpt, tmp_path, capsys):  # noqa: F811
    ckpt = ["--checkpoint", str(detector_ckpt), "score_thresh=0.0"]
    plain = run_eval(world, tmp_path / "plain.json", *ckpt)
    both = run_eval(world, tmp_path / "v.json", *ckpt, "variants=[sigmoid,ensemble,logit]")
    assert "variants" not in plain and sorted(both["variants"]) == ["ensemble", "logit", "sigmoid"]
    _same(both["metrics"], plain["metrics"], ("seconds",))  # the top-level fields are today's
    _same(both["protocol"], plain["protocol"], ("date",))
    assert (tmp_path / "v_detections.json").read_text() == (tmp_path / "plain_detections.json").read_text()
    settings = {
        "sigmoid": "score_fusion=sigmoid",
        "logit": "score_fusion=logit",
        "ensemble": "detector.ensemble=frozen",
    }
    for name, setting in settings.items():
        alone = run_eval(world, tmp_path / f"{name}.json", *ckpt, setting)
        variant = both["variants"][name]
        _same(variant["metrics"], alone["metrics"], ("seconds",))
        _same(variant["protocol"], alone["protocol"], ("date",))
        assert Path(variant["detections"]).read_text() == (tmp_path / f"{name}_detections.json").read_text()
    assert both["variants"]["sigmoid"]["protocol"]["score_fusion"] == "rpn-sigmoid-sqrt"
    assert both["variants"]["ensemble"]["protocol"]["score_ensemble"] == "frozen"
    # the scorings differ, so the comparison above could fail
    assert both["variants"]["sigmoid"]["metrics"]["num_detections"] != plain["metrics"]["num_detections"] or (
        Path(both["variants"]["sigmoid"]["detections"]).read_text()
        != (tmp_path / "plain_detections.json").read_text()
    )
    assert "variant ensemble:" in capsys.readouterr().out


def test_variants_bad_name_and_zero_shot_ensemble(world, tmp_path, capsys):  # noqa: F811
    clip = world["root"] / "clip.safetensors"
    zs = ["--checkpoint", str(clip), "--boxes", "gt", "templates=simple", "data.test_short_size=64",
          "data.max_size=96"]  # fmt: skip
    result = run_eval(world, tmp_path / "zs.json", *zs, "variants=[ensemble,none]")
    assert "already the frozen model" in result["variants"]["ensemble"]["skipped"]
    _same(result["variants"]["none"]["metrics"], result["metrics"], ())  # GT boxes: no fusion already
    argv = ["eval", "--data", str(world["val"]), "--images", str(world["root"] / "val"), "--out",
            str(tmp_path / "bad.json"), *zs, "variants=[rpn]"]  # fmt: skip
    assert main(argv) == 2
    assert "variants: expected names of" in capsys.readouterr().err
