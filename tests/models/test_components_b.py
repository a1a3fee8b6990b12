"""Shared codebook / sparsemax, locality-aware block, SpecTran and transformer blocks."""

from __future__ import annotations

import pytest
import torch

from sonalign.models.components.codebook import SharedCodebook, sparsemax, topk_softmax
from sonalign.models.components.locality import LocalityAwareBlock, local_window_mask
from sonalign.models.components.spectran import SpecTran
from sonalign.models.components.transformer_blocks import TransformerStack, sinusoidal_positions


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------- sparsemax
def test_sparsemax_known_values_and_simplex():
    assert torch.allclose(sparsemax(torch.tensor([1.0, 0.5, -1.0])), torch.tensor([0.75, 0.25, 0.0]))
    assert torch.allclose(sparsemax(torch.tensor([3.0, 0.0, 0.0])), torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(sparsemax(torch.zeros(4)), torch.full((4,), 0.25))
    z = torch.randn(5, 7, 9, generator=_gen(0)) * 3
    p = sparsemax(z, dim=1)
    assert (p >= 0).all() and torch.allclose(p.sum(1), torch.ones(5, 9), atol=1e-6)


def test_sparsemax_gradient_is_the_sparsemax_jacobian():
    z = torch.tensor([0.9, 0.5, 0.3, -2.0], dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: sparsemax(x), (z,))
    jac = torch.autograd.functional.jacobian(sparsemax, z.detach())
    support = sparsemax(z.detach()) > 0
    s = support.double()
    expected = torch.diag(s) - torch.outer(s, s) / s.sum()
    assert torch.allclose(jac, expected)


def test_topk_softmax_keeps_k_entries():
    p = topk_softmax(torch.tensor([[0.1, 2.0, -1.0, 1.5, 0.0]]), k=2)
    assert (p > 0).sum().item() == 2 and p[0, 1] > p[0, 3] > 0
    assert torch.allclose(p.sum(), torch.tensor(1.0))


# ---------------------------------------------------------------------------------------- codebook
def test_codebook_global_is_combination_of_shared_codes_and_ignores_padding():
    cb = SharedCodebook(num_codes=16, dim=8, temperature=1.0)
    feats = torch.randn(3, 6, 8, generator=_gen(1))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    g, w = cb(feats, mask)
    assert g.shape == (3, 8) and w.shape == (3, 16)
    assert torch.allclose(w.sum(-1), torch.ones(3), atol=1e-6) and (w >= 0).all()
    assert torch.allclose(g, w @ cb.codes)
    poisoned = feats.clone()
    poisoned[~mask] = 100.0
    assert torch.allclose(cb(poisoned, mask)[0], g)
    # max-pooling: a padded copy of a strong frame changes nothing, a valid one does
    assert not torch.allclose(cb(poisoned, torch.ones_like(mask))[0], g)


@pytest.mark.parametrize("sparsify", ["sparsemax", "softmax", "topk"])
def test_codebook_modes_give_gradients(sparsify):
    cb = SharedCodebook(num_codes=12, dim=6, temperature=5.0, sparsify=sparsify, top_k=3)
    feats = torch.randn(4, 5, 6, generator=_gen(2), requires_grad=True)
    g, w = cb(feats)
    g.pow(2).sum().backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all() and cb.codes.grad is not None
    if sparsify == "topk":
        assert ((w > 0).sum(-1) == 3).all()


# ---------------------------------------------------------------------------------------- locality
def test_value_mode_locality_block_keeps_frames_independent():
    block = LocalityAwareBlock(dim=8, num_heads=2, mode="value", dropout=0.0).eval()
    x = torch.randn(2, 6, 8, generator=_gen(3))
    y = block(x)
    x2 = x.clone()
    x2[:, 3] += torch.randn(8, generator=_gen(8)) * 3
    y2 = block(x2)
    changed = (y2 - y).abs().amax(dim=(0, 2)) > 1e-6
    assert changed.tolist() == [False, False, False, True, False, False]


def test_window_mode_only_mixes_within_window():
    assert local_window_mask(5, 1).sum(1).tolist() == [2, 3, 3, 3, 2]
    block = LocalityAwareBlock(dim=8, num_heads=2, mode="window", window=1, dropout=0.0).eval()
    x = torch.randn(1, 7, 8, generator=_gen(4))
    x2 = x.clone()
    x2[:, 0] += torch.randn(8, generator=_gen(9)) * 3
    changed = ((block(x2) - block(x)).abs().amax(dim=(0, 2)) > 1e-6).tolist()
    assert changed == [True, True, False, False, False, False, False]
    with pytest.raises(ValueError):
        LocalityAwareBlock(dim=8, mode="other")


# --------------------------------------------------------------------------------- transformer stack
def test_transformer_stack_padding_invariance_and_zeros():
    stack = TransformerStack(dim=8, depth=2, num_heads=2, dropout=0.0).eval()
    x = torch.randn(2, 5, 8, generator=_gen(5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    outs = stack(x, mask)
    assert len(outs) == 2 and (outs[-1][0, 3:] == 0).all()
    x2 = x.clone()
    x2[0, 3:] = torch.randn(2, 8) * 50
    assert torch.allclose(stack(x2, mask)[-1], outs[-1], atol=1e-6)
    # padded keys are really excluded: same as running the unpadded sequence alone
    assert torch.allclose(stack(x[:1, :3])[-1], outs[-1][:1, :3], atol=1e-5)
    table = sinusoidal_positions(10, 7)
    assert table.shape == (10, 7) and torch.isfinite(table).all()


# -------------------------------------------------------------------------------------------- SpecTran
def test_spectran_shapes_masks_and_partial_patches():
    st = SpecTran(n_mels=32, patch_time=4, patch_mel=16, dim=16, depth=1, num_heads=2, dropout=0.0).eval()
    mel = torch.randn(2, 10, 32, generator=_gen(6))  # 10 frames -> 3 time patches (last one padded)
    mask = torch.tensor([[1] * 10, [1] * 5 + [0] * 5], dtype=torch.bool)
    out = st(mel, mask)
    assert out["cls"].shape == (2, 16) and out["tokens"].shape == (2, 3 * 2, 16)
    # second clip: frames 0-4 valid -> time patches 0 and 1 valid (patch 1 partly), patch 2 padded
    assert out["tokens_mask"].tolist() == [[True] * 6, [True, True, True, True, False, False]]
    assert (out["tokens"][1, 4:] == 0).all()
    mel2 = mel.clone()
    mel2[1, 5:] = 99.0
    out2 = st(mel2, mask)
    assert torch.allclose(out2["cls"], out["cls"], atol=1e-6) and torch.allclose(out2["tokens"], out["tokens"], atol=1e-6)
    with pytest.raises(ValueError):
        st(torch.randn(1, 8, 30), None)
    with pytest.raises(ValueError):
        SpecTran(n_mels=30, patch_mel=16)


def test_spectran_replaced_patches_hide_their_content():
    st = SpecTran(n_mels=32, patch_time=4, patch_mel=16, dim=16, depth=1, num_heads=2, dropout=0.0).eval()
    mel = torch.randn(1, 8, 32, generator=_gen(7))  # 2 time patches x 2 mel patches, time-major
    replace = torch.tensor([[False, True, False, False]])  # time patch 0, upper mel half
    out = st(mel, replace=replace, replacement=torch.zeros(16))
    mel2 = mel.clone()
    mel2[0, 0:4, 16:32] += 3.0 * torch.randn(4, 16, generator=_gen(8))
    out2 = st(mel2, replace=replace, replacement=torch.zeros(16))
    assert torch.allclose(out["tokens"], out2["tokens"], atol=1e-6)  # the encoder never saw that patch
    assert not torch.allclose(out["patches"][0, 1], out2["patches"][0, 1])  # but it is still the target
    assert torch.allclose(out["patches"][0, 1], mel[0, 0:4, 16:32].reshape(-1))
