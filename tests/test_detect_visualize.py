"""Tests of the detection drawing (regionclip.detect.visualize): the display filter (threshold and cap), the
label placement geometry, the legend, ``DetectionResult.plot`` and ``regionclip detect`` (PNGs filtered, the
JSON complete)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from regionclip.cli import main
from regionclip.detect.api import Detector
from regionclip.detect.visualize import (
    class_color,
    draw_detections,
    layout_detections,
    place_label,
    rects_overlap,
    select_for_display,
)
from test_train_detector import trained, world  # noqa: F401 - module fixtures reused


def test_display_filter_threshold_and_cap():
    scores = [0.1, 0.9, 0.5, 0.3, 0.95]
    assert select_for_display(scores) == [4, 1, 2, 3, 0]
    assert select_for_display(scores, min_score=0.3) == [4, 1, 2, 3]  # the threshold is inclusive
    assert select_for_display(scores, min_score=0.3, max_boxes=2) == [4, 1]
    assert select_for_display(scores, min_score=0.99) == []
    assert select_for_display([], min_score=0.0, max_boxes=3) == []


def test_label_goes_above_else_below_else_inside():
    size, image = (25.0, 10.0), (100, 100)
    box = (20.0, 30.0, 60.0, 70.0)
    above = place_label(box, size, image)
    assert above == (20.0, 19.0, 45.0, 29.0) and not rects_overlap(above, box)
    top_box = (20.0, 2.0, 60.0, 40.0)  # no room above: below
    below = place_label(top_box, size, image)
    assert below == (20.0, 41.0, 45.0, 51.0) and not rects_overlap(below, top_box)
    full = (0.0, 0.0, 99.0, 99.0)  # no room outside: inside the top edge
    inside = place_label(full, size, image)
    assert inside == (0.0, 0.0, 25.0, 10.0)
    # a box at the right edge: the label shifts left to stay in the image
    right = place_label((90.0, 50.0, 99.0, 80.0), size, image)
    assert right[2] <= 99 and right[0] == 99 - 25 and not rects_overlap(right, (90.0, 50.0, 99.0, 80.0))
    # the place above is taken by another label: below is preferred
    taken = [(10.0, 15.0, 50.0, 28.0)]
    moved = place_label(box, size, image, taken)
    assert moved == (20.0, 71.0, 45.0, 81.0) and not rects_overlap(moved, taken[0])


def test_layout_labels_outside_their_boxes_and_legend_of_the_drawn_classes():
    names = ["cat", "dog", "mug"]
    boxes = [[30, 40, 120, 150], [130, 60, 190, 120], [10, 10, 50, 50], [60, 170, 140, 230]]
    labels = [0, 2, 2, 1]
    scores = [0.9, 0.8, 0.1, 0.5]
    layout = layout_detections((200, 240), boxes, labels, scores, names, min_score=0.3)
    assert layout.drawn == [0, 1, 3]
    assert [name for name, _ in layout.legend] == ["cat", "mug", "dog"]  # drawn classes, first-drawn order
    assert [c for _, c in layout.legend] == [class_color(0), class_color(2), class_color(1)]
    assert layout.colors == [class_color(0), class_color(2), class_color(1)]  # one colour per class
    assert layout.texts == ["cat 0.90", "mug 0.80", "dog 0.50"]
    for box, rect in zip(layout.boxes, layout.label_rects, strict=True):
        assert not rects_overlap(box, rect), (box, rect)  # every box here has room above or below
        assert rect[0] >= 0 and rect[1] >= 0 and rect[2] <= 199 and rect[3] <= 239
    for i, a in enumerate(layout.label_rects):  # labels do not cover each other
        assert not any(rects_overlap(a, b) for b in layout.label_rects[i + 1 :])
    x1, y1, x2, y2 = layout.legend_rect
    assert 0 <= x1 < x2 <= 199 and 0 <= y1 < y2 <= 239
    assert layout_detections((200, 240), boxes, labels, scores, names, legend=False).legend_rect is None
    capped = layout_detections((200, 240), boxes, labels, scores, names, max_boxes=1)
    assert capped.drawn == [0] and [n for n, _ in capped.legend] == ["cat"]


def test_draw_detections_keeps_its_positional_signature():
    image = Image.fromarray(np.full((120, 160, 3), 90, np.uint8))
    boxes, labels, scores = [[10, 30, 80, 100], [90, 20, 150, 70]], [0, 1], [0.05, 0.6]
    out = draw_detections(image, boxes, labels, scores, ["a", "b"])  # everything given is drawn by default
    assert out.size == image.size and out.mode == "RGB"
    arr = np.asarray(out)
    assert (arr[30, 10:80] != 90).any() and (arr[20, 90:150] != 90).any()  # both boxes' top edges
    only_b = draw_detections(image, boxes, labels, scores, ["a", "b"], min_score=0.3)
    assert (np.asarray(only_b)[100, 10:80] == 90).all()  # the low-score box's bottom edge is not drawn
    empty = draw_detections(image, [], [], [], ["a"])
    assert np.array_equal(np.asarray(empty), np.asarray(image))


def test_plot_and_detect_draw_a_filtered_view_of_a_complete_result(world, trained, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("REGIONCLIP_CACHE", str(tmp_path / "cache"))
    det = Detector.from_pretrained(trained)
    image = Image.open(world["root"] / "val" / "002.png")
    result = det(image, ["red block", "green block", "blue block"], score_thresh=0.0)[0]
    assert len(result) > 3
    best = int(result.scores.argmax())
    plotted = result.plot(min_score=0.0, max_boxes=1)
    by_hand = draw_detections(
        image,
        [result.boxes[best].tolist()],
        [int(result.labels[best])],
        [float(result.scores[best])],
        result.names,
    )
    assert np.array_equal(np.asarray(plotted), np.asarray(by_hand))
    assert len(result) > 3  # plotting filters the picture, not the result

    out = tmp_path / "detect"
    code = main(["detect", str(world["root"] / "val"), "--checkpoint", str(trained), "--vocab",
                 "red block,green block,blue block", "--out", str(out), "--score-thresh", "0",
                 "--show-score", "0", "--show-top", "1"])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    dets = json.loads((out / "detections.json").read_text())
    assert summary["drawn"] == {"min_score": 0.0, "max_per_image": 1}
    per_image = {i["id"]: 0 for i in summary["images"]}
    for d in dets:
        per_image[d["image_id"]] += 1
    assert all(n > 1 for n in per_image.values())  # the JSON keeps every detection
    entry = next(i for i in summary["images"] if i["file_name"].endswith("002.png"))
    png = np.asarray(Image.open(entry["png"]).convert("RGB"))
    assert np.array_equal(png, np.asarray(by_hand))  # the PNG shows the single best detection
