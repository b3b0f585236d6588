"""Converting released checkpoints into the project's format (method reference §9).

Sources (``kind``):

* ``regionclip``: the official RegionCLIP ``.pth`` files (``regionclip_pretrained-cc_rn50(x4).pth``,
  ``regionclip_finetuned-{coco,lvis}_rn50(x4).pth``): detectron2 pickles ``{"model": state_dict, ...}`` (or a
  bare state dict). ``backbone.*`` -> CLIP ``visual.*``; ``lang_encoder.*`` -> the CLIP text tower;
  ``teacher_backbone.*`` is unused at inference (reported); ``offline_backbone.*`` +
  ``offline_proposal_generator.*`` -> a detectron2 RPN (:mod:`regionclip.proposals.detectron2`, C4 or FPN
  detected from the keys); ``roi_heads.box_predictor.bbox_pred`` -> the detector's box regressor;
  ``roi_heads.box_predictor.{test_cls_score,cls_score}`` -> a concept bank when names are given. The preset
  (RN50 vs RN50x4) is inferred from the tensor shapes. FrozenBN ``running_var`` is taken as final.
* ``rpn``: detectron2 RPN checkpoints (``rpn_lvis_866.pth`` R50-FPN, ``rpn_coco_48.pth`` R50-C4, ...): full
  Mask R-CNN checkpoints whose ``backbone.*`` and ``proposal_generator.*`` are kept; ``roi_heads.*`` is
  reported unused.
* ``concepts``: an official concept-embedding ``.pth`` (``[N, D]``) + a names file -> a concept bank.
* ``openai``: an OpenAI CLIP ``.pt`` (TorchScript archive or state dict) -> a regionclip ``clip`` checkpoint.

Every pickle is read with ``torch.load(weights_only=True)``; numpy arrays (older detectron2 files) are
allowed through numpy's array-reconstruction globals only. A file that would execute code is refused.
Each conversion returns a :class:`ConvertReport` (mapped, unused, missing and filled keys), also written as
JSON next to the output.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from regionclip.checkpoint import load_state_dict_strict
from regionclip.errors import CheckpointError
from regionclip.io import atomic_write_json

KINDS = ("auto", "regionclip", "rpn", "concepts", "openai")
# Names of the files written into a converted official RegionCLIP folder.
CLIP_FILE = "clip.safetensors"
RPN_FILE = "rpn.safetensors"
DETECTOR_FILE = "detector.safetensors"
CONCEPTS_FILE = "concepts.safetensors"
REPORT_FILE = "convert-report.json"


@dataclass
class ConvertReport:
    """What a conversion did: source keys mapped into an output, unused, and output keys missing or filled."""

    source: str
    kind: str
    outputs: dict[str, str] = field(default_factory=dict)  # role -> written path
    mapped: list[str] = field(default_factory=list)  # source keys written into an output
    unused: list[str] = field(default_factory=list)  # source keys not needed for inference
    missing: list[str] = field(default_factory=list)  # output keys the source lacks
    filled: list[str] = field(default_factory=list)  # output keys given a default (named in notes)
    notes: list[str] = field(default_factory=list)  # decisions and warnings, one sentence each

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """A few human-readable lines (unused keys grouped by prefix)."""
        lines = [f"converted {self.source} ({self.kind})"]
        lines += [f"  wrote {role}: {path}" for role, path in self.outputs.items()]
        lines.append(f"  mapped {len(self.mapped)} keys")
        for label, keys in (("unused", self.unused), ("missing", self.missing), ("filled", self.filled)):
            if keys:
                lines.append(f"  {label} {len(keys)} keys: {_group_keys(keys)}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _group_keys(keys: list[str]) -> str:
    groups: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        prefix = ".".join(parts[:2]) + ".*" if len(parts) > 2 else key
        groups[prefix] = groups.get(prefix, 0) + 1
    return ", ".join(f"{p} ({n})" if n > 1 else p for p, n in groups.items())


# ----------------------------------------------------------------------------------------------- reading


def _numpy_safe_globals() -> list:
    """numpy's array-reconstruction globals (and dtypes), the only non-torch globals a checkpoint may use."""
    import numpy as np

    found = [np.ndarray, np.dtype]
    for module_name in ("numpy.core.multiarray", "numpy._core.multiarray"):
        try:
            module = __import__(module_name, fromlist=["_reconstruct"])
        except ImportError:
            continue
        for name in ("_reconstruct", "scalar"):
            if hasattr(module, name):
                found.append(getattr(module, name))
    found += [type(np.dtype(t)) for t in ("float32", "float64", "float16", "int64", "int32", "uint8", "bool")]
    return found


