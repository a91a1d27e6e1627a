"""Data-fidelity terms, each a pure function of ``(counts, model)``.

All are sums over the trailing axis (channels) unless ``axis`` says otherwise, so a leading
batch axis gives one value per spectrum. They are safe at zero counts and at a zero model:
no ``log(0)``, no NaN, no inf, and finite gradients.
"""

from __future__ import annotations

import jax.numpy as jnp

#: Smallest model value a Poisson term looks at, relative to nothing: a floor on the
#: expected counts of a channel that has counts. float32 has ~1e-38 normal range; 1e-30
#: keeps ``log`` finite and gradients (``y / m``) below float32 overflow for y < 1e8.
TINY = 1e-30


def _safe_log(model, counts):
    """``log(model)`` where ``counts > 0``, 0 elsewhere (the term is multiplied by counts)."""
    positive = counts > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, jnp.maximum(model, TINY), 1.0)), 0.0)


def poisson_nll(counts, model, *, axis=-1):
    r"""Poisson negative log-likelihood up to a constant in the model.

    .. math:: \ell(y, m) = \sum_j m_j - y_j \log m_j

    Channels with ``y_j = 0`` contribute ``m_j`` only (the limit of the formula), so empty
    channels and a zero model never yield NaN. Minimising over ``m`` gives ``m = y``.
    """
    return jnp.sum(model - counts * _safe_log(model, counts), axis=axis)


def poisson_deviance(counts, model, *, axis=-1):
    r"""Poisson deviance, :math:`2 \sum_j y_j \log(y_j / m_j) - (y_j - m_j)`.

    Equals ``2 * (poisson_nll(y, m) - poisson_nll(y, y))``: non-negative, zero at a perfect
    fit, and about the number of channels for a correct model (a chi-square-like scale),
    which makes it the natural quantity for goodness of fit and relative stopping rules.
    """
    return 2.0 * jnp.sum(
        counts * (_safe_log(counts, counts) - _safe_log(model, counts)) - (counts - model), axis=axis
    )


def gaussian_loss(y, model, *, weights=None, axis=-1):
    r"""Weighted half squared error, :math:`\tfrac12 \sum_j w_j (y_j - m_j)^2` (``w = 1`` by default)."""
    r2 = jnp.square(y - model)
    if weights is not None:
        r2 = weights * r2
    return 0.5 * jnp.sum(r2, axis=axis)


def data_loss(kind: str):
    """The loss function named ``"poisson"`` or ``"gaussian"``."""
    if kind == "poisson":
        return poisson_nll
    if kind == "gaussian":
        return gaussian_loss
    raise ValueError(f"loss must be 'poisson' or 'gaussian', got {kind!r}")
