"""A region index: embed the regions of an image collection once, then query it with any text many times.

``regionclip index`` runs the detector's region encoder once per image and stores, per image, its
proposals (RPN or given boxes), their L2-normalised region embeddings (fp16), the proposal scores, the
boxes moved by the detector's class-agnostic deltas, the image path, size and a stable id (a hash of the
file's bytes). ``regionclip search`` then embeds text queries with the same checkpoint's text tower and
ranks the stored regions without running the backbone; a vocabulary gives per-image detections with the
scores ``regionclip detect --precision fp32 --ensemble none`` gives on the same boxes (the classifier is a
cosine over normalised embeddings divided by τ, and the deltas are class-agnostic, so both can be stored at
index time; the index is built in fp32 and without the frozen-classifier ensemble, whose scores need the
frozen branch's embeddings too).

On disk an index is a folder::

    index.json                     manifest (atomic): model identity, shard list, totals
    shard-r<rank>-<n>.safetensors  shards (atomic): tensors of a run of images, their records in metadata

Shard tensors (R regions of the shard's images): ``embeddings`` ``[R, D]`` fp16 normalised;
``boxes`` ``[R, 4]`` float32 xyxy original pixels (the proposals, what the embeddings describe);
``pred_boxes`` ``[R, 4]`` float32 (the boxes detections report: proposals + deltas when the detector applies
them); ``objectness`` ``[R]`` float32 (raw RPN logits, or the given boxes' scores); ``image`` ``[R]`` int32
(row of the shard's image list). A build appends shards; a shard is complete or absent, so an interrupted
build resumes by skipping the images already in a shard (never twice). Under ``torchrun`` each rank indexes
every ``world_size``-th remaining image into its own shards.

Search (:class:`RegionSearcher`): plain torch below ``torch_limit`` regions; FAISS inner product above it
(exact ``IndexFlatIP`` below ``ivf_limit``, ``IndexIVFScalarQuantizer`` with fp16 codes above, ``nprobe``
lists probed); torch everywhere when ``faiss`` is not installed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from regionclip.checkpoint import fingerprint
from regionclip.concepts import text_fingerprint
from regionclip.detect.api import Detector, read_image
from regionclip.detect.postprocess import Detections, postprocess_image
from regionclip.errors import RegionCLIPError
from regionclip.io import atomic_write, atomic_write_json
from regionclip.proposals.base import GivenBoxes

INDEX_FORMAT = "regionclip-index"
INDEX_VERSION = 1
MANIFEST = "index.json"
SHARD_RE = re.compile(r"^shard-r(\d+)-(\d+)\.safetensors$")


class IndexFileError(RegionCLIPError):
    """An index folder, manifest or shard is missing, corrupt or from another model."""


# ------------------------------------------------------------------------------------------ identities


def image_key(path: str | Path) -> str:
    """A stable id of an image file: the first 20 hex digits of the SHA-256 of its bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:20]


def model_identity(det: Detector, checkpoint: str | Path, rpn: str | Path | None) -> dict:
    """What an index depends on: weights (hash), text tower (hash), dimension, τ, inference settings."""
    model = det.model
    classifier = model.classifier
    background = classifier.background.detach().float()
    return {
        "id": fingerprint(model.state_dict()),
        "text_fingerprint": text_fingerprint(det.clip) if det.has_text else None,
        "checkpoint": str(Path(checkpoint).resolve()),
        "rpn": str(Path(rpn).resolve()) if rpn is not None else None,
        "embed_dim": int(model.embed_dim),
        "temperature": float(classifier.temperature),
        "background": background.tolist() if bool(background.any()) else None,
        "templates": hashlib.sha1("\x00".join(det.templates).encode()).hexdigest()[:16],
        "proposals": "given" if isinstance(model.proposal_generator, GivenBoxes) else "rpn",
        "min_size": det.min_size,
        "max_size": det.max_size,
        "inference": {
            "score_thresh": model.inference.score_thresh,
            "nms": model.inference.nms,
            "nms_thresh": model.inference.nms_thresh,
            "soft_nms_sigma": model.inference.soft_nms_sigma,
            "soft_nms_prune": model.inference.soft_nms_prune,
            "max_dets": model.inference.max_dets,
            "score_fusion": model.inference.score_fusion,
            "apply_box_deltas": model.inference.apply_box_deltas,
        },
    }


