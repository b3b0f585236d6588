"""Concept bank: CLIP text embeddings of concept or class names (paper §3.1; method reference §3.2-3.3).

The embedding of a name is the arithmetic mean, over the 81 official prompt templates, of the
*unnormalised* projected EOT text features; it is L2-normalised only when regions are scored against it.
This matches the official ``.pth`` concept files (``[N, D]`` unnormalised tensors) bit for bit in method.

A :class:`ConceptBank` is saved as a regionclip ``.safetensors`` file (kind ``concept_bank``) with its names
inside; :func:`load_official_embeddings` reads the official ``.pth`` tensors with a names file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from torch import Tensor

from regionclip.checkpoint import fingerprint, load_checkpoint, save_checkpoint
from regionclip.errors import CheckpointError, RegionCLIPError

# The official 81 templates (``get_prompt_templates``), in the official order: '{}.', 'a photo of a {}.',
# then CLIP's other 79 ImageNet templates in CLIP's order.
_CLIP_80: tuple[str, ...] = tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)
OFFICIAL_TEMPLATES: tuple[str, ...] = ("{}.", "a photo of a {}.") + tuple(
    t for t in _CLIP_80 if t != "a photo of a {}."
)
# A single template, for quick experiments and the miniature world's tiny text encoder.
SIMPLE_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


def clean_name(name: str) -> str:
    """The official name cleaning: commas removed, '+' replaced by a space (underscores are kept)."""
    return name.replace(",", "").replace("+", " ")


def clean_class_name(name: str) -> str:
    """The official class-name cleaning of the LVIS path (``get_cls_names``) before prompting.

    ``_`` becomes a space and the parenthesis characters are removed (their words stay, as in the official
    code), runs of whitespace collapse to one space (the CLIP tokenizer collapses them anyway):
    ``"bow_(weapon)"`` -> ``"bow weapon"``, ``"Dixie_cup"`` -> ``"Dixie cup"``. Only the prompted text
    changes; class names themselves (labels, category mapping) are kept verbatim.
    """
    return " ".join(name.replace("_", " ").replace("(", "").replace(")", "").split())


def make_prompts(name: str, templates: Sequence[str] = OFFICIAL_TEMPLATES) -> list[str]:
    """The prompts of one name: each template with ``{}`` replaced by the cleaned name."""
    cleaned = clean_name(name)
    return [t.replace("{}", cleaned) for t in templates]


def validate_names(names: Sequence[str], what: str = "concept names") -> list[str]:
    """Check that ``names`` is a non-empty list of distinct non-empty strings; return it as a list."""
    if isinstance(names, str):
        raise RegionCLIPError(f"{what}: expected a list of names, got a single string {names!r}")
    names = list(names)
    if not names:
        raise RegionCLIPError(f"{what}: the list is empty; give at least one name")
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise RegionCLIPError(f"{what}: entry {i} is {type(name).__name__} {name!r}, expected a string")
        if not name.strip():
            raise RegionCLIPError(f"{what}: entry {i} is blank")
    seen: set[str] = set()
    duplicates: list[str] = []
    for name in names:
        if name in seen and name not in duplicates:
            duplicates.append(name)
        seen.add(name)
    if duplicates:
        raise RegionCLIPError(f"{what}: duplicate names: {', '.join(repr(d) for d in duplicates)}")
    return names


@dataclass
class ConceptBank:
    """Names and their unnormalised embeddings.

    names: N distinct strings; embeddings: ``[N, D]`` float, row i embeds ``names[i]``.
    """

    names: list[str]
    embeddings: Tensor
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.names = validate_names(self.names)
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.names):
            raise RegionCLIPError(
                f"concept bank: {len(self.names)} names but embeddings of shape {tuple(self.embeddings.shape)}"
            )

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.names)

    def normalized(self) -> Tensor:
        """L2-normalised embeddings ``[N, D]`` (used for scoring)."""
        return F.normalize(self.embeddings, dim=-1)

    def check_dim(self, dim: int, model_name: str = "the model") -> None:
        """Refuse a bank whose dimension differs from ``dim``, naming both."""
        if self.dim != dim:
            raise RegionCLIPError(
                f"concept bank has {self.dim}-d embeddings but {model_name} produces {dim}-d embeddings "
                f"(was the bank made with another CLIP model, e.g. RN50 = 1024-d vs RN50x4 = 640-d?)"
            )

    def subset(self, names: Sequence[str]) -> ConceptBank:
        index = {n: i for i, n in enumerate(self.names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise RegionCLIPError(f"concept bank has no entry for {missing[:5]}")
        rows = torch.tensor([index[n] for n in names], dtype=torch.long)
        return ConceptBank(list(names), self.embeddings[rows], dict(self.meta))

    def save(self, path: str | Path) -> Path:
        """Write as a regionclip checkpoint of kind ``concept_bank`` (atomic, safetensors)."""
        return save_checkpoint(
            path, {"embeddings": self.embeddings}, "concept_bank", {"names": self.names, "meta": self.meta}
        )

    @classmethod
    def load(cls, path: str | Path) -> ConceptBank:
        ckpt = load_checkpoint(path, kind="concept_bank")
        return cls(
            list(ckpt.config["names"]), ckpt.state_dict["embeddings"].float(), ckpt.config.get("meta", {})
        )


def text_fingerprint(model: torch.nn.Module) -> str:
    """Content hash of the text tower's weights (what a concept bank depends on)."""
    text_keys = ("transformer.", "token_embedding.", "positional_embedding", "ln_final.", "text_projection")
    state = {k: v for k, v in model.state_dict().items() if k.startswith(text_keys)}
    return fingerprint(state)


