"""``hf:PATH`` text encoders: the CLAP text tower and any AutoModel + AutoTokenizer (see :mod:`sonalign.encoders.hf`)."""

from __future__ import annotations

from typing import Any

import torch

from sonalign.encoders._common import (
    batch_slices,
    check_texts,
    finish,
    masked_mean,
)
from sonalign.encoders.hf_base import (
    _ROBERTA_LIKE,
    _clap_model,
    _freeze,
    _HFBase,
    _load_model,
    _load_tokenizer,
    _shared,
)
from sonalign.errors import ConfigError
from sonalign.utils.device import to_device


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

    def encode(self, texts: list[str], *, batch_size: int = 32, show_progress_bar: bool = False, convert_to_numpy: bool = True,
               normalize_embeddings: bool = False) -> dict[str, Any]:
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

    def encode(self, texts: list[str], *, batch_size: int = 32, show_progress_bar: bool = False, convert_to_numpy: bool = True,
               normalize_embeddings: bool = False) -> dict[str, Any]:
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
