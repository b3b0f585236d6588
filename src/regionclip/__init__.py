"""regionclip: RegionCLIP (Zhong et al., CVPR 2022) in plain PyTorch.

Region-based language-image pretraining and the open-vocabulary detector built on it, without detectron2.
"""

from regionclip.clip import CLIP, create_model, list_models
from regionclip.concepts import ConceptBank, build_concept_bank

__version__ = "0.1.0"

__all__ = ["CLIP", "ConceptBank", "build_concept_bank", "create_model", "list_models", "__version__"]


def __getattr__(name: str):
    # the detector API pulls in the detection stack; import it on first use only
    if name in ("Detector", "Detections"):
        from regionclip.detect import api

        return getattr(api, name)
    raise AttributeError(f"module 'regionclip' has no attribute {name!r}")
