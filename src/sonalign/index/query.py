"""Text (or audio) in, files and time spans out.

``Searcher`` wraps an :class:`~sonalign.index.store.IndexStore` and the embedding functions::

    searcher = Searcher(store, embed_text=lambda texts: model.encode_text(texts),
                        embed_audio=lambda wave, sr: model.encode_audio(wave, sr),
                        embed_text_for_transcripts=lambda texts: minilm.encode(texts)["embedding"])
    hits = searcher.search("dog barking", k=10)

Scores are cosine similarities (vectors are L2-normalised). Fusion: a segment that has a transcript
vector (extra kind ``"transcript"``, from the text encoder, typically speech segments) scores
``(1-w) * acoustic + w * transcript`` where ``transcript`` is the similarity between the query, embedded
by ``embed_text_for_transcripts``, and the segment's transcript; other segments score ``acoustic``.
Candidates are the union of the top hits of both indexes; each candidate's missing similarity is
computed exactly from its stored vector.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sonalign.errors import ConfigError
from sonalign.index.store import IndexStore
from sonalign.index.validation import normalize

MAX_QUERY_CHARS = 500
MAX_K = 1000
SNIPPET_CHARS = 160
#: The extra vector kind of speech segments' transcripts, and the text encoder that embeds them.
TRANSCRIPT = "transcript"
TRANSCRIPT_ENCODER = "minilm-l6"


@dataclass
class Hit:
    segment_id: str
    path: str
    start: float
    end: float
    score: float
    kind: str
    transcript: str | None
    recording_id: str
    row_id: int
    acoustic_score: float | None = None
    transcript_score: float | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("start", "end"):
            d[key] = round(d[key], 3)
        for key in ("score", "acoustic_score", "transcript_score"):
            if d[key] is not None:
                d[key] = round(float(d[key]), 5)
        return d


def validate_query(text: Any, k: Any = 10, *, max_chars: int = MAX_QUERY_CHARS, max_k: int = MAX_K) -> tuple[str, int]:
    """Normalise and check a text query and k; ValueError with a readable message otherwise."""
    if not isinstance(text, str):
        raise ValueError("query must be a string")
    text = " ".join(text.split())
    if not text:
        raise ValueError("query is empty")
    if len(text) > max_chars:
        raise ValueError(f"query is too long ({len(text)} characters; at most {max_chars})")
    return text, validate_k(k, max_k=max_k)


def validate_k(k: Any, *, max_k: int = MAX_K) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k must be an integer between 1 and {max_k}")
    if not 1 <= int(k) <= max_k:
        raise ValueError(f"k must be between 1 and {max_k}, got {k}")
    return int(k)


class Searcher:
    """Search an index by text or by example audio; see the module docstring."""

    def __init__(
        self,
        store: IndexStore,
        embed_text: Callable[[list[str]], np.ndarray],
        embed_audio: Callable[[np.ndarray, int], np.ndarray] | None = None,
        embed_text_for_transcripts: Callable[[list[str]], np.ndarray] | None = None,
        fusion_weight: float = 0.5,
        *,
        transcript_key: str = TRANSCRIPT,
        max_query_chars: int = MAX_QUERY_CHARS,
        max_k: int = MAX_K,
        max_audio_seconds: float = 120.0,
        cache_size: int = 256,
    ):
        if not 0.0 <= float(fusion_weight) <= 1.0:
            raise ValueError(f"fusion_weight must be in [0, 1], got {fusion_weight}")
        self.store = store
        self.embed_text = embed_text
        self.embed_audio = embed_audio
        self.embed_text_for_transcripts = embed_text_for_transcripts
        self.fusion_weight = float(fusion_weight)
        self.transcript_key = transcript_key
        self.max_query_chars = int(max_query_chars)
        self.max_k = int(max_k)
        self.max_audio_seconds = float(max_audio_seconds)
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._cache_size = int(cache_size)
        self._cache_lock = threading.Lock()

    @classmethod
    def open(cls, idx: str | Path, *, model: str | None = None, fusion_weight: float = 0.5) -> "Searcher":
        """Open the index folder ``idx`` read-only and search it with the model it was built with."""
        return cls.for_store(IndexStore.open(idx, readonly=True), model=model, fusion_weight=fusion_weight)

    @classmethod
    def for_store(cls, store: IndexStore, *, model: str | None = None, fusion_weight: float = 0.5) -> "Searcher":
        """A searcher over an open store, embedding queries with the index's model (or ``model``).

        Raises ConfigError when that model's settings (e.g. weights retrained in place) differ from
        those the index's vectors were made with: their scores would mean nothing.
        """
        from sonalign.encoders import get_text_encoder
        from sonalign.index.embedders import get_embedder

        embedder = get_embedder(model or store.model or "default")
        recorded = store.settings
        if recorded and recorded != json.loads(json.dumps(embedder.settings(), default=str)):
            raise ConfigError(f"{store.path}: its vectors were made with other settings than model {embedder.name!r} has now "
                              f"(e.g. weights retrained in place); re-embed with `sonalign index DIR --out {store.path} --rebuild`")

        def embed_audio(wave: np.ndarray, sr: int) -> np.ndarray:
            from sonalign.audio.io import resample

            return embedder.embed_segments([resample(np.asarray(wave, np.float32), sr, embedder.sample_rate)])

        def embed_transcript_space(texts: list[str]) -> np.ndarray:
            return get_text_encoder(TRANSCRIPT_ENCODER).encode(list(texts), normalize_embeddings=True)["embedding"]

        return cls(store, embedder.embed_text, embed_audio, embed_transcript_space, fusion_weight)

    # ------------------------------------------------------------------ embedding
    def _embed(self, which: str, text: str) -> np.ndarray:
        key = (which, text)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        fn = self.embed_text if which == "main" else self.embed_text_for_transcripts
        assert fn is not None
        vec = _one_vector(fn([text]), f"embed_text{'' if which == 'main' else '_for_transcripts'}")
        with self._cache_lock:
            self._cache[key] = vec
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return vec

    def _query_vectors(self, text: str) -> tuple[np.ndarray | None, np.ndarray | None]:
        store = self.store
        q_main = None
        main_dim = store.vector_dim()
        if main_dim is not None:
            q_main = self._embed("main", text)
            if q_main.shape[0] != main_dim:
                raise ConfigError(f"the text encoder gives {q_main.shape[0]}-d vectors but the index holds {main_dim}-d ones (model {store.model!r})")
        q_tr = None
        tr_dim = store.vector_dim(self.transcript_key)
        if self.embed_text_for_transcripts is not None and tr_dim is not None and self.fusion_weight > 0:
            q_tr = self._embed("transcript", text)
            if q_tr.shape[0] != tr_dim:
                raise ConfigError(f"embed_text_for_transcripts gives {q_tr.shape[0]}-d vectors but transcript vectors are {tr_dim}-d")
        return q_main, q_tr

    # ------------------------------------------------------------------ search
    def search(self, text: str, k: int = 10, group_by_file: bool = False, path_filter: str | None = None) -> list[Hit]:
        """Top-``k`` segments (or, with ``group_by_file``, the best segment of each of the top-k files).

        ``path_filter``: only recordings whose path contains this string (or matches it as a glob when it
        has ``*``, ``?`` or ``[``). Raises ValueError for an empty or too long query or a bad k.
        """
        text, k = validate_query(text, k, max_chars=self.max_query_chars, max_k=self.max_k)
        self.store.refresh()
        q_main, q_tr = self._query_vectors(text)
        return self._search(q_main, q_tr, k, group_by_file, path_filter)

    def search_audio(self, wave: np.ndarray, sr: int, k: int = 10, group_by_file: bool = False, path_filter: str | None = None) -> list[Hit]:
        """Query by example: the nearest segments to a sound (acoustic similarity only)."""
        if self.embed_audio is None:
            raise NotImplementedError("this searcher has no audio encoder (embed_audio is None)")
        k = validate_k(k, max_k=self.max_k)
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim == 2:
            wave = wave.mean(axis=1) if wave.shape[1] <= 8 else wave.mean(axis=0)
        if wave.ndim != 1 or wave.size == 0:
            raise ValueError("audio query is empty")
        if isinstance(sr, bool) or int(sr) <= 0:
            raise ValueError(f"sample rate must be positive, got {sr}")
        if not np.isfinite(wave).all():
            raise ValueError("audio query contains NaN or infinite samples")
        if wave.size / int(sr) > self.max_audio_seconds:
            raise ValueError(f"audio query is too long ({wave.size / int(sr):.1f} s; at most {self.max_audio_seconds:g} s)")
        self.store.refresh()
        main_dim = self.store.vector_dim()
        if main_dim is None:
            return []
        q = _one_vector(self.embed_audio(wave, int(sr)), "embed_audio")
        if q.shape[0] != main_dim:
            raise ConfigError(f"the audio encoder gives {q.shape[0]}-d vectors but the index holds {main_dim}-d ones")
        return self._search(q, None, k, group_by_file, path_filter)

    def _search(self, q_main: np.ndarray | None, q_tr: np.ndarray | None, k: int, group_by_file: bool, path_filter: str | None) -> list[Hit]:
        store = self.store
        total = store.vector_count()
        if q_main is None or total == 0:
            return []
        allowed = None
        if path_filter is not None and path_filter != "":
            allowed = store.row_ids_for_path(path_filter)
            if allowed.size == 0:
                return []
        w = self.fusion_weight if q_tr is not None and store.vector_dim(self.transcript_key) is not None else 0.0
        total = total if allowed is None else int(allowed.size)
        fetch = k if not group_by_file else k * 4
        if w > 0:
            fetch = max(fetch * 2, 50)
        while True:
            fetch = min(fetch, max(total, 1))
            scored = self._candidates(q_main, q_tr if w > 0 else None, w, fetch, allowed)
            rows = store.segments(list(scored))
            ranked = sorted(((s, rid) for rid, s in scored.items() if rid in rows), key=lambda t: (-t[0][0], t[1]))
            if not group_by_file:
                return [self._hit(rows[rid], s) for s, rid in ranked[:k]]
            best: dict[str, Hit] = {}
            for s, rid in ranked:
                row = rows[rid]
                if row.recording_id not in best:
                    best[row.recording_id] = self._hit(row, s)
                    if len(best) == k:
                        break
            if len(best) >= k or fetch >= total:
                return list(best.values())
            fetch *= 4

    def _candidates(self, q_main: np.ndarray, q_tr: np.ndarray | None, w: float, fetch: int,
                    allowed: np.ndarray | None) -> dict[int, tuple[float, float | None, float | None]]:
        """``{row_id: (fused, acoustic, transcript)}`` for the union of both kinds' top ``fetch``."""
        store = self.store
        acoustic = store.nearest(None, q_main, fetch, allowed)
        transcript: dict[int, float] = {}
        if q_tr is not None and store.vector_count(self.transcript_key):
            transcript = store.nearest(self.transcript_key, q_tr, fetch, allowed)
            # Exact similarities for candidates found by only one of the two kinds.
            acoustic.update(store.similarities(None, [i for i in transcript if i not in acoustic], q_main))
            transcript.update(store.similarities(self.transcript_key, [i for i in acoustic if i not in transcript], q_tr))
        return {rid: (fuse(a, transcript.get(rid), w), a, transcript.get(rid)) for rid, a in acoustic.items()}

    def _hit(self, row: Any, scored: tuple[float, float | None, float | None]) -> Hit:
        fused, acoustic, transcript = scored
        snippet = row.transcript
        if snippet and len(snippet) > SNIPPET_CHARS:
            snippet = snippet[: SNIPPET_CHARS - 1].rstrip() + "…"
        return Hit(
            segment_id=row.id,
            path=row.path,
            start=row.start,
            end=row.end,
            score=fused,
            kind=row.kind,
            transcript=snippet,
            recording_id=row.recording_id,
            row_id=row.row_id,
            acoustic_score=acoustic,
            transcript_score=transcript,
        )

    # ------------------------------------------------------------------ timeline
    def timeline(self, recording_id: str, text: str) -> list[tuple[float, float, float]]:
        """Similarity of every segment of one recording to ``text``, in time order: ``[(start, end, score)]``.

        Uses the same fused score as :meth:`search`. KeyError if the recording is not in the index.
        """
        text, _ = validate_query(text, 1, max_chars=self.max_query_chars, max_k=self.max_k)
        store = self.store
        if store.recording(recording_id) is None:
            raise KeyError(f"no recording {recording_id!r} in the index")
        rows = store.recording_segments(recording_id)
        if not rows:
            return []
        q_main, q_tr = self._query_vectors(text)
        row_ids = [r.row_id for r in rows]
        acoustic = store.similarities(None, row_ids, q_main) if q_main is not None else {}
        transcript = store.similarities(self.transcript_key, row_ids, q_tr) if q_tr is not None else {}
        w = self.fusion_weight if q_tr is not None else 0.0
        return [(r.start, r.end, fuse(acoustic[r.row_id], transcript.get(r.row_id), w)) for r in rows if r.row_id in acoustic]


def fuse(acoustic: float, transcript: float | None, weight: float) -> float:
    """A segment's score: ``acoustic``, or with a transcript ``(1 - weight) * acoustic + weight * transcript``."""
    return acoustic if transcript is None else (1.0 - weight) * acoustic + weight * transcript


def _one_vector(out: Any, what: str) -> np.ndarray:
    arr = np.asarray(out.get("embedding") if isinstance(out, dict) else out, dtype=np.float32)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1 or arr.size == 0:
        raise ConfigError(f"{what} must return one vector (shape (1, D) or (D,)), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} returned NaN or infinite values")
    return normalize(arr)[0]


__all__ = ["Hit", "MAX_K", "MAX_QUERY_CHARS", "Searcher", "TRANSCRIPT", "TRANSCRIPT_ENCODER", "fuse", "validate_k", "validate_query"]
