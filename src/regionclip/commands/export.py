"""``regionclip export``: the detector's image side to ONNX, with the class embeddings [K, D] as a run-time
input (see :mod:`regionclip.export` for the graph's inputs and outputs)."""

from __future__ import annotations

import argparse

from regionclip.commands._options import add_ensemble_arguments, ensemble_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="detector or clip checkpoint, or a converted folder"
    )
    parser.add_argument("--onnx", required=True, help="output .onnx file")
    parser.add_argument(
        "--height", type=int, default=224, help="height of the example image used for tracing"
    )
    parser.add_argument("--width", type=int, default=224, help="width of the example image used for tracing")
    add_ensemble_arguments(
        parser,
        "frozen: put the frozen-classifier ensemble in the graph (input ensemble_weights [K])",
    )


def run(args: argparse.Namespace) -> int:
    from regionclip.detect.api import Detector
    from regionclip.export import export_onnx

    ensemble = ensemble_from_args(args)
    det = Detector.from_pretrained(args.checkpoint, ensemble=ensemble)
    path = export_onnx(det.model, args.onnx, (args.height, args.width))
    print(
        f"wrote {path}: inputs image [1,3,H,W] (CLIP-normalised), proposals [R,4], class_embeddings [K,{det.model.embed_dim}]; "
        "outputs scores [R,K+1] (background last), boxes [R,4], region_embeddings [R,D]; NMS is left to the caller"
    )
    if det.model.ensemble is not None:
        print(
            "  + frozen-classifier ensemble: input ensemble_weights [K] (w per class; training classes in the "
            "metadata 'training_classes'); scores are the ensembled ones"
        )
    return 0
