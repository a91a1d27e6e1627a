"""The loop of the SUSHI solver: the start, the inertial extrapolation of ``outer="ipalm"``, the
sweeps with their stopping test (one ``lax.while_loop`` of ``block_solve``), the cold-start grid
search, and the jitted, vmapped programs over a batch of cubes.
"""

from __future__ import annotations

import itertools
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from frugal.ops.losses import TINY
from frugal.solvers.block import block_solve, inertial_point, repeat
from frugal.solvers.status import decide
from frugal.xray.solver.amplitudes import amplitude_sweep
from frugal.xray.solver.cube import (
    Control, Data, Models, Spec, State, all_spectra, cube_objective, mixture, pixel_loss, project_maps,
    regulariser, scatter_rows, spectra_at,
)
from frugal.xray.solver.data_step import data_step
from frugal.xray.solver.prox_step import fb_start, l1_weights, prox_step, residual_from

__all__ = [
    "Outcome", "extrapolate", "grid_start", "grid_start_batch", "initial_state", "simplex_grid",
    "solve_batch", "solve_cube", "thresholds_batch",
]

#: Initial Levenberg-Marquardt damping, relative to the curvature (Marquardt scaling).
DAMPING = 1e-3
#: The loop has stalled after ``STALL_SWEEPS`` sweeps in a row whose relative decrease of
#: ``F`` is at most ``STALL_RTOL`` (float32 resolution; one sweep is not enough: a sweep
#: whose steps were all refused raises the damping and the next one may succeed).
STALL_RTOL = 1e-7
STALL_SWEEPS = 4
#: Once the relative decrease is below ``tol``, the loop goes on while the optimality residual
#: still improves (by this factor within ``RESIDUAL_PATIENCE`` sweeps) and has not passed.
RESIDUAL_PROGRESS = 0.9
RESIDUAL_PATIENCE = 5


def initial_state(spec: Spec, models: Models, data: Data, t0, s0) -> State:
    ts = project_maps(spec, models, t0)  # a user's start may lie outside the training box
    nu = jnp.full(s0.shape[1:], DAMPING, s0.dtype)
    s0 = s0 * data.weight
    prev = (ts, s0) if spec.solver.outer.inertial else ()
    inf = jnp.full((), jnp.inf, s0.dtype)
    # terms: filled by solve_cube before the loop (they need the objective's pieces)
    return State(ts, s0, all_spectra(spec, models, data, ts), nu, jnp.zeros((), jnp.int32), prev,
                 res=jnp.full(s0.shape[1:], jnp.inf, s0.dtype), f=inf, small=jnp.zeros((), bool),
                 flat=jnp.zeros((), jnp.int32), done=jnp.zeros((), bool), best=inf, since=jnp.zeros((), jnp.int32))


def extrapolate(spec: Spec, models: Models, data: Data, state: State, thresholds) -> State:
    r"""Start of an iPALM sweep: :math:`y = P(x_k + \beta (x_k - x_{k-1}))` on ``(s, t)``
    (``P`` the projection on the feasible set), kept in the pixels where it does not
    increase the data term (the others keep :math:`x_k`), then kept only if ``F`` does not
    increase (the regulariser couples the pixels): the trace stays monotone. One decoding.
    The returned state remembers :math:`x_k` as the previous iterate."""
    t_prev, s_prev = state.prev
    beta = spec.solver.outer.beta
    ty = project_maps(spec, models, inertial_point(state.t, t_prev, beta))
    sy = jnp.maximum(inertial_point(state.s, s_prev, beta), 0.0) * data.weight
    spectra_y = all_spectra(spec, models, data, ty)
    ell_x = pixel_loss(spec.loss, data, mixture(data, state.s, state.spectra))
    ell_y = pixel_loss(spec.loss, data, mixture(data, sy, spectra_y))
    ok = ell_y <= ell_x
    # Pixels (of the maps) that keep x_k; padding entries (weight 0) add False.
    refused = (~ok & (data.weight > 0)).astype(jnp.int32)
    keep = jnp.zeros(ty[0].shape[1], jnp.int32).at[data.index].max(refused) > 0
    y = state._replace(t=tuple(jnp.where(keep, tx, t_y) for tx, t_y in zip(state.t, ty)),
                       s=jnp.where(ok, sy, state.s),
                       spectra=jnp.where(ok[None, :, None], spectra_y, state.spectra))
    better = cube_objective(spec, data, y, thresholds) <= cube_objective(spec, data, state, thresholds)
    start = jax.tree_util.tree_map(lambda a, b: jnp.where(better, a, b), y, state)
    return start._replace(prev=(state.t, state.s))


