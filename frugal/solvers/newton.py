"""Damped (Levenberg-Marquardt) projected Newton for a few latent variables.

For the latent step of BSP and SEMSUN the unknown is a handful of barycentric weights
(``d`` numbers summing to one), the objective is cheap to differentiate twice with JAX and
is not convex. Each iteration works in the coordinates ``t`` of the constraint's tangent
space (``x = x_k + V t`` with ``V`` orthonormal, ``1^T V = 0`` for the sum-to-one plane):

.. math:: t = -Q\\,\\mathrm{diag}\\big(1 / (|e_i| + \\nu)\\big)\\,Q^\\top g_t,
          \\qquad H_t = Q\\,\\mathrm{diag}(e)\\,Q^\\top

(the absolute eigenvalues make it a descent direction where the Hessian is indefinite),
then ``x_+ = project(x_k + V t)``. A trial that lowers the objective is accepted and the
damping ``nu`` shrinks; otherwise ``nu`` grows, which shortens the step and turns it
towards the (projected) gradient. Everything runs under ``lax.while_loop`` and vmaps.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class NewtonResult(NamedTuple):
    """Solution ``x``, objective ``value``, iterations ``n_iter`` and ``converged`` flag."""

    x: jax.Array
    value: jax.Array
    n_iter: jax.Array
    converged: jax.Array


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
    max_iter: int = 30,
    xtol: float = 1e-6,
    ftol: float = 1e-10,
) -> NewtonResult:
    """Minimise ``fun(x)`` from ``x0`` by damped projected Newton steps.

    basis: ``(d, r)`` orthonormal directions the iterate may move in (``None``: all).
    project: maps a trial point back to the feasible set (``None``: no constraint).
    Stops when an accepted step moves ``x`` by less than ``xtol`` (max norm), when it lowers
    the objective by less than ``ftol * (1 + |f|)``, when the damping has grown so large
    that no step can lower the objective (a stationary point), or after ``max_iter``.
    """
    x0 = jnp.asarray(x0)
    dtype = x0.dtype
    v = jnp.eye(x0.shape[-1], dtype=dtype) if basis is None else jnp.asarray(basis, dtype)
    proj = (lambda x: x) if project is None else project
    x0 = proj(x0)
    value_and_grad = jax.value_and_grad(fun)
    hess = jax.hessian(fun)

    def derivatives(x):
        f, g = value_and_grad(x)
        h = v.T @ hess(x) @ v
        e, q = jnp.linalg.eigh(0.5 * (h + h.T))
        return f, v.T @ g, e, q

    f0, g0, e0, q0 = derivatives(x0)
    nu0 = 1e-3 * jnp.mean(jnp.abs(e0)) + jnp.finfo(dtype).tiny

    def cond(s):
        return (s["i"] < max_iter) & ~s["done"]

    def body(s):
        step_t = -(s["q"] @ ((s["q"].T @ s["g"]) / (jnp.abs(s["e"]) + s["nu"])))
        trial = proj(s["x"] + v @ step_t)
        f_trial = fun(trial)
        accept = jnp.isfinite(f_trial) & (f_trial < s["f"])
        f_new, g_new, e_new, q_new = jax.lax.cond(
            accept, derivatives, lambda _: (s["f"], s["g"], s["e"], s["q"]), trial
        )
        moved = jnp.max(jnp.abs(trial - s["x"]))
        small = accept & ((moved < xtol) | (s["f"] - f_trial <= ftol * (1.0 + jnp.abs(s["f"]))))
        scale = jnp.mean(jnp.abs(s["e"])) + jnp.finfo(dtype).tiny
        stuck = s["nu"] > 1e12 * scale
        return {
            "x": jnp.where(accept, trial, s["x"]),
            "f": f_new, "g": g_new, "e": e_new, "q": q_new,
            "nu": jnp.where(accept, s["nu"] * 0.3, s["nu"] * 10.0),
            "i": s["i"] + 1,
            "done": small | stuck,
        }

    init = {"x": x0, "f": f0, "g": g0, "e": e0, "q": q0, "nu": nu0, "i": jnp.int32(0),
            "done": jnp.array(False)}
    out = jax.lax.while_loop(cond, body, init)
    return NewtonResult(out["x"], out["f"], out["i"], out["done"])
