"""Open-vocabulary splits: the COCO 48/17 OVR-CNN split and user-declared base/novel lists
(method reference §6.6).

``make_coco_ovd_split`` rebuilds OVR-CNN's ``ovd_ins_{train,val}2017_*.json`` from the standard COCO 2017
instances files: the training file keeps only base-class annotations and the images with at least one of
them; the evaluation files keep the annotations of the 65 classes (or of the base / novel subset) and the
images that contain any of them. Kept categories carry a ``"split"`` field (``"base"`` / ``"novel"``), which
:meth:`OvdSplit.from_json` reads back (the miniature world writes the same field).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from regionclip.concepts import read_names_file
from regionclip.data.coco import load_coco_instances, validate_instances
from regionclip.errors import DataError
from regionclip.io import atomic_write_json

# (COCO category id, name) of the 48 base classes, in category-id order.
COCO_OVD_BASE: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (7, "train"), (8, "truck"), (9, "boat"),
    (15, "bench"), (16, "bird"), (19, "horse"), (20, "sheep"), (23, "bear"), (24, "zebra"), (25, "giraffe"),
    (27, "backpack"), (31, "handbag"), (33, "suitcase"), (34, "frisbee"), (35, "skis"), (38, "kite"),
    (42, "surfboard"), (44, "bottle"), (48, "fork"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (59, "pizza"), (60, "donut"),
    (62, "chair"), (65, "bed"), (70, "toilet"), (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"),
    (78, "microwave"), (79, "oven"), (80, "toaster"), (82, "refrigerator"), (84, "book"), (85, "clock"),
    (86, "vase"), (90, "toothbrush"),
)  # fmt: skip
# (COCO category id, name) of the 17 novel (target) classes, in category-id order.
COCO_OVD_NOVEL: tuple[tuple[int, str], ...] = (
    (5, "airplane"), (6, "bus"), (17, "cat"), (18, "dog"), (21, "cow"), (22, "elephant"), (28, "umbrella"),
    (32, "tie"), (36, "snowboard"), (41, "skateboard"), (47, "cup"), (49, "knife"), (61, "cake"), (63, "couch"),
    (76, "keyboard"), (81, "sink"), (87, "scissors"),
)  # fmt: skip
# The 65 OVD classes in COCO category-id order (the label order of the 65-class test embeddings).
COCO_OVD_ALL: tuple[tuple[int, str], ...] = tuple(sorted(COCO_OVD_BASE + COCO_OVD_NOVEL))
COCO_BASE_CLASSES: tuple[str, ...] = tuple(n for _, n in COCO_OVD_BASE)
COCO_NOVEL_CLASSES: tuple[str, ...] = tuple(n for _, n in COCO_OVD_NOVEL)
COCO_OVD_CLASSES: tuple[str, ...] = tuple(n for _, n in COCO_OVD_ALL)
assert len(COCO_BASE_CLASSES) == 48 and len(COCO_NOVEL_CLASSES) == 17 and len(COCO_OVD_CLASSES) == 65


@dataclass
class OvdSplit:
    """Base (seen in training) and novel (held out) class names; ``names`` is base followed by novel."""

    base: list[str]
    novel: list[str]

    def __post_init__(self) -> None:
        self.base = list(self.base)
        self.novel = list(self.novel)
        for what, names in (("base", self.base), ("novel", self.novel)):
            for i, n in enumerate(names):
                if not isinstance(n, str) or not n.strip():
                    raise DataError(f"OVD split: {what} entry {i} is {n!r}, expected a class name")
            dup = [n for n in set(names) if names.count(n) > 1]
            if dup:
                raise DataError(f"OVD split: {what} classes list {sorted(dup)[:5]} twice")
        overlap = sorted(set(self.base) & set(self.novel))
        if overlap:
            raise DataError(
                f"OVD split: {len(overlap)} classes are both base and novel: {overlap[:5]}; a class is one or the other"
            )
        if not self.base and not self.novel:
            raise DataError("OVD split: no base and no novel classes")

    @property
    def names(self) -> list[str]:
        return self.base + self.novel

    def split_of(self, name: str) -> Literal["base", "novel"] | None:
        if name in self.base:
            return "base"
        return "novel" if name in self.novel else None

    def check_names(self, known: Sequence[str], source: str = "the dataset") -> None:
        """Raise if a base or novel name is not one of ``known`` (e.g. a dataset's categories)."""
        known_set = set(known)
        unknown = [n for n in self.names if n not in known_set]
        if unknown:
            raise DataError(
                f"OVD split: {len(unknown)} classes are not categories of {source}: {unknown[:5]} "
                f"(it has e.g. {list(known)[:5]})"
            )

    @classmethod
    def coco(cls) -> OvdSplit:
        """The COCO OVD split: 48 base, 17 novel (OVR-CNN; method reference §6.6)."""
        return cls(list(COCO_BASE_CLASSES), list(COCO_NOVEL_CLASSES))

    @classmethod
    def from_json(cls, instances: str | Path | dict) -> OvdSplit:
        """Read the per-category ``"split"`` fields (``"base"`` / ``"novel"``) of a COCO instances file.

        Categories are taken in id order; a category without a ``split`` field is in neither list, and at
        least one must have one.
        """
        source = "<instances dict>" if isinstance(instances, dict) else str(instances)
        data = (
            validate_instances(instances, source)
            if isinstance(instances, dict)
            else load_coco_instances(instances)
        )
        base, novel = [], []
        for cat in sorted(data["categories"], key=lambda c: c["id"]):
            split = cat.get("split")
            if split is None:
                continue
            if split == "base":
                base.append(cat["name"])
            elif split in ("novel", "target"):
                novel.append(cat["name"])
            else:
                raise DataError(
                    f"{source}: category {cat['name']!r} has split {split!r}; expected 'base' or 'novel'"
                )
        if not base and not novel:
            raise DataError(
                f"{source}: no category has a 'split' field ('base'/'novel'); "
                "declare the split with --base-classes FILE --novel-classes FILE"
            )
        return cls(base, novel)

    @classmethod
    def from_files(
        cls, base_file: str | Path, novel_file: str | Path, known: Sequence[str] | None = None
    ) -> OvdSplit:
        """User-declared lists, one name per line; checked against ``known`` category names if given."""
        split = cls(read_names_file(base_file), read_names_file(novel_file))
        if known is not None:
            split.check_names(known, "the dataset")
        return split


def _filter_instances(data: dict, keep: dict[str, str]) -> dict:
    """Keep the categories named in ``keep`` (name -> split), their annotations and the images with any."""
    cats = [
        dict(c, split=keep[c["name"]])
        for c in sorted(data["categories"], key=lambda c: c["id"])
        if c["name"] in keep
    ]
    cat_ids = {c["id"] for c in cats}
    anns = [a for a in data["annotations"] if a["category_id"] in cat_ids]
    with_anns = {a["image_id"] for a in anns}
    images = [img for img in data["images"] if img["id"] in with_anns]
    out = {k: v for k, v in data.items() if k not in ("images", "annotations", "categories")}
    out.update(images=images, annotations=anns, categories=cats)
    return out


def make_coco_ovd_split(
    instances_json: str | Path, out_dir: str | Path, which: Literal["train", "val"] = "train"
) -> dict[str, Path]:
    """Write the OVR-CNN OVD jsons from a standard ``instances_{train,val}2017.json``.

    train -> ``ovd_ins_train2017_b.json``: base annotations only, images with at least one, the 48 base
    categories. val -> ``ovd_ins_val2017_all.json`` (65 classes), ``_b`` (48) and ``_t`` (17): annotations
    of those classes and the images containing any of them. Returns ``{"all"|"b"|"t": path}``.
    """
    if which not in ("train", "val"):
        raise DataError(f"make_coco_ovd_split: which must be 'train' or 'val', got {which!r}")
    data = load_coco_instances(instances_json)
    names = {c["name"] for c in data["categories"]}
    missing = [n for n in COCO_OVD_CLASSES if n not in names]
    if missing:
        raise DataError(
            f"{instances_json}: not a COCO 2017 instances file: categories {missing[:5]} are missing "
            f"({len(missing)} of the 65 OVD classes)"
        )
    base = dict.fromkeys(COCO_BASE_CLASSES, "base")
    novel = dict.fromkeys(COCO_NOVEL_CLASSES, "novel")
    subsets = {"b": base} if which == "train" else {"all": {**base, **novel}, "b": base, "t": novel}
    out_dir = Path(out_dir)
    paths = {}
    for key, keep in subsets.items():
        path = out_dir / f"ovd_ins_{which}2017_{key}.json"
        atomic_write_json(path, _filter_instances(data, keep), indent=None)
        paths[key] = path
    return paths
