"""Linear probe on frozen embeddings: standardise + logistic regression, UA and WA.

Protocol:

* Features are standardised with statistics of the *training* split only
  (``StandardScaler`` inside a ``Pipeline``), then a multinomial L2-regularised
  ``LogisticRegression`` (lbfgs, fixed ``random_state``) is fitted.
* The inverse regularisation strength ``C`` is chosen on the validation split when one is
  given (highest UA over ``Cs``; ties go to the smaller ``C``, i.e. stronger regularisation),
  then the probe is refitted on the training split with that ``C``. Without a validation split
  ``C = default_C`` (1.0). The test split is never used for selection.
* Metrics follow the speech emotion recognition literature:
  **UA** (unweighted accuracy) = mean over classes of per-class recall (= balanced accuracy);
  **WA** (weighted accuracy) = overall accuracy, i.e. per-class recall weighted by class size.
* The confusion matrix has rows = true class, columns = predicted class, classes sorted.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = [
    "DEFAULT_CS",
    "ProbeResult",
    "unweighted_accuracy",
    "weighted_accuracy",
    "make_probe",
    "linear_probe",
]

DEFAULT_CS: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)


@dataclass
class ProbeResult:
    """Linear-probe outcome on the test split.

    Attributes:
        ua: unweighted accuracy (mean per-class recall).
        wa: weighted accuracy (overall accuracy).
        per_class_recall: class -> recall on the test split.
        confusion: (K, K) int counts, rows = true, columns = predicted, in ``classes`` order.
        classes: class labels in confusion-matrix order (as strings).
        C: regularisation used for the final probe.
        val_ua: C -> validation UA when C was selected on a validation split, else empty.
        n_train, n_val, n_test: split sizes.
        seed: ``random_state`` of the logistic regression.
    """

    ua: float
    wa: float
    per_class_recall: dict[str, float]
    confusion: np.ndarray
    classes: list[str]
    C: float
    val_ua: dict[float, float] = field(default_factory=dict)
    n_train: int = 0
    n_val: int = 0
    n_test: int = 0
    seed: int = 0
    conventions: dict[str, str] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, float]:
        """``{"UA": ..., "WA": ...}``."""
        return {"UA": self.ua, "WA": self.wa}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "metrics": dict(self.metrics),
            "UA": self.ua,
            "WA": self.wa,
            "per_class_recall": dict(self.per_class_recall),
            "confusion": self.confusion.astype(int).tolist(),
            "classes": list(self.classes),
            "C": self.C,
            "val_ua": {str(c): v for c, v in self.val_ua.items()},
            "n_train": self.n_train,
            "n_val": self.n_val,
            "n_test": self.n_test,
            "seed": self.seed,
            "conventions": dict(self.conventions),
        }


def unweighted_accuracy(y_true: Any, y_pred: Any) -> float:
    """UA: mean over the classes present in ``y_true`` of per-class recall."""
    return float(balanced_accuracy_score(np.asarray(y_true), np.asarray(y_pred)))


def weighted_accuracy(y_true: Any, y_pred: Any) -> float:
    """WA: overall accuracy (every sample weighs the same)."""
    return float(accuracy_score(np.asarray(y_true), np.asarray(y_pred)))


def make_probe(C: float = 1.0, seed: int = 0, max_iter: int = 2000) -> Pipeline:
    """Unfitted ``StandardScaler -> LogisticRegression(C)`` pipeline with a fixed seed."""
    if not C > 0:
        raise ValueError(f"C must be > 0, got {C}")
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))


def _features(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().float().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (N, E) matrix, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _labels(y: Any, n: int, name: str) -> np.ndarray:
    if hasattr(y, "detach") and hasattr(y, "cpu"):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    return arr


def _fit(x: np.ndarray, y: np.ndarray, C: float, seed: int, max_iter: int) -> Pipeline:
    probe = make_probe(C, seed, max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(x, y)
    return probe


def linear_probe(
    train_x: Any,
    train_y: Any,
    test_x: Any,
    test_y: Any,
    val_x: Any | None = None,
    val_y: Any | None = None,
    *,
    Cs: Sequence[float] = DEFAULT_CS,
    default_C: float = 1.0,
    seed: int = 0,
    max_iter: int = 2000,
) -> ProbeResult:
    """Train a linear probe on ``train`` embeddings and evaluate UA/WA on ``test``.

    Args:
        train_x, val_x, test_x: (N, E) embeddings (numpy or torch).
        train_y, val_y, test_y: (N,) labels (ints or strings).
        Cs: candidate C values, searched on the validation split if given.
        default_C: C used when no validation split is given.
        seed: ``random_state`` of the logistic regression.
        max_iter: lbfgs iterations.

    Raises:
        ValueError: mismatched shapes, fewer than two training classes, or validation/test
            labels that never occur in training.
    """
    xtr = _features(train_x, "train_x")
    ytr = _labels(train_y, xtr.shape[0], "train_y")
    xte = _features(test_x, "test_x")
    yte = _labels(test_y, xte.shape[0], "test_y")
    if xte.shape[1] != xtr.shape[1]:
        raise ValueError(f"test_x has {xte.shape[1]} features but train_x has {xtr.shape[1]}")
    classes = np.unique(ytr)
    if classes.size < 2:
        raise ValueError(f"train_y must contain at least two classes, got {classes.tolist()}")
    unseen = sorted(set(np.unique(yte).tolist()) - set(classes.tolist()))
    if unseen:
        raise ValueError(f"test labels {unseen[:5]} never occur in train_y; the probe cannot predict them")

    val_ua: dict[float, float] = {}
    n_val = 0
    if (val_x is None) != (val_y is None):
        raise ValueError("give both val_x and val_y, or neither")
    if val_x is not None:
        xva = _features(val_x, "val_x")
        yva = _labels(val_y, xva.shape[0], "val_y")
        if xva.shape[1] != xtr.shape[1]:
            raise ValueError(f"val_x has {xva.shape[1]} features but train_x has {xtr.shape[1]}")
        unseen = sorted(set(np.unique(yva).tolist()) - set(classes.tolist()))
        if unseen:
            raise ValueError(f"validation labels {unseen[:5]} never occur in train_y")
        if len(Cs) == 0:
            raise ValueError("Cs is empty")
        n_val = xva.shape[0]
        for c in sorted(float(c) for c in Cs):
            val_ua[c] = unweighted_accuracy(yva, _fit(xtr, ytr, c, seed, max_iter).predict(xva))
        best = max(val_ua.values())
        chosen = min(c for c, v in val_ua.items() if v == best)
    else:
        chosen = float(default_C)

    probe = _fit(xtr, ytr, chosen, seed, max_iter)
    pred = probe.predict(xte)
    cm = confusion_matrix(yte, pred, labels=classes)
    support = cm.sum(1)
    recall = np.divide(np.diag(cm), support, out=np.zeros(len(classes)), where=support > 0)
    names = [str(c) for c in classes]
    return ProbeResult(
        ua=unweighted_accuracy(yte, pred),
        wa=weighted_accuracy(yte, pred),
        per_class_recall={names[i]: float(recall[i]) for i in range(len(classes)) if support[i] > 0},
        confusion=cm,
        classes=names,
        C=chosen,
        val_ua=val_ua,
        n_train=int(xtr.shape[0]),
        n_val=n_val,
        n_test=int(xte.shape[0]),
        seed=seed,
        conventions={
            "UA": "unweighted accuracy: mean over test classes of per-class recall (balanced accuracy)",
            "WA": "weighted accuracy: overall accuracy on the test split",
            "probe": "StandardScaler (train statistics) + LogisticRegression (lbfgs, L2), fixed random_state",
            "C": (
                "selected by validation UA over Cs, ties to the smaller C"
                if val_ua
                else f"default C = {chosen} (no validation split)"
            ),
            "confusion": "rows = true class, columns = predicted class, classes sorted",
        },
    )
