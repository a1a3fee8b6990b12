"""CLAP baseline: what only it does (its contract, gradients, training, saving: test_model_contract.py)."""

from __future__ import annotations

import pytest
import torch

from model_checks import full_batch
from sonalign.models import create_model
from sonalign.models.losses.infonce import info_nce


def test_loss_is_infonce_on_the_returned_embeddings_and_similarity_the_cosine():
    model = create_model("clap-baseline")
    with torch.no_grad():
        out = model(full_batch(8))
    assert set(out["losses"]) == {"infonce"}
    # the loss is InfoNCE on the returned embeddings with the model's temperature
    expected = info_nce(out["audio"]["embedding"], out["text"]["embedding"], model.loss_fn.logit_scale)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.allclose(model.similarity(out["audio"], out["text"]), out["audio"]["embedding"] @ out["text"]["embedding"].T)
