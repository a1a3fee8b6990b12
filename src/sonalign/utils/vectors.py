"""The one row-wise L2 normalisation of numpy vectors (the vector index, the embedders and the evaluation use it)."""

from __future__ import annotations

import numpy as np


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation into a new C-contiguous array (float64 stays float64, anything else
    becomes float32); zero rows stay zero."""
    dtype = np.float64 if np.asarray(vectors).dtype == np.float64 else np.float32
    out = np.array(vectors, dtype=dtype, copy=True, order="C")
    if out.ndim == 1:
        out = out[None, :]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out
