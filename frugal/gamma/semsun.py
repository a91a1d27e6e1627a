"""SEMSUN: Poisson unmixing of gamma-ray spectra with signatures that move on IAE manifolds.

Phan, Bobin, Thiam, Bobin, NIM A 1060 (2024) 169028; DESIGN.md section 3. A measured
spectrum ``y`` (``m`` channels of counts) is modelled as

.. math:: y \\sim \\mathrm{Poisson}(S(\\lambda)\\, a), \\qquad
          S = [\\,b,\\ f_1, \\dots,\\ s_1(\\lambda_1), \\dots, s_K(\\lambda_K)\\,]

with fixed unit-sum signatures (the measured natural background ``b`` and any extra fixed
ones ``f``), unit-sum signatures ``s_k`` decoded by an IAE at barycentric weights
``lambda_k`` (one IAE per radionuclide, SEMSUN-i, or one *joint* IAE whose inputs are the
radionuclides and which shares one ``lambda``, SEMSUN-j), and counts ``a >= 0`` (the
expected number of counts of each source in the ``m`` channels).

Estimation minimises the Poisson deviance over ``a >= 0`` and the ``lambda_k`` (sum to one,
within the range the IAE saw in training). Two solvers, both one jitted program vmapped
over the batch of spectra:

* ``"newton"`` (default): damped projected Newton on all unknowns at once with the Fisher
  scoring curvature ``J^T diag(1/mu) J`` (``J = d mu / d(a, lambda)`` by forward-mode
  autodiff), started from multiplicative updates at the initial ``lambda``.
* ``"bcd"``: the published block coordinate descent: an ``a``-step of multiplicative
  (NNPU) updates warm-started, then a ``lambda``-step (here damped Newton with exact
  derivatives instead of SLSQP with finite differences), until the relative changes of
  ``a`` and ``S`` fall below ``tol``.

Standard errors come from the Poisson Fisher information at the estimate, including the
uncertainty of the ``lambda`` (so the ``a`` errors are those of the full model, not of
known signatures).
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from frugal._precision import full_precision
from frugal._validation import check_array, check_float, check_int
from frugal.iae import model as M
from frugal.iae.model import as_models
from frugal.ops.gof import gof_pvalue
from frugal.ops.losses import TINY, poisson_deviance
from frugal.ops.proxes import project_box_section
from frugal.solvers.batching import bucket_size, default_chunk_size, first_of_batch, run_batched
from frugal.solvers.block import block_solve
from frugal.solvers.multiplicative import (
    fisher_covariance,
    nnpu_init,
    nnpu_unchecked,
    poisson_multiplicative_step,
)
from frugal.solvers.newton import damped_newton, stationarity, sum_to_one_basis
from frugal.solvers.status import Status, all_finite, decide, status_counts
from frugal.solvers.variants import BCD, Newton, as_solver


class UnmixResult(NamedTuple):
    """Result of :func:`unmix` and of the baselines (leading batch axis when a batch was given).

    counts: ``(K,)`` estimated expected counts per source, in the order of ``names``
      (background first, then fixed signatures, then the IAE sources).
    stderr: ``(K,)`` standard errors of ``counts`` from the Poisson Fisher information.
    latent: one ``(d_k,)`` array of barycentric weights per IAE (empty for baselines).
    latent_stderr: their standard errors (same shapes).
    signatures: ``(m, K)`` unit-sum signatures at the estimate (``None`` if not asked).
    loss: Poisson deviance at the estimate (about ``m`` for a correct model).
    n_iter: iterations of the solver; converged: ``status == Status.CONVERGED``.
    names: the source names.
    trace: with ``return_trace=True``, ``(max_iter + 1,)`` deviance at the start and after
      each iteration (Newton iterations, or outer sweeps of ``"bcd"``), NaN after the stop.
    status: why the solver stopped (:class:`frugal.solvers.Status` codes): ``converged``
      only when the first-order optimality test passed.
    Where the data carry no information on an unknown (an empty spectrum, a model at zero
    counts: the Fisher information is singular there), its Fisher error is replaced by the
    scale of the likelihood: ``sqrt(max(count, 1))`` for a count (the likelihood of a count
    with nothing observed falls as ``exp(-a)``), the standard deviation of a uniform law over
    the training range for a weight.
    gof_pvalue: goodness of fit, the p-value of ``loss`` under the fitted model
      (:func:`frugal.ops.gof.gof_pvalue`, valid at low counts); below 1e-3 the model does
      not describe the spectrum.
    """

    counts: np.ndarray
    stderr: np.ndarray
    latent: tuple
    latent_stderr: tuple
    signatures: np.ndarray | None
    loss: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    names: tuple
    trace: np.ndarray | None = None
    status: np.ndarray | None = None
    gof_pvalue: np.ndarray | None = None


class SolverSpec(NamedTuple):
    """Static description of the mixture and of the solver (a jit static argument).

    Part of the seam that :mod:`frugal.gamma.differentiable` builds on, with
    :func:`unmix_one`, :func:`signature_rows`, :func:`project_latent`,
    :func:`latent_basis` and :func:`as_models`. ``configs`` holds the ``IAEConfig`` of each
    model (in the order of the states and of the flat weight vector), ``n_channels`` is
    ``m`` (the width every signature is padded to), ``n_fixed`` the number of fixed
    signature rows; the other fields are the options of :func:`unmix` of the same names
    (``want_signatures``: return the signatures, ``trace``: record the deviance per
    iteration, ``gtol``: optimality tolerance in standard errors, ``grid``: compile the
    global start over a grid of the weights into :func:`unmix_one`). Build it with
    keyword arguments: fields may be added.
    """

    configs: tuple  # IAEConfig per model
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


# ---------------------------------------------------------------------------------------
# Pure core


def _model_rows(spec: SolverSpec, states, latents):
    """Unit-sum signature rows ``(K_iae, m)`` decoded from each model at its weights."""
    return jnp.concatenate([M.unit_signatures(config, state, lam, spec.n_channels)  # (c, m) each
                            for config, state, lam in zip(spec.configs, states, latents)], 0)


def _model_rows_at(config, state, lam_stack, n_channels):
    """Unit-sum rows ``(G, c, m)`` of one model at ``G`` weight vectors (the grid)."""
    return jax.vmap(lambda lam: M.unit_signatures(config, state, lam, n_channels))(lam_stack)


def _split_latent(spec: SolverSpec, flat):
    out, i = [], 0
    for config in spec.configs:
        out.append(flat[i : i + config.n_anchors])
        i += config.n_anchors
    return tuple(out)


def signature_rows(spec, states, fixed_rows, lam_flat):
    """Unit-sum signature rows ``(K, m)`` of the mixture at the weights ``lam_flat``.

    spec: the :class:`SolverSpec`; states: the IAE states, one per ``spec.configs``;
    fixed_rows: the fixed unit-sum signatures ``(F, m)`` (background first), returned as
    the first ``F`` rows; lam_flat: the barycentric weights of all models concatenated
    ``(sum d_k,)``. The other ``K - F = sum c_k`` rows are the signatures decoded by each
    IAE (``c_k`` inputs) at its weights, clipped at zero, padded to ``m`` channels and
    normalised to unit sum, so that the expected spectrum is ``counts @ rows``.
    """
    return jnp.concatenate([fixed_rows, _model_rows(spec, states, _split_latent(spec, lam_flat))], 0)


def project_latent(spec, lam_flat, lower, upper):
    """Euclidean projection of the concatenated weights onto their admissible set.

    lam_flat, lower, upper: ``(sum d_k,)``, the weights of all models in ``spec.configs``
    order and their bounds. Each model's block of ``d_k`` weights is projected onto its
    plane ``sum = 1`` within the box ``[lower, upper]``; returns ``(sum d_k,)``.
    """
    parts, i = [], 0
    for config in spec.configs:
        d = config.n_anchors
        parts.append(project_box_section(lam_flat[i : i + d], lower[i : i + d], upper[i : i + d], 1.0))
        i += d
    return jnp.concatenate(parts)


def latent_basis(spec, dtype):
    """Orthonormal basis ``(sum d_k, sum (d_k - 1))`` of the tangent of the weight planes.

    Block diagonal over the models of ``spec.configs``: the block of a model with ``d_k``
    weights spans the directions that keep their sum at one (moves ``lam + V @ t`` stay on
    every plane), in ``dtype``.
    """
    blocks = [sum_to_one_basis(c.n_anchors, dtype) for c in spec.configs]
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
    row_parts = [_model_rows(spec._replace(configs=(c,)), (st,), (lam,))
                 for c, st, lam in zip(spec.configs, states, lam_parts)]
    best = _profiled_deviance(jnp.concatenate([fixed_rows] + row_parts, 0), y, GRID_A_ITER)
    n_models = len(spec.configs)

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
    ok = mu > TINY
    inv_mu = jnp.where(ok, 1.0 / jnp.where(ok, mu, 1.0), 0.0)
    resid = jnp.where(ok, y * inv_mu - 1.0, 0.0)
    scores, nodes = [], []
    start = fixed_rows.shape[0]
    for i, config in enumerate(spec.configs):
        a_i = a[start : start + config.n_inputs]
        start += config.n_inputs
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
    k = fixed_rows.shape[0] + sum(c.n_inputs for c in spec.configs)
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
        ok = mu > TINY
        w1 = jnp.where(ok, 1.0 - y / jnp.where(ok, mu, 1.0), 1.0)
        w2 = jnp.where(ok, 1.0 / jnp.where(ok, mu, 1.0), 0.0)
        return poisson_deviance(y, mu), 2.0 * jac.T @ w1, 2.0 * (jac.T * w2) @ jac

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
    w = jnp.where(mu > TINY, 1.0 / jnp.where(mu > TINY, mu, 1.0), 0.0)
    fisher = (jt.T * w) @ jt
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
        scores, restart = jnp.zeros((len(spec.configs),), dtype), lam
    # Scaled back to the measured counts (see SCALED_TOTAL): counts and the deviance scale
    # with the spectrum, standard errors of counts with its square root, those of the
    # weights with its inverse square root.
    root = jnp.sqrt(scale)
    return (a * scale, stderr * root, lam, lam_err / root, sig, dev * scale, n_iter, status == Status.CONVERGED,
            trace * scale, status, pvalue, residual / gtol, jnp.max(scores, initial=0.0), restart)


@partial(jax.jit, static_argnums=0)
def _unmix_batch(spec, states, fixed_rows, lower, upper, grid_lams, use_grid, y, lam0, scale):
    y = y.astype(lower.dtype)
    scale = scale.astype(lower.dtype)
    # The grid's signatures are the same for every spectrum: decoded once per chunk.
    grid_rows = tuple(_model_rows_at(c, st, g, spec.n_channels)
                      for c, st, g in zip(spec.configs, states, grid_lams)) if grid_lams else None
    return jax.vmap(lambda yi, li, si: unmix_one(spec, states, fixed_rows, yi, li, lower, upper, grid_lams,
                                                  grid_rows, si, use_grid))(y, lam0, scale)


# ---------------------------------------------------------------------------------------
# Argument handling shared with the baselines


def float_dtype():
    """The working precision: float32, or float64 when ``jax.enable_x64`` is on."""
    return np.float64 if jax.config.jax_enable_x64 else np.float32


#: Spectra validated at a time: a memory-mapped batch of millions is never copied whole.
_CHECK_ROWS = 1 << 16


def check_counts(counts, name: str = "counts", *, convert: bool = True):
    """Counts as a ``(B, m)`` array (in :func:`float_dtype`, or as given with
    ``convert=False``), plus whether a batch was given.

    The checks (non-negative, finite, integer) run over blocks of rows, so a large
    ``np.memmap`` is validated without being loaded or copied whole.
    """
    arr = counts if isinstance(counts, np.ndarray) else check_array(counts, name, ndim=(1, 2), dtype=None)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must have 1 or 2 dimension(s), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    batched = arr.ndim == 2
    arr = arr.reshape(1, -1) if not batched else arr
    floating = np.issubdtype(arr.dtype, np.floating)
    fractional = False
    for start in range(0, arr.shape[0], _CHECK_ROWS):
        block = np.asarray(arr[start : start + _CHECK_ROWS])
        if floating:
            finite = np.isfinite(block)
            if not finite.all():
                raise ValueError(f"{name} contains {int(block.size - np.count_nonzero(finite))} non-finite "
                                 "value(s) (NaN or inf)")
            fractional = fractional or bool(np.any(block != np.round(block)))
        if np.any(block < 0):
            raise ValueError(f"{name} must be non-negative, found minimum {block.min():.4g}")
    if fractional:
        warnings.warn(
            f"{name} are not all integers: the Poisson likelihood is used as a quasi-likelihood",
            UserWarning, stacklevel=3,
        )
    return (arr.astype(float_dtype()) if convert else arr), batched


def fixed_signature_rows(background, signatures, m: int):
    """Unit-sum rows ``(F, m)`` for the background and extra fixed signatures, with names."""
    rows, names = [], []
    if background is not None:
        b = check_array(background, "background", ndim=1, nonnegative=True)
        if b.shape[0] != m:
            raise ValueError(f"background has {b.shape[0]} channels but counts have {m}")
        if b.sum() <= 0:
            raise ValueError("background is all zero")
        rows.append(b / b.sum())
        names.append("background")
    if signatures is not None:
        if isinstance(signatures, dict):
            names_s, arrs = list(signatures), list(signatures.values())
        else:
            arrs = list(check_array(signatures, "signatures", ndim=(1, 2), nonnegative=True).reshape(-1, m)
                        if np.ndim(signatures) in (1, 2) and np.shape(signatures)[-1] == m
                        else [signatures])
            names_s = [f"fixed{i}" for i in range(len(arrs))]
        for nm, s in zip(names_s, arrs):
            s = check_array(s, f"signatures[{nm!r}]", ndim=1, nonnegative=True)
            if s.shape[0] != m:
                raise ValueError(f"signatures[{nm!r}] has {s.shape[0]} channels but counts have {m}")
            if s.sum() <= 0:
                raise ValueError(f"signatures[{nm!r}] is all zero")
            rows.append(s / s.sum())
            names.append(str(nm))
    dtype = float_dtype()
    return (np.stack(rows).astype(dtype) if rows else np.zeros((0, m), dtype)), names


def latent_setup(models, bounds, latent0):
    """Concatenated lower/upper bounds of the weights and the starting weights per model.

    bounds: ``"training"`` (the range each IAE saw in training), ``"simplex"`` or ``None``
    (:meth:`frugal.iae.IAEModel.weight_bounds`, for every model); latent0: ``None`` (the
    middle of the training range) or one ``(d_k,)`` (or ``(B, d_k)``) array per model.
    """
    if not (bounds is None or isinstance(bounds, str)):
        raise ValueError(f"bounds must be 'training', 'simplex' or None (the same for every model), got {bounds!r}")
    lower, upper, start = [], [], []
    for i, mdl in enumerate(models):
        d = mdl.n_anchors
        lo, hi = mdl.weight_bounds(bounds)
        lower.append(lo)
        upper.append(hi)
        if latent0 is None:
            mid = 0.5 * (mdl.latent_bounds[0] + mdl.latent_bounds[1])
            start.append(mid / mid.sum())
        else:
            start.append(check_array(latent0[i], f"latent0[{i}]", ndim=(1, 2), shape=(d,)))
    return (np.concatenate(lower).astype(float_dtype()), np.concatenate(upper).astype(float_dtype()), start)


# Compiled once: called eagerly, its bisection loop would be traced anew on every call.
_project_box = jax.jit(project_box_section)


def _lattice(d: int, resolution: int) -> np.ndarray:
    """All points of the standard simplex with coordinates in ``{0, 1/r, ..., 1}``."""
    if d == 1:
        return np.ones((1, 1))
    pts = []

    def rec(prefix, left, slots):
        if slots == 1:
            pts.append(prefix + [left])
            return
        for v in range(left + 1):
            rec(prefix + [v], left - v, slots - 1)

    rec([], resolution, d)
    return np.asarray(pts, float) / resolution


def latent_grid(models, lower, upper, max_nodes: int = GRID_NODES) -> tuple:
    """Grid nodes of the global start, one ``(G_k, d_k)`` array of weights per model: a
    lattice of the range each model saw in training (``lambda = lo + p (1 - sum lo)`` for
    the lattice points ``p`` of the simplex, ``lo`` the training lower bounds), as fine as
    ``max_nodes`` allows, projected on the solver's bounds ``lower``/``upper``."""
    edges = np.concatenate([[0], np.cumsum([mdl.n_anchors for mdl in models])])
    out = []
    for k, mdl in enumerate(models):
        d = mdl.n_anchors
        resolution = 1
        while d > 1 and len(_lattice(d, resolution + 1)) <= max_nodes:
            resolution += 1
        lo_train = np.asarray(mdl.latent_bounds[0], float)
        spare = max(1.0 - lo_train.sum(), 0.0)
        nodes = lo_train[None] + _lattice(d, resolution) * spare
        lo, hi = lower[edges[k]:edges[k + 1]], upper[edges[k]:edges[k + 1]]
        nodes = np.asarray(_project_box(jnp.asarray(nodes, lower.dtype), jnp.asarray(lo), jnp.asarray(hi)))
        out.append(np.unique(nodes.astype(lower.dtype), axis=0))
    return tuple(out)


