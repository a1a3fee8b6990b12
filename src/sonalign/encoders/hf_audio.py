"""``hf:PATH`` audio encoders: wav2vec2 / HuBERT / WavLM, the Whisper encoder, the CLAP audio tower (see :mod:`sonalign.encoders.hf`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sonalign.encoders._common import (
    as_mono_float32,
    batch_slices,
    finish,
    pad_sequences,
)
from sonalign.encoders.hf_base import (
    _clap_model,
    _freeze,
    _HFBase,
    _load_feature_extractor,
    _load_model,
    _shared,
)
from sonalign.utils.device import to_device


class HFSSLAudioEncoder(_HFBase):
    """wav2vec2 / HuBERT / WavLM: frames = ``last_hidden_state``, embedding = masked mean."""

    kind = "audio"

    def __init__(self, path: str | Path, device: str | None = None):
        super().__init__(path, device)
        self.sample_rate = int(self._preprocessor().get("sampling_rate", 16000))

    @property
    def dim(self) -> int:
        return int(self.config.hidden_size)

    @property
    def frame_hop_seconds(self) -> float:
        return math.prod(self.config.conv_stride) / self.sample_rate

    @property
    def frames_per_second(self) -> float:
        return 1.0 / self.frame_hop_seconds

    @property
    def min_samples(self) -> int:
        """Shortest input giving one frame: the conv stack's receptive field."""
        field, jump = 1, 1
        for k, s in zip(self.config.conv_kernel, self.config.conv_stride):
            field += (k - 1) * jump
            jump *= s
        return field

    def _parts(self):
        fe = _shared(self.path, "feature_extractor", lambda: _load_feature_extractor(self.path))
        return fe, self._model_on_device("model", lambda: _load_model(self.path))

    def settings(self) -> dict[str, Any]:
        return self._settings(sample_rate=self.sample_rate, pooling="masked-mean", dim=self.dim)

    def encode(self, waves: list[np.ndarray], *, batch_size: int = 16, show_progress_bar: bool = False,
               convert_to_numpy: bool = True, normalize_embeddings: bool = False) -> dict[str, Any]:
        waves = [as_mono_float32(w, i) for i, w in enumerate(waves)]
        waves = [np.pad(w, (0, self.min_samples - w.size)) if w.size < self.min_samples else w for w in waves]
        fe, model = self._parts()
        use_mask = bool(getattr(fe, "return_attention_mask", False))
        step = batch_size if use_mask else 1
        seqs, embs = [], []
        with torch.inference_mode():
            for sl in batch_slices(len(waves), step, show_progress_bar, desc=f"{self.model_type} batches"):
                chunk = waves[sl]
                inputs = fe(chunk, sampling_rate=self.sample_rate, padding=True, return_attention_mask=use_mask, return_tensors="pt")
                kwargs = {"input_values": inputs["input_values"].float()}
                if use_mask:
                    kwargs["attention_mask"] = inputs["attention_mask"]
                hidden = model(**to_device(kwargs, self.device)).last_hidden_state.float().cpu()
                lengths = model._get_feat_extract_output_lengths(torch.tensor([w.size for w in chunk]))
                for i, n in enumerate(lengths.tolist()):
                    f = hidden[i, : max(1, int(n))]
                    seqs.append(f)
                    embs.append(f.mean(0))
        frames, mask = pad_sequences(seqs, self.dim)
        embedding = torch.stack(embs) if embs else torch.zeros(0, self.dim)
        if normalize_embeddings:
            embedding = torch.nn.functional.normalize(embedding, dim=-1)
        return finish({"embedding": embedding, "frames": frames, "frames_mask": mask}, convert_to_numpy)


