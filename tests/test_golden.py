"""The seeded RN-micro outputs (region embeddings, logits, detections; transfer and zero-shot) equal the
golden file written before the application-layer refactor (``tests/_golden.py``), within CPU tolerances."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from _golden import GOLDEN, golden_outputs

RTOL, ATOL = 1e-4, 1e-5  # float differences between CPU kinds (Intel / AMD kernels), not code changes


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return golden_outputs(tmp_path_factory.mktemp("golden"))


def test_golden_file_has_every_output(outputs):
    golden = load_file(str(GOLDEN))
    assert sorted(golden) == sorted(outputs)
    for prefix in ("transfer", "zero_shot"):
        assert golden[f"{prefix}.scores"].numel() > 5  # enough detections to pin something


@pytest.mark.parametrize("key", ["region_embeddings", "logits"])
def test_region_outputs_match(outputs, key):
    golden = load_file(str(GOLDEN))
    for name in [k for k in golden if k.endswith(key)]:
        torch.testing.assert_close(outputs[name], golden[name], rtol=RTOL, atol=ATOL, msg=name)


@pytest.mark.parametrize("prefix", ["transfer", "zero_shot"])
def test_detections_match(outputs, prefix):
    golden = load_file(str(GOLDEN))
    assert torch.equal(outputs[f"{prefix}.labels"], golden[f"{prefix}.labels"])
    for key in ("boxes", "scores"):
        name = f"{prefix}.{key}"
        torch.testing.assert_close(outputs[name], golden[name], rtol=RTOL, atol=1e-4, msg=name)