def solve_cube(spec: Spec, models: Models, data: Data, t0, s0, thresholds, control: Control):
    """The sweeps for one cube (module doc), per pixel or regularised as ``control`` says.

    Each sweep starts by the optimality test of its starting point (its gradient and Fisher
    diagonal are those of the data step: no extra Jacobian). The sweep does not move, and
    the loop ends, at the iteration limit, after ``STALL_SWEEPS`` sweeps without a decrease
    of ``F``, or, once the previous sweep decreased ``F`` by less than ``tol``, if the test
    passes or the residual has not improved (by ``RESIDUAL_PROGRESS``) for
    ``RESIDUAL_PATIENCE`` sweeps. That last, test-only sweep is not counted in ``n_iter``;
    the result is the point that was tested (for ``outer="ipalm"``, after a passing test:
    the extrapolated point, never worse in ``F``)."""
    state = initial_state(spec, models, data, t0, s0)

    def terms_of(st, d):
        return (pixel_loss(spec.loss, d, mixture(d, st.s, st.spectra)), regulariser(spec, st.t, thresholds))

    ell, reg = terms_of(state, data)
    state = state._replace(f=jnp.sum(ell) + reg, terms=(ell, reg))

    def joint_step(st, d):
        checking = (st.flat >= STALL_SWEEPS) | (st.it >= control.limit)  # this sweep only tests
        x = st
        if spec.solver.outer.inertial:
            y = extrapolate(spec, models, d, st, thresholds)
            st = jax.tree_util.tree_map(lambda a, b: jnp.where(checking, a, b), x._replace(prev=y.prev), y)
        half, metric = data_step(spec, models, d, st)
        fb = fb_start(spec, d, st, metric.g, metric.fisher_diag, thresholds)
        new, fb_prox = jax.lax.cond(control.use_prox,
                                    lambda: prox_step(spec, models, d, st, half, metric, thresholds, fb),
                                    lambda: (half, fb.x))
        res_pix = residual_from(spec, models, d, st, fb, fb_prox)
        res = jnp.max(res_pix)
        improved = res < RESIDUAL_PROGRESS * st.best
        best = jnp.where(improved, res, st.best)
        since = jnp.where(improved, 0, st.since + 1).astype(st.since.dtype)
        # after the relative decrease fell below tol: stop if the test passes, or if the
        # residual no longer improves (the loop would not pass it: a stall)
        done = checking | (st.small & ((res <= control.gtol) | (since >= RESIDUAL_PATIENCE)))
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), st, new)
        return new._replace(res=res_pix, done=done, best=best, since=since)

    amplitudes = repeat(amplitude_sweep(spec), spec.solver.amp_steps)

    def amplitude_step(st, d):
        moved = amplitudes(st, d)
        return jax.tree_util.tree_map(lambda a, b: jnp.where(st.done, a, b), st, moved)

    def count(st, d):
        # the relative decrease of F over the sweep, for the next sweep's stopping test: the
        # sum of the pixels' changes (F itself, a float32 sum of ~1e6 on a large cube, cannot
        # resolve the last ones)
        ell, reg = terms_of(st, d)
        f = jnp.sum(ell) + reg
        change = jnp.abs(jnp.sum(st.terms[0] - ell) + (st.terms[1] - reg))
        scale = jnp.maximum(jnp.abs(f), 1.0)
        flat = jnp.where(change <= STALL_RTOL * scale, st.flat + 1, 0).astype(st.flat.dtype)
        return st._replace(it=st.it + jnp.where(st.done, 0, 1).astype(st.it.dtype), f=f, terms=(ell, reg),
                           small=change <= spec.tol * scale, flat=flat)

    def objective(st, _):
        return st.f  # computed by count (one evaluation per sweep)

    f0 = state.f
    res = block_solve((joint_step, amplitude_step, count), objective, state, data, max_iter=spec.trace_len,
                      tol=None, stop=lambda _, new, __: new.done)
    final = res.state
    n_iter = final.it
    # the check-only sweep is not counted: its entry (the objective of the result) is the last
    trace = jnp.where(jnp.arange(res.trace.shape[0]) == n_iter - 1, res.objective, res.trace)
    residual = final.res  # (A,): the test of the final point (its check-only sweep)
    finite_pix = (jnp.all(jnp.isfinite(final.s), axis=0) & jnp.all(jnp.isfinite(final.spectra), axis=(0, 2))
                  & jnp.isfinite(residual))
    finite_pix = finite_pix & jnp.all(jnp.stack([jnp.all(jnp.isfinite(t[:, data.index]), axis=0) for t in final.t]),
                                      axis=0)
    finite_pix = finite_pix | (data.weight == 0)
    # a loop that stopped on a non-finite objective did not test its point
    finite = jnp.all(finite_pix) & jnp.isfinite(res.objective) & final.done
    hit_limit = n_iter >= control.limit
    r_max = jnp.max(jnp.where(data.weight > 0, residual, 0.0))
    status = decide(finite, r_max <= control.gtol, hit_limit)
    pixel_status = decide(finite_pix & finite, residual <= control.gtol, hit_limit)
    return final, f0, trace, n_iter, Outcome(status, r_max, pixel_status, residual)


