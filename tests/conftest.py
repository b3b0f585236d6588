"""Shared fixtures: small CLIP models built once per session (random weights, seeded)."""

from __future__ import annotations

import pytest
import torch

import regionclip


@pytest.fixture(scope="session")
def micro_model():
    torch.manual_seed(0)
    return regionclip.create_model("RN-micro")
