"""SEMSUN's pure core: the static description of a mixture (:class:`SolverSpec`), the signature
rows of the mixture at the models' coordinates, the global start over a grid of the weights,
the zero-source scores, :func:`unmix_one` (one spectrum, traceable) and :func:`unmix_batch`
(one jitted program for a chunk of spectra).

The mathematics is in :mod:`frugal.gamma.semsun` (module doc); the models enter through the
manifold protocol only (:mod:`frugal.unmix.manifold`).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from frugal.ops.gof import gof_pvalue
from frugal.ops.losses import TINY, poisson_deviance, poisson_weights
from frugal.solvers.block import block_solve
from frugal.solvers.multiplicative import (
    fisher_covariance,
    nnpu_init,
    nnpu_unchecked,
    poisson_multiplicative_step,
)
from frugal.solvers.newton import damped_newton, stationarity
from frugal.solvers.status import Status, all_finite, decide
from frugal.solvers.variants import BCD, Newton, as_solver


class SolverSpec(NamedTuple):
    """Static description of the mixture and of the solver (a jit static argument).

    Part of the seam that :mod:`frugal.gamma.differentiable` builds on, with
    :func:`unmix_one`, :func:`signature_rows`, :func:`project_latent`,
    :func:`latent_basis` and :func:`frugal.unmix.as_models`. ``manifolds`` holds the
    :class:`frugal.unmix.Manifold` of each model (``IAEModel.manifold``; in the order of the
    states, their ``params``, and of the flat weight vector): the solver uses nothing else
    of a model, so any manifold (an IAE, a table, a closed form) works. ``n_channels`` is
    ``m`` (the width every signature is padded to), ``n_fixed`` the number of fixed
    signature rows; the other fields are the options of :func:`unmix` of the same names
    (``want_signatures``: return the signatures, ``trace``: record the deviance per
    iteration, ``gtol``: optimality tolerance in standard errors, ``grid``: compile the
    global start over a grid of the weights into :func:`unmix_one`). Build it with
    keyword arguments: fields may be added.
    """

    manifolds: tuple  # frugal.unmix.Manifold per model
    n_channels: int  # m
    n_fixed: int
    solver: Newton | BCD | str  # a value of frugal.solvers.variants, or its name
    max_iter: int
    a_iter: int
    tol: float
    want_signatures: bool
    trace: bool = False
    gtol: float = 5e-2  # optimality tolerance, in standard errors
    grid: bool = False  # the global start over a grid of the latent compiled in (see unmix_one)


#: Most grid nodes per model in the global start (a lattice of its weights' training range).
GRID_NODES = 16

#: Coordinate-wise sweeps of the grid search over several models (their signatures overlap,
#: so the deviance couples their weights: one sweep moves each by about one node).
GRID_SWEEPS = 4

#: Accelerated multiplicative updates per grid node: enough to rank the nodes.
GRID_A_ITER = 30

#: Score (in standard errors) above which a model whose sources all sit at zero counts is
#: restarted from the grid node where it would enter the fit: that zero is a spurious
#: stationary point (no gradient reaches its weights), not the optimum.
ZERO_SOURCE_SCORE = 3.0

#: Largest total counts of one spectrum that the solver sees, by working precision: above,
#: the spectrum is scaled down (the Poisson optimum is equivariant: counts scale, weights do
#: not) and the results scaled back, so float32 neither overflows nor loses the deviance.
SCALED_TOTAL = {np.dtype(np.float32): 1e7, np.dtype(np.float64): 1e15}


def _model_rows(spec: SolverSpec, states, latents):
    """Unit-sum signature rows ``(K_iae, m)`` of each model at its weights."""
    return jnp.concatenate([man.signatures(params, lam, spec.n_channels)  # (c, m) each
                            for man, params, lam in zip(spec.manifolds, states, latents)], 0)


def _model_rows_at(manifold, params, lam_stack, n_channels):
    """Unit-sum rows ``(G, c, m)`` of one model at ``G`` weight vectors (the grid)."""
    return jax.vmap(lambda lam: manifold.signatures(params, lam, n_channels))(lam_stack)


def _split_latent(spec: SolverSpec, flat):
    out, i = [], 0
    for man in spec.manifolds:
        out.append(flat[i : i + man.n_coords])
        i += man.n_coords
    return tuple(out)


def signature_rows(spec, states, fixed_rows, lam_flat):
    """Unit-sum signature rows ``(K, m)`` of the mixture at the weights ``lam_flat``.

    spec: the :class:`SolverSpec`; states: the models' ``params`` (IAE states), one per
    ``spec.manifolds``; fixed_rows: the fixed unit-sum signatures ``(F, m)`` (background
    first), returned as the first ``F`` rows; lam_flat: the coordinates (barycentric
    weights) of all models concatenated ``(sum d_k,)``. The other ``K - F = sum c_k`` rows
    are each model's unit-sum signatures (``c_k`` inputs) at its coordinates, padded to
    ``m`` channels, so that the expected spectrum is ``counts @ rows``.
    """
    return jnp.concatenate([fixed_rows, _model_rows(spec, states, _split_latent(spec, lam_flat))], 0)


def project_latent(spec, lam_flat, lower, upper):
    """Euclidean projection of the concatenated weights onto their admissible set.

    lam_flat, lower, upper: ``(sum d_k,)``, the coordinates of all models in
    ``spec.manifolds`` order and their bounds. Each model's block of ``d_k`` is projected by
    its manifold (barycentric weights: onto the plane ``sum = 1`` within the box
    ``[lower, upper]``); returns ``(sum d_k,)``.
    """
    parts, i = [], 0
    for man in spec.manifolds:
        d = man.n_coords
        parts.append(man.project(lam_flat[i : i + d], lower[i : i + d], upper[i : i + d]))
        i += d
    return jnp.concatenate(parts)


def latent_basis(spec, dtype):
    """Orthonormal basis ``(sum d_k, sum n_free_k)`` of the tangent of the admissible sets.

    Block diagonal over the models of ``spec.manifolds``: each block is its manifold's
    :meth:`~frugal.unmix.Manifold.tangent_basis` (barycentric weights: the ``d_k - 1``
    directions that keep their sum at one, so that moves ``lam + V @ t`` stay on every
    plane), in ``dtype``.
    """
    blocks = [man.tangent_basis(dtype) for man in spec.manifolds]
    return jax.scipy.linalg.block_diag(*blocks)


def _mixture_jacobian(spec, states, fixed_rows, a, lam_flat):
    """``mu = S a`` and ``J = d mu / d(a, lambda)`` (``(m, K + sum d_k)``), forward mode on ``lambda`` only."""
    def mu_of_lam(lam):
        return a @ signature_rows(spec, states, fixed_rows, lam)

    rows = signature_rows(spec, states, fixed_rows, lam_flat)
    j_lam = jax.jacfwd(mu_of_lam)(lam_flat)
    return a @ rows, jnp.concatenate([rows.T, j_lam], axis=1), rows


def _profiled_deviance(rows, y, n_iter):
    """Deviance at fixed signatures ``rows`` with the counts profiled by ``n_iter``
    accelerated multiplicative updates (a ranking of candidate signatures)."""
    a = nnpu_unchecked(rows.T, y, nnpu_init(rows.T, y), jnp.ones(rows.shape[0], bool), n_iter, 1e-5, True).counts
    dev = poisson_deviance(y, a @ rows)
    return jnp.where(jnp.isfinite(dev), dev, jnp.inf)


def _grid_start(spec: SolverSpec, states, fixed_rows, y, lam0, grid_lams, grid_rows):
    """Weights of the best grid node (counts profiled), model by model, and the start.

    The deviance over the weights has spurious stationary points (a source driven to zero
    counts stops seeing its weights) and, with one model per radionuclide, local minima: a
    lattice of each model's training range, ranked by the deviance with profiled counts,
    puts the local solver in the right basin. The signatures at the nodes are decoded once
    per batch (``grid_rows``); several models are searched coordinate-wise
    (:data:`GRID_SWEEPS` sweeps).
    """
    lam_parts = list(_split_latent(spec, lam0))
    row_parts = [_model_rows(spec._replace(manifolds=(man,)), (params,), (lam,))
                 for man, params, lam in zip(spec.manifolds, states, lam_parts)]
    best = _profiled_deviance(jnp.concatenate([fixed_rows] + row_parts, 0), y, GRID_A_ITER)
    n_models = len(spec.manifolds)

    def sweep(_, carry):
        lam_parts, row_parts, best = list(carry[0]), list(carry[1]), carry[2]
        for i in range(n_models):
            def candidate(rows_i, i=i):
                return _profiled_deviance(
                    jnp.concatenate([fixed_rows] + row_parts[:i] + [rows_i] + row_parts[i + 1:], 0), y, GRID_A_ITER)

            devs = jax.vmap(candidate)(grid_rows[i])
            j = jnp.argmin(devs)
            take = devs[j] < best
            lam_parts[i] = jnp.where(take, grid_lams[i][j], lam_parts[i])
            row_parts[i] = jnp.where(take, grid_rows[i][j], row_parts[i])
            best = jnp.where(take, devs[j], best)
        return tuple(lam_parts), tuple(row_parts), best

    carry = (tuple(lam_parts), tuple(row_parts), best)
    # One model needs one sweep; several are swept in a loop (compiled once, not unrolled).
    carry = sweep(0, carry) if n_models == 1 else jax.lax.fori_loop(0, GRID_SWEEPS, sweep, carry)
    return jnp.concatenate(carry[0])


def _zero_source_scores(spec: SolverSpec, fixed_rows, y, a, mu, grid_lams, grid_rows):
    """For each model whose sources all have zero counts, the largest score statistic
    ``U / sqrt(I)`` (standard errors; ``U = s^T (y / mu - 1)``, ``I = s^T diag(1/mu) s``)
    of adding one of its sources at a grid node, and that node's weights.

    A large score means that the model would enter the fit there: the zero is a
    stationary point of the solver, not the optimum.
    """
    ratio, inv_mu = poisson_weights(y, mu)
    resid = ratio - 1.0
    scores, nodes = [], []
    start = fixed_rows.shape[0]
    for i, man in enumerate(spec.manifolds):
        a_i = a[start : start + man.n_inputs]
        start += man.n_inputs
        dead = jnp.all(a_i <= 1e-6 * jnp.maximum(jnp.max(a), TINY))
        u = jnp.einsum("gcm,m->gc", grid_rows[i], resid)
        info = jnp.einsum("gcm,m->gc", grid_rows[i] ** 2, inv_mu)
        z = jnp.where(info > 0, u / jnp.sqrt(jnp.where(info > 0, info, 1.0)), 0.0)
        z = jnp.max(z, axis=1)
        j = jnp.argmax(z)
        scores.append(jnp.where(dead, z[j], 0.0))
        nodes.append(grid_lams[i][j])
    return jnp.stack(scores), jnp.concatenate(nodes)


def unmix_one(spec: SolverSpec, states, fixed_rows, y, lam0, lower, upper, grid_lams=None, grid_rows=None,
              scale=1.0, use_grid=True):
    """Solve one spectrum: a pure, traceable function (vmapped by :func:`unmix`).

    spec: the :class:`SolverSpec` (static); states: the IAE states; fixed_rows: the fixed
    unit-sum signatures ``(F, m)``; y: the counts ``(m,)`` in the working dtype (already
    divided by ``scale``); lam0, lower, upper: the starting weights and their bounds
    ``(d,)`` (``d = sum d_k``, projected on entry); grid_lams / grid_rows: per model, the
    grid nodes ``(G, d_k)`` and their unit-sum signatures ``(G, c_k, m)`` (the global start
    when ``spec.grid`` and the traced flag ``use_grid``, and the zero-source scores; None:
    neither); scale: the factor the results are scaled back by (see :data:`SCALED_TOTAL`).
    Returns the tuple ``(counts (K,), count errors (K,), weights (d,), weight errors (d,),
    signatures (m, K) or (0,), deviance, n_iter, converged, trace, status, gof p-value,
    optimality residual (in units of its tolerance), largest zero-source score, restart
    weights (d,))``, in the order of the fields of :class:`_Solved`.
    """
    k = fixed_rows.shape[0] + sum(man.n_inputs for man in spec.manifolds)
    d_tot = lam0.shape[0]
    dtype = y.dtype
    v_lam = latent_basis(spec, dtype)
    basis = jax.scipy.linalg.block_diag(jnp.eye(k, dtype=dtype), v_lam)

    # Start: the given weights (or the best node of the grid, when asked), counts by
    # multiplicative updates at those signatures. The grid is compiled in with spec.grid
    # and used where use_grid (a traced flag, so that one program serves both).
    lam0 = project_latent(spec, lam0, lower, upper)
    if spec.grid:
        lam0 = jax.lax.cond(use_grid, lambda lam: _grid_start(spec, states, fixed_rows, y, lam, grid_lams, grid_rows),
                            lambda lam: lam, lam0)
    rows0 = signature_rows(spec, states, fixed_rows, lam0)
    free = jnp.ones((k,), bool)
    a0 = nnpu_unchecked(rows0.T, y, nnpu_init(rows0.T, y), free, spec.a_iter, 1e-6, True).counts
    # The optimality test in deviance units (the deviance's Hessian is twice the Fisher
    # information: sqrt(2) per standard error), floored at what the working precision can
    # resolve (the gradient of a deviance of total T over m channels carries ~eps sqrt(m T)).
    total = jnp.sum(y)
    gtol = jnp.maximum(jnp.sqrt(2.0) * spec.gtol,
                       4.0 * jnp.finfo(dtype).eps * jnp.sqrt(spec.n_channels * jnp.maximum(total, 1.0)))

    def deviance(x):
        a, lam = x[:k], x[k:]
        return poisson_deviance(y, a @ signature_rows(spec, states, fixed_rows, lam))

    def fisher_scoring(x):
        a, lam = x[:k], x[k:]
        mu, jac, _ = _mixture_jacobian(spec, states, fixed_rows, a, lam)
        ratio, inverse = poisson_weights(y, mu)
        return poisson_deviance(y, mu), 2.0 * jac.T @ (1.0 - ratio), 2.0 * (jac.T * inverse) @ jac

    def project(x):
        return jnp.concatenate([jnp.maximum(x[:k], 0.0), project_latent(spec, x[k:], lower, upper)])

    def optimality(x):
        # The remaining Newton step in standard errors (deviance units, see gtol above).
        _, g, h = fisher_scoring(x)
        return stationarity(x, basis.T @ g, basis.T @ h @ basis, basis, project)

    method = as_solver(spec.solver)
    if isinstance(method, Newton):
        res = damped_newton(deviance, jnp.concatenate([a0, lam0]), basis=basis, project=project,
                            derivatives=fisher_scoring, max_iter=spec.max_iter, xtol=spec.tol, ftol=1e-9,
                            gtol=gtol, trace=spec.trace)
        x, n_iter, trace = res.x, res.n_iter, res.trace
    else:
        amplitude, latent = method.amplitude, method.latent

        def project_lam(lv):
            return project_latent(spec, lv, lower, upper)

        def a_block(a, lam):
            return amplitude(a, signature_rows(spec, states, fixed_rows, lam).T, y)

        def lam_block(a, lam):
            def f(lv):
                return poisson_deviance(y, a @ signature_rows(spec, states, fixed_rows, lv))

            return latent(lam, f, project_lam, v_lam, lower, upper)

        updates, state0 = method.outer.updates(a_block, lam_block, project_lam, a0, lam0)

        def rel_change(old, new):
            (a_old, lam_old), (a_new, lam_new) = old[:2], new[:2]
            s_old = signature_rows(spec, states, fixed_rows, lam_old)
            s_new = signature_rows(spec, states, fixed_rows, lam_new)
            da = jnp.linalg.norm(a_new - a_old) / jnp.maximum(jnp.linalg.norm(a_old), TINY)
            ds = jnp.linalg.norm(s_new - s_old) / jnp.maximum(jnp.linalg.norm(s_old), TINY)
            return (da < spec.tol) & (ds < spec.tol)

        out = block_solve(updates, lambda s, _: deviance(jnp.concatenate(s[:2])), state0, None,
                          max_iter=spec.max_iter, tol=None, stop=lambda o, n, _: rel_change(o, n),
                          optimality=lambda s, _: optimality(jnp.concatenate(s[:2])) / gtol, gtol=1.0)
        x, n_iter, trace = jnp.concatenate(out.state[:2]), out.n_iter, out.trace

    # No projection again here: the iterates are feasible, and re-projecting moves the
    # weights by an ulp off their plane, which alone changes a float32 deviance by ~1e-2.
    a, lam = x[:k], x[k:]
    # Two multiplicative updates at the final signatures: they never raise the deviance and
    # restore the Poisson sum rule (fitted total = observed total, exact at any KKT point)
    # that a Newton step stopped within gtol leaves off by a fraction of a standard error.
    rows_final = signature_rows(spec, states, fixed_rows, lam)
    a = poisson_multiplicative_step(poisson_multiplicative_step(a, rows_final.T, y), rows_final.T, y)
    x = jnp.concatenate([a, lam])
    residual = optimality(x)
    mu, jac, rows = _mixture_jacobian(spec, states, fixed_rows, a, lam)
    # Fisher information in the free coordinates (counts, tangent of each weight plane).
    jt = jnp.concatenate([jac[:, :k], jac[:, k:] @ v_lam], axis=1)
    fisher = (jt.T * poisson_weights(y, mu)[1]) @ jt
    active = jnp.concatenate([a > 1e-6 * jnp.maximum(jnp.max(a), TINY), jnp.ones(v_lam.shape[1], bool)])
    cov = fisher_covariance(fisher, active)
    stderr = jnp.sqrt(jnp.maximum(jnp.diagonal(cov)[:k], 0.0))
    cov_lam = v_lam @ cov[k:, k:] @ v_lam.T
    lam_err = jnp.sqrt(jnp.maximum(jnp.diagonal(cov_lam), 0.0)) if d_tot else lam
    sig = rows.T if spec.want_signatures else jnp.zeros((0,), dtype)
    dev = poisson_deviance(y, mu)
    trace = (jnp.concatenate([deviance(jnp.concatenate([a0, lam0]))[None], trace]).at[n_iter].set(dev)
             if spec.trace else jnp.zeros((0,), dtype))
    status = decide(all_finite(x, dev), residual <= gtol, n_iter >= spec.max_iter)
    n_params = k + v_lam.shape[1]
    pvalue = gof_pvalue(dev * scale, mu * scale, n_params)
    if grid_rows is not None:
        scores, restart = _zero_source_scores(spec, fixed_rows, y, a, mu, grid_lams, grid_rows)
    else:
        scores, restart = jnp.zeros((len(spec.manifolds),), dtype), lam
    # Scaled back to the measured counts (see SCALED_TOTAL): counts and the deviance scale
    # with the spectrum, standard errors of counts with its square root, those of the
    # weights with its inverse square root.
    root = jnp.sqrt(scale)
    return (a * scale, stderr * root, lam, lam_err / root, sig, dev * scale, n_iter, status == Status.CONVERGED,
            trace * scale, status, pvalue, residual / gtol, jnp.max(scores, initial=0.0), restart)


@partial(jax.jit, static_argnums=0)
def unmix_batch(spec, states, fixed_rows, lower, upper, grid_lams, use_grid, y, lam0, scale):
    y = y.astype(lower.dtype)
    scale = scale.astype(lower.dtype)
    # The grid's signatures are the same for every spectrum: decoded once per chunk.
    grid_rows = tuple(_model_rows_at(man, params, g, spec.n_channels)
                      for man, params, g in zip(spec.manifolds, states, grid_lams)) if grid_lams else None
    return jax.vmap(lambda yi, li, si: unmix_one(spec, states, fixed_rows, yi, li, lower, upper, grid_lams,
                                                  grid_rows, si, use_grid))(y, lam0, scale)
