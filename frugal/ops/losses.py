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

    Computed as :math:`2 y_j (t_j - \log(1 + t_j))` with :math:`t_j = (m_j - y_j) / y_j`:
    the two terms of the textbook form are each of order ``y`` and cancel to about
    :math:`(y - m)^2 / (2y)`, so in float32 their sum over 10^6 counts is off by
    ``eps * sum(y)`` ~ 0.1 (it even turns negative at 1e15 counts), more than a Newton step
    decreases it near the optimum. This form errs by a few ulps of each channel's own small
    deviance. Where ``m`` is far below ``y`` (``t < -1/2``) the logarithm is taken directly;
    channels with ``y = 0`` contribute ``2 m``; ``m`` is floored at ``TINY`` where ``y > 0``.
    """
    counts = jnp.asarray(counts)
    model = jnp.asarray(model)
    pos = counts > 0
    ys = jnp.where(pos, counts, 1.0)
    ms = jnp.maximum(model, TINY)
    t = (ms - counts) / ys
    low = t < -0.5
    t_near = jnp.where(low, 0.0, t)
    near = t_near - jnp.log1p(t_near)
    far = t - jnp.log(jnp.where(low, ms / ys, 1.0))
    # 2 m where y = 0, its slope 2 up to m = 0 included (jnp.maximum would give half of it
    # there); a negative model counts as 0.
    return 2.0 * jnp.sum(jnp.where(pos, counts * jnp.where(low, far, near), jnp.where(model >= 0, model, 0.0)),
                         axis=axis)


def poisson_weights(counts, model, floor=TINY):
    r"""Per channel, ``(y / mu, 1 / mu)``: the weights of the Poisson gradient and of its
    expected Fisher information (Gauss-Newton) in the model ``mu``.

    With :math:`\ell = \sum_j \mu_j - y_j \log \mu_j` and :math:`\mu = \mu(z)`:
    :math:`\nabla \ell = J^\top (1 - y / \mu)` and :math:`E[\nabla^2 \ell] = J^\top
    \mathrm{diag}(1 / \mu) J` (twice both for the deviance); the observed curvature adds
    :math:`y / \mu^2`, i.e. ``ratio * inverse``.

    A channel where the model vanishes (``mu <= floor``) and the counts too carries no
    information: ``(0, 0)``. Where the model vanishes but counts were observed, ``mu`` is
    floored at ``floor``: the sources that could explain them get a huge negative gradient
    (they must grow: the point is not optimal). ``floor``: ``TINY`` keeps ``y / mu`` finite
    in float32 for ``y < 1e8``; a solver that also forms ``y / mu^2`` needs a larger one.
    """
    seen = (model > floor) | (counts > 0)
    safe = jnp.maximum(model, floor)
    return jnp.where(seen, counts / safe, 0.0), jnp.where(seen, 1.0 / safe, 0.0)


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