# ------------------------------------------------------------------------------------------ given boxes


def read_boxes_file(path: str | Path) -> dict[str, tuple[Tensor, Tensor]]:
    """Given boxes per image file name: ``{name: (boxes [N, 4] xyxy pixels, scores [N])}``.

    Accepts ``{"file.jpg": [[x1, y1, x2, y2], ...], ...}`` (scores 0) or a COCO JSON with ``images``
    (``id``, ``file_name``) and ``annotations`` (``image_id``, ``bbox`` [x, y, w, h], optional ``score``).
    Names are matched against an image's full path, then its file name.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RegionCLIPError(f"{path}: not a readable boxes JSON ({err})") from None
    out: dict[str, tuple[list, list]] = {}
    try:
        if isinstance(data, dict) and "images" in data and "annotations" in data:
            names = {int(img["id"]): str(img["file_name"]) for img in data["images"]}
            for name in names.values():
                out.setdefault(name, ([], []))
            for ann in data["annotations"]:
                x, y, w, h = (float(v) for v in ann["bbox"])
                entry = out.setdefault(names[int(ann["image_id"])], ([], []))
                entry[0].append([x, y, x + w, y + h])
                entry[1].append(float(ann.get("score", 0.0)))
        elif isinstance(data, dict):
            for name, boxes in data.items():
                rows = [[float(v) for v in b] for b in boxes]
                if any(len(r) != 4 for r in rows):
                    raise ValueError(f"{name!r}: boxes must be [x1, y1, x2, y2]")
                out[str(name)] = (rows, [0.0] * len(rows))
        else:
            raise ValueError("expected an object {file name: boxes} or a COCO JSON with images + annotations")
    except (KeyError, TypeError, ValueError) as err:
        raise RegionCLIPError(f"{path}: malformed boxes JSON ({err})") from None
    return {
        name: (torch.tensor(b, dtype=torch.float32).reshape(-1, 4), torch.tensor(s, dtype=torch.float32))
        for name, (b, s) in out.items()
    }


def _lookup_boxes(boxes: dict[str, tuple[Tensor, Tensor]], path: Path) -> tuple[Tensor, Tensor] | None:
    for key in (str(path), str(path.resolve()), path.name):
        if key in boxes:
            return boxes[key]
    return None


# ------------------------------------------------------------------------------------------ indexing


@dataclass
class IndexedImage:
    """The regions of one image: tensors as in the shard (see the module doc), plus its record."""

    record: dict  # {"id", "file", "width", "height"}
    embeddings: Tensor  # [N, D] fp16 normalised
    boxes: Tensor  # [N, 4] float32 xyxy original pixels
    pred_boxes: Tensor  # [N, 4] float32
    objectness: Tensor  # [N] float32


@torch.no_grad()
def embed_image(
    det: Detector,
    path: Path,
    given: tuple[Tensor, Tensor] | None = None,
    max_regions: int | None = None,
) -> IndexedImage:
    """Propose (RPN) or take the given boxes, encode every region once, and return what the index stores."""
    model = det.model
    originals, batch, scales = det._prepare([path])
    scale = scales[0]
    given_boxes = None
    if given is not None:
        given_boxes = [det._scale(given[0], scale, inverse=True).to(det.device)]
    elif isinstance(model.proposal_generator, GivenBoxes):
        raise RegionCLIPError(f"{path}: no RPN and no given boxes for this image (see --boxes)")
    proposals = model.propose(batch, given_boxes)[0]
    boxes = proposals.boxes.float()
    objectness = proposals.objectness.float() if given is None else given[1].to(boxes.device)
    if max_regions is not None and boxes.shape[0] > max_regions:
        keep = objectness.argsort(descending=True, stable=True)[:max_regions]
        boxes, objectness = boxes[keep], objectness[keep]
    res4 = model.backbone.trunk(batch.tensor)
    embeddings = model.embed_regions(res4, [boxes])
    pred = boxes
    if model.inference.apply_box_deltas:
        pred = model.box_transform.decode(model.box_regressor(embeddings), boxes)
    w, h = originals[0].size
    return IndexedImage(
        {"file": str(path.resolve()), "width": w, "height": h},
        F.normalize(embeddings.float(), dim=-1).half().cpu(),
        det._scale(boxes, scale).cpu(),
        det._scale(pred.float(), scale).cpu(),
        objectness.float().cpu(),
    )


def _shard_name(rank: int, number: int) -> str:
    return f"shard-r{rank}-{number:05d}.safetensors"


def write_shard(path: Path, items: Sequence[IndexedImage], model_id: str) -> dict:
    """Write one shard atomically; returns its manifest entry."""
    image = torch.cat([torch.full((len(it.boxes),), i, dtype=torch.int32) for i, it in enumerate(items)])
    tensors = {
        "embeddings": torch.cat([it.embeddings for it in items]).contiguous(),
        "boxes": torch.cat([it.boxes for it in items]).contiguous(),
        "pred_boxes": torch.cat([it.pred_boxes for it in items]).contiguous(),
        "objectness": torch.cat([it.objectness for it in items]).contiguous(),
        "image": image,
    }
    records = [it.record for it in items]
    metadata = {"format": INDEX_FORMAT, "model": model_id, "images": json.dumps(records)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return {"file": path.name, "images": len(items), "regions": int(image.shape[0])}


def read_shard_records(path: Path, model_id: str | None = None) -> list[dict]:
    """The image records of a shard (its header only); a clear error naming the file if it is unreadable."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        records = json.loads(meta["images"])
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise IndexFileError(
            f"{path}: corrupt index shard ({err}); delete it and re-run `regionclip index`"
        ) from None
    if meta.get("format") != INDEX_FORMAT:
        raise IndexFileError(f"{path}: not a regionclip index shard (format {meta.get('format')!r})")
    if model_id is not None and meta.get("model") != model_id:
        raise IndexFileError(
            f"{path}: shard built with another model ({meta.get('model')}, the index's is {model_id})"
        )
    return records