def _reject_tracers(**arrays):
    for name, value in arrays.items():
        if isinstance(value, jax.core.Tracer) or any(
                isinstance(v, jax.core.Tracer) for v in (value.values() if isinstance(value, dict) else ())):
            raise TypeError(
                f"unmix got a JAX tracer for {name}: it validates and chunks its inputs on the host and "
                "cannot run under jax.grad/jit/vmap; use frugal.gamma.unmix_function(models), a pure "
                "function of (counts, fixed signatures, model states) that these transformations accept")


def _count_scales(y, dtype) -> np.ndarray:
    """Per-spectrum factor ``c >= 1`` with ``total / c <= SCALED_TOTAL`` (see there)."""
    limit = SCALED_TOTAL[np.dtype(dtype)]
    # float64 sums on the host: exact for any integer dtype, one block of rows at a time.
    totals = np.concatenate([np.asarray(y[i:i + _CHECK_ROWS], np.float64).sum(1)
                             for i in range(0, y.shape[0], _CHECK_ROWS)])
    if not np.all(np.isfinite(totals)):
        raise ValueError("counts: a spectrum's total is not finite in float64")
    peak = max(float(np.max(y[i:i + _CHECK_ROWS])) for i in range(0, y.shape[0], _CHECK_ROWS))
    if peak > float(np.finfo(dtype).max) / 1e3:
        raise ValueError(f"counts reach {peak:.3g}, beyond what {np.dtype(dtype).name} can hold in the solver; "
                         "enable float64 with jax.config.update('jax_enable_x64', True)")
    return np.maximum(totals / limit, 1.0)


