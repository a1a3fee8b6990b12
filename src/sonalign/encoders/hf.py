"""``hf:PATH``: a Hugging Face model from a LOCAL folder (never downloaded: ``local_files_only``).

``get_audio_encoder("hf:/models/x")`` / ``get_text_encoder("hf:/models/x")`` dispatch on
``config.json``'s ``model_type``:

===========================  =========  =====================================================
model_type                   kind       embedding / frames (tokens)
===========================  =========  =====================================================
``clap``                     audio      ``audio_projection(pooled audio state)`` (what
                                        ``ClapModel.get_audio_features`` gives before its L2
                                        normalisation); frames: the audio encoder's last hidden
                                        state averaged over frequency, one per time step, passed
                                        through the same projection head so they share ``dim``
``clap``                     text       ``text_projection(pooler)`` (= ``get_text_features``
                                        before normalisation); tokens: last hidden states through
                                        the same projection
``wav2vec2``, ``hubert``,    audio      masked mean of ``last_hidden_state``; frames: the
``wavlm``                               ``last_hidden_state`` rows of real audio
``whisper``                  audio      encoder only; masked mean; frames: encoder states cut to
                                        the real audio length (20 ms each for real Whisper)
anything else                text       ``AutoModel`` + ``AutoTokenizer`` (encoder of an
                                        encoder-decoder); masked mean; tokens: last hidden states
===========================  =========  =====================================================

Determinism and batch independence:

* CLAP: audio longer than the feature extractor's window (10 s for LAION CLAP) is split into
  consecutive windows by us, so the extractor's *random* crop (``rand_trunc`` / ``fusion``) never
  runs; ``is_longer`` is set False for every window (the extractor otherwise marks a random clip as
  longer when none is). A segment's embedding is the duration-weighted mean of its windows'
  L2-normalised embeddings (= the single window's embedding when it fits). Short audio is padded the
  way the checkpoint's extractor says (``repeatpad`` for LAION: the clip is repeated); frames past
  the real audio are masked out.
* wav2vec2-style models whose extractor returns no attention mask (``feat_extract_norm="group"``,
  e.g. wav2vec2-base) would see the zero padding of a batch; those encode one wave at a time.
  Waves shorter than the conv receptive field (400 samples for the usual config) are zero-padded
  to it.
* Whisper: audio is cut into the extractor's 30 s windows (``chunk_length``), each padded as
  Whisper requires; frames beyond ``ceil((n // hop) / 2)`` of a window are masked out.

``load_clap_pair(PATH)`` gives both CLAP towers in the joint (already aligned) space, for the
search index's ``--model hf:PATH``.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sonalign.encoders._common import (
    as_mono_float32,
    batch_slices,
    check_texts,
    finish,
    masked_mean,
    offline_env,
    pad_sequences,
    sha256_files,
    weight_files,
)
from sonalign.encoders.base import register_audio_encoder, register_text_encoder
from sonalign.errors import ConfigError
from sonalign.utils.device import resolve_device, to_device

SSL_TYPES = ("wav2vec2", "hubert", "wavlm")
AUDIO_TYPES = ("clap", "whisper", *SSL_TYPES)
#: Text models whose position ids start after the padding index (RoBERTa family).
_ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert", "clap_text_model", "longformer", "mpnet")
_IMPL_VERSION = 1
_LOCK = threading.RLock()
_SHARED: dict[tuple[str, str], Any] = {}


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
def resolve_model_dir(path: str | Path) -> Path:
    """Check that ``path`` is a local model folder with a ``config.json``; ConfigError otherwise."""
    if not str(path).strip():
        raise ConfigError("hf: needs a local model folder, e.g. hf:/models/clap-htsat-unfused")
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"hf:{path}: no such folder (hf: loads local folders only, it never downloads)")
    if not p.is_dir():
        raise ConfigError(f"hf:{path}: not a folder (expected a saved Hugging Face model folder)")
    if not (p / "config.json").is_file():
        raise ConfigError(f"hf:{path}: no config.json in the folder (save the model with save_pretrained)")
    return p.resolve()


def model_type(path: str | Path) -> str:
    """``model_type`` from the folder's ``config.json`` (ConfigError if missing)."""
    import json

    p = resolve_model_dir(path)
    try:
        cfg = json.loads((p / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"hf:{path}: unreadable config.json ({exc})") from exc
    mt = cfg.get("model_type")
    if not mt:
        raise ConfigError(f"hf:{path}: config.json has no model_type")
    return str(mt)


def _shared(path: Path, what: str, loader):
    """Load once per (folder, component) per process; CLAP's two towers share one model."""
    key = (str(path), what)
    with _LOCK:
        if key not in _SHARED:
            offline_env()
            _SHARED[key] = loader()
        return _SHARED[key]


def _freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _load_model(path: Path, cls_name: str = "AutoModel"):
    import transformers

    cls = getattr(transformers, cls_name)
    try:
        model = cls.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"hf:{path}: cannot load the model ({exc})") from exc
    return _freeze(model.float())  # fp16/bf16 checkpoints too: outputs are float32 everywhere