def load_pickle_safely(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` of ``path``; numpy arrays allowed; refuses anything that runs code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        detail = next((ln.strip() for ln in str(err).splitlines() if "GLOBAL" in ln), first)
        raise CheckpointError(
            f"{path}: refused to load: the pickle references code that would run on loading ({detail})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({first})") from None


def _to_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    try:
        import numpy as np

        if isinstance(value, np.ndarray) and value.dtype != object:
            return torch.from_numpy(value.copy())
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    return None


def read_model_state(path: str | Path) -> dict[str, Tensor]:
    """The model state dict of a detectron2/fvcore checkpoint (``{"model": sd, ...}`` or a bare ``sd``)."""
    loaded = load_pickle_safely(path)
    if isinstance(loaded, dict) and isinstance(loaded.get("model"), dict):
        loaded = loaded["model"]
    if not isinstance(loaded, dict):
        raise CheckpointError(
            f"{path}: expected a state dict or {{'model': state_dict}}, found {type(loaded).__name__}"
        )
    out = {}
    for key, value in loaded.items():
        tensor = _to_tensor(value)
        if isinstance(key, str) and tensor is not None:
            out[key] = tensor
    if not out:
        raise CheckpointError(f"{path}: holds no tensors (keys: {list(loaded)[:5]})")
    return out


def detect_kind(state: dict[str, Tensor] | Tensor) -> str:
    """Which converter fits: ``regionclip``, ``rpn``, ``openai`` or ``concepts``; ``unknown`` otherwise."""
    if isinstance(state, Tensor):
        return "concepts"
    keys = list(state)
    if any(k.startswith(("backbone.attnpool.", "offline_backbone.", "lang_encoder.")) for k in keys):
        return "regionclip"
    if any(k.startswith("proposal_generator.rpn_head.") for k in keys):
        return "rpn"
    if any(k.startswith("visual.") for k in keys) and any(k.startswith("transformer.") for k in keys):
        return "openai"
    return "unknown"


def _describe(state: dict[str, Tensor]) -> str:
    prefixes = sorted({k.split(".")[0] for k in state})
    return f"{len(state)} tensors with top-level prefixes {', '.join(prefixes[:8])}"


# ----------------------------------------------------------------------------------------------- CLIP


def _bookkeeping(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def infer_clip_preset(visual: dict[str, Tensor], text: dict[str, Tensor]) -> str:
    """The CLIP preset whose image (and, if given, text) tower shapes equal the checkpoint's."""
    from regionclip.clip.model import CLIP
    from regionclip.clip.presets import get_preset, list_models

    tried = []
    pos = visual.get("visual.attnpool.positional_embedding")
    for name in list_models():
        v = get_preset(name).vision
        if pos is not None and tuple(pos.shape) != (v.grid**2 + 1, v.res5_channels):
            tried.append(name)
            continue  # cheap pre-check before building the preset on the meta device
        with torch.device("meta"):
            own = CLIP(get_preset(name)).state_dict()
        wanted = {**visual, **text}
        fits = all(k in own and tuple(own[k].shape) == tuple(v.shape) for k, v in wanted.items())
        fits = fits and all(k in wanted for k in own if k.startswith("visual."))
        if fits:
            return name
        tried.append(name)
    shape = tuple(pos.shape) if pos is not None else None
    raise CheckpointError(
        f"the CLIP image tower (attnpool positional embedding {shape}) fits none of the presets {tried}"
    )


def _build_clip_state(
    visual: dict[str, Tensor], text: dict[str, Tensor], report: ConvertReport
) -> tuple[Any, dict[str, Tensor], bool]:
    """A CLIP model and its full state dict from mapped tower tensors; fills ``logit_scale`` / text gaps."""
    from regionclip.clip.model import CLIP
    from regionclip.clip.presets import get_preset

    preset = infer_clip_preset(visual, text)
    model = CLIP(get_preset(preset))
    own = model.state_dict()
    state = {k: v.float() for k, v in {**visual, **text}.items()}
    text_present = bool(text)
    for key, value in own.items():
        if key in state:
            continue
        if key == "logit_scale":
            state[key] = torch.tensor(math.log(100.0))
            report.filled.append(key)
        elif not key.startswith("visual.") and not text_present:
            state[key] = torch.zeros_like(value)
            report.missing.append(key)
        else:
            report.missing.append(key)
    if "logit_scale" in report.filled:
        report.notes.append(
            "logit_scale set to ln(100) (RegionCLIP's fixed temperature 0.01; unused at inference)"
        )
    if not text_present:
        report.notes.append(
            "no text tower in the checkpoint: its weights are zeros and the clip checkpoint is marked "
            "text_tower='missing'; give --text-weights (an OpenAI CLIP .pt of the same preset) to add one, "
            "or use the exported concept bank"
        )
    missing_visual = [k for k in report.missing if k.startswith("visual.")]
    if missing_visual:
        raise CheckpointError(
            f"{report.source}: the image tower lacks {len(missing_visual)} keys, e.g. {missing_visual[:3]}"
        )
    load_state_dict_strict(model, state, report.source)
    return model, state, text_present


def _text_from_file(path: str | Path) -> dict[str, Tensor]:
    """The text-tower tensors of an OpenAI CLIP file or a regionclip ``clip`` checkpoint."""
    from regionclip.checkpoint import load_checkpoint
    from regionclip.clip.checkpoint import openai_to_regionclip, read_state_dict

    path = Path(path)
    if path.suffix == ".safetensors":
        state = load_checkpoint(path, kind="clip").state_dict
    else:
        state = openai_to_regionclip(read_state_dict(path))
    text_keys = ("transformer.", "token_embedding.", "positional_embedding", "ln_final.", "text_projection")
    return {k: v.float() for k, v in state.items() if k.startswith(text_keys)}


# ----------------------------------------------------------------------------------------------- RPN


def _rpn_tensors(
    state: dict[str, Tensor], backbone_prefix: str, generator_prefix: str
) -> tuple[dict, list[str]]:
    """Source keys of a detectron2 RPN renamed to :class:`Detectron2RPN` keys; returns (mapped, used keys)."""
    mapped, used = {}, []
    for key, value in state.items():
        if key.startswith(backbone_prefix):
            new = "backbone." + key[len(backbone_prefix) :]
        elif key.startswith(generator_prefix + "rpn_head."):
            new = key[len(generator_prefix) :]
        else:
            continue
        if _bookkeeping(key):
            continue
        mapped[new] = value.float()
        used.append(key)
    return mapped, used


def infer_rpn_config(mapped: dict[str, Tensor], source: str):
    """The :class:`Detectron2RPNConfig` whose module has exactly the shapes of ``mapped``."""
    from regionclip.proposals.detectron2 import Detectron2RPNConfig

    fpn = any(k.startswith("backbone.bottom_up.") for k in mapped)
    body = "backbone.bottom_up." if fpn else "backbone."
    stem = mapped.get(body + "stem.conv1.weight")
    logits = mapped.get("rpn_head.objectness_logits.weight")
    if stem is None or logits is None:
        raise CheckpointError(
            f"{source}: no detectron2 RPN found (stem.conv1 or rpn_head.objectness_logits missing)"
        )
    stages = 4 if fpn else 3
    blocks = []
    for s in range(2, 2 + stages):
        n = 0
        while f"{body}res{s}.{n}.conv1.weight" in mapped:
            n += 1
        blocks.append(n)
    blocks += [3] * (4 - len(blocks))
    num_anchors = int(logits.shape[0])
    fields: dict[str, Any] = {
        "arch": "R50-FPN" if fpn else "R50-C4",
        "width": int(stem.shape[0]),
        "stage_blocks": tuple(blocks),
        "head_convs": 2 if "rpn_head.conv.conv1.weight" in mapped else 1,
        "pre_nms_topk": 1000 if fpn else 6000,
    }
    if fpn:
        fields["fpn_channels"] = int(mapped["backbone.fpn_lateral2.weight"].shape[0])
        fields["fpn_norm"] = "backbone.fpn_lateral2.norm.weight" in mapped
    cfg = Detectron2RPNConfig(**fields)
    if cfg.num_anchors != num_anchors:
        raise CheckpointError(
            f"{source}: the RPN head predicts {num_anchors} anchors per cell, expected {cfg.num_anchors} "
            f"({'3 ratios per level' if fpn else '5 sizes x 3 ratios'})"
        )
    return cfg


def _convert_rpn_tensors(
    state: dict[str, Tensor], backbone_prefix: str, generator_prefix: str, dst: Path, report: ConvertReport
) -> list[str]:
    from regionclip.proposals.detectron2 import build_detectron2_rpn, save_detectron2_rpn

    mapped, used = _rpn_tensors(state, backbone_prefix, generator_prefix)
    cfg = infer_rpn_config(mapped, report.source)
    rpn = build_detectron2_rpn(cfg)
    own = rpn.state_dict()
    missing = [
        backbone_prefix + k[len("backbone.") :] if k.startswith("backbone.") else generator_prefix + k
        for k in own
        if k not in mapped
    ]
    if missing:
        report.missing += missing
        raise CheckpointError(
            f"{report.source}: the {cfg.arch} RPN lacks {len(missing)} keys, e.g. {missing[:3]}"
        )
    load_state_dict_strict(rpn, mapped, report.source)
    save_detectron2_rpn(rpn, cfg, dst, extra={"source": report.source})
    report.outputs["rpn"] = str(dst)
    report.notes.append(
        f"offline RPN: detectron2 {cfg.arch} ({cfg.num_anchors} anchors/cell, "
        f"{'BN in FPN, ' if cfg.fpn_norm else ''}{cfg.head_convs}-conv head)"
    )
    return used


# ----------------------------------------------------------------------------------------------- converters


def convert_regionclip(
    src: str | Path,
    dst: str | Path,
    names: list[str] | None = None,
    text_weights: str | Path | None = None,
    state: dict[str, Tensor] | None = None,
) -> ConvertReport:
    """Convert an official RegionCLIP checkpoint into the folder ``dst`` (clip, rpn, detector, concepts)."""
    from regionclip.clip.checkpoint import save_clip

    src, dst = Path(src), Path(dst)
    state = read_model_state(src) if state is None else state
    report = ConvertReport(str(src), "regionclip")
    if not any(k.startswith("backbone.attnpool.") for k in state):
        raise CheckpointError(
            f"{src}: not a RegionCLIP checkpoint (no backbone.attnpool.*); found {_describe(state)}"
        )
    used: set[str] = set()
    visual = {
        "visual." + k[len("backbone.") :]: v
        for k, v in state.items()
        if k.startswith("backbone.") and not _bookkeeping(k)
    }
    used |= {k for k in state if k.startswith("backbone.")}
    text = {k[len("lang_encoder.") :]: v for k, v in state.items() if k.startswith("lang_encoder.")}
    used |= {k for k in state if k.startswith("lang_encoder.")}
    if not text and text_weights is not None:
        text = _text_from_file(text_weights)
        report.notes.append(f"text tower taken from {text_weights}")
    model, _, text_present = _build_clip_state(visual, text, report)
    dst.mkdir(parents=True, exist_ok=True)
    save_clip(
        model,
        dst / CLIP_FILE,
        extra={"source": str(src), "text_tower": "present" if text_present else "missing"},
    )
    report.outputs["clip"] = str(dst / CLIP_FILE)
    report.notes.append(f"CLIP preset inferred from shapes: {model.preset.name}")

    if any(k.startswith("offline_backbone.") for k in state):
        used |= set(
            _convert_rpn_tensors(
                state, "offline_backbone.", "offline_proposal_generator.", dst / RPN_FILE, report
            )
        )
    else:
        report.notes.append(
            "no offline RPN in the checkpoint: give an RPN checkpoint separately (convert --kind rpn)"
        )

    box = "roi_heads.box_predictor."
    if box + "bbox_pred.weight" in state:
        used |= set(_convert_detector(state, model, text_present, dst / DETECTOR_FILE, report))
    bank_key = next(
        (box + n + ".weight" for n in ("test_cls_score", "cls_score") if box + n + ".weight" in state), None
    )
    if bank_key is not None:
        rows = int(state[bank_key].shape[0])
        if names is not None and len(names) == rows:
            from regionclip.concepts import ConceptBank

            bank = ConceptBank(list(names), state[bank_key].float(), {"source": f"{src}:{bank_key}"})
            bank.save(dst / CONCEPTS_FILE)
            report.outputs["concepts"] = str(dst / CONCEPTS_FILE)
            used.add(bank_key)
        else:
            got = "no names" if names is None else f"{len(names)} names"
            report.notes.append(
                f"class embeddings {bank_key} [{rows}, D] not exported as a concept bank ({got}; give --names with {rows})"
            )
    report.mapped = sorted(k for k in used if k in state and not _bookkeeping(k))
    report.unused = sorted(k for k in state if k not in used and not _bookkeeping(k))
    if any(k.startswith("teacher_backbone.") for k in report.unused):
        report.notes.append("teacher_backbone.* (the frozen pretraining teacher) is not needed for inference")
    _write_report(report, dst / REPORT_FILE)
    return report


def _convert_detector(
    state: dict[str, Tensor], clip_model: Any, text_present: bool, dst: Path, report: ConvertReport
) -> list[str]:
    """A ``detector`` checkpoint (format of :mod:`regionclip.detect.api`) from a finetuned checkpoint."""
    from regionclip.checkpoint import load_checkpoint
    from regionclip.clip.checkpoint import text_state
    from regionclip.detect.api import load_detector, write_detector_checkpoint
    from regionclip.detect.config import DetectorConfig

    box = "roi_heads.box_predictor."
    clip_state = clip_model.state_dict()
    used = [box + "bbox_pred.weight", box + "bbox_pred.bias"]
    det: dict[str, Tensor] = {f"backbone.{k}": v for k, v in clip_state.items() if k.startswith("visual.")}
    det["box_regressor.linear.weight"] = state[box + "bbox_pred.weight"].float()
    det["box_regressor.linear.bias"] = state[box + "bbox_pred.bias"].float()
    if box + "cls_score.weight" in state:
        det["train_class_embeddings"] = state[box + "cls_score.weight"].float()
        used.append(box + "cls_score.weight")
    else:
        det["train_class_embeddings"] = torch.zeros(1, det["box_regressor.linear.weight"].shape[1])
        report.notes.append("no cls_score: the detector's training-class embeddings are a zero placeholder")
    bg = state.get(box + "cls_bg_score.weight")
    det["classifier.background"] = torch.zeros(det["train_class_embeddings"].shape[1])
    if bg is not None:
        used.append(box + "cls_bg_score.weight")
        if bool(bg.abs().max() > 0):
            report.notes.append(
                "cls_bg_score is not zero; the converted detector uses the official zero background"
            )
    mask_on = any(k.startswith("roi_heads.mask_head.") for k in state)
    for key, value in state.items():
        if key.startswith("roi_heads.mask_head.") and not _bookkeeping(key):
            det["mask_head." + key[len("roi_heads.mask_head.") :]] = value.float()
            used.append(key)
    rpn_path = dst.parent / RPN_FILE
    proposals: dict[str, Any] = {"kind": "gt"}
    if rpn_path.is_file():
        rpn_ckpt = load_checkpoint(rpn_path, kind="rpn")
        det.update({"proposal_generator." + k: v for k, v in rpn_ckpt.state_dict.items()})
        proposals = {"kind": "rpn", "rpn": rpn_ckpt.config, "preset": "transfer"}
    cfg = DetectorConfig(recipe="lvis" if mask_on else "coco", mask_on=mask_on)
    text = text_state(clip_model) if text_present else None
    write_detector_checkpoint(
        dst, det, cfg, clip_model.preset, proposals, None, text, {"source": report.source}
    )
    load_detector(dst)  # the file must rebuild the detector exactly (strict keys and shapes)
    report.outputs["detector"] = str(dst)
    return used


def convert_rpn(src: str | Path, dst: str | Path, state: dict[str, Tensor] | None = None) -> ConvertReport:
    """Convert a detectron2 RPN (Mask R-CNN) checkpoint into a regionclip ``rpn`` checkpoint ``dst``."""
    src, dst = Path(src), Path(dst)
    state = read_model_state(src) if state is None else state
    report = ConvertReport(str(src), "rpn")
    if not any(k.startswith("proposal_generator.rpn_head.") for k in state):
        raise CheckpointError(
            f"{src}: not a detectron2 RPN checkpoint (no proposal_generator.rpn_head.*); found {_describe(state)}"
        )
    used = set(_convert_rpn_tensors(state, "backbone.", "proposal_generator.", dst, report))
    report.mapped = sorted(used)
    report.unused = sorted(k for k in state if k not in used and not _bookkeeping(k))
    _write_report(report, report_path(dst))
    return report


def convert_concepts(src: str | Path, dst: str | Path, names: list[str] | str | Path | None) -> ConvertReport:
    """An official concept-embedding ``.pth`` + names -> a regionclip concept bank ``dst``."""
    from regionclip.concepts import load_official_embeddings

    if names is None:
        raise CheckpointError(
            f"{src}: a concept-embedding file needs its names: give --names FILE (one name per line)"
        )
    bank = load_official_embeddings(src, names)
    bank.save(dst)
    report = ConvertReport(str(src), "concepts", outputs={"concepts": str(dst)}, mapped=["<tensor>"])
    report.notes.append(f"{len(bank)} concepts, {bank.dim}-d")
    _write_report(report, report_path(Path(dst)))
    return report


def convert_openai(src: str | Path, dst: str | Path) -> ConvertReport:
    """An OpenAI CLIP ``.pt`` (TorchScript or state dict) -> a regionclip ``clip`` checkpoint ``dst``."""
    from regionclip.clip.checkpoint import OPENAI_EXTRA_KEYS, openai_to_regionclip, read_state_dict, save_clip

    raw = read_state_dict(src)
    state = openai_to_regionclip(raw)
    report = ConvertReport(str(src), "openai")
    if detect_kind(state) != "openai":
        raise CheckpointError(
            f"{src}: not an OpenAI CLIP checkpoint (no visual.* and transformer.*); found {_describe(state)}"
        )
    visual = {k: v for k, v in state.items() if k.startswith("visual.")}
    text = {k: v for k, v in state.items() if not k.startswith("visual.") and k != "logit_scale"}
    model, _, _ = _build_clip_state(visual, text, report)
    if "logit_scale" in state:
        model.logit_scale.data.copy_(state["logit_scale"])
        report.filled.remove("logit_scale")
        report.notes = [n for n in report.notes if not n.startswith("logit_scale")]
    save_clip(model, dst, extra={"source": str(src), "text_tower": "present"})
    report.outputs["clip"] = str(dst)
    report.mapped = sorted(state)
    report.unused = sorted(k for k in raw if k in OPENAI_EXTRA_KEYS)
    report.notes.append(f"CLIP preset inferred from shapes: {model.preset.name}")
    _write_report(report, report_path(Path(dst)))
    return report


def report_path(dst: Path) -> Path:
    """Where the JSON report of a single-file output ``dst`` goes: ``<dst without suffix>.report.json``."""
    return dst.with_name(dst.name.split(".")[0] + ".report.json")


def _write_report(report: ConvertReport, path: Path) -> None:
    atomic_write_json(path, report.to_dict())
    report.outputs["report"] = str(path)


def convert(
    src: str | Path,
    dst: str | Path,
    kind: str = "auto",
    names: list[str] | str | Path | None = None,
    text_weights: str | Path | None = None,
) -> ConvertReport:
    """Convert ``src`` into ``dst`` (a folder for ``regionclip``, a ``.safetensors`` file otherwise)."""
    from regionclip.clip.checkpoint import _is_torchscript

    src = Path(src)
    if kind not in KINDS:
        raise CheckpointError(f"unknown --kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not src.is_file():
        raise CheckpointError(f"checkpoint not found: {src}")
    if isinstance(names, (str, Path)):
        from regionclip.concepts import read_names_file

        names = read_names_file(names)
    if kind == "openai" or (kind == "auto" and _is_torchscript(src)):
        return convert_openai(src, dst)
    loaded = load_pickle_safely(src)
    if isinstance(loaded, Tensor):
        found = "concepts"
        state = None
    else:
        state = read_model_state(src)
        found = detect_kind(state)
    if kind == "auto":
        if found == "unknown":
            raise CheckpointError(
                f"{src}: cannot tell what this checkpoint is ({_describe(state)}); give --kind "
                "regionclip|rpn|concepts|openai"
            )
        kind = found
    elif kind != found:
        what = (
            "a concept-embedding tensor"
            if found == "concepts"
            else (
                f"a '{found}' checkpoint"
                if found != "unknown"
                else f"an unrecognised checkpoint ({_describe(state)})"
            )
        )
        raise CheckpointError(f"{src}: --kind {kind} expected, but the file is {what}")
    if kind == "regionclip":
        return convert_regionclip(src, dst, names=names, text_weights=text_weights, state=state)
    if kind == "rpn":
        return convert_rpn(src, dst, state=state)
    if kind == "concepts":
        return convert_concepts(src, dst, names)
    return convert_openai(src, dst)