def bank_cache_key(model_fingerprint: str, names: Sequence[str], templates: Sequence[str]) -> str:
    digest = hashlib.sha1()
    digest.update(model_fingerprint.encode())
    digest.update("\x00".join(names).encode())
    digest.update(b"\x01")
    digest.update("\x00".join(templates).encode())
    return digest.hexdigest()[:20]


@torch.no_grad()
def embed_names(
    model: torch.nn.Module,
    names: Sequence[str],
    templates: Sequence[str] = OFFICIAL_TEMPLATES,
    batch_size: int = 1024,
    progress: bool = False,
    clean_class_names: bool = False,
) -> Tensor:
    """Template-mean unnormalised text embeddings ``[N, D]`` of ``names``, all prompts batched.

    clean_class_names: prompt :func:`clean_class_name` of each name (the official class-name path) instead
    of the name itself (the official concept-pool path).
    """
    names = validate_names(names)
    if not templates:
        raise RegionCLIPError("templates: the list is empty")
    texts = [clean_class_name(n) or n for n in names] if clean_class_names else names
    prompts = [p for name in texts for p in make_prompts(name, templates)]
    device = next(model.parameters()).device
    tokens = model.tokenize(prompts)  # [N * T, L]
    # batches of prompts of similar length: encode_text cuts each batch after its longest prompt
    order = torch.argsort(tokens.argmax(dim=-1), stable=True)
    per_prompt = torch.empty(len(prompts), model.embed_dim)
    starts = range(0, len(prompts), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="embedding prompts", unit="batch")
    for start in starts:
        rows = order[start : start + batch_size]
        per_prompt[rows] = model.encode_text(tokens[rows].to(device)).float().cpu()
    return per_prompt.view(len(names), len(templates), -1).mean(dim=1)


def build_concept_bank(
    model: torch.nn.Module,
    names: Sequence[str],
    templates: Sequence[str] = OFFICIAL_TEMPLATES,
    cache_dir: str | Path | None = None,
    batch_size: int = 1024,
    progress: bool = False,
    clean_class_names: bool = False,
) -> ConceptBank:
    """Embed ``names`` with ``model``'s text encoder into a :class:`ConceptBank`.

    With ``cache_dir``, the bank is stored there keyed by (text weights, names, templates, cleaning) and a
    later call with the same key loads it instead of encoding any text. clean_class_names: see
    :func:`embed_names` (the bank keeps the verbatim names).
    """
    names = validate_names(names)
    templates = tuple(templates)
    key = None
    if cache_dir is not None:
        fp = text_fingerprint(model)
        dtype = getattr(model, "compute_dtype", None)  # bf16 embeddings differ slightly: own cache entry
        key = bank_cache_key(
            fp if dtype is None else f"{fp}|{dtype}",
            names,
            templates + (("\x02clean",) if clean_class_names else ()),
        )
        cached = Path(cache_dir) / f"bank-{key}.safetensors"
        if cached.is_file():
            try:
                return ConceptBank.load(cached)
            except CheckpointError:
                cached.unlink(missing_ok=True)  # a damaged cache entry is rebuilt
    embeddings = embed_names(
        model, names, templates, batch_size=batch_size, progress=progress, clean_class_names=clean_class_names
    )
    meta = {"model": getattr(getattr(model, "preset", None), "name", "?"), "templates": len(templates)}
    if clean_class_names:
        meta["clean_class_names"] = True
    bank = ConceptBank(names, embeddings, meta)
    if key is not None:
        bank.save(Path(cache_dir) / f"bank-{key}.safetensors")
    return bank


def read_names_file(path: str | Path) -> list[str]:
    """Names, one per line (UTF-8); blank lines and surrounding spaces are ignored."""
    path = Path(path)
    if not path.is_file():
        raise RegionCLIPError(f"names file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise RegionCLIPError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    return validate_names(names, what=str(path))


def load_official_embeddings(pth_path: str | Path, names: Sequence[str] | str | Path) -> ConceptBank:
    """An official RegionCLIP concept-embedding ``.pth`` (``[N, D]``, or ``[D]`` for one name) with its names.

    names: a list, or the path of a names file (one per line, e.g. ``coco_nouns_4764.txt``).
    Loaded with ``torch.load(weights_only=True)``: no code is executed.
    """
    pth_path = Path(pth_path)
    if not isinstance(names, (list, tuple)):
        names = read_names_file(names)
    if not pth_path.is_file():
        raise CheckpointError(f"concept embeddings not found: {pth_path}")
    try:
        tensor = torch.load(str(pth_path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle is reported as a bad file
        raise CheckpointError(
            f"{pth_path}: not a loadable tensor file ({str(err).splitlines()[0]})"
        ) from None
    if not isinstance(tensor, Tensor):
        raise CheckpointError(f"{pth_path}: expected a tensor [N, D], got {type(tensor).__name__}")
    if tensor.ndim == 1:
        tensor = tensor[None]
    if tensor.ndim != 2 or tensor.shape[0] != len(names):
        raise CheckpointError(
            f"{pth_path}: embeddings of shape {tuple(tensor.shape)} do not match {len(names)} names"
        )
    return ConceptBank(list(names), tensor.float(), {"source": str(pth_path)})
