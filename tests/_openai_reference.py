"""Access to OpenAI's reference CLIP implementation (PyPI ``openai-clip``) for cross-checks.

Its package ``__init__`` imports ``pkg_resources`` (gone from new setuptools), so the two modules needed,
``clip/model.py`` and ``clip/simple_tokenizer.py``, are loaded directly from their files.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys


def _load(relative: str, name: str):
    dist = importlib.metadata.distribution("openai-clip")
    path = dist.locate_file(relative)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def openai_model_module():
    return _load("clip/model.py", "openai_clip_model")


def openai_tokenizer_module():
    return _load("clip/simple_tokenizer.py", "openai_clip_simple_tokenizer")
