"""Hard-negative InfoNCE, disentangle regulariser and hierarchical (token-level) alignment losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sonalign.models.losses.disentangle import DisentangleLoss, disentangle_loss, factor_decorrelation, factor_orthogonality
from sonalign.models.losses.hard_negative import HardNegativeInfoNCELoss, hard_negative_info_nce
from sonalign.models.losses.hierarchical import (
    ScoreContrastiveLoss,
    TokenAlignmentLoss,
    late_interaction_scores,
    symmetric_contrastive,
)
from sonalign.models.losses.infonce import info_nce


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


# ------------------------------------------------------------------------------------ hard negatives
def test_hard_negative_beta_zero_equals_info_nce():
    a, b = _unit(6, 5, seed=1), _unit(6, 5, seed=2)
    scale = torch.tensor(math.log(1 / 0.07))
    assert torch.allclose(hard_negative_info_nce(a, b, scale, beta=0.0), info_nce(a, b, scale), atol=1e-6)
    assert torch.allclose(hard_negative_info_nce(a, b, 1.5, beta=0.0), info_nce(a, b, 1.5), atol=1e-6)


def _hand_written(a: torch.Tensor, b: torch.Tensor, scale: float, beta: float) -> float:
    """-l_ii + log(e^l_ii + sum_{j!=i} w_ij e^l_ij), w_ij = (N-1) e^{beta l_ij} / sum_{k!=i} e^{beta l_ik}; both directions."""
    n = a.shape[0]
    logits = (scale * a @ b.T).tolist()

    def direction(rows: list[list[float]]) -> float:
        total = 0.0
        for i in range(n):
            neg = [j for j in range(n) if j != i]
            z = sum(math.exp(beta * rows[i][k]) for k in neg)
            denom = math.exp(rows[i][i]) + sum((n - 1) * math.exp(beta * rows[i][j]) / z * math.exp(rows[i][j]) for j in neg)
            total += -rows[i][i] + math.log(denom)
        return total / n

    transposed = [[logits[j][i] for j in range(n)] for i in range(n)]
    return 0.5 * (direction(logits) + direction(transposed))


@pytest.mark.parametrize("beta", [0.15, 1.0])
def test_hard_negative_matches_hand_written_formula(beta):
    a, b = _unit(3, 4, seed=3), _unit(3, 4, seed=4)
    got = hard_negative_info_nce(a.double(), b.double(), math.log(5.0), beta=beta)
    assert got.item() == pytest.approx(_hand_written(a.double(), b.double(), 5.0, beta), rel=1e-9)


def test_hard_negative_upweights_hard_negatives():
    # row 0 has one very similar negative: beta > 0 must raise the loss above InfoNCE
    a = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), dim=-1)
    b = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]]), dim=-1)
    plain = hard_negative_info_nce(a, b, math.log(10.0), beta=0.0)
    hard = hard_negative_info_nce(a, b, math.log(10.0), beta=0.5)
    assert hard > plain


def test_hard_negative_module_learns_temperature_and_detach_keeps_value():
    a, b = _unit(5, 4, seed=5).requires_grad_(), _unit(5, 4, seed=6)
    loss_fn = HardNegativeInfoNCELoss(beta=0.3)
    loss = loss_fn(a, b)
    loss.backward()
    assert loss_fn.logit_scale.grad is not None and a.grad is not None
    assert "Robinson" in loss_fn.citation
    detached = HardNegativeInfoNCELoss(beta=0.3, detach_weights=True)(a, b)
    assert torch.allclose(loss, detached)


# ----------------------------------------------------------------------------------- disentangle
def test_orthogonality_zero_for_orthogonal_positive_for_correlated():
    eye = torch.eye(4).expand(3, 4, 4) * 2.5  # each sample: 4 mutually orthogonal factors
    assert factor_orthogonality(eye).item() == pytest.approx(0.0, abs=1e-7)
    corr = eye.clone()
    corr[:, 1] = corr[:, 0] + 0.1 * corr[:, 1]
    assert factor_orthogonality(corr).item() > 0.1


def test_decorrelation_zero_for_uncorrelated_positive_for_correlated():
    b, k, f = 32, 3, 4
    raw = torch.randn(b, k * f, generator=torch.Generator().manual_seed(7))
    q, _ = torch.linalg.qr(raw - raw.mean(0))  # centred, mutually orthogonal columns -> uncorrelated coordinates
    factors = q.view(b, k, f)
    assert factor_decorrelation(factors).item() == pytest.approx(0.0, abs=1e-6)
    correlated = factors.clone()
    correlated[:, 1] = 0.8 * factors[:, 0] + 0.2 * factors[:, 1]
    assert factor_decorrelation(correlated).item() > 0.01


def test_disentangle_module_modes_and_errors():
    x = torch.randn(8, 3, 5, requires_grad=True)
    for mode in ("decorrelation", "orthogonal"):
        loss = DisentangleLoss(mode)(x, x * 2)
        assert torch.isfinite(loss) and loss > 0
        assert torch.allclose(loss, disentangle_loss(x, mode), atol=1e-6)  # scale-invariant
    assert "Xin" in DisentangleLoss.citation
    with pytest.raises(ValueError):
        DisentangleLoss("nope")


# ---------------------------------------------------------------------------------- hierarchical
def test_late_interaction_matches_loop_and_ignores_padding():
    a, t = _unit(3, 5, 4, seed=8), _unit(2, 4, 4, seed=9)
    am = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    tm = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    a2t, t2a = late_interaction_scores(a, am, t, tm)
    for i in range(3):
        for j in range(2):
            ai, tj = a[i][am[i]], t[j][tm[j]]
            sim = ai @ tj.T
            assert a2t[i, j].item() == pytest.approx(sim.max(1).values.mean().item(), abs=1e-6)
            assert t2a[i, j].item() == pytest.approx(sim.max(0).values.mean().item(), abs=1e-6)
    a2 = a.clone()
    a2[~am] = 5.0
    assert torch.allclose(late_interaction_scores(a2, am, t, tm)[0], a2t)


def test_symmetric_contrastive_equals_info_nce_on_cosine_matrix():
    a, b = _unit(5, 3, seed=10), _unit(5, 3, seed=11)
    scale = torch.tensor(2.0)
    assert torch.allclose(symmetric_contrastive(a @ b.T, scale), info_nce(a, b, scale), atol=1e-6)
    assert torch.isfinite(ScoreContrastiveLoss()(a @ b.T))


def test_token_alignment_loss_prefers_matching_tokens():
    t = _unit(4, 3, 6, seed=12)
    mask_t = torch.ones(4, 3, dtype=torch.bool)
    audio = torch.cat([t, _unit(4, 2, 6, seed=13)], dim=1)  # each clip contains its caption's tokens
    mask_a = torch.ones(4, 5, dtype=torch.bool)
    loss_fn = TokenAlignmentLoss()
    matched = loss_fn(audio, mask_a, t, mask_t)
    shuffled = loss_fn(audio, mask_a, t[[1, 2, 3, 0]], mask_t)
    assert matched < shuffled
    assert "FILIP" in TokenAlignmentLoss.citation
