"""Shared fixtures: generated audio, fake (tiny, deterministic) encoders, and the shared real data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fakes import FakeAudioEncoder, FakeTextEncoder, register_fake_encoders  # noqa: F401 (tests import the fakes from here)

os.environ.setdefault("SONALIGN_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that use it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def tone(freq: float, seconds: float, sr: int = 16000, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def make_wav(tmp_path):
    """make_wav(name, wave, sr=16000) -> path of a written file (format from the suffix)."""

    def _make(name: str, wave: np.ndarray, sr: int = 16000) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wave, sr)
        return path

    return _make


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory):
    """sonalign's default cache folder ($SONALIGN_CACHE) in a temporary folder, not the user's home."""
    os.environ["SONALIGN_CACHE"] = str(tmp_path_factory.mktemp("sonalign-cache"))
    yield Path(os.environ["SONALIGN_CACHE"])


@pytest.fixture(scope="session", autouse=True)
def fake_encoders():
    """Register ``fake-audio`` / ``fake-text`` so pipeline tests need no model weights."""
    register_fake_encoders()
    yield