def _spread_starts(models, lower, upper, first, n: int) -> list:
    """Up to ``n`` more starting weight vectors (concatenated over the models), unlike
    ``first`` (the ``(B, d)`` starts already used): the middle of every model's training
    range, then every model at its anchor ``j`` (``j mod d_k``), projected on its bounds."""
    if n <= 0:
        return []
    sizes = [mdl.n_anchors for mdl in models]
    edges = np.concatenate([[0], np.cumsum(sizes)])
    dtype = lower.dtype

    def at(point_of_model):
        parts = []
        for k, d in enumerate(sizes):
            lo, hi = lower[edges[k]:edges[k + 1]], upper[edges[k]:edges[k + 1]]
            x = jnp.asarray(point_of_model(k, d), dtype)
            parts.append(np.asarray(_project_box(x, jnp.asarray(lo), jnp.asarray(hi))))
        return np.concatenate(parts).astype(dtype)

    def middle(k, _):
        mid = 0.5 * (models[k].latent_bounds[0] + models[k].latent_bounds[1])
        return mid / mid.sum()

    candidates = [at(middle)] + [at(lambda k, d, j=j: np.eye(d)[j % d]) for j in range(max(sizes))]
    # A start that equals one already used (e.g. latent0 at an anchor) would only repeat it.
    used = [first[0]] if np.all(first == first[0]) else []
    out = []
    for x in candidates:
        if len(out) < n and all(np.max(np.abs(x - u)) > 1e-3 for u in used):
            out.append(x)
            used.append(x)
    return out


