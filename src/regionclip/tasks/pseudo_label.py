"""The pseudo-label task (``regionclip pseudo-label``): the pseudo-label inspector (paper §3.2; method reference §4.1-4.2).

For each image: proposals (a trained RPN with the pretraining preset in eval mode = 300 boxes, random
boxes, or the dataset's GT boxes) -> the frozen teacher's region embeddings (``RegionEncoder(teacher.visual)``)
-> :func:`regionclip.pretrain.pseudo_labels.pseudo_label` against the concept bank (softmax at τ = 0.01
over the whole pool, kept when the top probability > threshold). Writes, atomically, per image
``<name>.json`` (kept regions: box in original-image pixels, concept, probability, best first) and
``<name>.png`` (the image with the kept boxes and labels, each label on a filled box of the box's colour in
black or white text, whichever contrasts), plus ``index.json`` (per-image counts, skipped images). Images
that cannot be read are reported and skipped. The official keep-all fallback (no region above the
threshold) applies per image here, per GPU batch officially.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from regionclip.clip.checkpoint import load_clip
from regionclip.concepts import ConceptBank
from regionclip.data.coco import load_coco_instances, pil_to_tensor
from regionclip.data.images import open_image
from regionclip.data.transforms import ResizeShortestEdge
from regionclip.errors import DataError, RegionCLIPError
from regionclip.io import atomic_write, atomic_write_json
from regionclip.precision import apply_precision, resolve_precision
from regionclip.pretrain.pseudo_labels import pseudo_label
from regionclip.proposals.base import GivenBoxes
from regionclip.proposals.loading import load_proposal_generator
from regionclip.proposals.random_boxes import RandomBoxes
from regionclip.regions import RegionEncoder
from regionclip.structures import ImageBatch
from regionclip.tasks.inference import readable_batches

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (0, 0, 128),
)  # fmt: skip


@dataclass
class PseudoLabelConfig:
    teacher: str = ""  # teacher CLIP checkpoint (.safetensors, or OpenAI .pt)
    teacher_model: str | None = None  # CLIP preset of a non-regionclip teacher file, e.g. RN50
    concepts: str = ""  # concept bank (.safetensors, regionclip embed-concepts)
    images: str | None = None  # folder of images (or dataset)
    dataset: str | None = None  # COCO-format JSON (with image_root); needed for proposals gt
    image_root: str | None = None  # image folder of dataset
    proposals: str = "random"  # rpn:CKPT | random | gt
    out: str = ""  # output folder
    max_images: int | None = None  # process at most N images
    threshold: float = 0.1  # keep regions with top probability > this
    temperature: float = 0.01  # softmax temperature (official 0.01)
    short_size: int | None = None  # resize short side before encoding (None: no resize)
    max_size: int = 1333  # long-side cap of short_size
    random_count: int = 100  # random boxes per image
    random_min_size: float = 16.0  # smallest random box side (pixels)
    seed: int = 0  # seed of the random boxes
    draw_top: int = 30  # draw at most this many regions per image
    device: str | None = None  # cpu or cuda (None: cuda when available)
    precision: str = "auto"  # networks in fp32 or bf16 (auto: bf16 where native)


def _load_teacher(path: str, model_name: str | None):
    return load_clip(path, model_name, what="--teacher-model")


def _items(cfg: PseudoLabelConfig) -> list[tuple[str, Path, torch.Tensor | None]]:
    """(display name, file, GT boxes or None) of every input image, in order."""
    if cfg.images:
        folder = Path(cfg.images)
        if not folder.is_dir():
            raise DataError(f"--images {folder}: not a folder")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        return [(str(p.relative_to(folder)), p, None) for p in files]
    if not cfg.image_root:
        raise RegionCLIPError("--dataset needs --image-root")

    data = load_coco_instances(cfg.dataset)
    boxes: dict = {img["id"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        x, y, w, h = (float(v) for v in ann["bbox"])
        if not ann.get("iscrowd", 0) and w > 0 and h > 0:
            boxes[ann["image_id"]].append([x, y, x + w, y + h])
    root = Path(cfg.image_root)
    return [
        (str(img["file_name"]), root / img["file_name"], torch.tensor(boxes[img["id"]]).reshape(-1, 4))
        for img in data["images"]
    ]


def _read(path: Path) -> Image.Image:
    return open_image(path)


def _colour(name: str) -> tuple[int, int, int]:
    return PALETTE[int(hashlib.md5(name.encode()).hexdigest(), 16) % len(PALETTE)]


def draw_regions(image: Image.Image, regions: list[dict]) -> Image.Image:
    """``image`` with each region's box and a ``concept probability`` label on a filled, contrasting box."""
    canvas = image.copy()
    draw = ImageDraw.Draw(canvas)
    w, h = canvas.size
    line = max(1, round(min(w, h) / 200))
    font = ImageFont.load_default(size=max(10, round(min(w, h) / 40)))
    for region in reversed(regions):  # best last, so it ends on top
        x1, y1, x2, y2 = region["box"]
        colour = _colour(region["concept"])
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=line)
        text = f"{region['concept']} {region['probability']:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 4, bottom - top + 4
        ty = y1 - th if y1 - th >= 0 else y1  # above the box when there is room, else inside
        tx = min(max(0.0, x1), max(0.0, w - tw))
        draw.rectangle([tx, ty, tx + tw, ty + th], fill=colour)
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
        draw.text((tx + 2 - left, ty + 2 - top), text, fill=ink, font=font)
    return canvas


