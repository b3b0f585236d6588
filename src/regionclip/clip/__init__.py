"""CLIP towers (OpenAI ModifiedResNet image tower, text transformer), presets and checkpoint loading."""

from regionclip.clip.model import CLIP, create_model
from regionclip.clip.presets import ModelPreset, get_preset, list_models

__all__ = ["CLIP", "ModelPreset", "create_model", "get_preset", "list_models"]
