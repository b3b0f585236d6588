"""Tests of the three pretraining losses against hand computations in numpy (method reference §5)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from regionclip.pretrain.losses import (
    concept_distillation,
    image_text_contrastive,
    region_concept_contrastive,
)


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _mil_reference(v: np.ndarray, e: np.ndarray, mask: np.ndarray, tau: float) -> float:
    """Official MILCrossEntropy in plain loops: -log sum_j M_ij softmax_j(S_ij), mean over i."""
    s = _normalize(v) @ _normalize(e).T / tau
    total = 0.0
    for i in range(s.shape[0]):
        m = s[i].max()
        exps = [math.exp(s[i, j] - m) for j in range(s.shape[1])]
        z = sum(exps)
        pos = sum(exps[j] / z for j in range(s.shape[1]) if mask[i, j])
        total += -math.log(pos)
    return total / s.shape[0]


def test_region_concept_contrastive_matches_hand_computation():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, 4))
    concepts = rng.normal(size=(3, 4))
    labels = np.array([0, 2, 0, 1, 2])
    e = concepts[labels]
    mask = labels[:, None] == labels[None, :]
    for tau in (0.5, 0.07):
        expected = _mil_reference(v, e, mask, tau)
        got = region_concept_contrastive(torch.tensor(v), torch.tensor(e), torch.tensor(mask), tau)
        assert set(got) == {"loss_region_concept"}
        assert abs(float(got["loss_region_concept"]) - expected) < 1e-5


def test_region_concept_contrastive_single_concept_is_zero():
    # every region has the same pseudo-label: all columns are positives, the summed probability is 1
    v = torch.randn(4, 8)
    e = torch.randn(1, 8).expand(4, 8)
    mask = torch.ones(4, 4, dtype=torch.bool)
    assert abs(float(region_concept_contrastive(v, e, mask)["loss_region_concept"])) < 1e-6


def test_region_concept_contrastive_is_finite_where_official_underflows():
    # region 0 is anti-aligned with its own concept and aligned with another: at tau 0.01 its positive
    # probability is exp(-200) (0 in float32); the loss must be the exact 200, not inf
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    e = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    mask = torch.eye(2, dtype=torch.bool)
    loss = region_concept_contrastive(v, e, mask, 0.01)["loss_region_concept"]
    s0 = np.array([-100.0, 100.0])
    s1 = np.array([0.0, 0.0])
    expected = (np.log(np.exp(s0 - 100).sum()) + 100 - s0[0] + np.log(2.0) - s1[1]) / 2
    assert torch.isfinite(loss)
    assert abs(float(loss) - expected) < 1e-3


def test_region_concept_contrastive_empty_is_zero_with_graph():
    v = torch.zeros(0, 8, requires_grad=True)
    loss = region_concept_contrastive(v, torch.zeros(0, 8), torch.zeros(0, 0, dtype=torch.bool))
    assert float(loss["loss_region_concept"].detach()) == 0.0
    loss["loss_region_concept"].backward()  # still part of the graph
    assert v.grad is not None


def test_concept_distillation_matches_hand_computation():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(3, 4))
    pool = rng.normal(size=(6, 4))
    teacher = _softmax_rows(rng.normal(size=(3, 6)) * 3)
    teacher[1, 2] = 0.0  # a zero target: contributes nothing
    teacher[1] /= teacher[1].sum()
    tau = 0.3
    q = _softmax_rows(_normalize(v) @ _normalize(pool).T / tau)
    expected = 0.0
    for i in range(3):
        for c in range(6):
            if teacher[i, c] > 0:
                expected += teacher[i, c] * (math.log(teacher[i, c]) - math.log(q[i, c]))
    expected /= 3
    got = concept_distillation(torch.tensor(v), torch.tensor(pool), torch.tensor(teacher), tau)
    assert set(got) == {"loss_region_distill"}
    assert abs(float(got["loss_region_distill"]) - expected) < 1e-5
    # and equal to F.kl_div(softmax().log(), P, batchmean) where that is finite (the official call)
    vq = F.normalize(torch.tensor(v).float(), dim=-1) @ F.normalize(torch.tensor(pool).float(), dim=-1).t()
    official = F.kl_div((vq / tau).softmax(-1).log(), torch.tensor(teacher).float(), reduction="batchmean")
    assert abs(float(official) - float(got["loss_region_distill"])) < 1e-5


def test_concept_distillation_zero_targets_with_underflow_stay_finite():
    # q underflows to 0 where P is 0: F.kl_div gives NaN there, the loss must ignore those terms
    v = torch.tensor([[1.0, 0.0]], requires_grad=True)
    pool = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    p = torch.tensor([[1.0, 0.0]])
    official = F.kl_div((v.detach() @ pool.t() / 0.01).softmax(-1).log(), p, reduction="batchmean")
    assert torch.isnan(official)
    loss = concept_distillation(v, pool, p, 0.01)["loss_region_distill"]
    assert abs(float(loss)) < 1e-6
    loss.backward()
    assert torch.isfinite(v.grad).all()


def test_concept_distillation_is_zero_when_student_equals_teacher():
    v = torch.randn(4, 8)
    pool = torch.randn(10, 8)
    p = (F.normalize(v, dim=-1) @ F.normalize(pool, dim=-1).t() / 0.05).softmax(-1)
    assert abs(float(concept_distillation(v, pool, p, 0.05)["loss_region_distill"])) < 1e-5


def test_image_text_contrastive_matches_hand_computation():
    rng = np.random.default_rng(2)
    g = rng.normal(size=(4, 5))
    t = rng.normal(size=(4, 5))
    tau = 0.2
    z = _normalize(g) @ _normalize(t).T / tau
    ce_rows = np.mean([-math.log(_softmax_rows(z)[i, i]) for i in range(4)])
    ce_cols = np.mean([-math.log(_softmax_rows(z.T)[i, i]) for i in range(4)])
    expected = 0.5 * (ce_rows + ce_cols)
    got = image_text_contrastive(torch.tensor(g), torch.tensor(t), tau)
    assert set(got) == {"loss_image_text"}
    assert abs(float(got["loss_image_text"]) - expected) < 1e-5


def test_image_text_contrastive_single_pair_is_zero():
    loss = image_text_contrastive(torch.randn(1, 8), torch.randn(1, 8))["loss_image_text"]
    assert abs(float(loss)) < 1e-6


def test_image_text_gather_truncates_to_smallest_batch():
    # a fake 2-rank gather: this rank has 3 rows, the other 2; the other rank's rows are fixed tensors
    other_g = torch.randn(2, 6)
    other_t = torch.randn(2, 6)
    calls = []

    def gather(x):
        calls.append(x.shape)
        if x.shape == (1,):
            return torch.cat([x, torch.tensor([2.0])])
        other = other_g if len(calls) == 2 else other_t
        return torch.cat([x, F.normalize(other, dim=-1)])

    g = torch.randn(3, 6)
    t = torch.randn(3, 6)
    got = image_text_contrastive(g, t, 0.1, gather)["loss_image_text"]
    assert calls[1] == (2, 6)  # truncated to the smallest per-rank batch before gathering
    expected = image_text_contrastive(torch.cat([g[:2], other_g]), torch.cat([t[:2], other_t]), 0.1)
    assert abs(float(got) - float(expected["loss_image_text"])) < 1e-5
