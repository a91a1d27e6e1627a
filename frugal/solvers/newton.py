"""Damped (Levenberg-Marquardt) projected Newton for a few latent variables.

For the latent step of BSP and SEMSUN the unknown is a handful of barycentric weights
(``d`` numbers summing to one), the objective is cheap to differentiate twice with JAX and
is not convex. Each iteration works in the coordinates ``t`` of the constraint's tangent
space (``x = x_k + V t`` with ``V`` orthonormal, ``1^T V = 0`` for the sum-to-one plane):

.. math:: t = -D^{-1} Q\\,\\mathrm{diag}\\big(1 / (|e_i| + \\nu)\\big)\\,Q^\\top D^{-1} g_t,
          \\qquad D^{-1} H_t D^{-1} = Q\\,\\mathrm{diag}(e)\\,Q^\\top,
          \\quad D = \\mathrm{diag}(|H_t|)^{1/2}

(Marquardt's scaling ``D`` makes the damping independent of the units of each unknown;
the absolute eigenvalues make it a descent direction where the Hessian is indefinite),
then ``x_+ = project(x_k + V t)``. A trial that lowers the objective is accepted and the
damping ``nu`` shrinks; otherwise ``nu`` grows, which shortens the step and turns it
towards the (projected) gradient. Everything runs under ``lax.while_loop`` and vmaps.

The result's ``status`` (:class:`frugal.solvers.status.Status`) is ``CONVERGED`` only when
the residual of :func:`stationarity` (the remaining Newton step, coordinate by coordinate,
in marginal standard errors of the quadratic model) is at most ``gtol``; a loop that stops
on a small step or a small decrease without passing that test reports ``STALLED``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from frugal.ops.losses import TINY
from frugal.solvers.status import Status, all_finite, decide


class NewtonResult(NamedTuple):
    """Solution ``x``, objective ``value``, iterations ``n_iter``, ``converged``
    (``status == Status.CONVERGED``); with ``trace=True``, ``trace`` holds the objective
    after each iteration (``(max_iter,)``, NaN beyond ``n_iter``; a refused trial repeats
    the previous value); ``status``: the stop reason; ``residual``: the scaled
    projected-gradient residual at ``x`` (the quantity compared with ``gtol``)."""

    x: jax.Array
    value: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    trace: jax.Array | None = None
    status: jax.Array | None = None
    residual: jax.Array | None = None


def stationarity(x, grad_t, hess_t, basis, project):
    r"""First-order optimality residual at ``x``: the Newton step in marginal standard errors.

    In the tangent coordinates (gradient ``grad_t``, Hessian ``hess_t``, directions
    ``basis``), a coordinate is held by its bound when the projected diagonal step
    ``-g_i / h_ii`` moves it by less than half; on the others (the free set ``F``) the
    residual is :math:`\max_{i \in F} |\delta_i| / \sqrt{(H_{FF}^{-1})_{ii}}` with
    :math:`\delta = H_{FF}^{-1} g_F` (absolute eigenvalues where ``H`` is indefinite), and
    on the held ones the scaled projected move :math:`\sqrt{h_{ii}}\,|\text{move}_i|`.
    Zero exactly at a KKT point and invariant to the units of each coordinate. Unlike a
    per-coordinate scaled gradient it sees the coupling: with two strongly correlated
    unknowns each gradient entry can be small while the optimum is many standard errors
    away. For a deviance (twice a negative log-likelihood) divide by ``sqrt(2)`` to read
    standard errors.
    """
    dtype = grad_t.dtype
    tiny = jnp.finfo(dtype).tiny
    diag = jnp.abs(jnp.diagonal(hess_t))
    d = jnp.sqrt(jnp.maximum(diag, 1e-12 * jnp.max(diag, initial=0.0)) + tiny)
    step = grad_t / d**2
    moved = basis.T @ (project(x - basis @ step) - x)
    free = jnp.abs(moved) >= 0.5 * jnp.abs(step)
    pair = free[:, None] & free[None, :]
    scaled = 0.5 * (hess_t + hess_t.T) / (d[:, None] * d[None, :])
    e, q = jnp.linalg.eigh(jnp.where(pair, scaled, jnp.eye(scaled.shape[0], dtype=dtype)))
    inv = jnp.where(pair, (q / jnp.maximum(jnp.abs(e), 1e-12)) @ q.T, 0.0)
    delta = inv @ (grad_t / d)
    se = jnp.sqrt(jnp.maximum(jnp.diagonal(inv), tiny))
    r = jnp.where(free, jnp.abs(delta) / se, jnp.abs(moved) * d)
    return jnp.max(jnp.where(jnp.isfinite(r), r, jnp.inf), initial=0.0)


def sum_to_one_basis(d: int, dtype=jnp.float32):
    """Orthonormal ``(d, d-1)`` basis of ``{v : sum(v) = 0}`` (the tangent of the weights' plane)."""
    q, _ = jnp.linalg.qr(jnp.eye(d, dtype=dtype) - 1.0 / d)
    return q[:, : d - 1]


def jacobi_scale(diag, tiny=TINY):
    r"""Marquardt's (Jacobi) scaling ``D`` of a curvature with diagonal ``diag`` ``(..., n)``:
    :math:`D_i = \sqrt{\max(h_i, 10^{-12} \max_j h_j) + \mathrm{tiny}}`, so that
    :math:`D^{-1} H D^{-1}` has a unit diagonal and one damping fits unknowns of very
    different scales (counts ~1e5 and weights ~1). An unknown without curvature (a source
    absent from the data) gets a small, finite scale instead of a division by zero."""
    return jnp.sqrt(jnp.maximum(diag, 1e-12 * jnp.max(diag, axis=-1, keepdims=True)) + tiny)


def damped_newton(
    fun: Callable,
    x0,
    *,
    basis=None,
    project: Callable | None = None,
    derivatives: Callable | None = None,
    max_iter: int = 30,
    xtol: float = 1e-6,
    ftol: float = 1e-10,
    gtol=None,
    trace: bool = False,
) -> NewtonResult:
    """Minimise ``fun(x)`` from ``x0`` by damped projected Newton steps.

    basis: ``(d, r)`` orthonormal directions the iterate may move in (``None``: all).
    project: maps a trial point back to the feasible set (``None``: no constraint).
    derivatives: ``x -> (f, g, H)`` in the full coordinates, to supply a cheaper or safer
      curvature than the exact Hessian (e.g. the Fisher / Gauss-Newton matrix
      ``J^T diag(1/m) J`` of a Poisson model). Default: ``jax.value_and_grad`` and
      ``jax.hessian`` of ``fun``.
    Stops when an accepted step moves ``x`` by less than ``xtol`` (max norm, relative to
    ``max(|x_i|, 1)`` so that large counts and unit-scale weights mix), when it lowers
    the objective by less than ``ftol * (1 + |f|)``, when the damping has grown so large
    that no step can lower the objective (a stationary point), or after ``max_iter``.
    gtol: optimality tolerance on :func:`stationarity` (for a Poisson deviance,
      ``0.014`` is a hundredth of a standard error). The loop also stops as soon as the
      test passes. Default ``1e-3 * sqrt(|f(x0)|)`` plus a few ulps.
    trace: also record the objective after each iteration (for convergence studies).
    """
    x0 = jnp.asarray(x0)
    dtype = x0.dtype
    v = jnp.eye(x0.shape[-1], dtype=dtype) if basis is None else jnp.asarray(basis, dtype)
    proj = (lambda x: x) if project is None else project
    x0 = proj(x0)
    if derivatives is None:
        value_and_grad = jax.value_and_grad(fun)
        hess = jax.hessian(fun)

        def full(x):
            f, g = value_and_grad(x)
            return f, g, hess(x)
    else:
        full = derivatives

    # A decrease below a few ulps of f cannot be measured: never ask for one.
    ftol_eff = max(ftol, 10 * float(jnp.finfo(dtype).eps))

    def tangent_derivatives(x):
        f, g, h = full(x)
        h = v.T @ h @ v
        d = jacobi_scale(jnp.abs(jnp.diagonal(h)), jnp.finfo(dtype).tiny)
        e, q = jnp.linalg.eigh(0.5 * (h + h.T) / (d[:, None] * d[None, :]))
        return f, (v.T @ g) / d, e, q, d

    f0, g0, e0, q0, d0 = tangent_derivatives(x0)
    eps = jnp.finfo(dtype).eps
    gtol_eff = (1e-3 * jnp.sqrt(jnp.abs(f0)) if gtol is None else jnp.asarray(gtol, dtype)) + 10 * eps

    def residual(x, g, e, q, d):
        # Back from the Marquardt-scaled coordinates to the tangent ones.
        return stationarity(x, g * d, ((q * e) @ q.T) * d[:, None] * d[None, :], v, proj)

    def cond(s):
        return (s["i"] < max_iter) & ~s["done"]

    # Near the optimum the decrease of a Newton step (r^2 / 2) can fall below the rounding
    # of f itself (a float32 deviance of 1e5 counts carries ~1e-4): a trial whose f is equal
    # within that noise but which halves the residual is then accepted, so the loop can reach
    # the optimality test instead of stalling on refused steps.
    noise = 100 * eps

    def body(s):
        step_t = -(s["q"] @ ((s["q"].T @ s["g"]) / (jnp.abs(s["e"]) + s["nu"]))) / s["d"]
        trial = proj(s["x"] + v @ step_t)
        f_trial, g_trial, e_trial, q_trial, d_trial = tangent_derivatives(trial)
        r_trial = residual(trial, g_trial, e_trial, q_trial, d_trial)
        finite = jnp.isfinite(f_trial) & jnp.all(jnp.isfinite(g_trial))
        decrease = finite & (f_trial < s["f"])
        level = finite & (f_trial <= s["f"] + noise * (1.0 + jnp.abs(s["f"]))) & (r_trial < 0.5 * s["r"])
        accept = decrease | level

        def pick(new, old):
            return jnp.where(accept, new, old)

        moved = jnp.max(jnp.abs(trial - s["x"]) / jnp.maximum(jnp.abs(s["x"]), 1.0))
        # Only a nearly undamped step that barely moves says the iterate has settled: a step
        # shortened by a large damping is small because the model was poor.
        small = decrease & (s["nu"] < 0.1) & (
            (moved < xtol) | (s["f"] - f_trial <= ftol_eff * (1.0 + jnp.abs(s["f"]))))
        stuck = s["nu"] > 1e12
        r_new = pick(r_trial, s["r"])
        optimal = r_new <= gtol_eff
        out = {
            "x": pick(trial, s["x"]),
            "f": pick(f_trial, s["f"]), "g": pick(g_trial, s["g"]), "e": pick(e_trial, s["e"]),
            "q": pick(q_trial, s["q"]), "d": pick(d_trial, s["d"]), "r": r_new,
            "nu": jnp.where(accept, jnp.maximum(s["nu"] * 0.3, 1e-9), s["nu"] * 10.0),
            "i": s["i"] + 1,
            "done": small | stuck | optimal,
        }
        f_new = out["f"]
        if trace:
            out["trace"] = s["trace"].at[s["i"]].set(f_new)
        return out

    r0 = residual(x0, g0, e0, q0, d0)
    init = {"x": x0, "f": f0, "g": g0, "e": e0, "q": q0, "d": d0, "r": r0, "nu": jnp.asarray(1e-3, dtype),
            "i": jnp.int32(0), "done": r0 <= gtol_eff}
    if trace:
        init["trace"] = jnp.full((max_iter,), jnp.nan, f0.dtype)
    out = jax.lax.while_loop(cond, body, init)
    r = out["r"]
    status = decide(all_finite(out["x"], out["f"]), r <= gtol_eff, out["i"] >= max_iter)
    return NewtonResult(out["x"], out["f"], out["i"], status == Status.CONVERGED, out.get("trace"), status, r)
