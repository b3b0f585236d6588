"""CLIP towers (OpenAI ModifiedResNet image tower, text transformer), presets and checkpoint loading."""

from regionclip.clip.checkpoint import create_model, load_clip
from regionclip.clip.model import CLIP
from regionclip.clip.presets import ModelPreset, get_preset, list_models

__all__ = ["CLIP", "ModelPreset", "create_model", "get_preset", "list_models", "load_clip"]
