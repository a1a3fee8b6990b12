"""A BERT encoder in plain torch, for inference with a local BERT checkpoint (``config.json`` +
``model.safetensors`` + ``tokenizer.json``), without importing ``transformers``.

Why: importing ``transformers`` and building a model with ``AutoModel`` costs 4-15 s of start-up
on a 2-core machine, which every ``sonalign search`` / ``index`` call paid for a 22 M-parameter
MiniLM. This module is the same function (post-LayerNorm BERT: absolute positions, token types,
exact GELU; Devlin et al. 2019), tokenised by the Rust ``tokenizers`` library from the checkpoint's
own ``tokenizer.json``; ``tests/encoders/test_bert.py`` checks it against ``transformers.BertModel``.
Only what inference needs is here: no dropout, no pooler, no training heads.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sonalign.errors import ConfigError


class _Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.up = nn.Linear(hidden, intermediate)
        self.down = nn.Linear(intermediate, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        split = lambda t: t.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        att = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)), attn_mask=bias)
        x = self.attn_norm(x + self.attn_out(att.transpose(1, 2).reshape(b, n, d)))
        return self.out_norm(x + self.down(F.gelu(self.up(x))))


class BertEncoder(nn.Module):
    """``forward(input_ids, attention_mask, token_type_ids)`` -> last hidden states ``(B, L, H)``."""

    # transformers' parameter names -> ours (per layer, after "encoder.layer.N.")
    _LAYER_KEYS = {
        "attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
        "attention.output.dense": "attn_out", "attention.output.LayerNorm": "attn_norm",
        "intermediate.dense": "up", "output.dense": "down", "output.LayerNorm": "out_norm",
    }

    def __init__(self, config: dict):
        super().__init__()
        if config.get("model_type", "bert") != "bert" or config.get("position_embedding_type", "absolute") != "absolute" \
                or config.get("hidden_act", "gelu") != "gelu":
            raise ConfigError("BertEncoder supports BERT with absolute positions and exact GELU only")
        h, eps = config["hidden_size"], config.get("layer_norm_eps", 1e-12)
        self.word = nn.Embedding(config["vocab_size"], h)
        self.position = nn.Embedding(config["max_position_embeddings"], h)
        self.token_type = nn.Embedding(config.get("type_vocab_size", 2), h)
        self.norm = nn.LayerNorm(h, eps=eps)
        self.layers = nn.ModuleList(_Layer(h, config["num_attention_heads"], config["intermediate_size"], eps) for _ in range(config["num_hidden_layers"]))
        self.hidden_size = h

    @classmethod
    def from_dir(cls, path: str | Path) -> BertEncoder:
        from safetensors.torch import load_file

        path = Path(path)
        model = cls(json.loads((path / "config.json").read_text()))
        weights = load_file(str(path / "model.safetensors"))
        state = {}
        for key, value in weights.items():
            key = key.removeprefix("bert.")
            if key.startswith("embeddings."):
                name = key[len("embeddings.") :]
                name = {"word_embeddings.weight": "word.weight", "position_embeddings.weight": "position.weight",
                        "token_type_embeddings.weight": "token_type.weight", "LayerNorm.weight": "norm.weight", "LayerNorm.bias": "norm.bias"}.get(name)
                if name:
                    state[name] = value
            elif key.startswith("encoder.layer."):
                n, rest = key[len("encoder.layer.") :].split(".", 1)
                module, param = rest.rsplit(".", 1)
                if module in cls._LAYER_KEYS:
                    state[f"layers.{n}.{cls._LAYER_KEYS[module]}.{param}"] = value
        missing, _ = model.load_state_dict(state, strict=False)
        if missing:
            raise ConfigError(f"{path}: checkpoint lacks {len(missing)} BERT weights, e.g. {missing[:3]}")
        return model.eval().requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        n = input_ids.shape[1]
        types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
        x = self.norm(self.word(input_ids) + self.position(torch.arange(n, device=input_ids.device))[None] + self.token_type(types))
        bias = torch.zeros(attention_mask.shape, dtype=x.dtype).masked_fill(~attention_mask.bool(), -math.inf)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        return x


class FastTokenizer:
    """``tokenizer.json`` through the Rust ``tokenizers`` library: truncation, padding to the longest text."""

    def __init__(self, path: str | Path, max_length: int):
        from tokenizers import Tokenizer

        file = Path(path) / "tokenizer.json"
        if not file.is_file():
            raise ConfigError(f"{path}: no tokenizer.json")
        self.tok = Tokenizer.from_file(str(file))
        pad_id = self.tok.token_to_id("[PAD]") or 0
        self.tok.enable_truncation(max_length)
        self.tok.no_padding()
        self.tok.enable_padding(pad_id=pad_id, pad_token="[PAD]")

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tok.encode_batch(texts)
        return {
            "input_ids": torch.tensor([e.ids for e in enc], dtype=torch.long),
            "attention_mask": torch.tensor([e.attention_mask for e in enc], dtype=torch.long),
            "token_type_ids": torch.tensor([e.type_ids for e in enc], dtype=torch.long),
        }
