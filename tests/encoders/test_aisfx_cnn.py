"""aisfx-cnn: safe checkpoint loading, numerical match with aisfx's own model, windows/frames/masks,
and determinism (speed is measured by bench/features.py and bench/encoders.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sonalign.encoders import aisfx_cnn as ax
from sonalign.encoders.aisfx_cnn import AisfxCNN, valid_frames
from sonalign.errors import ConfigError

SR = 44100
ONE_WINDOW = 99 * 1024 + 500  # 1 + n // 1024 == 100 spectrogram frames: exactly one window


def signal(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    gate = (np.sin(2 * np.pi * 1.3 * t) > 0).astype(np.float32)
    return (0.3 * np.sin(2 * np.pi * 440 * t) * gate + 0.05 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def enc() -> AisfxCNN:
    return AisfxCNN()


def test_construction_is_cheap_and_attributes():
    e = AisfxCNN()
    assert e._trunk is None  # nothing loaded until the first encode
    assert (e.name, e.sample_rate, e.dim) == ("aisfx-cnn", 44100, 512)
    assert e.frames_per_second == pytest.approx(12 / 2.322, rel=1e-3)
    assert e.frame_hop_seconds == pytest.approx(2.322 / 12, rel=1e-3)
    times = e.frame_times(24)
    assert times[0] == pytest.approx(3.5 * 1024 / SR)
    assert times[12] == pytest.approx((100 + 3.5) * 1024 / SR)  # second window starts at 2.322 s
    assert np.all(np.diff(times) > 0)


def test_checkpoint_needs_exactly_the_allow_list():
    path = ax.checkpoint_path()
    allow = ax.checkpoint_safe_globals()
    with pytest.raises(Exception):
        torch.load(path, map_location="cpu", weights_only=True)
    for i in range(len(allow)):  # every entry is needed
        with torch.serialization.safe_globals(allow[:i] + allow[i + 1 :]), pytest.raises(Exception):
            torch.load(path, map_location="cpu", weights_only=True)
    state = ax.load_embedding_state(path)
    assert len(state) == 4 * 12 and all(not k.startswith("embedding_net.") for k in state)
    assert state["conv_block4.conv2.weight"].shape == (512, 512, 3, 3)


def test_matches_aisfx_reference_on_one_window(enc):
    aisfx_inference = pytest.importorskip("aisfx.inference")
    wave = signal(ONE_WINDOW)
    spec = enc.spectrogram(wave)
    assert spec.shape == (100, 96)
    # aisfx's own model; its checkpoint needs full unpickling (trusted, installed package: test only)
    weights, ds_dict = torch.load(str(ax.checkpoint_path()), map_location="cpu", weights_only=False)
    model = aisfx_inference.load_bestModel(weights, ds_dict, "cpu")
    with torch.no_grad():
        ref = model.get_embedding(torch.Tensor(spec[None])).numpy()[0]
    out = enc.encode([wave])
    assert out["frames"].shape == (1, 12, 512) and out["frames_mask"].all()
    np.testing.assert_allclose(out["embedding"][0], ref, rtol=1e-5, atol=1e-5)
    # and our own unfused re-implementation is the same function exactly
    net = enc.load_reference_net()
    with torch.no_grad():
        np.testing.assert_array_equal(net(torch.from_numpy(spec[None])).numpy()[0], ref)


def test_spectrogram_is_aisfx_preprocessing(enc):
    from sonalign.audio.mel import log_mel

    wave = signal(30000)
    y = wave / np.abs(wave).max()
    expected = log_mel(y, SR, 2048, 1024, 2048, 96, 0.0, 22050.0, True, 1.0, 2.0, "log10p") / 9.457798957824707
    np.testing.assert_allclose(enc.spectrogram(wave), expected, rtol=1e-6, atol=1e-7)
    # per-segment peak normalisation: the level does not matter
    np.testing.assert_allclose(enc.spectrogram(0.01 * wave), enc.spectrogram(wave), rtol=1e-5, atol=1e-6)
    assert np.all(enc.spectrogram(np.zeros(5000, np.float32)) == 0)  # silence == the padding value


def test_long_segments_use_chunked_stft_with_same_result(enc, monkeypatch):
    wave = signal(200 * 1024 + 77)
    whole = enc.spectrogram(wave)
    monkeypatch.setattr(ax, "_STFT_CHUNK_FRAMES", 37)
    np.testing.assert_allclose(enc.spectrogram(wave), whole, rtol=1e-6, atol=1e-7)


def test_windows_frames_and_masks(enc):
    lengths = [0, 5000, ONE_WINDOW, 100 * 1024, 250 * 1024 + 3]
    waves = [signal(n, seed=i) for i, n in enumerate(lengths)]
    out = enc.encode(waves, batch_size=3)
    n_spec = [1 + n // 1024 for n in lengths]
    n_win = [-(-s // 100) for s in n_spec]
    assert n_win == [1, 1, 1, 2, 3]
    assert out["frames"].shape == (5, 31, 512) and out["frames"].dtype == np.float32  # only real frames: longest has 24 + 7
    assert out["frames_mask"].dtype == bool
    np.testing.assert_array_equal(out["frames_mask"].sum(1), [valid_frames(s) for s in n_spec])
    assert [valid_frames(s) for s in n_spec] == [1, 1, 12, 13, 24 + 7]
    for i, s in enumerate(n_spec):
        v = valid_frames(s)
        assert out["frames_mask"][i, :v].all() and not out["frames_mask"][i, v:].any()
        assert np.all(out["frames"][i, v:] == 0)  # batch padding
        np.testing.assert_array_equal(out["embedding"][i], out["frames"][i, :v].max(axis=0))


def test_frames_match_per_window_reference(enc):
    """A 2.5-window segment: each full window's frames are the reference trunk on that window; the
    last, partial window (51 frames) is run at its real length rounded up to 8 frames (56 -> 7 frames)."""
    wave = signal(250 * 1024 + 3, seed=3)
    out = enc.encode([wave], batch_size=2)
    spec = enc.spectrogram(wave)
    assert spec.shape[0] == 251
    net = enc.load_reference_net()
    with torch.no_grad():
        full = net.frames(torch.from_numpy(spec[:200].reshape(2, 100, 96).copy())).transpose(1, 2).reshape(24, 512).numpy()
        tail = np.zeros((1, 56, 96), np.float32)
        tail[0, :51] = spec[200:]
        last = net.frames(torch.from_numpy(tail)).transpose(1, 2).reshape(7, 512).numpy()
    assert out["frames"].shape == (1, 31, 512)
    np.testing.assert_allclose(out["frames"][0, :24], full, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["frames"][0, 24:], last, rtol=1e-5, atol=1e-5)



def test_deterministic_and_batch_independent(enc):
    waves = [signal(n, seed=i) for i, n in enumerate([44100, 250 * 1024, 12345])]
    a = enc.encode(waves, batch_size=2)
    b = enc.encode(waves, batch_size=2)
    for k in a:
        assert np.array_equal(a[k], b[k])
    alone = enc.encode([waves[1]], batch_size=16)
    n = int(alone["frames_mask"].sum())
    np.testing.assert_allclose(alone["embedding"][0], a["embedding"][1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(alone["frames"][0, :n], a["frames"][1, :n], rtol=1e-5, atol=1e-6)


def test_options_and_settings(enc):
    waves = [signal(20000)]
    t = enc.encode(waves, convert_to_numpy=False, normalize_embeddings=True)
    assert isinstance(t["embedding"], torch.Tensor) and not t["embedding"].requires_grad
    assert torch.allclose(t["embedding"].norm(dim=1), torch.ones(1))
    empty = enc.encode([])
    assert empty["embedding"].shape == (0, 512)
    with pytest.raises(ValueError):
        enc.encode([np.zeros((2, 100), np.float32)])
    with pytest.raises(ValueError):
        enc.encode([np.array([0.0, np.nan], np.float32)])
    s = enc.settings()
    json.dumps(s)
    assert len(s["weights_sha256"]) == 12 and s["sample_rate"] == 44100 and s["peak_normalise"] == "segment"


@pytest.mark.parametrize("backend", ["channels_last", "dense", "mkldnn"])
def test_every_backend_is_the_reference_function(enc, backend):
    """Window lengths 8-100 frames (partial last windows) and several batch sizes."""
    net = enc.load_reference_net()
    trunk = ax.FusedTrunk(net, backend=backend)
    assert trunk.backend in (backend, "channels_last")  # mkldnn may fall back
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for frames, batch in [(8, 1), (40, 5), (96, 1), (100, 5)]:
            spec = torch.rand(batch, frames, 96, generator=gen)
            ref = net.frames(spec)
            out = trunk(spec)
            assert out.shape == ref.shape == (batch, 512, frames // 8)
            assert float((out - ref).abs().max() / ref.abs().max()) < 1e-5


def test_default_backend_and_unknown_backend(enc):
    net = enc.load_reference_net()
    assert ax.FusedTrunk(net).backend == "channels_last"
    with pytest.raises(ValueError, match="unknown backend"):
        ax.FusedTrunk(net, backend="winograd")


def test_device_argument(enc, monkeypatch):
    monkeypatch.delenv("SONALIGN_DEVICE", raising=False)
    on_cpu = AisfxCNN(device="cpu")
    assert on_cpu.device == torch.device("cpu")
    waves = [signal(44100 * 3, 1), signal(5000, 2)]
    a, b = on_cpu.encode(waves), enc.encode(waves)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            AisfxCNN(device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_gives_the_cpu_result(enc):
    waves = [signal(44100 * 7, 3), signal(30000, 4)]
    gpu, cpu = AisfxCNN(device="cuda").encode(waves, batch_size=4), enc.encode(waves, batch_size=4)
    for k in ("embedding", "frames"):
        np.testing.assert_allclose(gpu[k], cpu[k], rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(gpu["frames_mask"], cpu["frames_mask"])
