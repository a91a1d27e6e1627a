"""Projections and proximal operators, each a pure jit/vmap-friendly function.

Conventions follow the proximal-operator literature: ``prox_{t f}(x) = argmin_u f(u) +
||u - x||^2 / (2 t)``. Projections are proxes of indicator functions (``t`` ignored).
All act on the last axis when a constraint couples coordinates (sum constraints).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def project_nonnegative(x):
    """Euclidean projection onto the non-negative orthant, ``max(x, 0)``."""
    return jnp.maximum(x, 0.0)


def project_box(x, lower=None, upper=None):
    """Euclidean projection onto ``{lower <= u <= upper}`` (``None`` = unbounded)."""
    if lower is not None:
        x = jnp.maximum(x, lower)
    if upper is not None:
        x = jnp.minimum(x, upper)
    return x


def project_box_section(x, lower=None, upper=None, total=1.0, n_iter: int = 60):
    r"""Projection onto ``{u : sum(u) = total, lower <= u <= upper}`` along the last axis.

    The KKT conditions give ``u = clip(x - tau, lower, upper)`` with the scalar ``tau`` such
    that the sum is ``total``; the sum is monotone in ``tau``, so ``tau`` is found by
    bisection (``n_iter`` halvings of a bracket that surely contains it: float32-exact after
    ~40). With ``lower=0`` and no upper bound this is the projection onto the scaled simplex.
    Without bounds it is the closed form ``x - (sum(x) - total) / d``.
    The set must be non-empty: ``sum(lower) <= total <= sum(upper)``.
    """
    x = jnp.asarray(x)
    d = x.shape[-1]
    if lower is None and upper is None:
        return x - (jnp.sum(x, axis=-1, keepdims=True) - total) / d
    lo = jnp.full_like(x, -jnp.inf) if lower is None else jnp.broadcast_to(lower, x.shape).astype(x.dtype)
    hi = jnp.full_like(x, jnp.inf) if upper is None else jnp.broadcast_to(upper, x.shape).astype(x.dtype)

    def excess(tau):
        return jnp.sum(jnp.clip(x - tau[..., None], lo, hi), axis=-1) - total

    # tau_lo gives a sum >= total and tau_hi a sum <= total.
    span = jnp.max(jnp.abs(x), axis=-1) + jnp.abs(total) + 1.0
    finite_lo = jnp.where(jnp.isfinite(lo), lo, 0.0)
    finite_hi = jnp.where(jnp.isfinite(hi), hi, 0.0)
    tau_lo = jnp.min(x - jnp.where(jnp.isfinite(hi), finite_hi, x + span[..., None]), axis=-1) - span / d
    tau_hi = jnp.max(x - jnp.where(jnp.isfinite(lo), finite_lo, x - span[..., None]), axis=-1) + span / d

    def body(_, bracket):
        a, b = bracket
        mid = 0.5 * (a + b)
        too_big = excess(mid) > 0
        return jnp.where(too_big, mid, a), jnp.where(too_big, b, mid)

    a, b = jax.lax.fori_loop(0, n_iter, body, (tau_lo, tau_hi))
    return jnp.clip(x - 0.5 * (a + b)[..., None], lo, hi)


def project_simplex(x, total=1.0):
    """Projection onto the simplex ``{u >= 0, sum(u) = total}`` along the last axis."""
    return project_box_section(x, lower=0.0, upper=None, total=total)


def soft_threshold(x, threshold):
    r"""Prox of ``threshold * ||x||_1``: :math:`\mathrm{sign}(x)\max(|x| - t, 0)` (``t`` broadcasts)."""
    return jnp.sign(x) * jnp.maximum(jnp.abs(x) - threshold, 0.0)