def read_shard(path: Path, model_id: str | None = None) -> tuple[list[dict], dict[str, Tensor]]:
    records = read_shard_records(path, model_id)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    except (SafetensorError, OSError, ValueError) as err:
        raise IndexFileError(
            f"{path}: corrupt index shard ({err}); delete it and re-run `regionclip index`"
        ) from None
    need = ("embeddings", "boxes", "pred_boxes", "objectness", "image")
    missing = [k for k in need if k not in tensors]
    n = tensors["embeddings"].shape[0] if "embeddings" in tensors else -1
    if missing or any(tensors[k].shape[0] != n for k in need):
        raise IndexFileError(f"{path}: corrupt index shard (tensors {missing or 'of unequal length'})")
    return records, tensors


def shard_files(folder: Path) -> list[Path]:
    """The shards of an index folder, sorted by (rank, number)."""
    found = [p for p in folder.iterdir() if SHARD_RE.match(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: tuple(int(g) for g in SHARD_RE.match(p.name).groups()))


def read_manifest(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise IndexFileError(
            f"{folder}: not a region index (no {MANIFEST}; build one with `regionclip index`)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        ok = manifest.get("format") == INDEX_FORMAT and isinstance(manifest.get("model"), dict)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise IndexFileError(f"{path}: corrupt index manifest ({err})") from None
    if not ok:
        raise IndexFileError(f"{path}: not a regionclip index manifest (format {manifest.get('format')!r})")
    if manifest.get("version", 0) > INDEX_VERSION:
        raise IndexFileError(f"{path}: index version {manifest['version']} is newer than this regionclip's")
    return manifest


def check_same_model(manifest_model: dict, model: dict, where: str | Path) -> None:
    """Refuse to mix an index with a model other than the one that built it."""
    for key in ("id", "embed_dim", "temperature", "text_fingerprint", "min_size", "max_size", "proposals"):
        if manifest_model.get(key) != model.get(key):
            raise IndexFileError(
                f"{where}: index built with another model ({key} {manifest_model.get(key)!r} in the index, "
                f"{model.get(key)!r} for {model.get('checkpoint')}); build a new index for this checkpoint"
            )


def update_manifest(folder: Path, model: dict) -> dict:
    """Rewrite the manifest from the shards on disk (atomic)."""
    shards, images, regions = [], 0, 0
    for path in shard_files(folder):
        try:
            with safe_open(str(path), framework="pt") as f:
                rows = f.get_slice("image").get_shape()[0]
        except (SafetensorError, OSError, ValueError) as err:
            raise IndexFileError(f"{path}: corrupt index shard ({err})") from None
        n = len(read_shard_records(path, model["id"]))
        shards.append({"file": path.name, "images": n, "regions": int(rows)})
        images += n
        regions += int(rows)
    manifest = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "model": model,
        "shards": shards,
        "images": images,
        "regions": regions,
    }
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


@dataclass
class BuildReport:
    added: int = 0  # images indexed by this run (this rank)
    skipped_existing: int = 0  # images already in the index
    skipped: list[dict] = field(default_factory=list)  # unreadable images: {"file", "reason"}
    regions: int = 0  # regions added by this run (this rank)


def build_index(
    det: Detector,
    files: Sequence[Path],
    out: str | Path,
    model: dict,
    given: dict[str, tuple[Tensor, Tensor]] | None = None,
    shard_size: int = 64,
    max_regions: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
    on_image: Callable[[int], None] | None = None,
) -> BuildReport:
    """Index ``files`` into the folder ``out``, appending to what is there (see the module doc).

    model: :func:`model_identity` of ``det``; an existing index must have been built with the same model.
    rank / world_size / barrier: this process's share under torchrun (rank ``r`` indexes every
    ``world_size``-th image still missing). on_image: called with the count of images done (tests use it to
    interrupt a build).
    """
    folder = Path(out)
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / MANIFEST).is_file():
            check_same_model(read_manifest(folder)["model"], model, folder / MANIFEST)
        update_manifest(folder, model)  # validates every shard, adopts shards of an interrupted run
    barrier()
    done: set[str] = set()
    for path in shard_files(folder):
        done.update(r["id"] for r in read_shard_records(path, model["id"]))
    numbers = [int(SHARD_RE.match(p.name).group(2)) for p in shard_files(folder)
               if int(SHARD_RE.match(p.name).group(1)) == rank]  # fmt: skip
    next_number = max(numbers, default=-1) + 1
    barrier()  # every rank has read the index before any writes to it

    report = BuildReport()
    todo, seen = [], set(done)
    for path in files:
        try:
            key = image_key(path)
        except OSError as err:
            report.skipped.append({"file": str(path), "reason": f"cannot read ({err.strerror})"})
            continue
        if key in seen:
            report.skipped_existing += 1
            continue
        seen.add(key)
        todo.append((path, key))
    pending: list[IndexedImage] = []
    for count, (path, key) in enumerate(progress(todo[rank::world_size]), start=1):
        boxes = _lookup_boxes(given, path) if given is not None else None
        if given is not None and boxes is None:
            report.skipped.append({"file": str(path), "reason": "no boxes for it in the boxes JSON"})
            continue
        try:
            item = embed_image(det, path, boxes, max_regions)
        except RegionCLIPError as err:
            report.skipped.append({"file": str(path), "reason": str(err)})
            continue
        item.record = {"id": key, **item.record}
        pending.append(item)
        report.added += 1
        report.regions += len(item.boxes)
        if len(pending) >= shard_size:
            write_shard(folder / _shard_name(rank, next_number), pending, model["id"])
            next_number += 1
            pending = []
        if on_image is not None:
            on_image(count)
    if pending:
        write_shard(folder / _shard_name(rank, next_number), pending, model["id"])
    barrier()
    if rank == 0:
        update_manifest(folder, model)
    return report


# ------------------------------------------------------------------------------------------ loading


@dataclass
class RegionIndex:
    """A loaded index: all regions concatenated (R rows), and the images they belong to.

    embeddings ``[R, D]`` fp16 normalised; boxes / pred_boxes ``[R, 4]`` float32 xyxy original pixels;
    objectness ``[R]``; image ``[R]`` int64 (row of ``images``); images: records ``{"id", "file", "width",
    "height"}``; manifest: the index's ``index.json``.
    """

    folder: Path
    manifest: dict
    images: list[dict]
    embeddings: Tensor
    boxes: Tensor
    pred_boxes: Tensor
    objectness: Tensor
    image: Tensor

    @property
    def model(self) -> dict:
        return self.manifest["model"]

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def image_rows(self) -> list[Tensor]:
        """Row indices of each image's regions (in ``images`` order)."""
        order = torch.argsort(self.image, stable=True)
        counts = torch.bincount(self.image, minlength=len(self.images)).tolist()
        return list(order.split(counts))


def load_index(folder: str | Path) -> RegionIndex:
    """Read an index folder; a clear error naming the file for a missing manifest or a corrupt shard."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    model = manifest["model"]
    listed = [folder / s["file"] for s in manifest.get("shards", [])]
    for path in listed:
        if not path.is_file():
            raise IndexFileError(f"{path}: index shard listed in {folder / MANIFEST} is missing")
    extra = [p for p in shard_files(folder) if p not in listed]  # from an interrupted build
    images: list[dict] = []
    parts: dict[str, list[Tensor]] = {
        k: [] for k in ("embeddings", "boxes", "pred_boxes", "objectness", "image")
    }
    for path in listed + extra:
        records, tensors = read_shard(path, model["id"])
        if tensors["embeddings"].shape[1] != model["embed_dim"]:
            raise IndexFileError(
                f"{path}: embeddings of dimension {tensors['embeddings'].shape[1]}, the index's is {model['embed_dim']}"
            )
        tensors["image"] = tensors["image"].long() + len(images)
        images += records
        for key in parts:
            parts[key].append(tensors[key])
    d = model["embed_dim"]
    empty = {"embeddings": torch.zeros(0, d, dtype=torch.float16), "boxes": torch.zeros(0, 4),
             "pred_boxes": torch.zeros(0, 4), "objectness": torch.zeros(0), "image": torch.zeros(0, dtype=torch.long)}  # fmt: skip
    cat = {k: torch.cat(v) if v else empty[k] for k, v in parts.items()}
    return RegionIndex(folder, manifest, images, **cat)


# ------------------------------------------------------------------------------------------ search


def faiss_module() -> Any | None:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


@dataclass
class SearchConfig:
    """How :class:`RegionSearcher` searches (see the module doc)."""

    backend: str = "auto"  # auto | torch | flat | ivf
    torch_limit: int = 20_000  # auto: plain torch below this many regions (FAISS is faster above)
    ivf_limit: int = 200_000  # auto: FAISS IVF at or above this many regions, exact flat below
    nlist: int | None = None  # IVF lists (default: ~sqrt(R), at least 1)
    nprobe: int = 16  # IVF lists probed per query
    train_size: int = 65_536  # IVF k-means training sample
    seed: int = 0  # sample and k-means seed


class RegionSearcher:
    """Top-k inner-product search over normalised embeddings ``[R, D]`` (fp16 or float)."""

    def __init__(self, embeddings: Tensor, config: SearchConfig | None = None, cache: Path | None = None):
        """cache: a file where a trained IVF index is kept (read if present, written if not; the caller
        names it after the index content, see :func:`ivf_cache_path`)."""
        self.config = config or SearchConfig()
        c = self.config
        n = int(embeddings.shape[0])
        self.size, self.dim = n, int(embeddings.shape[1])
        backend = c.backend
        if backend not in ("auto", "torch", "flat", "ivf"):
            raise RegionCLIPError(f"search backend: expected auto, torch, flat or ivf, got {backend!r}")
        faiss = faiss_module()
        if backend == "auto":
            backend = (
                "torch" if n < c.torch_limit or faiss is None else ("ivf" if n >= c.ivf_limit else "flat")
            )
        if backend in ("flat", "ivf") and faiss is None:
            raise RegionCLIPError(
                f"search backend {backend!r} needs FAISS: pip install 'regionclip[index]' (or faiss-cpu), "
                "or use --backend torch"
            )
        self.backend = backend
        self._torch: Tensor | None = None
        self._index: Any = None
        if backend == "torch":
            # a float32 copy when it is small (fast matmul); else fp16, cast chunk by chunk per query
            small = n * self.dim <= 128 * 2**20  # 512 MB of float32
            self._torch = embeddings.float() if small else embeddings
            return
        step = 262_144  # rows converted to float32 at a time
        if backend == "flat":
            self._index = faiss.IndexFlatIP(self.dim)
            for start in range(0, n, step):
                self._index.add(embeddings[start : start + step].float().numpy())
            return
        nlist = c.nlist or max(1, int(math.sqrt(n)))
        nlist = min(nlist, max(1, n))
        if cache is not None:
            cache = cache.with_name(f"{cache.stem}-{nlist}{cache.suffix}")
            if cache.is_file():
                try:
                    index = faiss.read_index(str(cache))
                except RuntimeError:
                    index = None  # damaged: rebuilt below
                if index is not None and index.ntotal == n and index.d == self.dim:
                    index.nprobe = min(c.nprobe, nlist)
                    self._index = index
                    return
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, self.dim, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
        generator = torch.Generator().manual_seed(c.seed)
        sample = torch.randperm(n, generator=generator)[: c.train_size].sort().values
        index.cp.seed = c.seed
        index.cp.niter = 10
        index.cp.min_points_per_centroid = 1
        index.train(embeddings[sample].float().numpy())
        for start in range(0, n, step):
            index.add(embeddings[start : start + step].float().numpy())
        index.nprobe = min(c.nprobe, nlist)
        self._index = index
        self._quantizer = quantizer  # the IVF index does not own it
        if cache is not None:
            atomic_write(cache, lambda tmp: faiss.write_index(index, str(tmp)))

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Scores and rows ``[Q, k']`` (k' = min(k, R)) of the best regions for normalised ``queries [Q, D]``,
        best first; an IVF search may return fewer hits (rows -1, scores -inf) when few lists are probed."""
        k = min(int(k), self.size)
        q = F.normalize(queries.float(), dim=-1)
        if k <= 0:
            return torch.zeros(q.shape[0], 0), torch.zeros(q.shape[0], 0, dtype=torch.long)
        if self._torch is not None:
            best_s, best_i = None, None
            chunk = 131_072
            for start in range(0, self.size, chunk):
                s = q @ self._torch[start : start + chunk].float().t()
                kk = min(k, s.shape[1])
                cs, ci = s.topk(kk, dim=1)
                ci = ci + start
                if best_s is None:
                    best_s, best_i = cs, ci
                else:
                    merged_s, pos = torch.cat([best_s, cs], 1).topk(k, dim=1)
                    best_i, best_s = torch.cat([best_i, ci], 1).gather(1, pos), merged_s
            return best_s, best_i
        scores, rows = self._index.search(q.numpy(), k)
        scores_t, rows_t = torch.from_numpy(scores), torch.from_numpy(rows).long()
        scores_t[rows_t < 0] = float("-inf")
        return scores_t, rows_t


def ivf_cache_path(index: RegionIndex) -> Path:
    """Where :class:`RegionSearcher` keeps the trained IVF of ``index``: named by a hash of its shard list,
    so appending images makes a new one."""
    shards = sorted((p.name, p.stat().st_size) for p in shard_files(index.folder))
    key = hashlib.sha1(json.dumps([index.model["id"], shards]).encode()).hexdigest()[:16]
    return index.folder / f"faiss-ivf-{key}.index"


# ------------------------------------------------------------------------------------------ queries


@dataclass
class SearchHit:
    query: str
    rank: int  # 1-based
    score: float  # cosine similarity of the region and the query's text embedding
    row: int  # row in the index
    image: dict  # the image record
    box: list[float]  # xyxy original pixels (the indexed proposal)


def search_index(
    index: RegionIndex, query_embeddings: Tensor, queries: Sequence[str], top: int, searcher: RegionSearcher
) -> list[SearchHit]:
    """The ``top`` best regions of the whole index for each query (text embeddings ``[Q, D]``)."""
    scores, rows = searcher.search(query_embeddings, top)
    hits = []
    for qi, query in enumerate(queries):
        rank = 0
        for s, r in zip(scores[qi].tolist(), rows[qi].tolist(), strict=True):
            if r < 0:
                continue
            rank += 1
            image = index.images[int(index.image[r])]
            box = [round(v, 2) for v in index.boxes[r].tolist()]
            hits.append(SearchHit(query, rank, float(s), int(r), image, box))
    return hits


def detect_in_index(
    index: RegionIndex, class_embeddings: Tensor, **overrides: Any
) -> list[tuple[dict, Detections]]:
    """Per-image detections of the vocabulary ``class_embeddings [K, D]`` from the stored regions.

    Follows :meth:`OpenVocabDetector.predict` step for step (cosine / τ with a background column, softmax,
    RPN-score fusion, NMS, top ``max_dets``) on the stored boxes, so the scores equal ``regionclip detect``'s
    on the same boxes up to the fp16 storage of the embeddings. overrides: ``score_thresh``, ``nms``,
    ``max_dets`` (default: the indexed detector's).
    """
    model = index.model
    settings = {**model["inference"], **{k: v for k, v in overrides.items() if v is not None}}
    apply = settings.pop("apply_box_deltas")
    w = F.normalize(class_embeddings.float(), dim=-1)
    d = w.shape[1]
    if d != model["embed_dim"]:
        raise RegionCLIPError(
            f"vocabulary embeddings of dimension {d}, the index's regions are {model['embed_dim']}"
        )
    bg = (
        torch.zeros(d)
        if model.get("background") is None
        else F.normalize(torch.tensor(model["background"]), dim=0)
    )
    out = []
    for image, rows in zip(index.images, index.image_rows(), strict=True):
        x = index.embeddings[rows].float()
        logits = torch.cat([x @ w.t(), (x @ bg)[:, None]], dim=1) / model["temperature"]
        boxes = index.pred_boxes[rows] if apply else index.boxes[rows]
        det = postprocess_image(
            logits, boxes, index.objectness[rows], x, (image["height"], image["width"]), **settings
        )
        out.append((image, det))
    return out


def crop_region(image_path: str | Path, box: Sequence[float], size: int = 128) -> Any:
    """The region ``box`` (xyxy) of an image, padded by 10%, fitted in a ``size`` square (a PIL image)."""
    from PIL import Image

    img = read_image(image_path)
    x1, y1, x2, y2 = box
    pad_x, pad_y = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
    crop = img.crop(
        (max(0, int(x1 - pad_x)), max(0, int(y1 - pad_y)),
         min(img.width, int(math.ceil(x2 + pad_x))), min(img.height, int(math.ceil(y2 + pad_y))))
    )  # fmt: skip
    if crop.width < 1 or crop.height < 1:
        crop = Image.new("RGB", (1, 1))
    scale = size / max(crop.width, crop.height)  # up or down: small regions stay visible
    return crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.BICUBIC)