class _Solved(NamedTuple):
    """What one batched solve returns (NumPy leaves, leading batch axis)."""

    counts: np.ndarray
    stderr: np.ndarray
    latent: np.ndarray
    latent_stderr: np.ndarray
    signatures: np.ndarray
    loss: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    trace: np.ndarray
    status: np.ndarray
    pvalue: np.ndarray
    residual: np.ndarray  # optimality residual over its tolerance (<= 1: optimal)
    score: np.ndarray  # largest zero-source score (see _zero_source_scores)
    restart: np.ndarray  # weights to restart from where that score is large


def _better(best, new):
    """Per spectrum, the solve with the lower deviance (a NaN never replaces a finite one)."""
    if best is None:
        return new
    take = ~(new.loss >= best.loss) & np.isfinite(new.loss)
    return jax.tree_util.tree_map(
        lambda n, o: np.where(take.reshape((-1,) + (1,) * (np.ndim(n) - 1)), n, o), new, best)


def _put(full, index, part):
    full = np.array(full, copy=True)
    full[index] = part
    return full


#: p-value of the deviance below which a fit is reported as not describing its spectrum.
GOF_WARN = 1e-3


def _warn_status(status, pvalue, scales, dtype):
    bad = status != Status.CONVERGED
    if np.any(bad):
        counts = status_counts(status[bad])
        warnings.warn(f"{int(bad.sum())} of {status.size} fit(s) did not pass the optimality test "
                      f"({', '.join(f'{n}: {c}' for n, c in counts.items())}); see UnmixResult.status",
                      UserWarning, stacklevel=3)
    poor = np.asarray(pvalue) < GOF_WARN
    if np.any(poor):
        warnings.warn(f"{int(poor.sum())} of {status.size} fit(s) have a goodness-of-fit p-value below "
                      f"{GOF_WARN:g}: the model does not describe those spectra (missing source, wrong "
                      "background or calibration?); see UnmixResult.gof_pvalue", UserWarning, stacklevel=3)
    if np.any(scales > 1) and np.dtype(dtype) == np.float32:
        worst = float(np.sqrt(scales.max()))
        warnings.warn(f"spectra with more than {SCALED_TOTAL[np.dtype(dtype)]:.0e} counts: float32 locates their "
                      f"optimum to about {0.05 * worst:.2g} standard errors; enable float64 "
                      "(jax.config.update('jax_enable_x64', True)) for more", UserWarning, stacklevel=3)