def _output_stem(name: str, used: set[str]) -> str:
    stem = Path(name).with_suffix("").as_posix().replace("/", "__")
    candidate, k = stem, 1
    while candidate in used:
        k += 1
        candidate = f"{stem}_{k}"
    used.add(candidate)
    return candidate


def pseudo_label_images(cfg: PseudoLabelConfig) -> Path:
    """Pseudo-label the images of ``args`` (see the module doc); returns the output folder."""

    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    teacher = _load_teacher(cfg.teacher, cfg.teacher_model).to(device).eval()
    encoder = RegionEncoder(teacher.visual).eval()
    bank = ConceptBank.load(cfg.concepts)
    bank.check_dim(teacher.embed_dim, f"the teacher ({teacher.preset.name})")
    concepts = bank.embeddings.to(device)

    kind = cfg.proposals
    if kind.startswith("rpn:"):
        generator = load_proposal_generator(kind[4:], "pretraining")
        kind = "rpn"
    elif kind == "random":
        generator = RandomBoxes(cfg.random_count, cfg.random_min_size, 8, False, cfg.seed)
    elif kind == "gt":
        if not cfg.dataset:
            raise RegionCLIPError("--proposals gt needs --dataset JSON --image-root DIR (the GT boxes)")
        generator = GivenBoxes()
    else:
        raise RegionCLIPError(f"--proposals {cfg.proposals!r}: expected rpn:CHECKPOINT, random or gt")
    generator = generator.to(device).eval()
    precision = resolve_precision(cfg.precision, device)
    apply_precision(encoder, precision)
    apply_precision(generator, precision)
    resize = ResizeShortestEdge(cfg.short_size, cfg.max_size, "bicubic") if cfg.short_size else None

    items = _items(cfg)
    if cfg.max_images is not None:
        items = items[: cfg.max_images]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    index, skipped = [], []
    for readable, unreadable in readable_batches(lambda k: _read(items[k][1]), range(len(items))):
        skipped += [{"image": items[entry.index][0], "reason": entry.reason} for entry in unreadable]
        if not readable:
            continue
        ((k, pil),) = readable
        name, path, gt = items[k]
        orig_w, orig_h = pil.size
        boxes_in = gt.clone() if gt is not None else torch.zeros(0, 4)
        if resize is not None:
            pil_in, boxes_in = resize(pil, boxes_in)
        else:
            pil_in = pil
        sx, sy = pil_in.size[0] / orig_w, pil_in.size[1] / orig_h
        images = ImageBatch.from_images([pil_to_tensor(pil_in)]).to(device)
        with torch.no_grad():
            props = generator(images, [boxes_in] if gt is not None else None)[0]
            regions: list[dict] = []
            fallback = False
            if len(props) > 0:
                embeddings = encoder(images.tensor, [props.boxes])
                labels = pseudo_label(embeddings, concepts, cfg.temperature, cfg.threshold)
                fallback = not bool((labels.top_prob > cfg.threshold).any())
                kept = labels.keep.nonzero().flatten().tolist()
                scale = torch.tensor([sx, sy, sx, sy], device=props.boxes.device)
                boxes = (props.boxes / scale).cpu()
                for j, row in zip(kept, range(len(kept)), strict=True):
                    concept = int(labels.labels[row])
                    regions.append(
                        {
                            "box": [round(float(v), 2) for v in boxes[j]],
                            "concept": bank.names[concept],
                            "probability": round(float(labels.soft_targets[row, concept]), 4),
                        }
                    )
        regions.sort(key=lambda r: -r["probability"])
        stem = _output_stem(name, used)
        record = {
            "image": name,
            "width": orig_w,
            "height": orig_h,
            "proposals": kind,
            "num_proposals": len(props),
            "threshold": cfg.threshold,
            "temperature": cfg.temperature,
            "all_kept_fallback": fallback,
            "regions": regions,
        }
        atomic_write_json(out / f"{stem}.json", record)
        drawn = draw_regions(pil, regions[: cfg.draw_top])
        atomic_write(out / f"{stem}.png", lambda p, im=drawn: im.save(p, format="PNG"))
        index.append(
            {"image": name, "json": f"{stem}.json", "png": f"{stem}.png", "num_regions": len(regions)}
        )
    if not index and skipped:  # nothing could be read: an error, and an earlier index.json stays
        raise DataError(f"none of the {len(skipped)} images could be read (e.g. {skipped[0]['reason']})")
    for entry in skipped:
        print(f"pseudo-label: skipped {entry['image']}: {entry['reason']}", file=sys.stderr)
    atomic_write_json(
        out / "index.json",
        {"teacher": str(cfg.teacher), "concepts": str(cfg.concepts), "images": index, "skipped": skipped},
    )
    print(
        f"pseudo-label: wrote {len(index)} images to {out}" + (f", skipped {len(skipped)}" if skipped else "")
    )
    return out