def contact_sheet(hits: Sequence[SearchHit], queries: Sequence[str], size: int = 128) -> Any:
    """One row per query of its hits' crops, with the query and score under each crop (a PIL image)."""
    from PIL import Image, ImageDraw

    from regionclip.detect.visualize import _font

    font = _font(12)
    per_query = {q: [h for h in hits if h.query == q] for q in queries}
    cols = max([len(v) for v in per_query.values()] + [1])
    cell_w, cell_h = size + 8, size + 34
    sheet = Image.new("RGB", (cols * cell_w + 8, len(queries) * cell_h + 8), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    crops: dict[tuple[str, tuple], Any] = {}
    for r, query in enumerate(queries):
        for c, hit in enumerate(per_query[query]):
            x0, y0 = 8 + c * cell_w, 8 + r * cell_h
            key = (hit.image["file"], tuple(hit.box))
            try:
                crop = crops.get(key) or crop_region(hit.image["file"], hit.box, size)
            except RegionCLIPError:
                crop = Image.new("RGB", (size, size), (220, 220, 220))
            crops[key] = crop
            sheet.paste(crop, (x0 + (size - crop.width) // 2, y0 + (size - crop.height) // 2))
            draw.rectangle([x0 - 1, y0 - 1, x0 + size, y0 + size], outline=(200, 200, 200))
            draw.text((x0, y0 + size + 3), query[:22], fill=(0, 0, 0), font=font)
            draw.text((x0, y0 + size + 17), f"#{hit.rank}  {hit.score:.3f}", fill=(90, 90, 90), font=font)
    return sheet
