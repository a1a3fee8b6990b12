"""Zero-shot classification: prompts, accuracy, top-5, confusion matrix, ties, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, top_k_accuracy_score

from sonalign.evaluation.zeroshot import (
    DEFAULT_TEMPLATES,
    class_prompts,
    label_to_phrase,
    zero_shot_classify,
    zero_shot_from_scores,
)


def _clustered(rng: np.random.Generator, n_classes: int = 6, per_class: int = 20, dim: int = 16, noise: float = 0.6):
    centers = rng.standard_normal((n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    audio = centers[labels] + noise * rng.standard_normal((labels.size, dim))
    return audio, centers, labels


def test_default_templates_and_prompts() -> None:
    assert DEFAULT_TEMPLATES["sounds"] == "the sound of {label}"
    prompts, tpl = class_prompts(["dog_bark", "rain"], kind="sounds")
    assert prompts == ["the sound of dog bark", "the sound of rain"]
    assert tpl == "the sound of {label}"
    prompts, tpl = class_prompts([0, 1, "7"], kind="digits")
    assert prompts == ["someone saying the number zero", "someone saying the number one", "someone saying the number seven"]
    prompts, _ = class_prompts(["angry", "Happy", "neutral", "bored"], kind="emotions")
    assert prompts == [
        "a person speaking with anger",
        "a person speaking with happiness",
        "a person speaking with a neutral tone",
        "a person speaking with bored",
    ]
    prompts, tpl = class_prompts(["cat"], template="a recording of a {label}.")
    assert prompts == ["a recording of a cat."] and tpl == "a recording of a {label}."
    assert label_to_phrase("car-horn") == "car horn"


def test_bad_templates() -> None:
    with pytest.raises(ValueError, match="kind"):
        class_prompts(["a"], kind="music")
    with pytest.raises(ValueError, match="placeholder"):
        class_prompts(["a"], template="no placeholder")
    with pytest.raises(ValueError, match="placeholder"):
        class_prompts(["a"], template="{label} and {other}")
    with pytest.raises(ValueError, match="empty"):
        class_prompts([])


def test_accuracy_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    audio, centers, labels = _clustered(rng)
    names = [f"c{i}" for i in range(6)]
    r = zero_shot_classify(audio, centers, labels, names, template="the sound of {label}")
    a = audio / np.linalg.norm(audio, axis=1, keepdims=True)
    t = centers / np.linalg.norm(centers, axis=1, keepdims=True)
    scores = a @ t.T
    pred = scores.argmax(1)
    assert r.top1 == pytest.approx(np.mean(pred == labels))
    assert r.top5 == pytest.approx(top_k_accuracy_score(labels, scores, k=5))
    np.testing.assert_array_equal(r.confusion, confusion_matrix(labels, pred, labels=range(6)))
    np.testing.assert_array_equal(r.predictions, pred)
    for i, name in enumerate(names):
        assert r.per_class[name] == pytest.approx(np.mean(pred[labels == i] == i))
    assert r.balanced_accuracy == pytest.approx(np.mean(list(r.per_class.values())))
    assert 0.5 < r.top1 <= 1.0
    assert r.template == "the sound of {label}"
    assert r.n == labels.size
    assert r.confusion.sum() == labels.size


def test_perfect_and_top5_absent_for_few_classes() -> None:
    emb = np.eye(3)
    r = zero_shot_classify(emb, emb, [0, 1, 2])
    assert r.top1 == 1.0 and r.top5 is None and "top5" not in r.metrics
    np.testing.assert_array_equal(r.confusion, np.eye(3, dtype=int))


def test_callable_similarity_and_string_labels() -> None:
    rng = np.random.default_rng(1)
    audio, centers, labels = _clustered(rng, n_classes=5)
    names = ["a", "b", "c", "d", "e"]

    def sim(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x @ centers.T)

    r1 = zero_shot_classify(audio, sim, [names[i] for i in labels], names)
    r2 = zero_shot_classify(audio, centers, labels, names, normalize=False)
    assert r1.top1 == r2.top1 and r1.top5 == r2.top5
    np.testing.assert_array_equal(r1.confusion, r2.confusion)
    assert "function" in r1.conventions["similarity"]


def test_ties_follow_argmax_order() -> None:
    scores = np.zeros((2, 6))
    r = zero_shot_from_scores(scores, [0, 5])
    np.testing.assert_array_equal(r.predictions, [0, 0])
    assert r.top1 == 0.5  # class 0 wins the tie, class 5 ranks last
    assert r.top5 == 0.5


def test_missing_class_in_test_set() -> None:
    scores = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    r = zero_shot_from_scores(scores, [0, 1], ["x", "y", "z"])
    assert r.per_class == {"x": 1.0, "y": 1.0, "z": None}
    assert r.balanced_accuracy == 1.0
    d = r.to_dict()
    assert d["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_bad_inputs() -> None:
    emb = np.eye(3)
    with pytest.raises(ValueError, match="embedding sizes"):
        zero_shot_classify(emb, np.eye(4), [0, 1, 2])
    with pytest.raises(ValueError, match="outside"):
        zero_shot_classify(emb, emb, [0, 1, 3])
    with pytest.raises(ValueError, match="labels"):
        zero_shot_classify(emb, emb, [0, 1])
    with pytest.raises(ValueError, match="class_names"):
        zero_shot_classify(emb, emb, ["a", "b", "c"])
    with pytest.raises(ValueError, match="not among"):
        zero_shot_classify(emb, emb, ["a", "b", "q"], ["a", "b", "c"])
    with pytest.raises(ValueError, match="all-zero"):
        zero_shot_classify(np.zeros((3, 3)), emb, [0, 1, 2])
    with pytest.raises(ValueError, match="NaN"):
        zero_shot_from_scores(np.full((1, 2), np.nan), [0])
