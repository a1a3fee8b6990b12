"""Audio decoding, mono mixdown and resampling: soundfile to read, soxr to resample.

Three entry points:

* ``load_audio(path, sample_rate)`` reads a whole (short) file.
* ``stream_audio(path, sample_rate, block_seconds)`` yields fixed-size blocks of a long file at the
  target rate, reading and resampling incrementally so a 2-hour file never sits in memory whole.
* ``load_audio_query(source, max_seconds)`` reads a query-by-example clip (a path, bytes or an open
  binary file) and refuses one longer than ``max_seconds`` without ever decoding more than that.

All raise :class:`~sonalign.errors.AudioError` naming the file for anything unusable.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from sonalign.errors import AudioError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au")

#: A file whose absolute peak never exceeds this (about -80 dBFS) is called all-silent.
SILENCE_PEAK = 1e-4


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def audio_info(path: str | Path) -> AudioInfo:
    """Header facts of a file; raises AudioError if it cannot be opened or holds no samples."""
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "no such file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise AudioError(path, f"unreadable or corrupt audio ({_short(exc)})") from exc
    frames = int(info.frames)
    if frames <= 0 or info.samplerate <= 0:
        raise AudioError(path, "zero-length audio (no samples)")
    return AudioInfo(str(path), int(info.samplerate), int(info.channels), frames)


def to_mono(data: np.ndarray) -> np.ndarray:
    """(frames, channels) or (frames,) float array -> (frames,) float32 by averaging channels."""
    if data.ndim == 2:
        data = data.mean(axis=1)
    return np.ascontiguousarray(data, dtype=np.float32)


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    if orig_sr == target_sr:
        return wave.astype(np.float32, copy=False)
    return soxr.resample(wave, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def check_not_silent(wave: np.ndarray, path: str | Path) -> None:
    if wave.size == 0:
        raise AudioError(path, "zero-length audio (no samples)")
    if not np.isfinite(wave).all():
        raise AudioError(path, "audio contains NaN or infinite samples")
    if float(np.max(np.abs(wave))) <= SILENCE_PEAK:
        raise AudioError(path, "all-silent audio (peak below -80 dBFS)")


def load_audio(
    path: str | Path,
    sample_rate: int | None = None,
    *,
    allow_silent: bool = False,
    start: float = 0.0,
    duration: float | None = None,
) -> tuple[np.ndarray, int]:
    """Read ``path`` (optionally the span ``start`` .. ``start+duration`` seconds) as mono float32.

    Resamples to ``sample_rate`` when given. Returns ``(wave, sample_rate)``.
    """
    info = audio_info(path)
    first = int(round(start * info.sample_rate))
    count = -1 if duration is None else int(round(duration * info.sample_rate))
    try:
        data, sr = sf.read(str(path), start=first, frames=count, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(path, f"unreadable or corrupt audio ({_short(exc)})") from exc
    wave = to_mono(data)
    if not allow_silent:
        check_not_silent(wave, path)
    if sample_rate is not None and sample_rate != sr:
        wave = resample(wave, sr, sample_rate)
        sr = sample_rate
    return wave, int(sr)


def stream_audio(
    path: str | Path,
    sample_rate: int,
    block_seconds: float = 60.0,
    *,
    allow_silent: bool = False,
) -> Iterator[np.ndarray]:
    """Yield consecutive mono blocks of ``block_seconds`` at ``sample_rate`` (the last may be shorter).

    Decoding and resampling are incremental (soxr's streaming resampler keeps filter state across
    blocks), so the output equals resampling the whole file at once, up to float rounding, while
    memory stays bounded by one block. Raises AudioError at the end if every block was silent.
    """
    info = audio_info(path)
    in_block = max(1, int(block_seconds * info.sample_rate))
    out_block = max(1, int(round(block_seconds * sample_rate)))
    resampler = None if info.sample_rate == sample_rate else soxr.ResampleStream(info.sample_rate, sample_rate, 1, dtype="float32", quality="HQ")
    pending = np.zeros(0, dtype=np.float32)
    peak = 0.0
    try:
        with sf.SoundFile(str(path)) as handle:
            mp3 = handle.format == "MP3"
            while True:
                data = _read_mp3_block(handle, in_block) if mp3 else handle.read(in_block, dtype="float32", always_2d=True)
                last = data.shape[0] < in_block
                wave = to_mono(data)
                if wave.size and not np.isfinite(wave).all():
                    raise AudioError(path, "audio contains NaN or infinite samples")
                if wave.size:
                    peak = max(peak, float(np.max(np.abs(wave))))
                if resampler is not None:
                    wave = resampler.resample_chunk(wave, last=last)
                pending = np.concatenate([pending, wave]) if pending.size else wave
                while pending.size >= out_block:
                    yield pending[:out_block]
                    pending = pending[out_block:]
                if last:
                    break
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(path, f"unreadable or corrupt audio ({_short(exc)})") from exc
    if pending.size:
        yield pending
    if not allow_silent and peak <= SILENCE_PEAK:
        raise AudioError(path, "all-silent audio (peak below -80 dBFS)")


def load_audio_query(source: str | Path | bytes | BinaryIO, max_seconds: float, *, name: str | None = None) -> tuple[np.ndarray, int]:
    """Read a query clip as mono float32 at its own rate: ``(wave, sample_rate)``.

    ``source`` is a path, the file's bytes or an open binary file; ``name`` labels it in errors
    (default: the path, else "uploaded audio"). A clip whose header says it lasts more than
    ``max_seconds`` is refused before decoding; when the header's length cannot be trusted (MP3, a
    FLAC of unknown length) decoding goes in blocks and stops after ``max_seconds``, so memory stays
    bounded by the limit whatever the file claims. Rates above 192 kHz are refused for the same
    reason. Silence is not checked here.
    """
    unknown_frames, max_rate, block_samples = 2**63 - 1, 192_000, 1 << 20  # SF_COUNT_MAX: length unknown
    label = name or (str(source) if isinstance(source, str | Path) else "uploaded audio")
    if isinstance(source, str | Path) and not Path(source).is_file():
        raise AudioError(label, "no such file")
    opened = io.BytesIO(source) if isinstance(source, bytes | bytearray) else str(source) if isinstance(source, Path) else source
    blocks: list[np.ndarray] = []
    total = 0
    try:
        with sf.SoundFile(opened) as handle:
            rate, frames = int(handle.samplerate), int(handle.frames)
            if not 0 < rate <= max_rate:
                raise AudioError(label, f"unsupported sample rate {rate} Hz (at most {max_rate})")
            limit = int(max_seconds * rate)
            trusted = handle.format != "MP3" and 0 < frames < unknown_frames  # else read without seeking
            if trusted and frames > limit:
                raise AudioError(label, f"audio query is too long ({frames / rate:.0f} s; at most {max_seconds:g} s)")
            block = max(1, block_samples // handle.channels)
            while total <= limit:
                want = min(block, limit + 1 - total)
                data = handle.read(want, dtype="float32", always_2d=True) if trusted else _read_mp3_block(handle, want)
                if data.shape[0] == 0:
                    break
                blocks.append(to_mono(data))
                total += data.shape[0]
    except AudioError:
        raise
    except Exception as exc:  # libsndfile's "Error opening <source>: reason": keep the reason
        reason = _short(exc).rsplit(": ", 1)[-1].rstrip(".")
        raise AudioError(label, f"could not decode the audio ({reason}; send WAV, FLAC, OGG or MP3)") from exc
    if total > limit:
        raise AudioError(label, f"audio query is too long (more than {max_seconds:g} s)")
    if total == 0:
        raise AudioError(label, "zero-length audio (no samples)")
    return np.concatenate(blocks), rate


def _read_mp3_block(handle: sf.SoundFile, frames: int) -> np.ndarray:
    """Read up to ``frames`` frames of an MP3 without python-soundfile's position bookkeeping.

    ``SoundFile.read`` calls ``seek(tell() + n)`` around every read; for MP3 each of those is an
    mpg123 seek, which loses the bit reservoir, so the frames after every block boundary decode
    as garbage ("part2_3_length too large" from libmpg123; tonal or quiet material at any rate).
    Reading through libsndfile directly keeps one continuous decode, identical to a whole-file read.
    """
    snd, ffi, cfile = getattr(sf, "_snd", None), getattr(sf, "_ffi", None), getattr(handle, "_file", None)
    if snd is None or ffi is None or cfile is None:  # soundfile internals moved: fall back
        return handle.read(frames, dtype="float32", always_2d=True)
    out = np.empty((frames, handle.channels), dtype=np.float32)
    got = int(snd.sf_readf_float(cfile, ffi.cast("float *", out.ctypes.data), frames))
    code = int(snd.sf_error(cfile))
    if got < 0 or code:  # the check SoundFile.read makes
        raise RuntimeError(ffi.string(snd.sf_error_number(code)).decode("utf-8", "replace") if code else "read failed")
    return out[:got]


def find_audio_files(root: str | Path) -> list[Path]:
    """All audio files under ``root`` (recursive, hidden entries skipped), sorted for determinism.

    Symlinked folders are followed (archives are often assembled from links); each real folder is
    visited once, so a link cycle cannot loop.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such file or folder")
    found: list[Path] = []
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(folder) / f for f in files if not f.startswith(".") and Path(f).suffix.lower() in AUDIO_EXTENSIONS)
    return sorted(found)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
