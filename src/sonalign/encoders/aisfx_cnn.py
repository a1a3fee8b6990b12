"""``aisfx-cnn``: the sound-effects CNN of aiSFX, re-implemented for frozen, batched inference.

Model and weights: Alison B. Ma and Alexander Lerch, "Representation Learning for the Automatic
Indexing of Sound Effects Libraries", ISMIR 2022 (https://github.com/alisonbma/aisfx). The
checkpoint (``aisfx/models/checkpoint.pth``, model "X-Sequential-CE") is licensed CC BY 4.0 and is
read from the installed ``aisfx`` package; the architecture (``EmbeddingNet``, a 4-block VGG-style
CNN from the DCASE 2018 cross-task baseline of Kong et al.) is re-implemented here so that nothing
from aisfx is imported at run time.

Pipeline (the aisfx "librosa" preprocessing, see ``aisfx/spectrogram/spectrogram_librosa.py``):

1. mono 44.1 kHz wave, **peak-normalised per segment** (``y / max|y|``; an all-zero segment is left
   as is). aisfx normalises per *file*; sonalign encodes segments of long recordings that are
   streamed block by block, so the file's peak is not known when a segment is encoded. Per-segment
   normalisation also makes an embedding independent of what else is in the file, which is what a
   segment-level index wants. As in aisfx, a quiet segment is scaled up to full scale like any
   other (background noise included); drop silent segments before encoding (segmenters do).
2. power mel spectrogram: n_fft = win = 2048 (periodic Hann), hop 1024, centred with zero padding
   (librosa >= 0.9), 96 HTK mel bands 0 - 22050 Hz with 1-norm rows (``norm=1.0``);
   then ``log10(1 + 10000 * S)`` and min-max normalisation with aisfx's "original" constants
   ``(S - 0) / 9.457798957824707``. Layout ``(time, mel)`` as the model expects (aisfx's own
   librosa path returns ``(mel, time)`` and would block it along the wrong axis; its Essentia path,
   used in the paper, gives ``(time, mel)``).
3. non-overlapping windows of 100 spectrogram frames (2.322 s). The last partial window (aisfx's
   inference drops it) is run at its real length rounded up to a multiple of 8 frames, padded with
   the value of normalised silence, ``log10(1 + 0) / 9.45... = 0``; the trunk is fully
   convolutional, so it gives one frame per 8 spectrogram frames and no compute is spent on
   padding (a 2.8 s clip costs 124 instead of 200 frames of work). Its frames differ from those of
   a zero-padded 100-frame window (the convolutions see their own zero padding at the end instead
   of BatchNorm-shifted silence), as the first frames of every window do at its start.
4. conv trunk -> ``(512, 12)`` per window after the mean over frequency: 12 *frames* of 512-d per
   window, one per 8 spectrogram frames (the 4 last spectrogram frames of each window fall off the
   third 2x2 pooling, as in the original).

Outputs of :meth:`AisfxCNN.encode`:

* ``frames`` ``(B, T, 512)``: all windows' frames in time order: 12 per full window and
  ``ceil(n_real / 8)`` for the last partial one (``valid_frames``).
* ``frames_mask`` ``(B, T)``: False for batch padding only. Every segment has at least one frame
  (an empty wave gives one silent spectrogram frame).
* ``embedding`` ``(B, 512)``: max over the valid frames. For a segment of exactly one window this
  is the original aisfx window embedding (``EmbeddingNet.forward``: max over its 12 frames).
* with ``levels=True`` only: ``frames_block2`` ``(B, T, 128)`` and ``frames_block3`` ``(B, T, 256)``
  (mask ``frames_mask``), the outputs of conv blocks 2 and 3 on the same frame grid as ``frames`` (block 4): block 3's pooled
  output averaged over frequency (as the trunk does after block 4), block 2's pooled output
  max-pooled over pairs of time steps (the 2x pool the trunk applies next, which drops an odd last
  step exactly as the trunk does) and averaged over frequency. Asking for them changes nothing else.

Speed: BatchNorm is folded into the convolutions at load time, the trunk runs channels-last
(oneDNN's blocked kernels; ``backend="mkldnn"`` / ``"dense"`` are alternatives), ReLUs in place,
and the windows of all segments in a call are batched together by length (``batch_size`` counts windows).
Folding changes results only at float rounding level (~1e-6 relative to the unfused reference).
About 3.9 GFLOP per window: on 2 AVX2 cores 60 s of audio (26 windows) takes ~1.6 core-seconds.
``device`` (default ``auto``: a CUDA GPU when torch sees one, see :mod:`sonalign.utils.device`) is
where the trunk runs; the mel spectrogram stays on the CPU (a few percent of the CNN's cost there).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sonalign.audio.mel import log_mel
from sonalign.encoders._common import (
    as_mono_float32,
    batch_slices,
    finish,
    pad_sequences,
    sha256_file,
)
from sonalign.encoders.aisfx_net import (  # noqa: F401 (the network's names are re-exported)
    _IMPL_VERSION,
    _STFT_CHUNK_FRAMES,
    EMBED_DIM,
    F_MAX,
    F_MIN,
    FRAMES_PER_WINDOW,
    HOP_LENGTH,
    LEVEL_DIMS,
    MEL_NORM,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    SPEC_FRAMES_PER_FRAME,
    SPEC_MAX,
    SPEC_MIN,
    WIN_LENGTH,
    WINDOW_FRAMES,
    WINDOW_SECONDS,
    ConvBlock,
    EmbeddingNet,
    FusedTrunk,
    _fold_bn,
    checkpoint_path,
    checkpoint_safe_globals,
    load_embedding_state,
)
from sonalign.encoders.base import register_audio_encoder
from sonalign.utils.device import resolve_device


@register_audio_encoder("aisfx-cnn", "aiSFX sound-effects CNN (Ma & Lerch, ISMIR 2022; CC BY 4.0): 44.1 kHz, 512-d, 12 frames per 2.32 s window")
class AisfxCNN:
    """Frozen aiSFX CNN. Construction is cheap; weights load on the first :meth:`encode`."""

    name = "aisfx-cnn"
    sample_rate = SAMPLE_RATE
    dim = EMBED_DIM
    #: Intermediate levels (``encode(..., levels=True)``), name -> width.
    levels = LEVEL_DIMS
    window_seconds = WINDOW_SECONDS
    #: Mean spacing of output frames: 12 per 2.322 s window (exact times: :meth:`frame_times`).
    frame_hop_seconds = WINDOW_SECONDS / FRAMES_PER_WINDOW
    frames_per_second = FRAMES_PER_WINDOW / WINDOW_SECONDS

    def __init__(self, checkpoint: str | Path | None = None, backend: str = "auto", device: str | None = None):
        self._checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.device = resolve_device(device)
        # oneDNN's mkldnn tensors are CPU-only; on a GPU the trunk runs channels-last (cuDNN)
        self._backend = backend if self.device.type == "cpu" else "channels_last"
        self._trunk: FusedTrunk | None = None
        self._lock = threading.Lock()

    # -- loading -----------------------------------------------------------------------------
    @property
    def checkpoint(self) -> Path:
        if self._checkpoint is None:
            self._checkpoint = checkpoint_path()
        return self._checkpoint

    def load_reference_net(self) -> EmbeddingNet:
        """The unfused :class:`EmbeddingNet` with the checkpoint's weights (eval mode)."""
        net = EmbeddingNet()
        net.load_state_dict(load_embedding_state(self.checkpoint), strict=True)
        for p in net.parameters():
            p.requires_grad_(False)
        return net.eval()

    def _model(self) -> FusedTrunk:
        if self._trunk is None:
            with self._lock:
                if self._trunk is None:
                    with torch.no_grad():
                        trunk = FusedTrunk(self.load_reference_net(), backend=self._backend)
                        if self.device.type != "cpu":
                            trunk = trunk.to(self.device)
                    for p in trunk.parameters():
                        p.requires_grad_(False)
                    self._trunk = trunk.eval()
        return self._trunk

    def settings(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "impl_version": _IMPL_VERSION,
            "weights_sha256": sha256_file(self.checkpoint),
            "sample_rate": SAMPLE_RATE,
            "n_fft": N_FFT,
            "win_length": WIN_LENGTH,
            "hop_length": HOP_LENGTH,
            "n_mels": N_MELS,
            "mel_scale": "htk",
            "mel_norm": MEL_NORM,
            "f_min": F_MIN,
            "f_max": F_MAX,
            "power": 2.0,
            "compression": "log10(1+10000*S)",
            "spec_minmax": [SPEC_MIN, SPEC_MAX],
            "peak_normalise": "segment",
            "window_frames": WINDOW_FRAMES,
            "window_hop_frames": WINDOW_FRAMES,
            "pad_value": 0.0,
            "pooling": "max",
            "dim": EMBED_DIM,
        }

    # -- preprocessing -------------------------------------------------------------------------
    @staticmethod
    def spectrogram(wave: np.ndarray) -> np.ndarray:
        """Normalised log-mel ``(frames, 96)`` of one (already 44.1 kHz, mono) wave, peak-normalised.

        ``1 + len(wave) // 1024`` frames; long waves are processed in chunks (same result).
        """
        wave = np.asarray(wave, dtype=np.float32)
        peak = float(np.max(np.abs(wave))) if wave.size else 0.0
        if peak > 0:
            wave = wave / np.float32(peak)
        n_total = 1 + wave.size // HOP_LENGTH
        padded = np.pad(wave, (N_FFT // 2, N_FFT // 2))
        parts = []
        for start in range(0, n_total, _STFT_CHUNK_FRAMES):
            count = min(_STFT_CHUNK_FRAMES, n_total - start)
            chunk = padded[start * HOP_LENGTH : (start + count - 1) * HOP_LENGTH + N_FFT]
            parts.append(_mel(chunk))
        spec = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return (spec - np.float32(SPEC_MIN)) / np.float32(SPEC_MAX - SPEC_MIN)

    # -- encoding ------------------------------------------------------------------------------
    def encode(self, waves: list[np.ndarray], *, batch_size: int = 16, show_progress_bar: bool = False,
               convert_to_numpy: bool = True, normalize_embeddings: bool = False, levels: bool = False) -> dict[str, Any]:
        """Embed mono 44.1 kHz waves: ``embedding`` (B, 512), ``frames`` (B, T, 512), ``frames_mask`` (B, T).

        ``batch_size`` is the number of 2.32 s windows per forward pass (windows of several
        segments share a batch). ``levels=True`` adds ``frames_block2`` / ``frames_block3``: conv
        blocks 2 and 3 on the same frames (module doc); the other outputs are the same with or without it.
        """
        waves = [as_mono_float32(w, i) for i, w in enumerate(waves)]
        trunk = self._model()
        windows: list[np.ndarray] = []  # every window of every segment, in order
        counts: list[int] = []  # windows per segment
        for w in waves:
            spec = self.spectrogram(w)
            pieces = [spec[i : i + WINDOW_FRAMES] for i in range(0, spec.shape[0], WINDOW_FRAMES)]
            windows.extend(_fit_window(p) for p in pieces)
            counts.append(len(pieces))
        if not waves:
            empty = torch.zeros(0, EMBED_DIM)
            result = {"embedding": empty, "frames": torch.zeros(0, 0, EMBED_DIM), "frames_mask": torch.zeros(0, 0, dtype=torch.bool)}
            if levels:
                result.update({f"frames_{name}": torch.zeros(0, 0, dim) for name, dim in LEVEL_DIMS.items()})
            return finish(result, convert_to_numpy)
        # Windows of equal length share forward passes; the last window of a segment is usually
        # shorter (its real length rounded up to 8 frames), which saves the work on padding.
        outputs: list[torch.Tensor | None] = [None] * len(windows)
        level_outputs: dict[str, list[torch.Tensor | None]] = {name: [None] * len(windows) for name in LEVEL_DIMS} if levels else {}
        by_length: dict[int, list[int]] = {}
        for i, win in enumerate(windows):
            by_length.setdefault(win.shape[0], []).append(i)
        with torch.inference_mode():
            for length in sorted(by_length, reverse=True):
                rows = by_length[length]
                stacked = torch.from_numpy(np.stack([windows[i] for i in rows]))
                for sl in batch_slices(len(rows), batch_size, show_progress_bar and length == WINDOW_FRAMES, desc="aisfx-cnn windows"):
                    result = trunk(stacked[sl].to(self.device, non_blocking=True), levels=True) if levels else trunk(stacked[sl].to(self.device, non_blocking=True))
                    out = (result[0] if levels else result).transpose(1, 2).cpu()  # (n, frames, 512)
                    for j, row in enumerate(rows[sl]):
                        outputs[row] = out[j]
                    if levels:
                        for name, inner in zip(LEVEL_DIMS, result[1]):
                            inner = inner.transpose(1, 2).cpu()
                            for j, row in enumerate(rows[sl]):
                                level_outputs[name][row] = inner[j]

            def per_segment(parts: list[torch.Tensor | None]) -> list[torch.Tensor]:
                seqs, offset = [], 0
                for n_win in counts:
                    seqs.append(torch.cat(parts[offset : offset + n_win]))
                    offset += n_win
                return seqs

            seqs = per_segment(outputs)
            embedding = torch.stack([f.amax(dim=0) for f in seqs])
            frames, mask = pad_sequences(seqs, EMBED_DIM)
            if normalize_embeddings:
                embedding = torch.nn.functional.normalize(embedding, dim=-1)
            result = {"embedding": embedding, "frames": frames, "frames_mask": mask}
            if levels:
                result.update({f"frames_{name}": pad_sequences(per_segment(level_outputs[name]), dim)[0] for name, dim in LEVEL_DIMS.items()})
        return finish(result, convert_to_numpy)

    # -- time mapping --------------------------------------------------------------------------
    @staticmethod
    def frame_times(n_frames: int) -> np.ndarray:
        """Centre time (s) of each output frame: frame ``j`` of window ``w`` covers spectrogram
        frames ``100 w + 8 j .. 100 w + 8 j + 7`` (spectrogram frame ``t`` is centred at ``t * 1024 / 44100``)."""
        idx = np.arange(n_frames)
        w, j = idx // FRAMES_PER_WINDOW, idx % FRAMES_PER_WINDOW
        spec_frame = w * WINDOW_FRAMES + j * SPEC_FRAMES_PER_FRAME + (SPEC_FRAMES_PER_FRAME - 1) / 2
        return spec_frame * HOP_LENGTH / SAMPLE_RATE


def _fit_window(spec: np.ndarray) -> np.ndarray:
    """A window of at most 100 frames, zero-padded (normalised silence) to a multiple of 8 frames.

    Three 2x2 pools need a multiple of 8; a window of 96-100 frames is padded to the full 100,
    which pools to the model's 12 frames exactly as aisfx's blocks do.
    """
    n = spec.shape[0]
    target = WINDOW_FRAMES if n > WINDOW_FRAMES - SPEC_FRAMES_PER_FRAME else -(-n // SPEC_FRAMES_PER_FRAME) * SPEC_FRAMES_PER_FRAME
    if target == n:
        return np.ascontiguousarray(spec, dtype=np.float32)
    return np.concatenate([spec, np.zeros((target - n, N_MELS), np.float32)])


def valid_frames(n_spec_frames: int) -> int:
    """Output frames of a segment with ``n_spec_frames`` real spectrogram frames that are not pure padding."""
    full, rest = divmod(n_spec_frames, WINDOW_FRAMES)
    return full * FRAMES_PER_WINDOW + min(FRAMES_PER_WINDOW, -(-rest // SPEC_FRAMES_PER_FRAME))


def _mel(padded_chunk: np.ndarray) -> np.ndarray:
    return log_mel(
        padded_chunk,
        SAMPLE_RATE,
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        win_length=WIN_LENGTH,
        n_mels=N_MELS,
        f_min=F_MIN,
        f_max=F_MAX,
        htk=True,
        norm=MEL_NORM,
        power=2.0,
        compression="log10p",
        center=False,
    )
