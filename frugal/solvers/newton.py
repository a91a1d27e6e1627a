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
the Marquardt-scaled projected-gradient residual ``r`` (``D t`` for the projected scaled
gradient step ``t``; ``r^2 / 2`` is the decrease still within reach of a Newton step, in
the objective's units) is at most ``gtol``; a loop that stops on a small step or a small
decrease without passing that test reports ``STALLED``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

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


def sum_to_one_basis(d: int, dtype=jnp.float32):
    """Orthonormal ``(d, d-1)`` basis of ``{v : sum(v) = 0}`` (the tangent of the weights' plane)."""
    q, _ = jnp.linalg.qr(jnp.eye(d, dtype=dtype) - 1.0 / d)
    return q[:, : d - 1]


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
    gtol: optimality tolerance on the scaled projected-gradient residual (square root of
      objective units; e.g. ``0.02`` for a Poisson deviance means a hundredth of a
      standard error). The loop also stops as soon as the test passes. Default
      ``1e-3 * sqrt(|f(x0)|)`` plus a few ulps: half its square, the decrease still
      available, is a millionth of the starting objective.
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
        # Jacobi scaling (Marquardt): unknowns of very different scales (counts ~1e5 and
        # weights ~1) get comparable curvature, so one damping fits all of them.
        diag = jnp.abs(jnp.diagonal(h))
        d = jnp.sqrt(jnp.maximum(diag, 1e-12 * jnp.max(diag)) + jnp.finfo(dtype).tiny)
        e, q = jnp.linalg.eigh(0.5 * (h + h.T) / (d[:, None] * d[None, :]))
        return f, (v.T @ g) / d, e, q, d

    f0, g0, e0, q0, d0 = tangent_derivatives(x0)
    eps = jnp.finfo(dtype).eps
    gtol_eff = (1e-3 * jnp.sqrt(jnp.abs(f0)) if gtol is None else jnp.asarray(gtol, dtype)) + 10 * eps

    def residual(x, g, d):
        # The projected scaled-gradient step, measured back in the scaled tangent coordinates.
        trial = proj(x - v @ (g / d))
        return jnp.max(jnp.abs((v.T @ (trial - x)) * d), initial=0.0)

    def cond(s):
        return (s["i"] < max_iter) & ~s["done"]

    def body(s):
        step_t = -(s["q"] @ ((s["q"].T @ s["g"]) / (jnp.abs(s["e"]) + s["nu"]))) / s["d"]
        trial = proj(s["x"] + v @ step_t)
        f_trial = fun(trial)
        accept = jnp.isfinite(f_trial) & (f_trial < s["f"])
        f_new, g_new, e_new, q_new, d_new = jax.lax.cond(
            accept, tangent_derivatives, lambda _: (s["f"], s["g"], s["e"], s["q"], s["d"]), trial
        )
        moved = jnp.max(jnp.abs(trial - s["x"]) / jnp.maximum(jnp.abs(s["x"]), 1.0))
        small = accept & ((moved < xtol) | (s["f"] - f_trial <= ftol_eff * (1.0 + jnp.abs(s["f"]))))
        stuck = s["nu"] > 1e12
        x_new = jnp.where(accept, trial, s["x"])
        optimal = residual(x_new, g_new, d_new) <= gtol_eff
        out = {
            "x": x_new,
            "f": f_new, "g": g_new, "e": e_new, "q": q_new, "d": d_new,
            "nu": jnp.where(accept, jnp.maximum(s["nu"] * 0.3, 1e-9), s["nu"] * 10.0),
            "i": s["i"] + 1,
            "done": small | stuck | optimal,
        }
        if trace:
            out["trace"] = s["trace"].at[s["i"]].set(f_new)
        return out

    init = {"x": x0, "f": f0, "g": g0, "e": e0, "q": q0, "d": d0, "nu": jnp.asarray(1e-3, dtype), "i": jnp.int32(0),
            "done": residual(x0, g0, d0) <= gtol_eff}
    if trace:
        init["trace"] = jnp.full((max_iter,), jnp.nan, f0.dtype)
    out = jax.lax.while_loop(cond, body, init)
    r = residual(out["x"], out["g"], out["d"])
    status = decide(all_finite(out["x"], out["f"]), r <= gtol_eff, out["i"] >= max_iter)
    return NewtonResult(out["x"], out["f"], out["i"], status == Status.CONVERGED, out.get("trace"), status, r)
