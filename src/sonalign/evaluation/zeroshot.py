"""Zero-shot classification from audio and class-prompt embeddings (encoder-independent).

A class is represented by a text prompt built from a template, e.g. ``"the sound of {label}"``;
its text embedding is compared with each clip's audio embedding and the most similar class is
the prediction. Nothing here knows about encoders: callers pass arrays, or a callable that
turns audio embeddings into an (N, C) score matrix.

Conventions:

* Similarity is cosine (both sides L2-normalised) unless ``normalize=False`` (dot product).
* Ties between classes are broken by class index (lowest index wins), exactly like
  ``numpy.argmax``; top-k accuracy uses the same ordering, so top-1 accuracy always equals the
  accuracy of the predictions in the confusion matrix.
* Top-5 accuracy is reported only when there are at least 5 classes (``None`` otherwise).
* Per-class accuracy is the recall of each class (correct / clips of that class); classes
  without test clips get ``None``. ``balanced_accuracy`` is its mean over classes present.
* The confusion matrix has rows = true class, columns = predicted class, in class order.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from sonalign.utils.vectors import normalize

__all__ = [
    "DEFAULT_TEMPLATES",
    "DIGIT_WORDS",
    "EMOTION_WORDS",
    "ZeroShotResult",
    "default_template",
    "label_to_phrase",
    "class_prompts",
    "zero_shot_from_scores",
    "zero_shot_classify",
]

DEFAULT_TEMPLATES: dict[str, str] = {
    "sounds": "the sound of {label}",
    "digits": "someone saying the number {label}",
    "emotions": "a person speaking with {label}",
}

DIGIT_WORDS: dict[str, str] = {
    str(i): w
    for i, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
}

# Emotion labels as used by common SER corpora (RAVDESS, CREMA-D, IEMOCAP, ...) -> nouns that
# read naturally after "a person speaking with".
EMOTION_WORDS: dict[str, str] = {
    "neutral": "a neutral tone",
    "neu": "a neutral tone",
    "calm": "calmness",
    "happy": "happiness",
    "hap": "happiness",
    "happiness": "happiness",
    "joy": "joy",
    "excited": "excitement",
    "exc": "excitement",
    "sad": "sadness",
    "sadness": "sadness",
    "angry": "anger",
    "ang": "anger",
    "anger": "anger",
    "fear": "fear",
    "fearful": "fear",
    "fea": "fear",
    "disgust": "disgust",
    "disgusted": "disgust",
    "dis": "disgust",
    "surprise": "surprise",
    "surprised": "surprise",
    "sur": "surprise",
    "frustrated": "frustration",
    "fru": "frustration",
    "contempt": "contempt",
}

ScoreFn = Callable[[np.ndarray], Any]


@dataclass
class ZeroShotResult:
    """Zero-shot classification outcome.

    Attributes:
        top1: accuracy of the arg-max class.
        top5: fraction of clips whose true class is among the 5 best; ``None`` if fewer than 5 classes.
        balanced_accuracy: mean per-class accuracy over classes with test clips.
        per_class: class name -> accuracy (recall) of that class, ``None`` without test clips.
        confusion: (C, C) int counts, rows = true class, columns = predicted class.
        class_names: class order used for ``confusion``.
        predictions: (N,) predicted class index per clip.
        template: prompt template used (``None`` if scores came from elsewhere).
        prompts: the class prompts, one per class, if known.
        n: number of clips.
    """

    top1: float
    top5: float | None
    balanced_accuracy: float
    per_class: dict[str, float | None]
    confusion: np.ndarray
    class_names: list[str]
    predictions: np.ndarray
    template: str | None = None
    prompts: list[str] | None = None
    n: int = 0
    conventions: dict[str, str] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, float]:
        """Flat numeric summary: ``top1``, ``top5`` (if defined), ``balanced_accuracy``."""
        out = {"top1": self.top1, "balanced_accuracy": self.balanced_accuracy}
        if self.top5 is not None:
            out["top5"] = self.top5
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (predictions left out)."""
        return {
            "metrics": dict(self.metrics),
            "top1": self.top1,
            "top5": self.top5,
            "balanced_accuracy": self.balanced_accuracy,
            "per_class": dict(self.per_class),
            "confusion": self.confusion.astype(int).tolist(),
            "class_names": list(self.class_names),
            "template": self.template,
            "prompts": None if self.prompts is None else list(self.prompts),
            "n": int(self.n),
            "conventions": dict(self.conventions),
        }


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------


