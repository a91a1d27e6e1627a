r"""Block-coordinate solvers built from small composable updates.

A *block update* is a pure function ``update(state, data) -> state`` that improves some part
(a block) of ``state``: a multiplicative step on amplitudes, a gradient step plus prox on
latent maps, a projected Newton step... A block solver runs a sequence of such updates in
Gauss-Seidel order (each sees the result of the previous ones) under ``lax.while_loop``
until a stopping rule fires:

.. math::

    x^{t+1} = U_B(\dots U_2(U_1(x^t, d), d) \dots, d), \qquad
    \text{stop when } |f(x^t) - f(x^{t+1})| \le \mathrm{tol}\cdot\max(|f(x^{t+1})|, 1).

Like ``optax.chain`` builds optimisers from transforms, algorithms are compositions:

* SEMSUN: ``block_solve((repeat(a_step, 20), latent_step), poisson_objective, state, data)``
* SUSHI: ``block_solve((chain(latent_grad_step, starlet_prox_step), amplitude_newton_step), ...)``

``state`` and ``data`` are arbitrary pytrees (NamedTuples are convenient: ``update_field``
lifts a function computing one field into a block update). Everything is jit- and
vmap-compatible: vmapping ``block_solve`` over a batch of ``(state0, data)`` solves every
problem at once (the loop runs until the last one stops; finished ones are frozen).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from frugal._validation import check_float, check_int
from frugal.solvers.status import Status, decide

Update = Callable[[Any, Any], Any]

#: Inertia of inertial PALM (Pock & Sabach, "Inertial proximal alternating linearized
#: minimization (iPALM) for nonconvex and nonsmooth problems", SIAM J. Imaging Sci. 9 (2016)
#: 1756): a constant in [0, 1), the value both unmixing problems use for ``outer="ipalm"``.
IPALM_BETA = 0.3


def inertial_point(x, x_prev, beta: float = IPALM_BETA):
    r"""The inertial extrapolation of iPALM, :math:`y = x + \beta\,(x - x_{\rm prev})`, leaf by
    leaf of the pytrees ``x`` and ``x_prev``. The caller projects ``y`` on its feasible set
    (the extrapolation leaves it) and decides whether to keep it."""
    return jax.tree_util.tree_map(lambda a, b: a + beta * (a - b), x, x_prev)


class BlockResult(NamedTuple):
    """Outcome of ``block_solve``.

    Attributes:
      state: final state (same pytree structure as ``state0``).
      objective: objective at the final state.
      n_iter: number of full sweeps performed.
      converged: ``status == Status.CONVERGED``: the ``optimality`` test passed.
      trace: ``(max_iter,)`` objective after each sweep; NaN beyond ``n_iter``.
      status: the stop reason (:class:`frugal.solvers.status.Status`): ``CONVERGED`` only
        when ``optimality(state, data) <= gtol``; a change-based rule (``tol``, ``stop``)
        that fires without it gives ``STALLED``; ``MAX_ITER``; ``NON_FINITE``.
      residual: ``optimality`` at the final state (NaN without one).
    """

    state: Any
    objective: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    trace: jax.Array
    status: jax.Array | None = None
    residual: jax.Array | None = None


def chain(*updates: Update) -> Update:
    """One update applying ``updates`` in order (Gauss-Seidel): ``chain(f, g)(s, d) = g(f(s, d), d)``."""
    if not updates:
        raise ValueError("chain needs at least one update")
    for i, u in enumerate(updates):
        if not callable(u):
            raise TypeError(f"updates[{i}] must be callable (state, data) -> state, got {type(u).__name__}")

    def update(state, data):
        for u in updates:
            state = u(state, data)
        return state

    return update


def repeat(update: Update, n: int) -> Update:
    """``update`` applied ``n`` times in a ``lax.fori_loop`` (compiled once, not unrolled).

    E.g. SEMSUN's amplitude block: ``repeat(multiplicative_step, 20)`` between two latent steps.
    """
    if not callable(update):
        raise TypeError(f"update must be callable (state, data) -> state, got {type(update).__name__}")
    n = check_int(n, "n", minimum=0)

    def repeated(state, data):
        return jax.lax.fori_loop(0, n, lambda _, s: update(s, data), state)

    return repeated


def _replace(state, **fields):
    if hasattr(state, "_replace"):
        return state._replace(**fields)
    if isinstance(state, dict):
        return {**state, **fields}
    raise TypeError(f"state must be a NamedTuple or a dict to update fields by name, got {type(state).__name__}")


def _get(state, name):
    return state[name] if isinstance(state, dict) else getattr(state, name)


def update_field(name: str, fn: Callable[[Any, Any], Any]) -> Update:
    """Block update replacing field ``name`` of a NamedTuple/dict state by ``fn(state, data)``.

    E.g. ``update_field("a", lambda s, d: poisson_multiplicative_step(s.a, s.S, d.y))``.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable (state, data) -> value, got {type(fn).__name__}")

    def update(state, data):
        return _replace(state, **{name: fn(state, data)})

    return update


def merge_fields(*names: str) -> Callable:
    """Merge rule for ``jacobi``: field ``names[i]`` is taken from the result of update ``i``."""

    def merge(state, new_states):
        if len(new_states) != len(names):
            raise ValueError(f"merge_fields got {len(new_states)} updated states for {len(names)} field names")
        return _replace(state, **{n: _get(s, n) for n, s in zip(names, new_states)})

    return merge


