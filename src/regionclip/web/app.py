"""``regionclip serve``'s web application: one static page (``page.html``) and a small JSON API.

* ``GET /``: the page (detection tab, index-search tab); boxes are drawn by the page as absolutely
  positioned elements in the DOM, with the colours of :func:`regionclip.detect.visualize.class_color`
  (sent by the server with each detection);
* ``GET /api/info``: checkpoint, sample images (by id), index size, limits;
* ``GET /api/sample/{id}``: a sample image (ids from a server-side list; no path from the client is ever
  read);
* ``POST /api/detect`` (form: ``vocab``, and ``file`` or ``sample``): detections in original pixels, names,
  colours and the COCO results; ``POST /api/detect.png``: the same drawn by
  :func:`~regionclip.detect.visualize.draw_detections` (``min_score`` form field);
* ``POST /api/search`` (JSON ``{"queries": [...], "top": k}``): the best regions of the index, with crops.

Limits: an upload above ``max_upload_bytes`` is refused with HTTP 413, an image above ``max_pixels`` or
one that cannot be decoded with HTTP 400; every error is JSON ``{"detail": message}``, shown by the page.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError

from regionclip.detect.api import Detector
from regionclip.detect.visualize import class_color, draw_detections, text_color
from regionclip.errors import RegionCLIPError
from regionclip.proposals.base import GivenBoxes
from regionclip.vocab import BUILTIN_VOCABULARIES, check_names

PAGE = Path(__file__).with_name("page.html")
SKIMAGE_SAMPLES = ("astronaut", "chelsea", "coffee", "rocket")
DEMO_WORLD_VAL = Path("regionclip-demo/world/images/val")


@dataclass
class ServeConfig:
    """Limits and defaults of the page."""

    max_upload_bytes: int = 10 * 1024 * 1024  # larger uploads get HTTP 413
    max_pixels: int = 25_000_000  # larger images (width x height) get HTTP 400
    max_queries: int = 20  # search queries per request
    max_top: int = 100  # search hits per query
    demo_samples: int = 6  # sample images taken from the demo world's val folder, when present
    default_vocab: str = "person, cat, cup, rocket, flag"  # the vocabulary the page starts with


@dataclass
class Sample:
    id: str
    name: str
    load: Callable[[], Image.Image] = field(repr=False)


def default_samples(config: ServeConfig, world_val: Path = DEMO_WORLD_VAL) -> list[Sample]:
    """The demo world's first val images (when the folder exists) and scikit-image's bundled photos."""
    samples = []
    if world_val.is_dir():
        for path in sorted(world_val.glob("*.jpg"))[: config.demo_samples]:
            samples.append(
                Sample(f"world-{path.stem}", f"demo world {path.stem}", lambda p=path: Image.open(p))
            )
    try:
        from skimage import data
    except ImportError:
        data = None
    for name in SKIMAGE_SAMPLES if data is not None else ():
        samples.append(Sample(f"skimage-{name}", f"{name} (scikit-image)",
                              lambda n=name: Image.fromarray(getattr(data, n)())))  # fmt: skip
    return samples


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _png_data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def create_app(
    detector: Detector,
    index_folder: str | Path | None = None,
    config: ServeConfig | None = None,
    samples: list[Sample] | None = None,
    checkpoint_name: str = "",
) -> FastAPI:
    """The application serving ``detector`` (and the region index at ``index_folder``, when given)."""
    config = config or ServeConfig()
    samples = default_samples(config) if samples is None else samples
    by_id = {s.id: s for s in samples}
    lock = threading.Lock()  # one inference at a time (the model is shared)
    index = searcher = index_det = None
    if index_folder is not None:
        from regionclip.region_index import RegionSearcher, ivf_cache_path, load_index
        from regionclip.tasks.search import load_text_side

        index = load_index(index_folder)
        index_det = load_text_side(index)
        searcher = RegionSearcher(index.embeddings, cache=ivf_cache_path(index))

    app = FastAPI(title="regionclip", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def limit_upload(request: Request, call_next):
        length = request.headers.get("content-length")
        # the form's own fields fit in 64 KiB beside the file
        if (
            request.method == "POST"
            and (length or "").isdigit()
            and int(length) > config.max_upload_bytes + 65536
        ):
            return JSONResponse({"detail": _too_large(int(length), config)}, status_code=413)
        return await call_next(request)

    @app.exception_handler(RegionCLIPError)
    async def user_error(request: Request, err: RegionCLIPError):
        return JSONResponse({"detail": str(err)}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/api/info")
    def info() -> dict:
        return {
            "checkpoint": checkpoint_name,
            "samples": [{"id": s.id, "name": s.name} for s in samples],
            "index": None if index is None else {"images": len(index.images), "regions": len(index)},
            "limits": {"max_upload_bytes": config.max_upload_bytes, "max_pixels": config.max_pixels},
            "default_vocab": config.default_vocab,
        }

    @app.get("/api/sample/{sample_id}")
    def sample(sample_id: str) -> Response:
        if sample_id not in by_id:
            raise HTTPException(404, f"no sample image {sample_id!r}")
        buf = io.BytesIO()
        by_id[sample_id].load().convert("RGB").save(buf, format="JPEG", quality=92)
        return Response(buf.getvalue(), media_type="image/jpeg")

    async def _image(file: UploadFile | None, sample_id: str | None) -> tuple[Image.Image, str]:
        if file is not None and file.filename:
            data = await file.read(config.max_upload_bytes + 1)
            if len(data) > config.max_upload_bytes:
                raise HTTPException(413, _too_large(len(data), config))
            return _decode(data, file.filename, config), file.filename
        if sample_id:
            if sample_id not in by_id:
                raise HTTPException(400, f"no sample image {sample_id!r}")
            return by_id[sample_id].load().convert("RGB"), by_id[sample_id].name
        raise HTTPException(400, "no image: upload a file or pick a sample")

    def _detect(image: Image.Image, vocab: str):
        names = web_vocabulary(vocab)
        with lock:
            if isinstance(detector.model.proposal_generator, GivenBoxes):
                raise RegionCLIPError(
                    "this checkpoint has no RPN to propose regions; serve a detector with one"
                )
            return detector(image, names)[0]

    @app.post("/api/detect")
    async def detect(
        vocab: str = Form(""), file: UploadFile | None = File(None), sample: str | None = Form(None)
    ) -> dict:
        image, name = await _image(file, sample)
        result = await run_in_threadpool(_detect, image, vocab)  # keeps the server responsive
        w, h = image.size
        dets = [
            {"box": [round(v, 2) for v in box], "label": int(lab), "name": result.names[int(lab)],
             "score": round(float(s), 5), "color": _hex(class_color(int(lab))),
             "text_color": _hex(text_color(class_color(int(lab))))}
            for box, lab, s in zip(result.boxes.tolist(), result.labels.tolist(), result.scores.tolist(), strict=True)
        ]  # fmt: skip
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(result.names)]
        coco = {"images": [{"id": 1, "file_name": name, "width": w, "height": h}], "categories": categories,
                "annotations": result.to_coco(1)}  # fmt: skip
        return {"width": w, "height": h, "names": result.names, "detections": dets, "coco": coco}

    @app.post("/api/detect.png")
    async def detect_png(
        vocab: str = Form(""),
        file: UploadFile | None = File(None),
        sample: str | None = Form(None),
        min_score: float = Form(0.0),
    ) -> Response:
        image, _ = await _image(file, sample)
        result = await run_in_threadpool(_detect, image, vocab)  # keeps the server responsive
        keep = result.scores >= min_score
        drawn = draw_detections(
            image, result.boxes[keep].tolist(), result.labels[keep].tolist(), result.scores[keep].tolist(),
            result.names,
        )  # fmt: skip
        buf = io.BytesIO()
        drawn.save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png")

    @app.post("/api/search")
    def search(body: dict) -> dict:
        from regionclip.region_index import crop_region, search_index

        if index is None:
            raise HTTPException(
                400, "no index: start the server with --index INDEX (built by `regionclip index`)"
            )
        queries = body.get("queries")
        if isinstance(queries, str):
            queries = [q for q in queries.split(",") if q.strip()]
        if not isinstance(queries, list) or not queries:
            raise HTTPException(400, "queries: give one or more text queries")
        if len(queries) > config.max_queries:
            raise HTTPException(400, f"queries: at most {config.max_queries} at once, got {len(queries)}")
        queries = check_names([str(q) for q in queries], "queries")
        try:
            top = int(body.get("top", 12))
        except (TypeError, ValueError):
            raise HTTPException(400, f"top: expected a number, got {body.get('top')!r}") from None
        if not 1 <= top <= config.max_top:
            raise HTTPException(400, f"top: expected 1 to {config.max_top}, got {top}")
        with lock:
            bank = index_det.vocabulary_bank(queries)
            hits = search_index(index, bank.embeddings, queries, top, searcher)
        results: dict[str, list] = {q: [] for q in queries}
        for hit in hits:
            try:
                crop = _png_data_url(crop_region(hit.image["file"], hit.box))
            except RegionCLIPError:
                crop = None  # the image moved since it was indexed
            results[hit.query].append({"rank": hit.rank, "score": round(hit.score, 4), "image": Path(hit.image["file"]).name,
                                       "box": hit.box, "crop": crop})  # fmt: skip
        return {"queries": queries, "results": results, "backend": searcher.backend}

    return app


def web_vocabulary(text: str) -> list[str]:
    """Class names typed on the page: comma-separated, or a built-in name (``coco``, ``coco-novel``, ...).

    Unlike :func:`regionclip.vocab.parse_vocabulary` it never reads a file named by the client.
    """
    key = text.strip().lower()
    if key in BUILTIN_VOCABULARIES:
        return list(BUILTIN_VOCABULARIES[key])
    return check_names([part for part in text.split(",") if part.strip()], "vocabulary")


def _too_large(size: int, config: ServeConfig) -> str:
    return f"upload too large: {size / 1e6:.1f} MB, the limit is {config.max_upload_bytes / 1e6:.1f} MB"


def _decode(data: bytes, name: str, config: ServeConfig) -> Image.Image:
    """An RGB image from uploaded bytes; HTTP 400 for an unreadable or too large image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > config.max_pixels:
                raise HTTPException(
                    400,
                    f"{name}: image too large: {w}x{h} = {w * h / 1e6:.1f} MP, the limit is {config.max_pixels / 1e6:.1f} MP",
                )
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise HTTPException(400, f"{name}: cannot read the image ({err.__class__.__name__})") from None


def serve_page(app: Any, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")
