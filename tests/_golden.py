"""Golden outputs of a seeded RN-micro detector (transfer checkpoint) and of the same CLIP zero-shot with its
RPN: region embeddings of fixed boxes, their logits against fixed class embeddings, and the detections of a
fixed image. ``tests/test_golden.py`` compares the code of the day with ``tests/data/golden_rn_micro.safetensors``
so that refactors cannot drift numerics; regenerate (only when a numeric change is intended) with

    PYTHONPATH=src python tests/_golden.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))

import regionclip  # noqa: E402
from _tiny_detector import make_detector_checkpoint  # noqa: E402
from regionclip.clip.checkpoint import save_clip  # noqa: E402
from regionclip.concepts import ConceptBank  # noqa: E402
from regionclip.detect.api import Detector  # noqa: E402

GOLDEN = Path(__file__).parent / "data" / "golden_rn_micro.safetensors"
BOXES = torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 90.0, 70.0], [0.0, 0.0, 96.0, 72.0]])  # xyxy


def golden_image() -> Image.Image:
    """A fixed 96x72 RGB image (seeded noise over smooth gradients)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:72, 0:96]
    base = np.stack([xx * 2.5, yy * 3.0, (xx + yy) * 1.5], axis=-1)
    return Image.fromarray(np.clip(base + rng.integers(0, 60, (72, 96, 3)), 0, 255).astype(np.uint8))


def golden_outputs(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors pinned in the golden file, computed with the current code (files written in ``folder``)."""
    ckpt = make_detector_checkpoint(folder / "transfer", seed=0)
    torch.manual_seed(1)
    classes = torch.randn(4, 32)  # RN-micro embeds in 32 dimensions
    bank = ConceptBank([f"class{i}" for i in range(len(classes))], classes)
    image = golden_image()
    out: dict[str, torch.Tensor] = {}
    det = Detector.from_pretrained(ckpt)
    emb = det.encode_regions(image, BOXES)
    out["transfer.region_embeddings"] = emb
    out["transfer.logits"] = det.model.classifier(emb, classes)
    bank_free = det([image], bank)[0]
    out["transfer.boxes"], out["transfer.scores"] = bank_free.boxes, bank_free.scores
    out["transfer.labels"] = bank_free.labels
    # zero-shot: the same CLIP as a clip checkpoint, with the transfer folder's RPN
    torch.manual_seed(0)
    save_clip(regionclip.create_model("RN-micro"), folder / "clip.safetensors")
    zs = Detector.from_pretrained(folder / "clip.safetensors", rpn=folder / "transfer" / "rpn.safetensors",
                                  min_size=64, max_size=96, score_thresh=0.0)  # fmt: skip
    out["zero_shot.region_embeddings"] = zs.encode_regions(image, BOXES)
    found = zs([image], bank)[0]
    out["zero_shot.boxes"], out["zero_shot.scores"], out["zero_shot.labels"] = (
        found.boxes,
        found.scores,
        found.labels,
    )
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        tensors = golden_outputs(Path(tmp))
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(GOLDEN))
    print(f"wrote {GOLDEN}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items()))
