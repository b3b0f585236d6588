"""The ``regionclip`` command line: one sub-command per stage of the method.

Each sub-command lives in a module of :mod:`regionclip.commands` that defines ``add_arguments(parser)``
and ``run(args) -> int | None``; only the module of the command being run is imported, so ``regionclip
--help`` is instant. Errors caused by the user's input (:class:`RegionCLIPError`, missing files) are printed
as one line and exit with status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from regionclip.errors import RegionCLIPError

# name -> (module under regionclip.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "run the whole method in the miniature world and print the results table"),
    "make-world": ("make_world", "generate the miniature world (COCO JSON, captions, images, shards)"),
    "train-clip": ("train_clip", "train a CLIP model on image-caption pairs (the miniature world's teacher)"),
    "concepts": ("concepts", "extract the concept pool (object nouns) from a caption corpus"),
    "embed-concepts": (
        "embed_concepts",
        "embed a concept list with the CLIP text encoder into a concept bank",
    ),
    "train-rpn": ("train_rpn", "train a class-agnostic RPN on base-class boxes"),
    "eval-rpn": ("eval_rpn", "report proposal recall AR@100/300/1000 on a COCO-format set"),
    "pseudo-label": ("pseudo_label", "write the teacher's region pseudo-labels as JSON and PNG"),
    "pretrain": ("pretrain", "RegionCLIP pretraining of the student (region-concept + distill + image-text)"),
    "train-detector": ("train_detector", "train the open-vocabulary detector on base classes"),
    "eval": ("evaluate", "evaluate a detector or zero-shot model (COCO AP50 splits, LVIS APr/c/f)"),
    "detect": ("detect", "detect objects of any vocabulary in images; writes COCO JSON and PNGs"),
    "convert": ("convert", "convert official RegionCLIP / OpenAI / detectron2 checkpoints"),
    "export": ("export", "export the image side to ONNX with the vocabulary as a run-time input"),
    "index": ("index", "embed the regions of an image collection once into a region index"),
    "search": ("search", "search a region index with text queries, or detect a vocabulary in it"),
    "serve": ("serve", "a local web page to try detection and index search"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: regionclip COMMAND [options]   (regionclip COMMAND --help for its options)",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from regionclip import __version__

        print(__version__)
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"regionclip: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(f"regionclip.commands.{module_name}")
    parser = argparse.ArgumentParser(prog=f"regionclip {name}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_intermixed_args(argv[1:])  # options may follow key=value overrides
    try:
        code = module.run(args)
    except RegionCLIPError as err:
        print(f"regionclip {name}: error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as err:
        print(f"regionclip {name}: error: {err.strerror or err}: {err.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"regionclip {name}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