class Outcome(NamedTuple):
    """Stop reason and fit statistics of a solve (per cube; per active pixel)."""

    status: jax.Array
    residual: jax.Array
    pixel_status: jax.Array  # (A,)
    pixel_residual: jax.Array  # (A,)


@partial(jax.jit, static_argnums=0)
def solve_batch(spec, models, control, data, t0, s0, thresholds):
    return jax.vmap(lambda d, t, s, w: solve_cube(spec, models, d, t, s, w, control))(data, t0, s0, thresholds)


@partial(jax.jit, static_argnums=0)
def thresholds_batch(spec, models, k_mad, data, t, s):
    def one(d, t_, s_):
        return l1_weights(spec, models, d, initial_state(spec, models, d, t_, s_), k_mad)

    return jax.vmap(one)(data, t, s)


def simplex_grid(d: int, resolution: int) -> np.ndarray:
    """Barycentric weights ``(n, d)`` on the grid of step ``1/resolution`` of the anchors'
    simplex (the anchors included)."""
    pts = [p for p in itertools.product(range(resolution + 1), repeat=d) if sum(p) == resolution]
    return np.array(pts, np.float64) / resolution


def grid_start(spec: Spec, models: Models, data: Data, grids):
    """Cold start by grid search (module doc): per pixel, the best combination of one
    candidate per component (``grids[c]``: free coordinates ``(n_c, k_c)``), amplitudes by
    non-negative weighted least squares with weights ``1 / mu_0`` (``mu_0``: the pixel's
    counts spread as the cube's mean spectrum, a variance that does not vanish where a
    channel happens to have no count, unlike ``1 / y``). Returns the maps ``t`` (``(k, P)``,
    0 where there is no data) and the amplitudes ``(C, A)``."""
    n_comp = len(spec.manifolds)
    h, w = spec.shape
    q = jnp.concatenate([spectra_at(man, models, c, grids[c]) for c, man in enumerate(spec.manifolds)])  # (N, E)
    y = jnp.maximum(data.y - data.bkg, 0.0)
    mean = jnp.sum(data.y * data.weight[:, None], axis=0)
    mean = mean / jnp.maximum(jnp.sum(mean), TINY)
    weights = 1.0 / jnp.maximum(jnp.sum(data.y, axis=-1, keepdims=True) * mean[None, :], 0.1)
    gram = jnp.einsum("ie,ae,je->aij", q, weights, q)  # (A, N, N)
    rhs = jnp.einsum("ie,ae->ai", q, weights * y)  # (A, N)
    offsets = np.cumsum([0] + [len(gr) for gr in grids])[:-1]
    combos = np.array(list(itertools.product(*[range(len(gr)) for gr in grids])), np.int32)  # (K, C)
    cols = combos + offsets
    g_sub = gram[:, cols[:, :, None], cols[:, None, :]]  # (A, K, C, C)
    b_sub = rhs[:, cols]  # (A, K, C)
    ridge = 1e-6 * jnp.trace(g_sub, axis1=-2, axis2=-1)[..., None, None] / n_comp + TINY
    joint = jnp.linalg.solve(g_sub + ridge * jnp.eye(n_comp), b_sub[..., None])[..., 0]
    # One component alone (the others at 0): the non-negative solution where the joint one is not.
    single = jnp.maximum(b_sub / jnp.maximum(jnp.diagonal(g_sub, axis1=-2, axis2=-1), TINY), 0.0)
    options = jnp.concatenate([joint[:, :, None, :], single[:, :, :, None] * jnp.eye(n_comp)], axis=2)
    cost = -2.0 * jnp.einsum("akoc,akc->ako", options, b_sub) + jnp.einsum("akoc,akcd,akod->ako", options, g_sub,
                                                                             options)
    cost = jnp.where(jnp.all(options >= 0, axis=-1), cost, jnp.inf).reshape(cost.shape[0], -1)
    best = jnp.argmin(cost, axis=-1)
    k_best, o_best = best // (n_comp + 1), best % (n_comp + 1)
    s0 = jnp.maximum(options[jnp.arange(cost.shape[0]), k_best, o_best], 0.0).T * data.weight  # (C, A)
    choice = jnp.asarray(combos)[k_best]  # (A, C)
    t0 = tuple(scatter_rows(jnp.zeros((grids[c].shape[1], h * w), s0.dtype), data, grids[c][choice[:, c]])
               for c in range(n_comp))
    return t0, s0


@partial(jax.jit, static_argnums=0)
def grid_start_batch(spec, models, grids, data):
    return jax.vmap(lambda d: grid_start(spec, models, d, grids))(data)
