r"""Inner solvers for one block: projected gradient, bounded L-BFGS, diagonal Newton, prox steps.

These solve (or take one step on) a smooth problem :math:`\min_{x \in C} f(x)` for one
block of a block solver, e.g. SEMSUN's latent step (few variables, box or simplex
constraints) or SUSHI's amplitude step (non-negative, diagonal curvature). All work on
pytrees, return NamedTuples and are jit- and vmap-compatible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from frugal._validation import check_float, check_int
from frugal.solvers._utils import tree_all_finite, tree_max_abs, tree_vdot

tmap = jax.tree_util.tree_map


class InnerResult(NamedTuple):
    """Outcome of an inner solver.

    Attributes:
      x: solution (same pytree as ``x0``).
      value: objective at ``x``.
      n_iter: iterations performed.
      converged: whether the stopping rule fired before ``max_iter``.
    """

    x: Any
    value: jax.Array
    n_iter: jax.Array
    converged: jax.Array


def _identity(x):
    return x


def projected_gradient(
    fun: Callable,
    x0,
    *,
    project: Callable | None = None,
    args: tuple = (),
    max_iter: int = 50,
    tol: float = 1e-6,
    step0: float = 1.0,
    armijo: float = 1e-4,
    max_backtrack: int = 30,
) -> InnerResult:
    r"""Projected gradient descent with Armijo backtracking along the projection arc.

    With :math:`g = \nabla f(x)` and :math:`x(t) = P(x - t g)`, a step :math:`t` is accepted
    when

    .. math:: f(x(t)) \le f(x) + \sigma \langle g, x(t) - x \rangle,

    (Bertsekas' Armijo rule along the arc, :math:`\sigma` = ``armijo``; when the two values
    differ by rounding only, the difference is estimated from the gradients instead,
    :math:`\tfrac12\langle g + \nabla f(x(t)), x(t) - x\rangle`, so that ``x`` converges to
    full precision rather than :math:`\sqrt{\epsilon}`); otherwise :math:`t` is halved
    (at most ``max_backtrack`` times; if none is accepted, ``x`` is
    kept and the loop stops). The accepted step is doubled for the next iteration, so the
    step adapts to the local curvature and rarely needs more than two evaluations. Stops
    when :math:`\|x^{t+1} - x^t\|_\infty \le \mathrm{tol} \cdot \max(\|x^{t+1}\|_\infty, 1)`.

    Args:
      fun: ``fun(x, *args) -> scalar``, differentiable.
      x0: starting point (pytree), feasible or not (it is projected first).
      project: Euclidean projection onto the feasible set, ``project(x) -> x``
        (``frugal.ops.proxes``); default: unconstrained.
      args: extra arguments of ``fun`` (traced: differentiable, vmappable).
      max_iter: maximum number of iterations.
      tol: relative tolerance on the change of ``x``.
      step0: first trial step.

    Returns:
      ``InnerResult(x, value, n_iter, converged)``.
    """
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    project = _identity if project is None else project
    if not callable(project):
        raise TypeError(f"project must be callable, got {type(project).__name__}")
    max_iter = check_int(max_iter, "max_iter", minimum=0)
    tol = check_float(tol, "tol", minimum=0.0)
    step0 = check_float(step0, "step0", minimum=0.0, strict=True)
    sigma = check_float(armijo, "armijo", minimum=0.0)
    max_backtrack = check_int(max_backtrack, "max_backtrack", minimum=0)

    value_and_grad = jax.value_and_grad(lambda x: fun(x, *args))

    x = project(x0)
    f, g = value_and_grad(x)
    dtype = jnp.result_type(f)
    noise = 100 * jnp.finfo(dtype).eps

    def trial(x, f, g, t):
        xt = project(tmap(lambda u, v: u - t * v, x, g))
        ft, gt = value_and_grad(xt)
        d = tmap(jnp.subtract, xt, x)
        slope = tree_vdot(g, d)
        armijo_ok = ft - f <= sigma * slope
        # Near the solution f(x_t) - f(x) drowns in rounding (x is then only resolved to
        # sqrt(eps)); the trapezoid estimate (g + g_t).d / 2 of the same difference is
        # accurate to eps |g| |d| (Hager & Zhang's approximate Armijo condition).
        in_noise = jnp.abs(ft - f) <= noise * (jnp.abs(f) + jnp.abs(ft))
        approx_ok = in_noise & (0.5 * (slope + tree_vdot(gt, d)) <= sigma * slope)
        ok = jnp.isfinite(ft) & tree_all_finite(gt) & (armijo_ok | approx_ok)
        return xt, ft, gt, ok

    def line_search(x, f, g, step):
        def cond(c):
            k, _, _, _, _, ok = c
            return ~ok & (k < max_backtrack)

        def body(c):
            k, t, _, _, _, _ = c
            t = 0.5 * t
            return (k + 1, t) + trial(x, f, g, t)

        c0 = (jnp.zeros((), jnp.int32), step) + trial(x, f, g, step)
        _, t, xt, ft, gt, ok = jax.lax.while_loop(cond, body, c0)
        return t, xt, ft, gt, ok

    def cond(c):
        i, _, _, _, _, done, _ = c
        return (i < max_iter) & ~done

    def body(c):
        i, x, f, g, step, _, _ = c
        t, xt, ft, gt, ok = line_search(x, f, g, step)
        keep = lambda a, b: tmap(lambda u, v: jnp.where(ok, u, v), a, b)  # noqa: E731
        x_new, g_new = keep(xt, x), keep(gt, g)
        f_new = jnp.where(ok, ft, f)
        change = tree_max_abs(tmap(jnp.subtract, x_new, x))
        small = change <= tol * jnp.maximum(tree_max_abs(x_new), 1.0)
        # A failed line search means no decrease is measurable any more: stop.
        return i + 1, x_new, f_new, g_new, jnp.where(ok, 2.0 * t, t), small | ~ok, small

    init = (jnp.zeros((), jnp.int32), x, f, g, jnp.asarray(step0, dtype), jnp.zeros((), bool), jnp.zeros((), bool))
    n_iter, x, f, _, _, _, converged = jax.lax.while_loop(cond, body, init)
    return InnerResult(x, f, n_iter, converged)


def lbfgsb(
    fun: Callable,
    x0,
    lower,
    upper,
    *,
    args: tuple = (),
    max_iter: int = 100,
    tol: float = 1e-6,
    **options,
) -> InnerResult:
    r"""Bound-constrained L-BFGS (jaxopt's ``LBFGSB``) behind frugal's ``InnerResult``.

    Minimises ``fun(x, *args)`` over :math:`\mathrm{lower} \le x \le \mathrm{upper}`
    (pytrees like ``x0``, or scalars; ``-inf``/``inf`` for no bound). ``converged`` means
    the projected-gradient norm reached ``tol``. Extra ``options`` go to
    ``jaxopt.LBFGSB`` (e.g. ``history_size``, ``implicit_diff``). vmappable: vmap over
    ``x0`` and ``args`` to solve a batch.
    """
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    tol = check_float(tol, "tol", minimum=0.0, strict=True)
    x0 = tmap(jnp.asarray, x0)
    lower = tmap(lambda b, x: jnp.broadcast_to(jnp.asarray(b, x.dtype), x.shape), lower, x0)
    upper = tmap(lambda b, x: jnp.broadcast_to(jnp.asarray(b, x.dtype), x.shape), upper, x0)
    # Imported here: the default solvers do not need jaxopt, so an import failure of this
    # unmaintained package (e.g. under a newer JAX) stays confined to this variant.
    from frugal._jaxopt import jaxopt

    # Under jit/vmap the outer transformation compiles the whole run; wrap eager calls
    # in jax.jit to compile them once.
    run = jaxopt.LBFGSB(fun=fun, maxiter=max_iter, tol=tol, **options).run
    x, state = run(x0, (lower, upper), *args)
    return InnerResult(x, state.value, state.iter_num, state.error <= tol)


def projected_newton_diag(grad, hess_diag, x, *, lower=0.0, upper=None, step=1.0, hess_floor=0.0):
    r"""One projected Newton step with a diagonal Hessian.

    .. math:: x \leftarrow \Pi_{[\mathrm{lower}, \mathrm{upper}]}\big(x - \eta\, g / H\big)

    with :math:`H` floored at ``hess_floor``. Used on SUSHI's non-negative amplitude maps,
    where the Poisson NLL is separable per pixel and :math:`H = \sum_e \Psi_e^2 y_e / m_e^2`.
    Guards: where :math:`H \le 0` or :math:`H`/:math:`g` is not finite the coordinate does
    not move (no curvature information means no safe Newton step); ``hess_floor > 0``
    instead bounds the step by :math:`|g| / \mathrm{hess\_floor}`.
    """
    g = jnp.asarray(grad)
    h = jnp.maximum(jnp.asarray(hess_diag), hess_floor)
    ok = (h > 0) & jnp.isfinite(h) & jnp.isfinite(g)
    move = jnp.where(ok, g / jnp.where(ok, h, 1.0), 0.0)
    new = x - step * move
    if lower is not None:
        new = jnp.maximum(new, lower)
    if upper is not None:
        new = jnp.minimum(new, upper)
    return new


def proximal_gradient_step(x, grad, step, prox: Callable | None = None):
    r"""One forward-backward step :math:`x \leftarrow \mathrm{prox}_{\eta h}(x - \eta \nabla f(x))`.

    ``prox(z, step) -> x`` (e.g. ``lambda z, t: starlet_prox(z, t * thresholds, J)``);
    default the identity (a plain gradient step). Works on pytrees.
    """
    z = tmap(lambda u, v: u - step * v, x, grad)
    return z if prox is None else prox(z, step)


__all__ = [
    "InnerResult",
    "lbfgsb",
    "projected_gradient",
    "projected_newton_diag",
    "proximal_gradient_step",
]
