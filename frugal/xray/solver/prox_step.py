"""The starlet prox of the SUSHI solver and its optimality test (module doc of
:mod:`frugal.xray.sushi`, step 2 and "Stop reasons"): the l1 weights, the prox in the metric of
the data step under the monotone safeguard, and the forward-backward point the test compares with.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from frugal.ops.starlet import starlet_inverse, starlet_l1_prox, starlet_transform
from frugal.xray.solver.cube import (
    Data, Models, Spec, State, all_spectra, cube_objective, latent_slices, project_rows, scatter_rows,
)
from frugal.xray.solver.data_step import Metric, joint_metric

__all__ = ["FB", "fb_start", "l1_weights", "prox_maps", "prox_step", "residual_from"]

#: Halvings of the regularised move before it is dropped (the monotone safeguard).
MAX_BACKTRACK = 6


class FB(NamedTuple):
    """The forward-backward point of a state before its prox (``fb_start``)."""

    s: jax.Array  # (C, A) s+ (projected)
    x: tuple  # per component (k, P): the maps after the gradient step t - g_t / L_c
    thr: tuple  # per component (J, k, H, W): the prox's thresholds w / L_c per pixel
    metric: jax.Array  # (A, n) L


def fb_start(spec: Spec, data: Data, state: State, g, fisher_diag, thresholds) -> FB:
    r"""The forward-backward (prox-gradient) point of ``state`` in a diagonal metric ``L``,
    :math:`s^+ = \max(s - g_s / L_s, 0)` per amplitude and, per component,
    :math:`t^+ = P\big(\mathrm{prox}_{w / L_c}(t - g_t / L_c)\big)` (the starlet prox of
    the prox step with thresholds ``w / L_c`` per pixel; ``P`` the projection on the
    training box), ``L`` the undamped Fisher diagonal with one value per component's latent
    coordinates (their largest: the Euclidean projection is then the one of the metric, and
    a fixed point a KKT point). Up to the prox, applied by the caller (:func:`prox_maps`,
    together with the prox step's); entries without curvature do not move."""
    h, w = spec.shape
    n_comp = len(spec.manifolds)
    metric = [fisher_diag[:, :n_comp]]
    for sl in latent_slices(spec):
        d_c = fisher_diag[:, sl]
        metric.append(jnp.broadcast_to(jnp.max(d_c, axis=-1, keepdims=True), d_c.shape))
    metric = jnp.concatenate(metric, axis=-1)
    ok = metric > 0
    safe = jnp.where(ok, metric, 1.0)
    move = jnp.where(ok, -g / safe, 0.0)
    s_fb = jnp.maximum(state.s + move[:, :n_comp].T, 0.0) * data.weight
    xs, thrs = [], []
    for c, sl in enumerate(latent_slices(spec)):
        t = state.t[c]
        k = t.shape[0]
        xs.append(scatter_rows(t, data, move[:, sl]))
        # pixels without data (or curvature): huge thresholds, filled in by the prox
        var_rows = jnp.where((data.weight[:, None] > 0) & ok[:, sl], 1.0 / safe[:, sl], 1e30)
        variance = jnp.full((k, h * w), 1e30, t.dtype).at[:, data.index].min(var_rows.T)
        thrs.append(thresholds[c][:, :, None, None] * variance.reshape(k, h, w)[None])
    return FB(s_fb, tuple(xs), tuple(thrs), metric)


def prox_maps(spec: Spec, maps, thrs):
    """The starlet prox (transform, soft-threshold the details, reconstruct) of several
    ``(k, P)`` maps with their thresholds ``(J, k, H, W)``, in one call (one compiled copy)."""
    h, w = spec.shape
    sizes = [m.shape[0] for m in maps]
    stacked = jnp.concatenate(maps, axis=0).reshape(-1, h, w)
    out = starlet_inverse(starlet_l1_prox(starlet_transform(stacked, spec.n_scales), jnp.concatenate(thrs, axis=1)))
    out = out.reshape(-1, h * w)
    return tuple(out[a:b] for a, b in zip(np.cumsum([0] + sizes[:-1]), np.cumsum(sizes)))


def residual_from(spec: Spec, models: Models, data: Data, state: State, fb: FB, x_prox):
    r"""Optimality residual per active pixel ``(A,)`` (module doc, "Stop reasons"):
    :math:`\max_i \sqrt{L_i}\,|z_i - z^+_i|` with ``z+`` the forward-backward point
    (:func:`fb_start`; ``x_prox`` its maps after the prox), in standard errors."""
    moved = [jnp.abs(state.s - fb.s).T]
    for c, (man, t, x) in enumerate(zip(spec.manifolds, state.t, x_prox)):
        moved.append(jnp.abs(t[:, data.index].T - project_rows(man, models, c, x[:, data.index].T)))
    moved = jnp.concatenate(moved, axis=-1)  # (A, n)
    res = jnp.max(jnp.sqrt(jnp.maximum(fb.metric, 0.0)) * moved, axis=-1)
    return jnp.where(data.weight > 0, res, 0.0)


def prox_step(spec: Spec, models: Models, data: Data, state: State, half: State, metric: Metric,
              thresholds, fb: FB):
    """Starlet soft-thresholding of each component's maps after the data step, then the
    monotone safeguard (accept if ``F`` does not increase, else halve the move). Also
    returns the prox of the forward-backward point ``fb`` of the optimality test (one
    starlet call for both)."""
    h, w = spec.shape
    p = h * w
    m_diag = metric.m_diag
    thrs = []
    for c, sl in enumerate(latent_slices(spec)):
        k = half.t[c].shape[0]
        # The prox moves each coordinate alone: its cost is the conditional curvature M_aa.
        # Pixels without data have none, hence huge thresholds: they are filled in.
        var_rows = jnp.where(data.weight[:, None] > 0, 1.0 / jnp.maximum(m_diag[:, sl], 1e-30), 1e30)
        variance = jnp.full((k, p), 1e30, m_diag.dtype).at[:, data.index].min(var_rows.T)
        thrs.append(thresholds[c][:, :, None, None] * jnp.minimum(variance, 1e30).reshape(k, h, w)[None])
    n_comp = len(spec.manifolds)
    both = prox_maps(spec, list(half.t) + list(fb.x), thrs + list(fb.thr))
    t_prox = [project_rows(man, models, c, t_c.T).T for c, (man, t_c) in enumerate(zip(spec.manifolds, both[:n_comp]))]
    fb_prox = both[n_comp:]
    f_old = cube_objective(spec, data, state, thresholds)

    def candidate(beta):
        # The feasible set is convex: every point between two feasible ones is feasible.
        ts = tuple(to + beta * (tp - to) for to, tp in zip(state.t, t_prox))
        new = half._replace(t=ts, s=state.s + beta * (half.s - state.s),
                            spectra=all_spectra(spec, models, data, ts))
        return new, cube_objective(spec, data, new, thresholds)

    def cond(carry):
        i, _, f_new = carry
        return (i <= MAX_BACKTRACK) & ~(f_new <= f_old)

    def body(carry):
        i, _, _ = carry
        # beta = 1, 1/2, 1/4, ...; the first trial is in the body too (one copy of the
        # decoder in the program: faster compilation)
        return (i + 1,) + candidate(jnp.exp2(-i.astype(state.s.dtype)))

    inf = jnp.full((), jnp.inf, f_old.dtype)
    _, new, f_new = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), state, inf))
    accept = f_new <= f_old
    # A refused move keeps the damping update of the data step: its next step is shorter.
    return jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), new, state._replace(nu=half.nu)), fb_prox


def l1_weights(spec: Spec, models: Models, data: Data, state: State, k_mad):
    """l1 weights ``(J, k)`` per component: ``k_mad * MAD sigma * median M_aa`` (module doc)."""
    h, w = spec.shape
    m_diag = joint_metric(spec, models, data, state).m_diag  # (A, n)
    out = []
    for c, sl in enumerate(latent_slices(spec)):
        valid = (data.weight > 0) & (state.s[c] > 0)
        t = state.t[c]
        k = t.shape[0]
        detail = starlet_transform(t.reshape(k, h, w), spec.n_scales)[:-1].reshape(spec.n_scales, k, -1)
        detail = jnp.where(valid, detail[:, :, data.index], jnp.nan)
        med = jnp.nanmedian(detail, axis=-1, keepdims=True)
        sigma = jnp.nanmedian(jnp.abs(detail - med), axis=-1) / 0.6745
        m_ref = jnp.nanmedian(jnp.where(valid[:, None], m_diag[:, sl], jnp.nan), axis=0)
        wt = k_mad * sigma * m_ref[None, :]
        out.append(jnp.where(jnp.isfinite(wt), wt, 0.0))
    return tuple(out)