def default_template(kind: str) -> str:
    """Default prompt template for a dataset kind: ``"sounds"``, ``"digits"`` or ``"emotions"``."""
    try:
        return DEFAULT_TEMPLATES[kind]
    except KeyError:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {sorted(DEFAULT_TEMPLATES)}") from None


def _check_template(template: str) -> str:
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    if fields != ["label"]:
        raise ValueError(f"template must contain exactly one '{{label}}' placeholder and no other fields, got {template!r}")
    return template


def label_to_phrase(label: Any, kind: str = "sounds") -> str:
    """Turn a dataset label into the words put into the template.

    ``sounds``: underscores/hyphens become spaces (``"dog_bark"`` -> ``"dog bark"``).
    ``digits``: ``3`` / ``"3"`` -> ``"three"``. ``emotions``: ``"angry"`` -> ``"anger"``,
    ``"neutral"`` -> ``"a neutral tone"`` (see :data:`EMOTION_WORDS`). Unknown labels pass
    through with only the underscore clean-up.
    """
    text = str(label).strip()
    if kind == "digits" and text in DIGIT_WORDS:
        return DIGIT_WORDS[text]
    if kind == "emotions" and text.lower() in EMOTION_WORDS:
        return EMOTION_WORDS[text.lower()]
    return text.replace("_", " ").replace("-", " ").strip()


def class_prompts(
    class_names: Sequence[Any], kind: str = "sounds", template: str | None = None
) -> tuple[list[str], str]:
    """Build one prompt per class.

    Args:
        class_names: class labels in class-index order.
        kind: dataset kind selecting the default template and label wording.
        template: overrides the default; must contain ``{label}``.

    Returns:
        ``(prompts, template_used)``.
    """
    if len(class_names) == 0:
        raise ValueError("class_names is empty")
    default = default_template(kind)  # validates kind
    tpl = _check_template(template if template is not None else default)
    prompts = [tpl.format(label=label_to_phrase(c, kind)) for c in class_names]
    return prompts, tpl


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if x.is_floating_point() and str(x.dtype) not in ("torch.float32", "torch.float64"):
            x = x.float()
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype == object:
        raise ValueError(f"{name} must be a numeric array")
    return arr


def _l2_normalize(x: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name} has {int((norms == 0).sum())} all-zero rows; cannot cosine-normalise them")
    return normalize(x)


def _encode_labels(labels: Any, class_names: Sequence[Any] | None, n_classes: int) -> np.ndarray:
    """Class indices for ``labels`` given as indices or as class names."""
    if isinstance(labels, (list, tuple)):
        arr = np.asarray(labels, dtype=object)
        if arr.size and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
            arr = arr.astype(np.int64)
    else:
        arr = _to_numpy(labels, "labels")
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        idx = arr.astype(np.int64)
    elif class_names is not None and (arr.dtype == object or arr.dtype.kind in "US"):
        lookup = {str(c): i for i, c in enumerate(class_names)}
        values = [str(v) for v in arr.tolist()]
        unknown = sorted(set(values) - lookup.keys())
        if unknown:
            raise ValueError(f"labels {unknown[:5]} are not among class_names {list(lookup)[:10]}")
        idx = np.array([lookup[v] for v in values], dtype=np.int64)
    else:
        raise ValueError(
            f"labels must be integer class indices (got dtype {arr.dtype}), or class names together with class_names"
        )
    bad = (idx < 0) | (idx >= n_classes)
    if bad.any():
        raise ValueError(f"label {int(idx[bad][0])} is outside [0, {n_classes}) ({int(bad.sum())} such labels)")
    return idx


