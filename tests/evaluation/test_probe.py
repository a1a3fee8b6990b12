"""Linear probe: UA/WA definitions, separable data, C selection, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest

from sonalign.evaluation.probe import linear_probe, unweighted_accuracy, weighted_accuracy


def _blobs(rng: np.random.Generator, sizes: list[int], dim: int = 8, sep: float = 6.0, noise: float = 1.0):
    centers = sep * rng.standard_normal((len(sizes), dim))
    y = np.concatenate([np.full(n, i) for i, n in enumerate(sizes)])
    x = centers[y] + noise * rng.standard_normal((y.size, dim))
    return x, y


def test_ua_wa_definitions() -> None:
    y_true = np.array([0] * 8 + [1] * 2)
    y_pred = np.array([0] * 8 + [0, 1])
    assert weighted_accuracy(y_true, y_pred) == pytest.approx(0.9)
    assert unweighted_accuracy(y_true, y_pred) == pytest.approx((1.0 + 0.5) / 2)


def test_separable_data_is_solved() -> None:
    rng = np.random.default_rng(0)
    xtr, ytr = _blobs(rng, [40, 40, 40])
    # same centers for test: rebuild from the same generator state
    rng2 = np.random.default_rng(0)
    centers = 6.0 * rng2.standard_normal((3, 8))
    yte = np.repeat(np.arange(3), 15)
    xte = centers[yte] + rng.standard_normal((yte.size, 8))
    r = linear_probe(xtr, ytr, xte, yte)
    assert r.ua == 1.0 and r.wa == 1.0
    np.testing.assert_array_equal(r.confusion, np.diag([15, 15, 15]))
    assert r.classes == ["0", "1", "2"]
    assert r.C == 1.0 and r.val_ua == {}
    assert r.n_train == 120 and r.n_test == 45


def test_imbalanced_ua_differs_from_wa() -> None:
    rng = np.random.default_rng(1)
    x, y = _blobs(rng, [300, 30], dim=4, sep=0.7, noise=1.0)  # overlapping, imbalanced
    idx = rng.permutation(y.size)
    tr, te = idx[:200], idx[200:]
    r = linear_probe(x[tr], y[tr], x[te], y[te])
    assert r.wa == pytest.approx(np.trace(r.confusion) / r.confusion.sum())
    recalls = np.diag(r.confusion) / r.confusion.sum(1)
    assert r.ua == pytest.approx(recalls.mean())
    assert r.ua != pytest.approx(r.wa)


def test_c_selected_on_validation_and_deterministic() -> None:
    rng = np.random.default_rng(2)
    x, y = _blobs(rng, [60, 60, 60], dim=20, sep=1.0, noise=1.5)
    labels = np.array(["ang", "hap", "sad"])[y]
    idx = rng.permutation(y.size)
    tr, va, te = idx[:90], idx[90:135], idx[135:]
    kw = dict(Cs=(0.01, 1.0, 100.0), seed=3)
    r1 = linear_probe(x[tr], labels[tr], x[te], labels[te], x[va], labels[va], **kw)
    r2 = linear_probe(x[tr], labels[tr], x[te], labels[te], x[va], labels[va], **kw)
    assert set(r1.val_ua) == {0.01, 1.0, 100.0}
    assert r1.val_ua[r1.C] == max(r1.val_ua.values())
    assert r1.ua == r2.ua and r1.wa == r2.wa and r1.C == r2.C
    np.testing.assert_array_equal(r1.confusion, r2.confusion)
    assert r1.classes == ["ang", "hap", "sad"]
    assert r1.n_val == 45
    d = r1.to_dict()
    assert d["metrics"] == {"UA": r1.ua, "WA": r1.wa}


def test_bad_inputs() -> None:
    rng = np.random.default_rng(4)
    x, y = _blobs(rng, [10, 10])
    with pytest.raises(ValueError, match="two classes"):
        linear_probe(x, np.zeros(20, int), x, np.zeros(20, int))
    with pytest.raises(ValueError, match="never occur"):
        linear_probe(x, y, x, np.where(y == 1, 2, y))
    with pytest.raises(ValueError, match="features"):
        linear_probe(x, y, x[:, :3], y)
    with pytest.raises(ValueError, match="shape"):
        linear_probe(x, y[:-1], x, y)
    with pytest.raises(ValueError, match="both"):
        linear_probe(x, y, x, y, val_x=x)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        linear_probe(bad, y, x, y)