# --------------------------------------------------------------------------------------------
# audio: whisper encoder
# --------------------------------------------------------------------------------------------
class HFWhisperEncoder(_HFBase):
    """Whisper's encoder: frames = encoder states of the real audio, embedding = their mean."""

    kind = "audio"

    def __init__(self, path: str | Path, device: str | None = None):
        super().__init__(path, device)
        pcfg = self._preprocessor()
        self.sample_rate = int(pcfg.get("sampling_rate", 16000))
        self._hop = int(pcfg.get("hop_length", 160))
        self.frame_hop_seconds = 2 * self._hop / self.sample_rate
        self.frames_per_second = 1.0 / self.frame_hop_seconds

    @property
    def dim(self) -> int:
        return int(self.config.d_model)

    def _parts(self):
        fe = _shared(self.path, "feature_extractor", lambda: _load_feature_extractor(self.path))

        def load_encoder():
            model = _load_model(self.path)
            encoder = model.get_encoder() if hasattr(model, "get_encoder") else model.encoder
            return _freeze(encoder)

        return fe, self._model_on_device("encoder", load_encoder)

    def settings(self) -> dict[str, Any]:
        return self._settings(sample_rate=self.sample_rate, pooling="masked-mean", dim=self.dim)

    def encode(self, waves: list[np.ndarray], *, batch_size: int = 8, show_progress_bar: bool = False,
               convert_to_numpy: bool = True, normalize_embeddings: bool = False) -> dict[str, Any]:
        """``batch_size`` counts 30 s windows (Whisper's fixed input)."""
        waves = [as_mono_float32(w, i) for i, w in enumerate(waves)]
        fe, encoder = self._parts()
        n_chunk = int(fe.n_samples)
        pieces: list[np.ndarray] = []
        owner: list[int] = []
        for i, w in enumerate(waves):
            for s in range(0, max(1, w.size), n_chunk):
                pieces.append(w[s : s + n_chunk])
                owner.append(i)
        max_frames = int(encoder.config.max_source_positions)
        per_piece: list[torch.Tensor] = []
        with torch.inference_mode():
            for sl in batch_slices(len(pieces), batch_size, show_progress_bar, desc="whisper windows"):
                chunk = [p if p.size else np.zeros(1, np.float32) for p in pieces[sl]]
                feats = fe(chunk, sampling_rate=self.sample_rate, return_tensors="pt")["input_features"].float()
                hidden = encoder(**to_device({"input_features": feats}, self.device)).last_hidden_state.float().cpu()
                for j, p in enumerate(pieces[sl]):
                    n_valid = min(max_frames, max(1, math.ceil((p.size // self._hop) / 2)))
                    per_piece.append(hidden[j, :n_valid])
        seqs: list[list[torch.Tensor]] = [[] for _ in waves]
        for i, f in zip(owner, per_piece):
            seqs[i].append(f)
        joined = [torch.cat(s) for s in seqs]
        frames, mask = pad_sequences(joined, self.dim)
        embedding = torch.stack([s.mean(0) for s in joined]) if joined else torch.zeros(0, self.dim)
        if normalize_embeddings:
            embedding = torch.nn.functional.normalize(embedding, dim=-1)
        return finish({"embedding": embedding, "frames": frames, "frames_mask": mask}, convert_to_numpy)


# --------------------------------------------------------------------------------------------
# CLAP
# --------------------------------------------------------------------------------------------
class HFClapAudioEncoder(_HFBase):
    """CLAP's audio tower; the embedding lives in CLAP's joint audio-text space."""

    kind = "audio"

    def __init__(self, path: str | Path, device: str | None = None):
        super().__init__(path, device)
        pcfg = self._preprocessor()
        self.sample_rate = int(pcfg.get("sampling_rate", 48000))
        self.window_seconds = float(pcfg.get("max_length_s", 10))

    @property
    def frames_per_window(self) -> int:
        """Time steps per CLAP window: the Swin grid's width times the mel-to-image fold (32 for LAION)."""
        a = self.config.audio_config
        stride = a.patch_stride[1] if isinstance(a.patch_stride, (list, tuple)) else a.patch_stride
        freq_ratio = a.spec_size // a.num_mel_bins
        return freq_ratio * (a.spec_size // 2 ** (len(a.depths) - 1) // stride)

    @property
    def frames_per_second(self) -> float:
        return self.frames_per_window / self.window_seconds

    @property
    def frame_hop_seconds(self) -> float:
        return self.window_seconds / self.frames_per_window

    @property
    def dim(self) -> int:
        return int(self.config.projection_dim)

    @property
    def hidden_dim(self) -> int:
        return int(self.config.audio_config.hidden_size)

    def _parts(self):
        fe = _shared(self.path, "feature_extractor", lambda: _load_feature_extractor(self.path))
        return fe, _clap_model(self)

    def settings(self) -> dict[str, Any]:
        return self._settings(sample_rate=self.sample_rate, window_seconds=self.window_seconds, pooling="clap-projection", window_merge="weighted-mean-of-normalised", dim=self.dim)

    def encode(self, waves: list[np.ndarray], *, batch_size: int = 8, show_progress_bar: bool = False,
               convert_to_numpy: bool = True, normalize_embeddings: bool = False) -> dict[str, Any]:
        """``batch_size`` counts CLAP windows (10 s for LAION checkpoints)."""
        waves = [as_mono_float32(w, i) for i, w in enumerate(waves)]
        fe, model = self._parts()
        n_win = int(fe.nb_max_samples)
        pieces, owner = [], []
        for i, w in enumerate(waves):
            for s in range(0, max(1, w.size), n_win):
                p = w[s : s + n_win]
                pieces.append(p if p.size else np.zeros(1, np.float32))
                owner.append(i)
        truncation = "fusion" if getattr(model.config.audio_config, "enable_fusion", False) else "rand_trunc"
        piece_emb: list[torch.Tensor] = []
        piece_frames: list[torch.Tensor] = []
        with torch.inference_mode():
            for sl in batch_slices(len(pieces), batch_size, show_progress_bar, desc="clap windows"):
                chunk = pieces[sl]
                # "fusion" stacks 4 views for fused checkpoints, "rand_trunc" gives 1; both are
                # deterministic here because no window is longer than the extractor's max length.
                inputs = fe(chunk, sampling_rate=self.sample_rate, truncation=truncation, return_tensors="pt")
                feats = inputs["input_features"].float()
                is_longer = torch.zeros(len(chunk), 1, dtype=torch.bool)
                out = model.audio_model(**to_device({"input_features": feats, "is_longer": is_longer}, self.device))
                hidden = out.last_hidden_state  # (n, C, freq, time) with time in order
                steps = hidden.mean(dim=2).transpose(1, 2)  # (n, T', C)
                emb = model.audio_projection(out.pooler_output).cpu()
                fr = model.audio_projection(steps).cpu()
                t_total = steps.shape[1]
                for j, p in enumerate(chunk):
                    n_valid = min(t_total, max(1, math.ceil(t_total * p.size / n_win)))
                    piece_emb.append(emb[j])
                    piece_frames.append(fr[j, :n_valid])
        dur = [p.size for p in pieces]
        seqs: list[list[torch.Tensor]] = [[] for _ in waves]
        embs: list[list[tuple[torch.Tensor, int]]] = [[] for _ in waves]
        for i, e, f, d in zip(owner, piece_emb, piece_frames, dur):
            seqs[i].append(f)
            embs[i].append((e, d))
        out_emb = []
        for parts in embs:
            if len(parts) == 1:
                out_emb.append(parts[0][0])
            else:
                weights = torch.tensor([float(d) for _, d in parts])
                stacked = torch.nn.functional.normalize(torch.stack([e for e, _ in parts]), dim=-1)
                out_emb.append((stacked * weights[:, None]).sum(0) / weights.sum())
        frames, mask = pad_sequences([torch.cat(s) for s in seqs], self.dim)
        embedding = torch.stack(out_emb) if out_emb else torch.zeros(0, self.dim)
        if normalize_embeddings:
            embedding = torch.nn.functional.normalize(embedding, dim=-1)
        return finish({"embedding": embedding, "frames": frames, "frames_mask": mask}, convert_to_numpy)
