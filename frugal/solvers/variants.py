"""Named block updates for Poisson unmixing, to compose solver variants.

Two kinds of block, each a small factory returning a pure update:

* **amplitude steps** ``step(a, S, y) -> a`` for ``min_{a >= 0} sum (Sa) - y log(Sa)``
  (a convex problem): ``"multiplicative"`` (EM/NNPU with SQUAREM acceleration),
  ``"newton"`` (projected Newton with the diagonal Hessian ``sum_j S_jk^2 y_j / (Sa)_j^2``
  and step halving), ``"fista"`` (accelerated projected gradient with backtracking, Beck &
  Teboulle, SIAM J. Imaging Sci. 2 (2009) 183);
* **latent steps** ``step(lam, f, project, basis) -> lam`` for a smooth non-convex
  objective ``f`` of the barycentric weights: ``"newton"`` (damped projected Newton with
  exact Hessians), ``"pg"`` (projected gradient with Armijo backtracking), ``"lbfgsb"``
  (jaxopt's L-BFGS-B on the free weight of two-anchor models), ``"adam"`` (Optax Adam with
  projection, a fixed number of steps: the reference a machine-learning reader expects).

and three outer loops (see :func:`frugal.gamma.semsun` ``outer=``): Gauss-Seidel block
coordinate descent, Jacobi (both blocks from the same iterate) and inertial PALM (iPALM:
each block step starts from ``x_k + beta (x_k - x_{k-1})``, Pock & Sabach, SIAM J.
Imaging Sci. 9 (2016) 1756).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from frugal.ops.losses import TINY, poisson_nll
from frugal.solvers.gradient import lbfgsb, projected_gradient
from frugal.solvers.multiplicative import nnpu_unchecked
from frugal.solvers.newton import damped_newton

AMPLITUDE_STEPS = ("multiplicative", "newton", "fista")
LATENT_STEPS = ("newton", "pg", "lbfgsb", "adam")
OUTER_LOOPS = ("gauss-seidel", "jacobi", "ipalm")


def _nll(a, S, y):
    return poisson_nll(y, S @ a)


def amplitude_step(name: str, n_iter: int, tol: float = 1e-7):
    """``step(a, S, y) -> a`` running ``n_iter`` iterations of the named amplitude solver."""
    if name == "multiplicative":
        def step(a, S, y):
            return nnpu_unchecked(S, y, a, jnp.ones(a.shape, bool), n_iter, tol, True).counts

    elif name == "newton":
        def one(_, a, S, y):
            mu = S @ a
            ok = mu > TINY
            g = S.T @ jnp.where(ok, 1.0 - y / jnp.where(ok, mu, 1.0), 1.0)
            h = (S * S).T @ jnp.where(ok, y / jnp.where(ok, mu * mu, 1.0), 0.0)
            direction = jnp.where(h > 0, g / jnp.where(h > 0, h, 1.0), 0.0)
            f0 = _nll(a, S, y)

            # Halve the step until the objective does not increase (the diagonal model
            # ignores the coupling between sources and can overshoot).
            def cond(c):
                t, trial = c
                return (_nll(trial, S, y) > f0) & (t > 1e-6)

            def body(c):
                t, _ = c
                return t * 0.5, jnp.maximum(a - 0.5 * t * direction, 0.0)

            t, trial = jax.lax.while_loop(cond, body, (jnp.asarray(1.0, a.dtype), jnp.maximum(a - direction, 0.0)))
            return jnp.where(_nll(trial, S, y) <= f0, trial, a)

        def step(a, S, y):
            return jax.lax.fori_loop(0, n_iter, lambda i, x: one(i, x, S, y), a)

    elif name == "fista":
        def step(a, S, y):
            grad = jax.grad(_nll)
            # Start from the curvature at a: a local Lipschitz estimate.
            lip0 = jnp.max(jnp.sum((S * S).T @ jnp.where(S @ a > TINY, y / jnp.maximum(S @ a, TINY) ** 2, 0.0)))

            def body(_, c):
                x, z, t, lip = c
                g = grad(z, S, y)
                fz = _nll(z, S, y)

                def bt_cond(cc):
                    lip_, nxt = cc
                    quad = fz + jnp.vdot(g, nxt - z) + 0.5 * lip_ * jnp.sum((nxt - z) ** 2)
                    return (_nll(nxt, S, y) > quad) & (lip_ < 1e30)

                def bt_body(cc):
                    lip_, _ = cc
                    lip_ = 2.0 * lip_
                    return lip_, jnp.maximum(z - g / lip_, 0.0)

                lip, nxt = jax.lax.while_loop(bt_cond, bt_body, (lip, jnp.maximum(z - g / lip, 0.0)))
                t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
                z_new = jnp.maximum(nxt + ((t - 1.0) / t_new) * (nxt - x), 0.0)
                # Restart the momentum when the objective goes up (O'Donoghue & Candes 2015).
                up = _nll(nxt, S, y) > _nll(x, S, y)
                return (nxt, jnp.where(up, nxt, z_new), jnp.where(up, 1.0, t_new), lip * 0.9)

            x, _, _, _ = jax.lax.fori_loop(0, n_iter, body, (a, a, jnp.asarray(1.0, a.dtype),
                                                            jnp.maximum(lip0, TINY)))
            return x

    else:
        raise ValueError(f"a_step must be one of {', '.join(map(repr, AMPLITUDE_STEPS))}; got {name!r}")
    return step


def latent_step(name: str, n_iter: int, *, learning_rate: float = 1e-2):
    """``step(lam, f, project, basis, lower, upper) -> lam`` running the named latent solver."""
    if name == "newton":
        def step(lam, f, project, basis, lower, upper):
            return damped_newton(f, lam, basis=basis, project=project, max_iter=n_iter, xtol=1e-7).x

    elif name == "pg":
        def step(lam, f, project, basis, lower, upper):
            return projected_gradient(f, lam, project=project, max_iter=n_iter, tol=1e-7, step0=1e-3).x

    elif name == "lbfgsb":
        # Two-anchor models only: their weights (1 - w, w) have one free coordinate w, and the
        # admissible box of the weights becomes a box on w, which L-BFGS-B handles.
        def step(lam, f, project, basis, lower, upper):
            if lam.shape[-1] % 2:
                raise ValueError("latent_step='lbfgsb' needs models with two anchors (one free weight)")
            lo = jnp.maximum(lower[1::2], 1.0 - upper[0::2])
            hi = jnp.minimum(upper[1::2], 1.0 - lower[0::2])

            def weights(w):
                return jnp.stack([1.0 - w, w], axis=-1).reshape(-1)

            res = lbfgsb(lambda w: f(weights(w)), lam[1::2], lo, hi, max_iter=n_iter, tol=1e-7)
            return weights(res.x)

    elif name == "adam":
        opt = optax.adam(learning_rate)

        def step(lam, f, project, basis, lower, upper):
            def body(c, _):
                x, s = c
                g = basis @ (basis.T @ jax.grad(f)(x))  # stay in the weights' plane
                u, s = opt.update(g, s, x)
                return (project(optax.apply_updates(x, u)), s), None

            (x, _), _ = jax.lax.scan(body, (lam, opt.init(lam)), None, length=n_iter)
            return x

    else:
        raise ValueError(f"latent_step must be one of {', '.join(map(repr, LATENT_STEPS))}; got {name!r}")
    return step
