"""sonalign: align sound and language.

The Python surface mirrors the command line, one function per verb (``import sonalign`` stays
light: each function imports what it needs when called)::

    import sonalign

    report = sonalign.build_index("~/recordings", "rec.idx")           # sonalign index
    searcher = sonalign.open_searcher("rec.idx")                      # sonalign search / serve
    hits = searcher.search("a dog barking", k=5)                      # files, time spans, scores
    sonalign.extract_features("clips/manifest.jsonl", "cache")        # sonalign features
    summary = sonalign.train_model("clap-baseline", "clips/manifest.jsonl", "runs/clap", epochs=20)
    result = sonalign.evaluate("runs/clap", "clips/manifest.jsonl", split="test")
    sonalign.list_models(); sonalign.create_model("hilbert")          # model configs
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"


def list_models() -> list[str]:
    """Names of the registered model configs (``sonalign models``)."""
    from sonalign.models.factory import list_models as _list

    return _list()


def create_model(name_or_path: str, **overrides):
    """A model from a config name (random weights) or a run folder (trained weights).

    >>> model = sonalign.create_model("hilbert")
    """
    from sonalign.models.factory import create_model as _create

    return _create(name_or_path, **overrides)


def load_clips(source: str | Path, split: str | None = None):
    """The clips of a JSONL manifest, Clotho/AudioCaps CSV or folder; skipped rows in ``.problems``.

    >>> clips = sonalign.load_clips("../shared/data/sfx/manifest.jsonl", split="test")
    """
    from sonalign.data.readers import load_clips as _load

    return _load(source, split=split)


def build_index(folder: str | Path, out: str | Path, **options: Any):
    """Index (or update) every recording under ``folder`` into ``out`` (``sonalign index``).

    Options as :func:`sonalign.index.build.build_index`: ``model``, ``rebuild``, ``transcripts``,
    ``workers``, ``backend``, ``uri``. Returns an ``IndexReport`` (added, updated, removed, failures...).

    >>> report = sonalign.build_index("recordings", "rec.idx", transcripts=False)
    """
    from sonalign.index.build import build_index as _build

    return _build(folder, out, **options)


def open_searcher(idx: str | Path, *, model: str | None = None):
    """A :class:`~sonalign.index.query.Searcher` over an index folder, with the model it was built with.

    >>> searcher = sonalign.open_searcher("rec.idx")
    >>> hits = searcher.search("a dog barking", k=5, group_by_file=True)
    >>> hits = searcher.search_audio(wave, 44100, k=5)          # query by example
    """
    from sonalign.index.query import Searcher

    return Searcher.open(idx, model=model)


def extract_features(source: str | Path, out: str | Path, **settings: Any):
    """Cache frozen-encoder features of ``source`` in ``out`` (``sonalign features``).

    ``settings``: ``audio_encoder``, ``text_encoder``, ``segmenter``, ``with_mel``, and ``split``,
    ``batch_size``. Returns an ``ExtractionReport``.

    >>> report = sonalign.extract_features("clips/manifest.jsonl", "cache", split="train")
    """
    from sonalign.cache.features import FeatureSettings, extract_features as _extract

    run_options = {k: settings.pop(k) for k in ("split", "batch_size", "show_progress") if k in settings}
    return _extract(source, out, FeatureSettings(**settings), **run_options)


def train_model(config: str, data: str | Path, out: str | Path, **settings: Any) -> dict[str, Any]:
    """Train a model config on a data source into the run folder ``out`` (``sonalign train``).

    ``settings`` as :class:`~sonalign.train.trainer.TrainSettings` (``epochs``, ``batch_size``,
    ``lr``, ``seed``, ``patience``, ``template``, ``cache``...). Returns the summary (best epoch
    and validation score).

    >>> summary = sonalign.train_model("clap-baseline", "clips/manifest.jsonl", "runs/clap", epochs=20)
    """
    from sonalign.train.trainer import TrainSettings, train

    return train(TrainSettings(config=config, data=str(data), out=str(out), **settings))


def evaluate(run: str | Path, data: str | Path, *, split: str | None = "test", **options: Any):
    """Evaluate a run folder (or ``"default"``) on ``data`` (``sonalign evaluate``): retrieval both
    ways, zero-shot, and with ``noise=FOLDER`` / ``probe_data=MANIFEST`` robustness and a probe.

    >>> result = sonalign.evaluate("default", "../shared/data/sfx/manifest.jsonl", split="test")
    >>> result.metrics["t2a/R@10"]
    """
    from sonalign.evaluation.run import evaluate_run, resolve_run

    return evaluate_run(resolve_run(run), data, split=split, **options)


__all__ = ["build_index", "create_model", "evaluate", "extract_features", "list_models", "load_clips", "open_searcher", "train_model"]
