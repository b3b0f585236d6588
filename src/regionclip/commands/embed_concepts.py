"""``regionclip embed-concepts``: embed a concept list with the CLIP text encoder into a concept bank.

Each name is embedded as the mean over prompt templates of the unnormalised text features (method
reference §3.2) by :func:`regionclip.concepts.build_concept_bank`; the bank is a ``.safetensors`` file that
:meth:`regionclip.concepts.ConceptBank.load` reads.
"""

from __future__ import annotations

import argparse

from regionclip.precision import add_precision_argument, apply_precision, resolve_precision


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "concepts", help="concept list, one name a line (UTF-8), e.g. from `regionclip concepts`"
    )
    parser.add_argument("--model", required=True, help="CLIP preset (RN50, RN50x4, RN-tiny, RN-micro)")
    parser.add_argument("--weights", default=None, help="OpenAI-format CLIP file or regionclip .safetensors")
    parser.add_argument("-o", "--output", required=True, help="concept bank to write (.safetensors)")
    parser.add_argument("--templates", choices=("official", "simple"), default="official", help="prompts")
    parser.add_argument("--batch-size", type=int, default=256, help="prompts encoded per batch")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    add_precision_argument(parser, default="fp32")  # banks are classifier weights: the same on every machine


def run(args: argparse.Namespace) -> int:
    import torch

    from regionclip.clip import create_model
    from regionclip.concepts import OFFICIAL_TEMPLATES, SIMPLE_TEMPLATES, build_concept_bank, read_names_file
    from regionclip.errors import RegionCLIPError

    if args.batch_size < 1:
        raise RegionCLIPError(f"--batch-size must be >= 1, got {args.batch_size}")
    names = read_names_file(args.concepts)  # refuses a missing, non-UTF-8 or empty file
    templates = OFFICIAL_TEMPLATES if args.templates == "official" else SIMPLE_TEMPLATES
    try:
        device = torch.device(args.device)
    except RuntimeError as err:
        raise RegionCLIPError(f"--device {args.device!r}: {err}") from None
    model = create_model(args.model, pretrained=args.weights).to(device)
    precision = resolve_precision(args.precision, device)
    apply_precision(model, precision)
    bank = build_concept_bank(model, names, templates, batch_size=args.batch_size, progress=True)
    bank.meta["weights"] = str(args.weights) if args.weights else "random"
    bank.meta["precision"] = precision.name
    path = bank.save(args.output)
    print(
        f"embedded {len(bank)} concepts x {len(templates)} templates -> {path} ({bank.dim}-d, {args.model})"
    )
    return 0
