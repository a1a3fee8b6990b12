"""Losses: InfoNCE, linear CKA, hybrid, information balance, reciprocal -- against direct formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sonalign.models.losses.cka import CKALoss, linear_cka
from sonalign.models.losses.hybrid import HybridLoss, contrastive_from_scores
from sonalign.models.losses.info_balance import InfoBalanceLoss, info_balance_loss, infonce_mi_estimate
from sonalign.models.losses.infonce import InfoNCELoss, info_nce
from sonalign.models.losses.reciprocal import ReciprocalDualContrastiveLoss


def _unit(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def _loop_infonce_from_scores(scores: torch.Tensor, scale: float) -> float:
    """Row-by-row log-softmax over scale * scores, both directions, averaged."""
    n = scores.shape[0]
    rows = [-torch.log_softmax(scale * scores[i], dim=0)[i].item() for i in range(n)]
    cols = [-torch.log_softmax(scale * scores[:, i], dim=0)[i].item() for i in range(n)]
    return 0.5 * (sum(rows) / n + sum(cols) / n)


def _loop_infonce(a: torch.Tensor, b: torch.Tensor, scale: float) -> float:
    n = a.shape[0]
    scores = torch.stack([torch.stack([a[i] @ b[j] for j in range(n)]) for i in range(n)])
    return _loop_infonce_from_scores(scores, scale)


# ---------------------------------------------------------------- InfoNCE
def test_info_nce_equals_row_loop():
    a, b = _unit(6, 5, seed=0), _unit(6, 5, seed=1)
    logit_scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64)
    expected = _loop_infonce(a, b, math.exp(logit_scale.item()))
    assert info_nce(a, b, logit_scale).item() == pytest.approx(expected, rel=1e-9)
    module = InfoNCELoss(0.07).double()
    assert module(a, b).item() == pytest.approx(expected, rel=1e-6)
    assert InfoNCELoss.citation


def test_info_nce_is_asymmetric_in_pairs_not_in_direction():
    a, b = _unit(5, 4, seed=2), _unit(5, 4, seed=3)
    assert info_nce(a, b, 1.0).item() == pytest.approx(info_nce(b, a, 1.0).item(), rel=1e-12)
    perm = torch.tensor([1, 0, 2, 3, 4])
    assert info_nce(a, b[perm], 1.0).item() != pytest.approx(info_nce(a, b, 1.0).item(), rel=1e-6)


# ---------------------------------------------------------------- CKA
def _numpy_cka(x: np.ndarray, y: np.ndarray) -> float:
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n

    def hsic(k: np.ndarray, l: np.ndarray) -> float:
        return float(np.trace(k @ h @ l @ h)) / (n - 1) ** 2

    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


def test_linear_cka_matches_hand_computed_hsic():
    x = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0], [2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    y = np.array([[0.5, 1.0], [2.0, -1.0], [1.0, 0.0], [0.0, 3.0]])
    expected = _numpy_cka(x, y)
    got = linear_cka(torch.tensor(x), torch.tensor(y)).item()
    assert got == pytest.approx(expected, rel=1e-9)
    assert 0.0 < expected < 1.0  # the fixture is not a degenerate case


def test_linear_cka_identity_scaling_orthogonal_and_unrelated():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, generator=g, dtype=torch.float64)
    assert linear_cka(x, x).item() == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, 3.7 * x).item() == pytest.approx(1.0, abs=1e-9)
    y = torch.randn(32, 6, generator=g, dtype=torch.float64)
    base = linear_cka(x, y).item()
    assert linear_cka(2.5 * x, 0.3 * y).item() == pytest.approx(base, rel=1e-9)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    assert linear_cka(x @ q, y).item() == pytest.approx(base, rel=1e-9)
    assert linear_cka(x @ q, x).item() == pytest.approx(1.0, abs=1e-9)
    assert base < 0.6  # independent random features share little structure
    # an anisotropic (non-orthogonal) map is *not* an invariance of CKA
    assert linear_cka(x @ torch.diag(torch.linspace(0.1, 10, 8, dtype=torch.float64)), x).item() < 0.99


def test_cka_loss_and_gradient():
    x = torch.randn(8, 5, requires_grad=True)
    y = torch.randn(8, 7)
    loss = CKALoss()(x, y)
    assert loss.item() == pytest.approx(1.0 - linear_cka(x, y).item(), abs=1e-6)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert CKALoss.citation
    with pytest.raises(ValueError):
        linear_cka(torch.randn(3, 2), torch.randn(4, 2))


# ---------------------------------------------------------------- hybrid
def test_hybrid_components_equal_direct_formulas():
    g = torch.Generator().manual_seed(4)
    a_raw = torch.randn(6, 5, generator=g, dtype=torch.float64)
    t_raw = torch.randn(6, 5, generator=g, dtype=torch.float64)
    loss = HybridLoss(w_cos=0.5, w_l1=2.0, w_con=0.3, init_temperature=0.1).double()
    out = loss(a_raw, t_raw)
    a, t = F.normalize(a_raw, dim=-1), F.normalize(t_raw, dim=-1)
    cos = [float(a[i] @ t[i] / (a[i].norm() * t[i].norm())) for i in range(6)]
    assert out["cos"].item() == pytest.approx(0.5 * np.mean([1 - c for c in cos]), rel=1e-9)
    assert out["l1"].item() == pytest.approx(2.0 * float((a - t).abs().sum()) / a.numel(), rel=1e-9)
    assert out["con"].item() == pytest.approx(0.3 * _loop_infonce(a, t, 10.0), rel=1e-6)  # float32 log-scale
    assert HybridLoss.citation


def test_hybrid_contrastive_uses_given_score_matrix():
    g = torch.Generator().manual_seed(5)
    scores = torch.rand(5, 5, generator=g, dtype=torch.float64) * 2 - 1
    assert contrastive_from_scores(scores, math.log(5.0)).item() == pytest.approx(_loop_infonce_from_scores(scores, 5.0), rel=1e-9)
    loss = HybridLoss(init_temperature=0.2).double()
    a, t = _unit(5, 3, seed=6), _unit(5, 3, seed=7)
    assert loss(a, t, scores)["con"].item() == pytest.approx(_loop_infonce_from_scores(scores, 5.0), rel=1e-6)


def test_hybrid_pairwise_terms_do_not_depend_on_negatives():
    a, t = _unit(8, 4, seed=8), _unit(8, 4, seed=9)
    loss = HybridLoss()
    full = loss(a, t)
    half = loss(a[:4], t[:4])
    rest = loss(a[4:], t[4:])
    assert full["cos"].item() == pytest.approx(0.5 * (half["cos"] + rest["cos"]).item(), rel=1e-6)
    assert full["l1"].item() == pytest.approx(0.5 * (half["l1"] + rest["l1"]).item(), rel=1e-6)


def test_hybrid_rejects_negative_weights():
    with pytest.raises(ValueError):
        HybridLoss(w_cos=-1.0)


# ---------------------------------------------------------------- information balance
def test_info_balance_equals_formula():
    a, t, j = _unit(8, 6, seed=10), _unit(8, 6, seed=11), _unit(8, 6, seed=12)
    tau = 0.2
    l_a = _loop_infonce(a, j, 1 / tau)
    l_t = _loop_infonce(t, j, 1 / tau)
    expected = ((l_t - l_a) / math.log(8)) ** 2
    assert info_balance_loss(a, t, j, tau).item() == pytest.approx(expected, rel=1e-9)
    assert InfoBalanceLoss(tau)(a, t, j).item() == pytest.approx(expected, rel=1e-9)
    assert infonce_mi_estimate(a, j, tau).item() == pytest.approx(math.log(8) - l_a, rel=1e-9)
    assert InfoBalanceLoss.citation


def test_info_balance_detects_dominance():
    j = _unit(16, 8, seed=13)
    text = _unit(16, 8, seed=14)  # unrelated to the joint
    dominated = info_balance_loss(j.clone(), text, j)  # audio determines the joint, text does not
    balanced = info_balance_loss(j.clone(), j.clone(), j)
    assert balanced.item() == pytest.approx(0.0, abs=1e-12)
    assert dominated.item() > 0.1
    assert info_balance_loss(j[:1], text[:1], j[:1]).item() == 0.0


def test_info_balance_gradient_flows_to_all_inputs():
    a = torch.randn(8, 4, requires_grad=True)
    t = torch.randn(8, 4, requires_grad=True)
    j = torch.randn(8, 4, requires_grad=True)
    info_balance_loss(a, t, j).backward()
    for x in (a, t, j):
        assert x.grad is not None and torch.isfinite(x.grad).all()


# ---------------------------------------------------------------- reciprocal
def test_reciprocal_is_audio_joint_plus_text_joint():
    a, t, j = _unit(6, 4, seed=15), _unit(6, 4, seed=16), _unit(6, 4, seed=17)
    loss = ReciprocalDualContrastiveLoss(init_temperature=0.1).double()
    out = loss(a, t, j)
    assert set(out) == {"audio_joint", "text_joint"}
    assert out["audio_joint"].item() == pytest.approx(_loop_infonce(a, j, 10.0), rel=1e-6)
    assert out["text_joint"].item() == pytest.approx(_loop_infonce(t, j, 10.0), rel=1e-6)
    direct = ReciprocalDualContrastiveLoss(init_temperature=0.1, direct_weight=0.5).double()(a, t, j)
    assert direct["audio_text"].item() == pytest.approx(0.5 * _loop_infonce(a, t, 10.0), rel=1e-6)
    assert ReciprocalDualContrastiveLoss.citation