def _load_feature_extractor(path: Path):
    from transformers import AutoFeatureExtractor

    try:
        return AutoFeatureExtractor.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"hf:{path}: no usable feature extractor (preprocessor_config.json) ({exc})") from exc


def _load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"hf:{path}: no usable tokenizer in the folder ({exc})") from exc


class _HFBase:
    kind = "model"

    def __init__(self, path: str | Path, device: str | None = None):
        self.path = resolve_model_dir(path)
        self.model_type = model_type(self.path)
        self.name = f"hf:{path}"
        self.device = resolve_device(device)
        self._lock = threading.Lock()

    def _model_on_device(self, what: str, loader):
        """A model shared per (folder, component, device): loaded once, moved to :attr:`device`."""
        return _shared(self.path, f"{what}@{self.device}", lambda: loader().to(self.device))

    @property
    def config(self):
        """The model's ``PretrainedConfig`` (``AutoConfig``; no weights loaded)."""

        def load():
            from transformers import AutoConfig

            try:
                return AutoConfig.from_pretrained(str(self.path), local_files_only=True)
            except (OSError, ValueError, KeyError) as exc:
                raise ConfigError(f"hf:{self.path}: unreadable config.json ({exc})") from exc

        return _shared(self.path, "config", load)

    def _preprocessor(self) -> dict[str, Any]:
        import json

        pre = self.path / "preprocessor_config.json"
        return json.loads(pre.read_text()) if pre.is_file() else {}

    def _settings(self, **extra: Any) -> dict[str, Any]:
        return {
            "name": "hf",
            "impl_version": _IMPL_VERSION,
            "kind": self.kind,
            "model_type": self.model_type,
            "weights_sha256": sha256_files(weight_files(self.path), root=self.path),
            **extra,
        }


# --------------------------------------------------------------------------------------------
# audio: wav2vec2 / hubert / wavlm
# --------------------------------------------------------------------------------------------
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

    def encode(
        self,
        waves: list[np.ndarray],
        *,
        batch_size: int = 16,
        show_progress_bar: bool = False,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = False,
    ) -> dict[str, Any]:
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

    def encode(
        self,
        waves: list[np.ndarray],
        *,
        batch_size: int = 8,
        show_progress_bar: bool = False,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = False,
    ) -> dict[str, Any]:
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
def _clap_model(encoder: _HFBase):
    """One ClapModel per folder and device, shared by the audio and the text tower."""
    return encoder._model_on_device("model", lambda: _load_model(encoder.path, "ClapModel"))


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

    def encode(
        self,
        waves: list[np.ndarray],
        *,
        batch_size: int = 8,
        show_progress_bar: bool = False,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = False,
    ) -> dict[str, Any]:
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


def _text_max_length(tok, config) -> int:
    limit = int(getattr(tok, "model_max_length", 512) or 512)
    if limit > 100_000:  # "no limit" sentinel of tokenizers saved without one
        limit = 512
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        offset = 0
        if getattr(config, "model_type", "") in _ROBERTA_LIKE:
            offset = int(getattr(config, "pad_token_id", 1) or 0) + 1
        limit = min(limit, int(positions) - offset)
    return max(2, limit)


