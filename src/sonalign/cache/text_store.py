"""Cached text-encoder features, keyed by the text's hash and the encoder's settings.

Shards are immutable safetensors files written atomically; the store's contents are the union of
its shards, so a process killed mid-write loses at most the shard it was writing.

``root=None`` keeps the shards in memory only (the index embeds queries this way, through the
same code as the cache).

``levels`` (e.g. ``("layer2", "layer4")``, names from the encoder's ``levels``) also stores those
intermediate token states (``tokens_layer2`` ...) beside the final ones. It is part of the store's
key only when non-empty, so a store without levels keeps its key and files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from sonalign.encoders.base import TextEncoder
from sonalign.utils.atomic import atomic_path
from sonalign.utils.hashing import settings_hash, text_sha


class TextFeatureStore:
    def __init__(self, root: str | Path | None, encoder: TextEncoder, levels: tuple[str, ...] = ()):
        self.encoder = encoder
        self.levels = tuple(levels)
        self._layers = tuple(int(name.removeprefix("layer")) for name in self.levels)
        settings = encoder.settings()
        self.key = settings_hash({**settings, "levels": list(self.levels)} if self.levels else settings)
        self.dir = None if root is None else Path(root) / "text" / self.key
        self._rows: dict[str, tuple[Path, int]] = {}
        self._loaded: dict[Path, dict[str, np.ndarray]] = {}
        self._scan()

    def _scan(self) -> None:
        if self.dir is None:
            return
        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            try:
                from safetensors import safe_open

                with safe_open(str(shard), "np") as handle:
                    meta = handle.metadata()
                hashes = json.loads(meta["sonalign"])["hashes"] if "sonalign" in meta else json.loads(meta["hashes"])
            except Exception:
                continue  # unreadable shard: its texts are simply recomputed
            for row, h in enumerate(hashes):
                self._rows.setdefault(h, (shard, row))

    def missing(self, texts: list[str]) -> list[str]:
        return sorted({t for t in texts if text_sha(t) not in self._rows})

    def ensure(self, texts: list[str], *, batch_size: int = 64, show_progress_bar: bool = False) -> int:
        """Encode the texts not yet cached into a new shard; returns how many were encoded."""
        todo = self.missing(texts)
        if not todo:
            return 0
        if self.levels:
            out = self.encoder.encode(todo, batch_size=batch_size, show_progress_bar=show_progress_bar, layers=self._layers)
        else:
            out = self.encoder.encode(todo, batch_size=batch_size, show_progress_bar=show_progress_bar)
        mask = np.asarray(out["tokens_mask"], dtype=bool)
        lengths = mask.sum(1)
        hashes = [text_sha(t) for t in todo]
        tensors = {
            "embedding": np.ascontiguousarray(out["embedding"], dtype=np.float32),
            "tokens": np.concatenate([np.asarray(out["tokens"][i][: lengths[i]], dtype=np.float32) for i in range(len(todo))]),
            "token_offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        }
        for name, k in zip(self.levels, self._layers):
            tensors[f"tokens_{name}"] = np.concatenate([np.asarray(out[f"tokens_layer{k}"][i][: lengths[i]], dtype=np.float32) for i in range(len(todo))])
        if self.dir is None:  # in memory: the shard is kept as it is
            shard = Path(f"memory-shard-{settings_hash(hashes, 16)}")
            self._loaded[shard] = tensors
            for row, h in enumerate(hashes):
                self._rows[h] = (shard, row)
            return len(todo)
        self.dir.mkdir(parents=True, exist_ok=True)
        shard = self.dir / f"shard-{settings_hash(hashes, 16)}.safetensors"
        with atomic_path(shard) as tmp:
            # one metadata entry, so the same texts give a byte-identical shard (see cache/features.py)
            save_file(tensors, str(tmp), metadata={"sonalign": json.dumps({"hashes": hashes, "texts": todo}, sort_keys=True)})
        for row, h in enumerate(hashes):
            self._rows[h] = (shard, row)
        return len(todo)

    def _shard(self, shard: Path) -> dict[str, np.ndarray]:
        if shard not in self._loaded:
            self._loaded[shard] = load_file(str(shard))
        return self._loaded[shard]

    def get(self, text: str) -> dict[str, np.ndarray]:
        """``{"embedding": (D,), "tokens": (L, D)}`` (plus ``tokens_{level}``) for a cached text (call ``ensure`` first)."""
        shard, row = self._rows[text_sha(text)]
        data = self._shard(shard)
        lo, hi = data["token_offsets"][row], data["token_offsets"][row + 1]
        out = {"embedding": data["embedding"][row], "tokens": data["tokens"][lo:hi]}
        for name in self.levels:
            out[f"tokens_{name}"] = data[f"tokens_{name}"][lo:hi]
        return out
