"""``sonalign evaluate``: the whole protocol for a trained run on one data source and split.

* retrieval both directions (captions or transcripts; several per clip handled as Clotho does);
  for label-only sets, class-prompt retrieval (every clip of the class is relevant) and zero-shot
  classification with the run's prompt template;
* robustness: the same numbers with real noise mixed in at 15/10/5 dB SNR;
* a linear probe (UA/WA) on the model's audio representation for a labelled probe set (e.g.
  EmoDB), plus the model's own classifier head where it has one (CALM, HILBERT).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sonalign.audio.io import find_audio_files, load_audio
from sonalign.batches import (
    PairedFeatures,
    build_paired,
    encode_audio_items,
    encode_texts,
    score_matrix,
)
from sonalign.cache.features import FeatureCache, FeatureSettings, default_cache_dir
from sonalign.data.prompts import render
from sonalign.data.readers import load_clips, problem_report
from sonalign.errors import ConfigError
from sonalign.evaluation.noise import NoiseBank
from sonalign.evaluation.retrieval import evaluate_retrieval, retrieval_metrics
from sonalign.evaluation.zeroshot import zero_shot_from_scores
from sonalign.models.factory import create_model
from sonalign.utils.hashing import settings_hash

DEFAULT_SNRS = (15.0, 10.0, 5.0)


@dataclass
class EvaluationResult:
    metrics: dict[str, float] = field(default_factory=dict)
    retrieval: Any = None
    zeroshot: Any = None
    robustness: dict[Any, dict[str, float]] = field(default_factory=dict)
    probe: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def resolve_run(run: str | Path) -> Path:
    """A run folder; ``"default"`` names the packaged default model."""
    if str(run) == "default" and not Path(run).exists():
        from sonalign.index.embedders import default_model_dir

        return default_model_dir()
    return Path(run)


def default_report_dir(run: str | Path, data: str | Path, split: str) -> Path:
    """``./eval-MODEL-DATA-SPLIT`` in the current folder (never inside the run: the packaged model's
    folder is inside the installed package). DATA is a manifest's folder name, else its stem."""
    from sonalign.index.embedders import default_model_dir

    run, data = Path(run), Path(data)
    model = "default" if run.resolve() == default_model_dir().resolve() else run.resolve().name
    name = data.resolve().parent.name if data.name in ("manifest.jsonl", "manifest.csv") else data.stem
    return Path.cwd() / f"eval-{model}-{name}-{split}"


def load_run(run: str | Path) -> tuple[Any, dict[str, Any]]:
    run = Path(run)
    if not (run / "config.json").exists():
        raise ConfigError(f"{run}: not a run folder (no config.json); train one with `sonalign train`")
    return create_model(run), json.loads((run / "config.json").read_text())


def cache_for_run(resolved: dict[str, Any], cache_dir: str | Path | None = None) -> FeatureCache:
    data = resolved.get("data", {})
    settings = FeatureSettings(**data.get("features", {}))
    trained_with = data.get("cache")
    if cache_dir is None and trained_with and Path(trained_with).is_dir():
        cache_dir = trained_with
    return FeatureCache(cache_dir or default_cache_dir() / "features", settings)


def noise_bank_from(folder: str | Path, sample_rate: int, *, seed: int = 0) -> NoiseBank:
    """Every audio file under ``folder`` becomes one noise recording (mono, at ``sample_rate``)."""
    files = find_audio_files(folder)
    if not files:
        raise ConfigError(f"{folder}: no audio files to use as noise")
    waves = [load_audio(f, sample_rate)[0] for f in files]
    return NoiseBank(waves, names=[f.name for f in files], seed=seed, sample_rate=sample_rate, source=str(folder))


def _split_metrics(model, cache: FeatureCache, data: PairedFeatures, audio_items: list[dict]) -> tuple[dict[str, float], Any, Any]:
    """Retrieval (and zero-shot for label-only data) for one version of the audio features."""
    audio = encode_audio_items(model, audio_items)
    if data.labels is not None and data.template:
        prompts = [render(data.template, name) for name in data.label_names]
        scores = score_matrix(model, audio, encode_texts(model, cache, prompts))  # (n_clips, n_classes)
        relevance = data.labels[None, :] == np.arange(len(prompts))[:, None]
        keep = relevance.any(1)
        t2a = retrieval_metrics(scores.T[keep], relevance[keep])
        zs = zero_shot_from_scores(scores, data.labels, data.label_names, template=data.template, prompts=prompts)
        metrics = {f"t2a/{k}": float(v) for k, v in t2a.items() if k != "n_queries"}
        metrics.update({f"zeroshot/{k}": float(v) for k, v in zs.metrics.items()})
        return metrics, t2a, zs
    scores = score_matrix(model, audio, encode_texts(model, cache, data.texts))
    result = evaluate_retrieval(scores, data.text_to_clip)
    metrics, zs = dict(result.metrics), None
    names = sorted({c.label for c in data.clips if c.label is not None})
    if len(names) > 1 and all(c.label is not None for c in data.clips):
        # captioned and labelled (e.g. sfx): also classify among the split's own labels
        template = data.template or "plain"
        prompts = [render(template, name) for name in names]
        zs = zero_shot_from_scores(score_matrix(model, audio, encode_texts(model, cache, prompts)), [c.label for c in data.clips], names,
                                   template=template, prompts=prompts)
        metrics.update({f"zeroshot/{k}": float(v) for k, v in zs.metrics.items()})
    return metrics, result, zs


