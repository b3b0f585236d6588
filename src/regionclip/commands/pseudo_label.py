"""``regionclip pseudo-label``: the pseudo-label inspector (paper §3.2; method reference §4.1-4.2).

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

import argparse
import hashlib
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from regionclip.data.images import open_image
from regionclip.errors import DataError, RegionCLIPError
from regionclip.io import atomic_write, atomic_write_json
from regionclip.precision import add_precision_argument, apply_precision, resolve_precision

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (0, 0, 128),
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--teacher", required=True, help="teacher CLIP checkpoint (.safetensors, or OpenAI .pt)"
    )
    parser.add_argument("--teacher-model", help="CLIP preset of a non-regionclip teacher file, e.g. RN50")
    parser.add_argument(
        "--concepts", required=True, help="concept bank (.safetensors, `regionclip embed-concepts`)"
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of images")
    src.add_argument("--dataset", help="COCO-format JSON (with --image-root); needed for --proposals gt")
    parser.add_argument("--image-root", help="image folder of --dataset")
    parser.add_argument("--proposals", default="random", help="rpn:CKPT | random | gt (default: random)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--max-images", type=int, help="process at most N images")
    parser.add_argument(
        "--threshold", type=float, default=0.1, help="keep regions with top probability > this"
    )
    parser.add_argument("--temperature", type=float, default=0.01, help="softmax temperature (official 0.01)")
    parser.add_argument(
        "--short-size", type=int, help="resize short side before encoding (default: no resize)"
    )
    parser.add_argument("--max-size", type=int, default=1333, help="long-side cap of --short-size")
    parser.add_argument("--random-count", type=int, default=100, help="random boxes per image")
    parser.add_argument(
        "--random-min-size", type=float, default=16.0, help="smallest random box side (pixels)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random boxes")
    parser.add_argument("--draw-top", type=int, default=30, help="draw at most this many regions per image")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    add_precision_argument(parser)


def _load_teacher(path: str, model_name: str | None):
    from regionclip.clip.checkpoint import load_clip
    from regionclip.clip.model import create_model

    if Path(path).suffix == ".safetensors":
        return load_clip(path)
    if not model_name:
        raise RegionCLIPError(
            f"{path}: not a regionclip checkpoint; give its preset with --teacher-model (e.g. RN50)"
        )
    return create_model(model_name, pretrained=path)


def _items(args: argparse.Namespace) -> list[tuple[str, Path, torch.Tensor | None]]:
    """(display name, file, GT boxes or None) of every input image, in order."""
    if args.images:
        folder = Path(args.images)
        if not folder.is_dir():
            raise DataError(f"--images {folder}: not a folder")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        return [(str(p.relative_to(folder)), p, None) for p in files]
    if not args.image_root:
        raise RegionCLIPError("--dataset needs --image-root")
    from regionclip.data.coco import load_coco_instances

    data = load_coco_instances(args.dataset)
    boxes: dict = {img["id"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        x, y, w, h = (float(v) for v in ann["bbox"])
        if not ann.get("iscrowd", 0) and w > 0 and h > 0:
            boxes[ann["image_id"]].append([x, y, x + w, y + h])
    root = Path(args.image_root)
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


def run(args: argparse.Namespace) -> int:
    from regionclip.concepts import ConceptBank
    from regionclip.data.coco import pil_to_tensor
    from regionclip.data.transforms import ResizeShortestEdge
    from regionclip.pretrain.pseudo_labels import pseudo_label
    from regionclip.proposals.base import GivenBoxes
    from regionclip.proposals.random_boxes import RandomBoxes
    from regionclip.proposals.rpn import load_proposal_generator
    from regionclip.regions import RegionEncoder
    from regionclip.structures import ImageBatch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    teacher = _load_teacher(args.teacher, args.teacher_model).to(device).eval()
    encoder = RegionEncoder(teacher.visual).eval()
    bank = ConceptBank.load(args.concepts)
    bank.check_dim(teacher.embed_dim, f"the teacher ({teacher.preset.name})")
    concepts = bank.embeddings.to(device)

    kind = args.proposals
    if kind.startswith("rpn:"):
        generator = load_proposal_generator(kind[4:], "pretraining")
        kind = "rpn"
    elif kind == "random":
        generator = RandomBoxes(args.random_count, args.random_min_size, 8, False, args.seed)
    elif kind == "gt":
        if not args.dataset:
            raise RegionCLIPError("--proposals gt needs --dataset JSON --image-root DIR (the GT boxes)")
        generator = GivenBoxes()
    else:
        raise RegionCLIPError(f"--proposals {args.proposals!r}: expected rpn:CHECKPOINT, random or gt")
    generator = generator.to(device).eval()
    precision = resolve_precision(args.precision, device)
    apply_precision(encoder, precision)
    apply_precision(generator, precision)
    resize = ResizeShortestEdge(args.short_size, args.max_size, "bicubic") if args.short_size else None

    items = _items(args)
    if args.max_images is not None:
        items = items[: args.max_images]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    index, skipped = [], []
    for name, path, gt in items:
        try:
            pil = _read(path)
        except DataError as err:
            skipped.append({"image": name, "reason": str(err)})
            continue
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
                labels = pseudo_label(embeddings, concepts, args.temperature, args.threshold)
                fallback = not bool((labels.top_prob > args.threshold).any())
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
            "threshold": args.threshold,
            "temperature": args.temperature,
            "all_kept_fallback": fallback,
            "regions": regions,
        }
        atomic_write_json(out / f"{stem}.json", record)
        drawn = draw_regions(pil, regions[: args.draw_top])
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
        {"teacher": str(args.teacher), "concepts": str(args.concepts), "images": index, "skipped": skipped},
    )
    print(
        f"pseudo-label: wrote {len(index)} images to {out}" + (f", skipped {len(skipped)}" if skipped else "")
    )
    return 0
