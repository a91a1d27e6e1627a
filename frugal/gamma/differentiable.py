"""SEMSUN as a differentiable function: gradients of the estimates through the unmixing.

``f = unmix_function(models, ...)`` returns a pure JAX function

    ``counts_hat, latent = f(counts, fixed, states)``

of the measured counts ``(m,)``, the fixed signatures ``(F, m)`` (e.g. the background, any
positive scale) and the IAE states (their parameters included), which ``jax.grad``,
``jax.jacrev``, ``jax.vmap`` and ``jax.jit`` accept. Two modes:

* ``"implicit"``: the forward pass is the full solver; the backward pass differentiates the
  optimality conditions at the solution (implicit function theorem). With ``x* = (a*,
  lambda*)`` minimising the deviance ``f(x, xi)`` on the free set ``B`` (the counts not at
  zero, the tangent of each weight plane),

  .. math:: \\frac{\\partial x^\\star}{\\partial \\xi} = -B\\,(B^\\top \\nabla^2_x f\\,B)^{-1}
            B^\\top \\nabla^2_{x\\xi} f,

  so a vector-Jacobian product costs one small linear solve and one VJP of ``nabla_x f``.
  Weights sitting on a bound of their admissible box are treated as free (interior).
* ``"unrolled"``: a fixed number of block iterations (multiplicative updates on ``a``, one
  damped Newton step on ``lambda`` inside a trust region) from a closed-form start,
  written with ``lax.scan`` and differentiated like any program; more iterations bring
  its estimates and gradients to those of the implicit mode.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from frugal._precision import full_precision
from frugal._validation import check_choice, check_int
from frugal.gamma.solver.core import SolverSpec, latent_basis, project_latent, signature_rows, unmix_one
from frugal.gamma.solver.inputs import latent_setup
from frugal.ops.losses import TINY, poisson_deviance
from frugal.solvers.multiplicative import nnpu_init, poisson_multiplicative_step
from frugal.unmix import as_models


def _normalise_rows(fixed):
    return fixed / jnp.maximum(jnp.sum(fixed, -1, keepdims=True), TINY)


def unmix_function(
    models,
    *,
    n_fixed: int = 1,
    latent0: Sequence | None = None,
    bounds: str | None = "training",
    mode: str = "implicit",
    n_unrolled: int = 50,
    a_per_iteration: int = 20,
    max_iter: int = 200,
    tol: float = 1e-7,
):
    """Build ``f(counts, fixed, states) -> (counts_hat, latent)`` (see the module docstring).

    models: the IAE models (as for :func:`frugal.gamma.unmix`); ``states`` passed to ``f``
      must have the structure of ``tuple(m.state for m in models)``.
    n_fixed: number of rows of ``fixed`` (background and other fixed signatures).
    latent0 / bounds: as for ``unmix`` (default start: middle of the training range).
    mode: ``"implicit"`` or ``"unrolled"`` (``n_unrolled`` iterations of ``a_per_iteration``
      multiplicative updates then one Newton step on the weights).
    """
    models = as_models(models)
    check_choice(mode, "mode", ("implicit", "unrolled"))
    n_unrolled = check_int(n_unrolled, "n_unrolled", minimum=1)
    a_per_iteration = check_int(a_per_iteration, "a_per_iteration", minimum=1)
    m = max(mdl.manifold.n_channels for mdl in models)
    # Solved far below the statistical tolerance of unmix: the implicit gradient is that of
    # the exact optimum, and a finite-difference check must see the same function.
    spec = SolverSpec(manifolds=tuple(mdl.manifold for mdl in models), n_channels=m, n_fixed=n_fixed, solver="newton",
                      max_iter=max_iter, a_iter=500, tol=tol, want_signatures=False, gtol=1e-4)
    lower, upper, start = latent_setup(models, bounds, latent0)
    lower, upper = jnp.asarray(lower), jnp.asarray(upper)
    lam0 = jnp.asarray(np.concatenate([np.asarray(x, np.float32).reshape(-1) for x in start]))
    n_src = n_fixed + sum(man.n_inputs for man in spec.manifolds)

    def deviance(x, y, fixed, states):
        a, lam = x[:n_src], x[n_src:]
        return poisson_deviance(y, a @ signature_rows(spec, states, _normalise_rows(fixed), lam))

    def forward(y, fixed, states):
        out = unmix_one(spec, states, _normalise_rows(fixed), y, lam0.astype(y.dtype),
                        lower.astype(y.dtype), upper.astype(y.dtype))
        return jnp.concatenate([out[0], out[2]])

    @jax.custom_vjp
    def implicit(y, fixed, states):
        return forward(y, fixed, states)

    def implicit_fwd(y, fixed, states):
        x = forward(y, fixed, states)
        return x, (x, y, fixed, states)

    @full_precision  # traced apart from f, when the gradient is taken
    def implicit_bwd(res, g):
        x, y, fixed, states = res
        dtype = x.dtype
        basis = jax.scipy.linalg.block_diag(jnp.eye(n_src, dtype=dtype), latent_basis(spec, dtype))
        a = x[:n_src]
        free = jnp.concatenate([a > 1e-7 * jnp.maximum(jnp.max(a), TINY),
                                jnp.ones(basis.shape[1] - n_src, bool)]).astype(dtype)
        hess = basis.T @ jax.hessian(deviance)(x, y, fixed, states) @ basis
        # Counts at zero stay there: their rows and columns are replaced by the identity.
        h_free = free[:, None] * hess * free[None, :] + jnp.diag(1.0 - free)
        z = jnp.linalg.solve(h_free, free * (basis.T @ g))
        w = basis @ (free * z)
        _, vjp = jax.vjp(lambda yy, ff, ss: jax.grad(deviance)(x, yy, ff, ss), y, fixed, states)
        return tuple(jax.tree.map(jnp.negative, vjp(w)))

    implicit.defvjp(implicit_fwd, implicit_bwd)

    def unrolled(y, fixed, states):
        rows_fixed = _normalise_rows(fixed)
        dtype = y.dtype
        v_lam = latent_basis(spec, dtype)
        lam = project_latent(spec, lam0.astype(dtype), lower.astype(dtype), upper.astype(dtype))
        a = nnpu_init(signature_rows(spec, states, rows_fixed, lam).T, y)

        def body(carry, _):
            a, lam = carry
            rows = signature_rows(spec, states, rows_fixed, lam)
            a = jax.lax.fori_loop(0, a_per_iteration, lambda _, aa: poisson_multiplicative_step(aa, rows.T, y), a)

            def f(lv):
                return poisson_deviance(y, a @ signature_rows(spec, states, rows_fixed, lv))

            g = v_lam.T @ jax.grad(f)(lam)
            h = v_lam.T @ jax.hessian(f)(lam) @ v_lam
            # Marquardt damping and a trust region keep early steps, taken while the
            # counts are still far from their optimum, from jumping across the family.
            h = h + jnp.diag(jnp.abs(jnp.diagonal(h))) + 1e-9 * jnp.eye(h.shape[0], dtype=dtype)
            step = jnp.linalg.solve(h, g)
            step = step * jnp.minimum(1.0, 0.1 / (jnp.max(jnp.abs(step)) + TINY))
            lam = project_latent(spec, lam - v_lam @ step, lower.astype(dtype), upper.astype(dtype))
            return (a, lam), None

        (a, lam), _ = jax.lax.scan(body, (a, lam), None, length=n_unrolled)
        return jnp.concatenate([a, lam])

    core = implicit if mode == "implicit" else unrolled
    d_total = int(lam0.shape[0])

    @full_precision
    def f(counts, fixed, states):
        x = core(counts, fixed, states)
        return x[:n_src], x[n_src : n_src + d_total]

    return f