def jacobi(*updates: Update, merge: Callable) -> Update:
    """One update computing every block update from the *same* state, then merging.

    ``merge(state, [u_1(state, d), ..., u_B(state, d)]) -> state`` says which part of each
    result to keep (``merge_fields("a", "lam")`` for blocks owning one field each). Jacobi
    sweeps are parallel-friendly but, unlike Gauss-Seidel, do not in general decrease the
    objective monotonically; ``block_solve`` accepts them as any other update.
    """
    if not updates:
        raise ValueError("jacobi needs at least one update")
    if not callable(merge):
        raise TypeError("merge must be callable (state, new_states) -> state; see merge_fields")

    def update(state, data):
        return merge(state, [u(state, data) for u in updates])

    return update


def block_solve(
    updates: Update | Sequence[Update],
    objective: Callable[[Any, Any], jax.Array],
    state0,
    data=None,
    *,
    max_iter: int = 100,
    tol: float | None = 1e-6,
    stop: Callable[[Any, Any, Any], jax.Array] | None = None,
    min_iter: int = 1,
    optimality: Callable[[Any, Any], jax.Array] | None = None,
    gtol: float = 1e-2,
) -> BlockResult:
    r"""Run block updates Gauss-Seidel under ``lax.while_loop`` until a stopping rule fires.

    Each sweep applies ``updates`` in order, then evaluates ``objective(state, data)``. The
    loop stops after sweep ``t`` (once ``t >= min_iter``) when

    * ``|f_{t-1} - f_t| <= tol * max(|f_t|, 1)`` (skipped when ``tol`` is None), or
    * ``stop(old_state, new_state, data)`` returns True (e.g. a relative change of the
      parameters), or
    * ``optimality(new_state, data) <= gtol`` (a first-order test: the only rule that
      reports ``Status.CONVERGED``), or
    * the objective is not finite (``Status.NON_FINITE``), or ``max_iter`` is reached.

    The change-based rules (``tol``, ``stop``) end the loop with ``Status.STALLED`` unless
    the optimality test passes at that state: "nothing changed" is not "optimal".

    Args:
      updates: one update or a sequence of them, each ``(state, data) -> state``.
      objective: ``(state, data) -> scalar`` monitored (and normally decreased) by the sweeps.
      state0: initial state pytree.
      data: pytree of problem data passed to every function (may be None).
      max_iter: maximum number of sweeps; also the (static) length of ``trace``.
      tol: relative objective decrease below which the loop stops.
      stop: optional extra rule ``(old_state, new_state, data) -> bool``.
      min_iter: minimum number of sweeps before any rule may stop the loop.
      optimality: ``(state, data) -> scalar`` first-order residual, e.g.
        :func:`frugal.solvers.status.scaled_residual` of the objective's gradient.
      gtol: the residual at or below which the state is optimal.

    Returns:
      ``BlockResult(state, objective, n_iter, converged, trace, status, residual)``.
    """
    update = chain(*updates) if isinstance(updates, (tuple, list)) else chain(updates)
    if not callable(objective):
        raise TypeError(f"objective must be callable (state, data) -> scalar, got {type(objective).__name__}")
    if optimality is not None and not callable(optimality):
        raise TypeError(f"optimality must be callable (state, data) -> scalar, got {type(optimality).__name__}")
    gtol = check_float(gtol, "gtol", minimum=0.0)
    if stop is not None and not callable(stop):
        raise TypeError(f"stop must be callable (old_state, new_state, data) -> bool, got {type(stop).__name__}")
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    min_iter = check_int(min_iter, "min_iter", minimum=0)
    use_tol = tol is not None
    tol = check_float(tol, "tol", minimum=0.0) if use_tol else 0.0

    f0 = jnp.asarray(objective(state0, data))
    if f0.ndim != 0:
        raise ValueError(f"objective must return a scalar, got shape {f0.shape}")
    dtype = f0.dtype if jnp.issubdtype(f0.dtype, jnp.floating) else jnp.result_type(float)
    f0 = f0.astype(dtype)
    trace0 = jnp.full((max_iter,), jnp.nan, dtype=dtype)

    def residual(state):
        if optimality is None:
            return jnp.asarray(jnp.nan, dtype)
        return jnp.asarray(optimality(state, data)).astype(dtype)

    def cond(carry):
        i, _, _, done, _, _ = carry
        return (i < max_iter) & ~done

    def body(carry):
        i, state, f, _, _, trace = carry
        new = update(state, data)
        f_new = jnp.asarray(objective(new, data)).astype(dtype)
        trace = trace.at[i].set(f_new)
        fire = jnp.zeros((), bool)
        if use_tol:
            fire = jnp.abs(f - f_new) <= tol * jnp.maximum(jnp.abs(f_new), 1.0)
        if stop is not None:
            fire = fire | jnp.asarray(stop(state, new, data), bool)
        r = residual(new)
        optimal = r <= gtol  # False for NaN, i.e. without an optimality test
        fire = (fire | optimal) & (i + 1 >= min_iter)
        finite = jnp.isfinite(f_new)
        return i + 1, new, f_new, fire | ~finite, r, trace

    init = (jnp.zeros((), jnp.int32), state0, f0, jnp.zeros((), bool), residual(state0), trace0)
    n_iter, state, f, _, r, trace = jax.lax.while_loop(cond, body, init)
    finite = jnp.isfinite(f) & jnp.all(jnp.asarray(
        [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(state)
         if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)] or [True]))
    status = decide(finite, r <= gtol, n_iter >= max_iter)
    return BlockResult(state, f, n_iter, status == Status.CONVERGED, trace, status, r)


__all__ = [
    "BlockResult",
    "block_solve",
    "chain",
    "jacobi",
    "merge_fields",
    "repeat",
    "update_field",
]
