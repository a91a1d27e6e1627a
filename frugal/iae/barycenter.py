"""Barycentric weights of a code with respect to the encoded anchors.

Given the anchors' codes ``Omega`` (``d x k``) and a code ``z`` (``k``), the weights are

.. math::  \\lambda^\\star = \\arg\\min_{\\lambda^\\top 1 = 1} \\|z - \\lambda \\Omega\\|^2
           + \\epsilon \\|\\lambda\\|^2

whose KKT system has the closed form (``G = Omega Omega^T + eps I``)

.. math::  \\tilde\\lambda = z \\Omega^\\top G^{-1}, \\qquad
           \\lambda = \\tilde\\lambda + \\frac{1 - \\tilde\\lambda 1}{1^\\top G^{-1} 1}\\,
           1^\\top G^{-1}.

``eps`` is relative to ``||Omega Omega^T||_2`` so that the weights do not depend on the
scale of the codes. ``lambda Omega`` is then the projection of ``z`` onto the affine hull
of the anchor codes (exactly so when ``eps -> 0``).
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from frugal.ops.proxes import project_box_section


def flatten_levels(codes, batch_ndim: int):
    """Concatenate the code levels into one vector per item (keeps ``batch_ndim`` leading axes)."""
    return jnp.concatenate(
        [c.reshape(c.shape[:batch_ndim] + (-1,)) for c in codes], axis=-1
    )


def barycentric_weights(code, anchor_codes, *, rel_eps: float = 1e-6):
    """Affine barycentric weights ``(..., d)`` of ``code`` ``(..., k)`` w.r.t. ``anchor_codes`` ``(d, k)``."""
    if isinstance(rel_eps, (int, float, np.integer, np.floating)) and not (np.isfinite(rel_eps) and rel_eps > 0):
        # A concrete number (always so from an IAEConfig): eps <= 0 leaves G singular or
        # indefinite and the Cholesky factor NaN.
        raise ValueError(f"rel_eps must be a finite number > 0, got {rel_eps!r}")
    omega = anchor_codes
    d = omega.shape[0]
    gram = omega @ omega.T
    eps = rel_eps * jnp.linalg.norm(gram, ord=2) + jnp.finfo(gram.dtype).tiny
    eye = jnp.eye(d, dtype=gram.dtype)
    g_inv = jsl.cho_solve(jsl.cho_factor(gram + eps * eye), eye)  # d is small (the anchors)
    g_inv_one = g_inv.sum(0)
    lt = (code @ omega.T) @ g_inv
    return lt + ((1.0 - lt.sum(-1, keepdims=True)) / g_inv_one.sum()) * g_inv_one


def constrain_weights(weights, constraint=None, lower=None, upper=None):
    """Project weights onto the admissible set.

    ``constraint``: ``None`` (affine: sum to one only, the closed form already satisfies it),
    ``"simplex"`` (``lambda >= 0``) or ``"box"`` (``lower <= lambda <= upper``, e.g. the range
    seen on the training set). Always keeps ``sum(lambda) = 1``.
    """
    if constraint is None:
        return weights
    if constraint == "simplex":
        return project_box_section(weights, 0.0, None, 1.0)
    if constraint == "box":
        return project_box_section(weights, lower, upper, 1.0)
    raise ValueError(f"constraint must be None, 'simplex' or 'box', got {constraint!r}")


def interpolate_codes(weights, anchor_codes_levels):
    """Interpolated codes ``B_l = lambda Omega_l`` for every level (``weights`` ``(..., d)``)."""
    return tuple(jnp.tensordot(weights, omega, axes=([-1], [0])) for omega in anchor_codes_levels)