def evaluate_run(
    run: str | Path,
    data: str | Path,
    *,
    split: str | None = "test",
    template: str | None = None,
    noise: str | Path | None = None,
    snrs: tuple[float, ...] = DEFAULT_SNRS,
    probe_data: str | Path | None = None,
    cache_dir: str | Path | None = None,
    show_progress: bool = True,
) -> EvaluationResult:
    model, resolved = load_run(run)
    cache = cache_for_run(resolved, cache_dir)
    clips = load_clips(data, split=split)
    if not clips:
        raise ConfigError(f"{data}: no clips in split '{split}'")
    skipped = problem_report(clips)
    cache.extract(clips, show_progress=show_progress)
    run_labels = resolved.get("data", {}).get("labels")
    has_text = any(c.texts for c in clips)
    template = template or (None if has_text else resolved.get("data", {}).get("template"))
    if not has_text and not template:
        from sonalign.data.prompts import guess_template

        template = guess_template([c.label for c in clips if c.label is not None])
    # zero-shot chooses among the evaluated split's own labels (a run may have trained on many more)
    paired = build_paired(cache, clips, template if not has_text else None)
    if has_text:
        paired.template = template  # the prompt for zero-shot over the labels of captioned clips (default: the label itself)
    result = EvaluationResult()
    metrics, result.retrieval, result.zeroshot = _split_metrics(model, cache, paired, paired.audio)
    result.metrics.update(metrics)
    result.robustness["clean"] = dict(metrics)
    if noise is not None and snrs:
        bank = noise_bank_from(noise, cache.audio_encoder.sample_rate)
        noise_key = settings_hash(bank.describe())
        for snr in snrs:
            noisy = [cache.noisy_features(c, bank, snr, noise_key) for c in paired.clips]
            noisy_metrics, _, _ = _split_metrics(model, cache, paired, noisy)
            result.robustness[snr] = noisy_metrics
            for key in ("t2a/R@1", "t2a/R@10", "zeroshot/top1"):
                if key in noisy_metrics:
                    result.metrics[f"snr{snr:g}/{key}"] = noisy_metrics[key]
        result.metadata["noise"] = {**bank.describe(), "names": bank.names[:20]}
    if probe_data is not None:
        result.probe.update(probe_run(model, cache, probe_data, show_progress=show_progress, head_labels=run_labels))
        for task, res in result.probe.items():
            for k, v in res.metrics.items():
                result.metrics[f"probe/{task}/{k}"] = float(v)
    result.metadata.update({
        "run": str(run), "model": resolved.get("model", {}).get("method"), "data": str(data), "split": split,
        "n_clips": len(paired.clips), "n_texts": len(paired.texts), "template": template if not has_text else None,
        "skipped_rows": skipped,
    })
    return result


def probe_run(model, cache: FeatureCache, probe_data: str | Path, *, show_progress: bool = True, head_labels: list[str] | None = None) -> dict[str, Any]:
    """Linear probe on the model's audio representation (train split -> test split), and the model's own head.

    The probe reads the encode output the model names in ``probe_output`` (default
    ``"embedding"``; CALM: its CALM embedding, as the paper's downstream tasks use it). A model
    with a classifier head (``classify``: CALM's emotion head, HILBERT's document classifier) is
    scored on audio alone, and only when ``head_labels`` (the class order the run was trained with:
    its resolved ``data.labels``) names exactly the probe set's classes: a head trained on other
    classes, or never trained (a run without labels), is not this task's classifier.
    """
    import torch

    from sonalign.batches import audio_batch, model_keys
    from sonalign.evaluation.probe import (
        linear_probe,
        unweighted_accuracy,
        weighted_accuracy,
    )

    splits = {}
    for name in ("train", "val", "test"):
        clips = [c for c in load_clips(probe_data, split=name) if c.label is not None]
        if clips:
            cache.extract(clips, show_progress=show_progress)
            splits[name] = build_paired(cache, clips, "plain")
    if "train" not in splits or "test" not in splits:
        raise ConfigError(f"{probe_data}: a probe needs labelled train and test splits")
    names = sorted({c.label for s in splits.values() for c in s.clips})
    index = {n: i for i, n in enumerate(names)}
    key = getattr(model, "probe_output", "embedding")
    emb = {k: encode_audio_items(model, v.audio)[key].float().numpy() for k, v in splits.items()}
    lab = {k: np.array([index[c.label] for c in v.clips]) for k, v in splits.items()}
    out: dict[str, Any] = {
        "linear": linear_probe(emb["train"], lab["train"], emb["test"], lab["test"], emb.get("val"), lab.get("val"))
    }
    has_head = hasattr(model, "classify") and getattr(model, "classifier", True) is not None
    if has_head and head_labels and len(head_labels) == len(set(head_labels)) and set(map(str, head_labels)) == set(names):
        with torch.inference_mode():
            audio_keys = {k for k in model_keys(model) if k.startswith("audio_")}  # audio alone: no text reaches the head
            logits = torch.cat([model.classify(audio_batch(splits["test"].audio[i : i + 64], audio_keys)) for i in range(0, len(splits["test"].audio), 64)])
        if logits.shape[1] != len(head_labels):
            raise ConfigError(f"the model's head has {logits.shape[1]} outputs but the run names {len(head_labels)} classes")
        pred = np.array([index[str(head_labels[j])] for j in logits.argmax(1).numpy()])  # head order -> probe order
        y = lab["test"]
        out["head"] = _HeadResult(ua=unweighted_accuracy(y, pred), wa=weighted_accuracy(y, pred))
    return out


@dataclass
class _HeadResult:
    """Accuracy of a model's own classifier head (CALM's emotion head, HILBERT's document classifier)."""

    ua: float
    wa: float

    @property
    def metrics(self) -> dict[str, float]:
        return {"UA": self.ua, "WA": self.wa}

    def to_dict(self) -> dict[str, float]:
        return self.metrics
