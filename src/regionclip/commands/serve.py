"""``regionclip serve``: a local web page to try the detector (upload or pick an image, type a vocabulary)
and to search a region index (see :mod:`regionclip.web.app`)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        help="detector checkpoint or converted folder (default: the demo's detector if present)",
    )
    parser.add_argument("--rpn", help="rpn checkpoint for a clip checkpoint")
    parser.add_argument("--index", help="region index (from `regionclip index`) for the search tab")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--max-upload-mb", type=float, default=10.0, help="largest upload (default 10 MB)")
    parser.add_argument(
        "--max-megapixels", type=float, default=25.0, help="largest image, width x height (default 25 MP)"
    )


def run(args: argparse.Namespace) -> int:
    from regionclip.detect.api import Detector
    from regionclip.errors import RegionCLIPError
    from regionclip.tasks.detect import default_checkpoint

    try:
        from regionclip.web.app import ServeConfig, create_app, serve_page
    except ImportError as err:
        raise RegionCLIPError(
            f"regionclip serve needs FastAPI, uvicorn and python-multipart ({err.name} is missing): "
            "pip install 'regionclip[serve]'"
        ) from None

    if not 0 < args.port < 65536:
        raise RegionCLIPError(f"--port: expected 1-65535, got {args.port}")
    checkpoint = args.checkpoint or default_checkpoint()
    det = Detector.from_pretrained(checkpoint, rpn=args.rpn, device=args.device)
    config = ServeConfig(
        max_upload_bytes=int(args.max_upload_mb * 1e6), max_pixels=int(args.max_megapixels * 1e6)
    )
    app = create_app(det, args.index, config, checkpoint_name=str(checkpoint))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"regionclip serve: listening on {args.host}: the page is reachable from other machines")
    print(f"regionclip serve: http://{args.host}:{args.port}/  (Ctrl-C to stop)", flush=True)
    serve_page(app, args.host, args.port)
    return 0
