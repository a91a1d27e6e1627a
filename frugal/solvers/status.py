r"""Why an iterative solver stopped: one code per result, like optimistix's ``RESULTS``.

Every iterative result of the library (``block_solve``, ``damped_newton``, NNPU, KL-NMF,
SEMSUN, SUSHI, ``fit_pixels``, ``iae.project``) carries a ``status`` array of
:class:`Status` codes (``int32``, one per item of a batch) and a ``converged`` boolean that
is exactly ``status == Status.CONVERGED``.

``CONVERGED`` means that a **first-order optimality test passed**, never merely that the
iterates stopped changing: the scaled projected-gradient residual

.. math:: r = \max_i\ \sqrt{h_i}\ \big|x_i - P\big(x - D^{-1} g\big)_i\big|,
          \qquad D = \mathrm{diag}(h),

with ``g`` the gradient, ``h > 0`` a curvature per coordinate (Fisher information or the
Hessian's diagonal) and ``P`` the projection on the feasible set, is below a tolerance.
``r`` is zero exactly at a KKT point (for a box and a diagonal metric, the Euclidean
projection is the metric one) and is scale free: for a negative log-likelihood with its
Fisher information, ``r`` is the distance to the optimum in standard errors, and ``r^2 / 2``
the decrease still available to a full Newton step.
"""

from __future__ import annotations

import enum

import jax.numpy as jnp
import numpy as np


class Status(enum.IntEnum):
    """Stop reason of an iterative solver (stored as ``int32`` arrays in results)."""

    #: a first-order optimality test passed
    CONVERGED = 0
    #: the iteration limit was reached before the optimality test passed
    MAX_ITER = 1
    #: the iterates stopped improving without passing the optimality test (a stall, a
    #: spurious stationary point the solver could not leave, a loss of precision)
    STALLED = 2
    #: the iterate or the objective is NaN or infinite
    NON_FINITE = 3


def decide(finite, optimal, hit_limit):
    """The :class:`Status` code (``int32``) from three traced booleans, in order of priority:
    not finite, optimal, out of iterations, else stalled."""
    return jnp.where(
        ~finite,
        jnp.int32(Status.NON_FINITE),
        jnp.where(optimal, jnp.int32(Status.CONVERGED),
                  jnp.where(hit_limit, jnp.int32(Status.MAX_ITER), jnp.int32(Status.STALLED))),
    ).astype(jnp.int32)


def scaled_residual(x, grad, curvature, lower=None, upper=None):
    r"""Scaled projected-gradient residual for a box :math:`[l, u]` (the test of
    :data:`Status.CONVERGED`):
    :math:`\max_i \sqrt{h_i}\,|x_i - \mathrm{clip}(x_i - g_i / h_i, l_i, u_i)|`.

    Coordinates with ``h_i <= 0`` (no curvature: a parameter the objective does not see)
    count as optimal. ``lower``/``upper`` default to no bound.
    """
    h = jnp.asarray(curvature)
    ok = h > 0
    safe_h = jnp.where(ok, h, 1.0)
    trial = x - grad / safe_h
    if lower is not None:
        trial = jnp.maximum(trial, lower)
    if upper is not None:
        trial = jnp.minimum(trial, upper)
    r = jnp.where(ok, jnp.sqrt(safe_h) * jnp.abs(x - trial), 0.0)
    return jnp.max(r, initial=0.0)


def all_finite(*arrays):
    """True when every entry of every array is finite (a traced boolean)."""
    out = jnp.asarray(True)
    for a in arrays:
        out = out & jnp.all(jnp.isfinite(a))
    return out


def status_names(status) -> np.ndarray | str:
    """The lower-case names (``"converged"``, ``"max_iter"``, ...) of status codes, same shape."""
    arr = np.asarray(status)
    names = np.array([s.name.lower() for s in Status])
    out = names[np.clip(arr.astype(int), 0, len(names) - 1)]
    return str(out) if out.ndim == 0 else out


def status_counts(status) -> dict:
    """``{name: count}`` of the codes in ``status`` (for summaries and warnings)."""
    arr = np.asarray(status).ravel()
    return {s.name.lower(): int(np.sum(arr == int(s))) for s in Status if np.any(arr == int(s))}


__all__ = ["Status", "all_finite", "decide", "scaled_residual", "status_counts", "status_names"]
