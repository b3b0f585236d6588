"""Model presets: small JSON files in ``clip/presets/`` loaded into typed dataclasses.

``RN50`` and ``RN50x4`` are OpenAI's architectures (the official RegionCLIP backbones); ``RN-tiny`` (the
miniature world), ``RN-small`` (the demo's larger student, for the teacher-vs-student capacity ablation) and
``RN-micro`` (unit tests) are the same architecture scaled down to run on a CPU.
The preset is the only name table in the project (``list_models()``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources

from regionclip.errors import RegionCLIPError


@dataclass(frozen=True)
class VisionPreset:
    layers: tuple[int, int, int, int]  # Bottleneck blocks in layer1..layer4
    width: int  # stem output channels; layer4 outputs width * 32
    image_size: int  # CLIP input resolution; the attention pool's grid is image_size // 32

    @property
    def grid(self) -> int:
        """Side of the attention pool's positional grid (7 for RN50, 9 for RN50x4)."""
        return self.image_size // 32

    @property
    def pooler_resolution(self) -> int:
        """RoIAlign output side on the stride-16 map: layer4 halves it to exactly ``grid``."""
        return 2 * self.grid

    @property
    def res4_channels(self) -> int:
        return self.width * 16

    @property
    def res5_channels(self) -> int:
        return self.width * 32

    @property
    def heads(self) -> int:
        """Attention-pool heads (OpenAI: one per 64 channels of res5)."""
        return self.width * 32 // 64


@dataclass(frozen=True)
class TextPreset:
    context_length: int  # tokens per text, SOT and EOT included
    vocab_size: int  # CLIP BPE vocabulary (49408)
    width: int  # transformer width
    heads: int  # attention heads
    layers: int  # transformer blocks


@dataclass(frozen=True)
class ModelPreset:
    name: str  # preset name, e.g. "RN50"
    embed_dim: int  # joint image-text embedding dimension D
    vision: VisionPreset
    text: TextPreset
    description: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelPreset:
        try:
            vision = dict(data["vision"])
            vision["layers"] = tuple(vision["layers"])
            return cls(
                name=str(data["name"]),
                embed_dim=int(data["embed_dim"]),
                vision=VisionPreset(**vision),
                text=TextPreset(**data["text"]),
                description=str(data.get("description", "")),
            )
        except (KeyError, TypeError) as err:
            raise RegionCLIPError(f"malformed model preset {data!r}: {err}") from None


def list_models() -> list[str]:
    """Names of the model presets shipped with the package."""
    folder = resources.files("regionclip.clip") / "presets"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def get_preset(name: str) -> ModelPreset:
    """The preset called ``name`` (see :func:`list_models`)."""
    path = resources.files("regionclip.clip") / "presets" / f"{name}.json"
    if not path.is_file():
        raise RegionCLIPError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    data = json.loads(path.read_text(encoding="utf-8"))
    return ModelPreset.from_dict({"name": name, **data})