def _true_class_rank(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1-based rank of the true class; ties broken by class index (argmax order)."""
    s_true = scores[np.arange(scores.shape[0]), labels][:, None]
    cls = np.arange(scores.shape[1])[None, :]
    ahead = (scores > s_true) | ((scores == s_true) & (cls < labels[:, None]))
    return 1 + ahead.sum(1)


def zero_shot_from_scores(
    scores: Any,
    labels: Any,
    class_names: Sequence[Any] | None = None,
    *,
    template: str | None = None,
    prompts: Sequence[str] | None = None,
) -> ZeroShotResult:
    """Zero-shot metrics from an (N, C) clip-by-class score matrix (higher = more likely).

    Args:
        scores: (N, C) similarities, numpy or torch.
        labels: (N,) true class index, or class names if ``class_names`` is given.
        class_names: names in class order (default ``"0"``..``"C-1"``).
        template, prompts: recorded in the result.
    """
    s = _to_numpy(scores, "scores").astype(np.float64, copy=False)
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(f"scores must be a non-empty (N, C) matrix, got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    n, c = s.shape
    names = [str(x) for x in class_names] if class_names is not None else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} class_names for {c} score columns")
    y = _encode_labels(labels, class_names, c)
    if y.shape[0] != n:
        raise ValueError(f"{y.shape[0]} labels for {n} score rows")
    pred = np.argmax(s, axis=1)
    rank = _true_class_rank(s, y)
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    support = confusion.sum(1)
    per_class_acc = np.divide(np.diag(confusion), support, out=np.zeros(c), where=support > 0)
    per_class = {names[i]: (float(per_class_acc[i]) if support[i] > 0 else None) for i in range(c)}
    return ZeroShotResult(
        top1=float(np.mean(rank == 1)),
        top5=float(np.mean(rank <= 5)) if c >= 5 else None,
        balanced_accuracy=float(per_class_acc[support > 0].mean()),
        per_class=per_class,
        confusion=confusion,
        class_names=names,
        predictions=pred,
        template=template,
        prompts=None if prompts is None else list(prompts),
        n=n,
        conventions={
            "similarity": "cosine between L2-normalised audio and prompt embeddings unless stated otherwise",
            "ties": "broken by class index (numpy.argmax order); top-k uses the same order",
            "top1": "fraction of clips whose arg-max class is the true class",
            "top5": "fraction of clips whose true class is among the 5 highest-scoring classes (None if C < 5)",
            "balanced_accuracy": "mean over classes (with test clips) of per-class accuracy",
            "per_class": "per-class accuracy = recall of the class",
            "confusion": "rows = true class, columns = predicted class",
        },
    )


def zero_shot_classify(
    audio_embeddings: Any,
    class_embeddings: Any | ScoreFn,
    labels: Any,
    class_names: Sequence[Any] | None = None,
    *,
    template: str | None = None,
    prompts: Sequence[str] | None = None,
    normalize: bool = True,
) -> ZeroShotResult:
    """Zero-shot classification of audio embeddings against class-prompt embeddings.

    Args:
        audio_embeddings: (N, E) audio embeddings.
        class_embeddings: (C, E) text embeddings of the class prompts (in class order), or a
            callable ``f(audio_embeddings) -> (N, C)`` scores (e.g. a model's own similarity).
        labels: (N,) true class indices (or names, with ``class_names``).
        class_names: names in class order.
        template, prompts: recorded in the result (see :func:`class_prompts`).
        normalize: cosine similarity (True) or raw dot product (False); ignored for a callable.
    """
    a = _to_numpy(audio_embeddings, "audio_embeddings")
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"audio_embeddings must be a non-empty (N, E) matrix, got shape {a.shape}")
    if callable(class_embeddings):
        scores = _to_numpy(class_embeddings(audio_embeddings), "scores returned by the similarity function")
        if scores.ndim != 2 or scores.shape[0] != a.shape[0]:
            raise ValueError(f"the similarity function returned shape {scores.shape}, expected ({a.shape[0]}, C)")
    else:
        t = _to_numpy(class_embeddings, "class_embeddings")
        if t.ndim != 2 or t.shape[0] == 0:
            raise ValueError(f"class_embeddings must be a non-empty (C, E) matrix, got shape {t.shape}")
        if t.shape[1] != a.shape[1]:
            raise ValueError(f"embedding sizes differ: audio {a.shape[1]}, class prompts {t.shape[1]}")
        a64, t64 = a.astype(np.float64), t.astype(np.float64)
        if normalize:
            a64, t64 = _l2_normalize(a64, "audio_embeddings"), _l2_normalize(t64, "class_embeddings")
        scores = a64 @ t64.T
    result = zero_shot_from_scores(scores, labels, class_names, template=template, prompts=prompts)
    if not callable(class_embeddings) and not normalize:
        result.conventions["similarity"] = "dot product of unnormalised embeddings"
    elif callable(class_embeddings):
        result.conventions["similarity"] = "scores from a caller-supplied similarity function"
    return result