class HFClapTextEncoder(_HFBase):
    """CLAP's text tower; embedding in the joint space, tokens projected with the same head."""

    kind = "text"

    @property
    def dim(self) -> int:
        return int(self.config.projection_dim)

    def _tokenizer(self):
        return _shared(self.path, "tokenizer", lambda: _load_tokenizer(self.path))

    def _parts(self):
        return self._tokenizer(), _clap_model(self)

    def settings(self) -> dict[str, Any]:
        return self._settings(max_length=_text_max_length(self._tokenizer(), self.config.text_config), pooling="clap-projection", dim=self.dim)

    def encode(
        self,
        texts: list[str],
        *,
        batch_size: int = 32,
        show_progress_bar: bool = False,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = False,
    ) -> dict[str, Any]:
        texts = check_texts(texts)
        tok, model = self._parts()
        max_len = _text_max_length(tok, model.config.text_config)
        embs, toks, masks = [], [], []
        with torch.inference_mode():
            for sl in batch_slices(len(texts), batch_size, show_progress_bar, desc="clap text"):
                enc = tok(texts[sl], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
                out = model.text_model(**to_device({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, self.device))
                embs.append(model.text_projection(out.pooler_output).cpu())
                toks.append(model.text_projection(out.last_hidden_state).cpu())
                masks.append(enc["attention_mask"].bool())
        tokens, tokens_mask = _pad_token_batches(toks, masks, len(texts), self.dim)
        embedding = torch.cat(embs) if embs else torch.zeros(0, self.dim)
        if normalize_embeddings:
            embedding = torch.nn.functional.normalize(embedding, dim=-1)
        return finish({"embedding": embedding, "tokens": tokens, "tokens_mask": tokens_mask}, convert_to_numpy)


def _pad_token_batches(states: list[torch.Tensor], masks: list[torch.Tensor], n: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max((s.shape[1] for s in states), default=0)
    tokens = torch.zeros(n, length, dim)
    tokens_mask = torch.zeros(n, length, dtype=torch.bool)
    row = 0
    for s, m in zip(states, masks):
        tokens[row : row + s.shape[0], : s.shape[1]] = s.float() * m.unsqueeze(-1)
        tokens_mask[row : row + s.shape[0], : s.shape[1]] = m
        row += s.shape[0]
    return tokens, tokens_mask


# --------------------------------------------------------------------------------------------
# generic text
# --------------------------------------------------------------------------------------------
class HFTextEncoder(_HFBase):
    """Any other model type as a text encoder: ``AutoModel`` + ``AutoTokenizer``, mean pooled."""

    kind = "text"

    @property
    def dim(self) -> int:
        cfg = self.config
        for attr in ("hidden_size", "d_model", "dim", "n_embd"):
            value = getattr(cfg, attr, None)
            if isinstance(value, int):
                return value
        raise ConfigError(f"hf:{self.path}: cannot tell the hidden size of model_type '{self.model_type}'")

    def _tokenizer(self):
        return _shared(self.path, "tokenizer", lambda: _load_tokenizer(self.path))

    def _parts(self):
        tok = self._tokenizer()

        def load():
            model = _load_model(self.path)
            if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
                model = _freeze(model.get_encoder())
            return model

        return tok, self._model_on_device("text-model", load)

    def settings(self) -> dict[str, Any]:
        return self._settings(max_length=_text_max_length(self._tokenizer(), self.config), pooling="masked-mean", dim=self.dim)

    def encode(
        self,
        texts: list[str],
        *,
        batch_size: int = 32,
        show_progress_bar: bool = False,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = False,
    ) -> dict[str, Any]:
        texts = check_texts(texts)
        tok, model = self._parts()
        if tok.pad_token is None:  # GPT-style tokenizers: pad with EOS (masked out anyway)
            tok.pad_token = tok.eos_token or tok.unk_token
        max_len = _text_max_length(tok, model.config)
        embs, states, masks = [], [], []
        with torch.inference_mode():
            for sl in batch_slices(len(texts), batch_size, show_progress_bar, desc=f"{self.model_type} text"):
                enc = tok(texts[sl], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
                kwargs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
                hidden = model(**to_device(kwargs, self.device)).last_hidden_state.float().cpu()
                mask = enc["attention_mask"].bool()
                embs.append(masked_mean(hidden, mask))
                states.append(hidden)
                masks.append(mask)
        tokens, tokens_mask = _pad_token_batches(states, masks, len(texts), self.dim)
        embedding = torch.cat(embs) if embs else torch.zeros(0, self.dim)
        if normalize_embeddings:
            embedding = torch.nn.functional.normalize(embedding, dim=-1)
        return finish({"embedding": embedding, "tokens": tokens, "tokens_mask": tokens_mask}, convert_to_numpy)


# --------------------------------------------------------------------------------------------
# registry entries and the CLAP pair
# --------------------------------------------------------------------------------------------
@register_audio_encoder("hf", "hf:PATH: local Hugging Face audio model (clap, wav2vec2, hubert, wavlm, whisper encoder)")
def hf_audio_encoder(path: str, device: str | None = None, **kwargs: Any):
    if kwargs:
        raise ConfigError(f"hf:{path}: unexpected options {sorted(kwargs)}")
    mt = model_type(path)
    if mt == "clap":
        return HFClapAudioEncoder(path, device)
    if mt in SSL_TYPES:
        return HFSSLAudioEncoder(path, device)
    if mt == "whisper":
        return HFWhisperEncoder(path, device)
    raise ConfigError(f"hf:{path}: model_type '{mt}' is not a supported audio model (supported: {', '.join(AUDIO_TYPES)}); text models work as text encoders")


@register_text_encoder("hf", "hf:PATH: local Hugging Face text model (clap text tower, or any AutoModel + AutoTokenizer, mean pooled)")
def hf_text_encoder(path: str, device: str | None = None, **kwargs: Any):
    if kwargs:
        raise ConfigError(f"hf:{path}: unexpected options {sorted(kwargs)}")
    mt = model_type(path)
    if mt == "clap":
        return HFClapTextEncoder(path, device)
    if mt in SSL_TYPES or mt == "whisper":
        raise ConfigError(f"hf:{path}: model_type '{mt}' is an audio model; use it as an audio encoder")
    return HFTextEncoder(path, device)


class ClapPair:
    """Both CLAP towers from one local folder, returning L2-normalised joint-space vectors."""

    def __init__(self, path: str | Path, device: str | None = None):
        mt = model_type(path)
        if mt != "clap":
            raise ConfigError(f"hf:{path}: model_type '{mt}' is not CLAP; a joint audio-text model needs model_type 'clap'")
        self.name = f"hf:{path}"
        self.audio = HFClapAudioEncoder(path, device)
        self.text = HFClapTextEncoder(path, device)
        self.sample_rate = self.audio.sample_rate
        self.dim = self.audio.dim

    def settings(self) -> dict[str, Any]:
        return {"audio": self.audio.settings(), "text": self.text.settings()}

    def encode_audio(self, waves: list[np.ndarray], *, batch_size: int = 8, show_progress_bar: bool = False) -> np.ndarray:
        """(B, D) float32, unit norm: mono waves at :attr:`sample_rate`."""
        return self.audio.encode(waves, batch_size=batch_size, show_progress_bar=show_progress_bar, normalize_embeddings=True)["embedding"]

    def encode_text(self, texts: list[str], *, batch_size: int = 32, show_progress_bar: bool = False) -> np.ndarray:
        """(B, D) float32, unit norm."""
        return self.text.encode(texts, batch_size=batch_size, show_progress_bar=show_progress_bar, normalize_embeddings=True)["embedding"]


def load_clap_pair(path: str | Path, device: str | None = None) -> ClapPair:
    """A :class:`ClapPair` for ``path`` (``hf:`` prefix accepted)."""
    p = str(path)
    return ClapPair(p[3:] if p.startswith("hf:") else p, device)