@full_precision
def unmix(
    counts,
    models,
    *,
    background=None,
    signatures=None,
    names: Sequence[str] | None = None,
    latent0=None,
    bounds="training",
    solver="newton",
    a_step: str | None = None,
    latent_step: str | None = None,
    outer: str | None = None,
    max_iter: int = 100,
    a_iter: int = 200,
    latent_iter: int | None = None,
    tol: float = 1e-5,
    chunk_size: int | None = None,
    devices=None,
    return_signatures: bool = True,
    return_trace: bool = False,
    n_starts: int | None = None,
    grid_start: bool = True,
    gtol: float = 5e-2,
) -> UnmixResult:
    """Unmix gamma-ray spectra into counts per source with signatures on IAE manifolds.

    counts: ``(m,)`` or ``(B, m)`` measured counts (non-negative, finite).
    models: one IAEModel per radionuclide (SEMSUN-i; a model with ``n < m`` channels
      describes the first ``n`` channels, zero beyond) or one joint IAEModel whose inputs
      are the radionuclides (SEMSUN-j).
    background: optional ``(m,)`` fixed background shape (normalised here).
    signatures: optional extra fixed signatures, ``(F, m)`` or a dict name -> ``(m,)``.
    names: names of the IAE sources (default ``source0``, ...).
    latent0: starting weights, one ``(d_k,)`` per model (default: the middle of the range
      seen in training); ``bounds``: ``"training"`` (that range), ``"simplex"`` or ``None``.
    solver: ``"newton"`` (joint Fisher-scoring Newton, default) or ``"bcd"`` (block
      coordinate descent as published, exact derivatives), or a value of
      :mod:`frugal.solvers.variants` (``Newton()``, ``BCD(amplitude=Fista(n_iter=50),
      outer=IPALM())``). By name the pieces of ``"bcd"`` are chosen by ``a_step`` in
      ``"multiplicative"`` (default), ``"newton"``, ``"fista"`` (``a_iter`` iterations);
      ``latent_step`` in ``"newton"`` (default), ``"pg"``, ``"lbfgsb"``, ``"adam"``
      (``latent_iter`` iterations, default that step's own); ``outer`` in
      ``"gauss-seidel"`` (default), ``"jacobi"``, ``"ipalm"``. They apply to
      ``solver="bcd"`` only: with ``"newton"`` or a solver value they are an error.
    a_iter: multiplicative updates of the counts at the start (and the iterations of the
      amplitude step of ``"bcd"`` given by name).
    chunk_size: spectra per compiled batch; larger batches run chunk by chunk in bounded
      memory. Default: 16 on a CPU, where small chunks are faster, and 4096 on GPUs/TPUs
      (:data:`frugal.solvers.batching.CHUNK_SIZE`); raise it on a GPU with memory to
      spare, lower it for very large models.
    devices: ``None`` (all local devices: the batch is sharded over them), a number of
      devices, or a list of ``jax.Device``; see :mod:`frugal.solvers.batching`.
    return_signatures: also return the ``(m, K)`` signatures at the estimate (leave off
      for very large batches: they are the bulk of the output).
    return_trace: also return the deviance after each iteration (``trace``), to study
      convergence; see ``benchmarks/solvers.py``.
    n_starts: solve from up to this many starting weights and keep, spectrum by spectrum,
      the lowest deviance: ``latent0`` (or the default), the middle of every model's
      training range, then every model at its anchor 0, 1, ... (projected on the bounds),
      each skipped where it repeats an earlier start (at most ``max(d_k) + 2`` starts);
      each start costs one more solve. Default (``None``): one start with one model, every
      start with several (SEMSUN-i). With one IAE per radionuclide the deviance has local
      minima that the grid start alone does not escape: on paper A (``N = 100 000``, 60
      draws, four two-anchor IAEs) one start from the first anchor gave median errors of
      +3.4 % (Co60) and -5.3 % (Cs137), four starts +0.7 % and -0.2 % from any
      ``latent0`` (the oracle: -0.2 % and -0.4 %; ``benchmarks/README.md``).
    grid_start: start each solve from the best node of a lattice of every model's training
      range (counts profiled by multiplicative updates; several models coordinate-wise),
      so that the answer does not depend on ``latent0``; and solve again, from the node
      where it would enter the fit, any spectrum whose model sources all ended at zero
      counts while their score there exceeds :data:`ZERO_SOURCE_SCORE` standard errors.
    gtol: optimality tolerance, in standard errors: ``status`` is ``converged`` only when
      the Fisher-scaled projected-gradient residual is below it (floored at the working
      precision's resolution: see the warning for spectra above :data:`SCALED_TOTAL`).
      The default, 0.05, is what float32 resolves reliably (decoder rounding moves the
      optimum by ~0.01-0.02 standard errors against float64); an estimate that close to the
      optimum changes no interval.

    Computations run in float32, or in float64 when ``jax.enable_x64`` is on.

    Spectra of any finite total are accepted: above :data:`SCALED_TOTAL` counts the solver
    works on the spectrum scaled down and scales the results back. Warns when a fit did not
    pass the optimality test or its goodness-of-fit p-value is below :data:`GOF_WARN`.

    Returns an :class:`UnmixResult`; counts are ordered background, fixed, IAE sources.
    """
    _reject_tracers(counts=counts, background=background, signatures=signatures)
    models = as_models(models)
    a_iter = check_int(a_iter, "a_iter", minimum=1)
    method = as_solver(solver, a_step=a_step, latent_step=latent_step, outer=outer, a_iter=a_iter,
                       latent_iter=latent_iter)
    if isinstance(method, BCD) and method.latent.two_anchors_only and any(mdl.n_anchors != 2 for mdl in models):
        raise ValueError(f"latent step {method.latent!r} needs models with two anchors (one free weight each)")
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    tol = check_float(tol, "tol", minimum=0.0, strict=True)
    chunk_size = default_chunk_size(devices) if chunk_size is None else check_int(chunk_size, "chunk_size",
                                                                                   minimum=1)
    n_starts = (1 if len(models) == 1 else max(mdl.n_anchors for mdl in models) + 2) if n_starts is None \
        else check_int(n_starts, "n_starts", minimum=1)
    gtol = check_float(gtol, "gtol", minimum=0.0, strict=True)
    # Converted chunk by chunk on the device: a memory-mapped batch is never copied whole.
    y, batched = check_counts(counts, convert=False)
    b, m = y.shape
    fixed_rows, fixed_names = fixed_signature_rows(background, signatures, m)
    iae_names = []
    for i, mdl in enumerate(models):
        if mdl.config.n_channels > m:
            raise ValueError(
                f"models[{i}] describes {mdl.config.n_channels} channels but counts have only {m}"
            )
        if mdl.config.joint and mdl.config.n_channels != m:
            raise ValueError(f"the joint model models[{i}] has {mdl.config.n_channels} channels, counts have {m}")
        iae_names += [f"source{len(iae_names) + j}" for j in range(mdl.config.n_inputs)]
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(iae_names):
            raise ValueError(f"names must have {len(iae_names)} entries (one per IAE source), got {len(names)}")
        iae_names = names

    lower, upper, start = latent_setup(models, bounds, latent0)
    dtype = float_dtype()
    lam0 = np.concatenate([np.broadcast_to(s, (b, s.shape[-1])) for s in start], axis=-1).astype(dtype)
    starts = [lam0] + [np.broadcast_to(x, lam0.shape)
                       for x in _spread_starts(models, lower, upper, lam0, n_starts - 1)]
    scales = _count_scales(y, dtype)
    # Integers wider than 16 bits would be wrapped to 32 bits on the device, and scaled
    # spectra need float64 arithmetic: those are converted on the host, chunk by chunk.
    host_convert = bool(np.any(scales > 1)) or (np.issubdtype(y.dtype, np.integer) and y.dtype.itemsize > 2)

    def prepare(part):
        counts_part, lam_part, scale_part = part
        if host_convert:
            counts_part = (np.asarray(counts_part, np.float64) / scale_part[:, None]).astype(dtype)
        return counts_part, lam_part, scale_part

    # The grid start is compiled into every program (a traced flag turns it off), so that
    # grid_start=False and the restarts below run the program of the first solve.
    spec = SolverSpec(configs=tuple(mdl.config for mdl in models), n_channels=m, n_fixed=len(fixed_rows),
                      solver=method, max_iter=max_iter, a_iter=a_iter, tol=tol,
                      want_signatures=bool(return_signatures), trace=bool(return_trace), gtol=gtol, grid=True)
    grid_lams = tuple(jnp.asarray(g) for g in latent_grid(models, lower, upper))
    states = tuple(mdl.state for mdl in models)
    shared = (states, jnp.asarray(fixed_rows), jnp.asarray(lower), jnp.asarray(upper), grid_lams)
    first_chunk = min(chunk_size, bucket_size(b))

    def solve(use_grid, counts_, lam_, scale_):
        return _Solved(*run_batched(partial(_unmix_batch, spec), (counts_, lam_, scale_.astype(dtype)),
                                    shared + (jnp.asarray(use_grid),), chunk_size=chunk_size, devices=devices,
                                    prepare=prepare, buckets=True, min_chunk=first_chunk))

    best = None
    for lam_start in starts:  # a few whole-batch solves, each vmapped over the spectra
        best = _better(best, solve(bool(grid_start), y, lam_start, scales))
    # A model left at zero counts where it would enter the fit elsewhere on its manifold:
    # solve those spectra again from that point, keep the lower deviance.
    again = np.flatnonzero(best.score > ZERO_SOURCE_SCORE)
    if again.size:
        redo = solve(False, y[again], best.restart[again], scales[again])
        merged = _better(jax.tree_util.tree_map(lambda x: x[again], best), redo)
        best = jax.tree_util.tree_map(lambda full, part: _put(full, again, part), best, merged)
    stuck = best.score > ZERO_SOURCE_SCORE
    status = np.where(stuck & (best.status == Status.CONVERGED), np.int32(Status.STALLED), best.status)
    _warn_status(status, best.pvalue, scales, dtype)
    a, err, lam, lam_err, sig, loss, n_iter, trace = (best.counts, best.stderr, best.latent, best.latent_stderr,
                                                      best.signatures, best.loss, best.n_iter, best.trace)
    conv = status == Status.CONVERGED
    pvalue = best.pvalue
    err = np.where(np.isfinite(err), err, np.sqrt(np.maximum(a, 1.0))).astype(err.dtype)
    prior_sd = np.concatenate([(mdl.latent_bounds[1] - mdl.latent_bounds[0]) / np.sqrt(12.0) for mdl in models])
    lam_err = np.where(np.isfinite(lam_err), lam_err, prior_sd).astype(lam_err.dtype)
    splits = np.cumsum([mdl.n_anchors for mdl in models])[:-1]
    latent = tuple(np.split(lam, splits, axis=-1))
    latent_err = tuple(np.split(lam_err, splits, axis=-1))
    signatures_out = sig if return_signatures else None
    trace = trace if return_trace else None
    if not batched:
        a, err, loss, n_iter, conv, status, pvalue, trace, latent, latent_err, signatures_out = first_of_batch(
            (a, err, loss, n_iter, conv, status, pvalue, trace, latent, latent_err, signatures_out))
    return UnmixResult(a, err, latent, latent_err, signatures_out, loss, n_iter, conv,
                       tuple(fixed_names + iae_names), trace, status, pvalue)
