"""Quality metrics for learnt spectral models."""

from __future__ import annotations

import numpy as np


def nmse_db(estimate, truth, *, axis=-1) -> np.ndarray:
    """Normalised error in dB, ``-20 log10(||x_hat - x|| / ||x||)`` over ``axis`` (higher is better).

    Joint spectra ``(..., c, n)`` can be scored per input with ``axis=-1`` or as a whole
    with ``axis=(-2, -1)``.
    """
    estimate = np.asarray(estimate, dtype=float)
    truth = np.asarray(truth, dtype=float)
    if estimate.shape != truth.shape:
        raise ValueError(f"estimate and truth must have the same shape, got {estimate.shape} and {truth.shape}")
    err = np.sqrt(np.sum((estimate - truth) ** 2, axis=axis))
    ref = np.sqrt(np.sum(truth**2, axis=axis))
    return -20.0 * np.log10(np.maximum(err, 1e-300) / np.maximum(ref, 1e-300))
