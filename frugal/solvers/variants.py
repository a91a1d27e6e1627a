"""Solver pieces as values: the amplitude steps, latent steps and outer loops of Poisson
unmixing, and the two SEMSUN solvers they compose.

Every piece is a small frozen dataclass: hashable, so a jit static argument holding it
compiles one program per distinct piece; checked when built (an error names the field);
and the update it stands for is its method. Like optax's transforms, they compose:
``unmix(..., solver=BCD(amplitude=Fista(n_iter=50), outer=IPALM()))``. The names of the
registries below are the shorthands the string options take (``solver="bcd",
a_step="fista"``); adding a step is one class here and one line in its registry.

* **amplitude steps** ``step(a, S, y) -> a`` for ``min_{a >= 0} sum (Sa) - y log(Sa)``
  (a convex problem): :class:`Multiplicative` (EM/NNPU with SQUAREM acceleration),
  :class:`DiagonalNewton` (projected Newton with the diagonal Hessian
  ``sum_j S_jk^2 y_j / (Sa)_j^2`` and step halving), :class:`Fista` (accelerated projected
  gradient with backtracking, Beck & Teboulle, SIAM J. Imaging Sci. 2 (2009) 183);
* **latent steps** ``step(lam, f, project, basis, lower, upper) -> lam`` for a smooth
  non-convex objective ``f`` of the barycentric weights: :class:`LatentNewton` (damped
  projected Newton with exact Hessians), :class:`ProjectedGradient` (Armijo backtracking),
  :class:`LBFGSB` (jaxopt's L-BFGS-B on the free weight of two-anchor models), :class:`Adam`
  (Optax Adam with projection, a fixed number of steps: the reference a machine-learning
  reader expects);
* **outer loops** ``loop.updates(a_block, lam_block, project_lam, a0, lam0)``: the block
  updates of ``block_solve`` and their start: :class:`GaussSeidel` (block coordinate
  descent), :class:`Jacobi` (both blocks from the same iterate), :class:`IPALM` (inertial
  PALM: each block step starts from ``x_k + beta (x_k - x_{k-1})``, Pock & Sabach, SIAM J.
  Imaging Sci. 9 (2016) 1756);
* **solvers** of :func:`frugal.gamma.unmix`: :class:`Newton` (one joint Fisher-scoring
  Newton iteration on counts and weights, the default) and :class:`BCD` (an amplitude step,
  a latent step and an outer loop, as published).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import optax

from frugal._validation import check_choice, check_float, check_int
from frugal.ops.losses import TINY, poisson_nll
from frugal.solvers.block import IPALM_BETA, inertial_point, jacobi, merge_fields, update_field
from frugal.solvers.gradient import lbfgsb, projected_gradient
from frugal.solvers.multiplicative import nnpu_unchecked
from frugal.solvers.newton import damped_newton

__all__ = [
    "AMPLITUDE_STEPS", "BCD", "IPALM", "LATENT_STEPS", "LBFGSB", "OUTER_LOOPS", "SOLVERS", "Adam", "AmplitudeStep",
    "DiagonalNewton", "Fista", "GaussSeidel", "Jacobi", "LatentNewton", "LatentStep", "Multiplicative", "Newton",
    "OuterLoop", "ProjectedGradient", "amplitude_step", "as_solver", "latent_step",
]

piece = dataclasses.dataclass(frozen=True)


def _nll(a, S, y):
    return poisson_nll(y, S @ a)


# --------------------------------------------------------------------------- amplitude steps


@piece
class AmplitudeStep(abc.ABC):
    """An amplitude solver run for ``n_iter`` iterations: ``step(a, S, y) -> a``."""

    n_iter: int = 200

    def __post_init__(self):
        check_int(self.n_iter, "n_iter", minimum=1)

    @abc.abstractmethod
    def __call__(self, a, S, y):
        """The counts ``(K,)`` after ``n_iter`` iterations from ``a``, signatures ``S`` ``(m, K)``."""


@piece
class Multiplicative(AmplitudeStep):
    """EM / NNPU multiplicative updates with SQUAREM acceleration, stopped early at a relative
    change below ``tol``."""

    tol: float = 1e-7

    def __post_init__(self):
        super().__post_init__()
        check_float(self.tol, "tol", minimum=0.0)

    def __call__(self, a, S, y):
        return nnpu_unchecked(S, y, a, jnp.ones(a.shape, bool), self.n_iter, self.tol, True).counts


@piece
class DiagonalNewton(AmplitudeStep):
    """Projected Newton steps with the diagonal Hessian ``sum_j S_jk^2 y_j / (Sa)_j^2``, each
    halved until the objective does not increase."""

    def __call__(self, a, S, y):
        def one(_, a):
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

        return jax.lax.fori_loop(0, self.n_iter, one, a)


@piece
class Fista(AmplitudeStep):
    """Accelerated projected gradient (FISTA) with backtracking on the Lipschitz estimate and
    a momentum restart when the objective goes up (O'Donoghue & Candes 2015)."""

    def __call__(self, a, S, y):
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
            up = _nll(nxt, S, y) > _nll(x, S, y)
            return (nxt, jnp.where(up, nxt, z_new), jnp.where(up, 1.0, t_new), lip * 0.9)

        x, _, _, _ = jax.lax.fori_loop(0, self.n_iter, body, (a, a, jnp.asarray(1.0, a.dtype),
                                                                jnp.maximum(lip0, TINY)))
        return x


#: Amplitude steps by the name ``a_step=`` takes.
AMPLITUDE_STEPS: dict[str, type[AmplitudeStep]] = {
    "multiplicative": Multiplicative,
    "newton": DiagonalNewton,
    "fista": Fista,
}


# --------------------------------------------------------------------------- latent steps


@piece
class LatentStep(abc.ABC):
    """A latent solver run for ``n_iter`` iterations per outer iteration:
    ``step(lam, f, project, basis, lower, upper) -> lam``."""

    n_iter: int = 5
    #: Whether the step needs models with two anchors (one free weight each).
    two_anchors_only: ClassVar[bool] = False

    def __post_init__(self):
        check_int(self.n_iter, "n_iter", minimum=1)

    @abc.abstractmethod
    def __call__(self, lam, f, project, basis, lower, upper):
        """The weights after ``n_iter`` iterations on ``f`` from ``lam``, kept feasible by ``project``."""


@piece
class LatentNewton(LatentStep):
    """Damped projected Newton steps with the exact Hessian of ``f``."""

    def __call__(self, lam, f, project, basis, lower, upper):
        return damped_newton(f, lam, basis=basis, project=project, max_iter=self.n_iter, xtol=1e-7).x


@piece
class ProjectedGradient(LatentStep):
    """Projected gradient steps with Armijo backtracking."""

    n_iter: int = 20

    def __call__(self, lam, f, project, basis, lower, upper):
        return projected_gradient(f, lam, project=project, max_iter=self.n_iter, tol=1e-7, step0=1e-3).x


@piece
class LBFGSB(LatentStep):
    """jaxopt's L-BFGS-B on the free weight of two-anchor models: their weights ``(1 - w, w)``
    have one free coordinate ``w``, and the box of the weights becomes a box on ``w``."""

    n_iter: int = 20
    two_anchors_only: ClassVar[bool] = True

    def __call__(self, lam, f, project, basis, lower, upper):
        if lam.shape[-1] % 2:
            raise ValueError("latent_step='lbfgsb' needs models with two anchors (one free weight)")
        lo = jnp.maximum(lower[1::2], 1.0 - upper[0::2])
        hi = jnp.minimum(upper[1::2], 1.0 - lower[0::2])

        def weights(w):
            return jnp.stack([1.0 - w, w], axis=-1).reshape(-1)

        res = lbfgsb(lambda w: f(weights(w)), lam[1::2], lo, hi, max_iter=self.n_iter, tol=1e-7)
        return weights(res.x)


@piece
class Adam(LatentStep):
    """``n_iter`` Optax Adam steps (at ``learning_rate``) in the weights' plane, each projected."""

    n_iter: int = 50
    learning_rate: float = 1e-2

    def __post_init__(self):
        super().__post_init__()
        check_float(self.learning_rate, "learning_rate", minimum=0.0, strict=True)

    def __call__(self, lam, f, project, basis, lower, upper):
        opt = optax.adam(self.learning_rate)

        def body(c, _):
            x, s = c
            g = basis @ (basis.T @ jax.grad(f)(x))  # stay in the weights' plane
            u, s = opt.update(g, s, x)
            return (project(optax.apply_updates(x, u)), s), None

        (x, _), _ = jax.lax.scan(body, (lam, opt.init(lam)), None, length=self.n_iter)
        return x


#: Latent steps by the name ``latent_step=`` takes.
LATENT_STEPS: dict[str, type[LatentStep]] = {
    "newton": LatentNewton,
    "pg": ProjectedGradient,
    "lbfgsb": LBFGSB,
    "adam": Adam,
}


# --------------------------------------------------------------------------- outer loops


@piece
class OuterLoop(abc.ABC):
    """How a sweep runs the two blocks: ``updates(a_block, lam_block, project_lam, a0, lam0)``
    returns the block updates of :func:`frugal.solvers.block.block_solve` (each
    ``(state, data) -> state``) and their starting state, whose first two entries are the
    counts and the weights."""

    @abc.abstractmethod
    def updates(self, a_block, lam_block, project_lam, a0, lam0):
        """``(updates, state0)`` for :func:`frugal.solvers.block.block_solve`."""


class Blocks(NamedTuple):
    """The state of the two-block outer loops: counts and weights."""

    a: jax.Array
    lam: jax.Array


class InertialBlocks(NamedTuple):
    """The state of :class:`IPALM`: the iterate and the previous one."""

    a: jax.Array
    lam: jax.Array
    a_prev: jax.Array
    lam_prev: jax.Array


def _block_updates(a_block, lam_block):
    """Each block as a field update of :class:`Blocks`."""
    return (update_field("a", lambda s, _: a_block(s.a, s.lam)),
            update_field("lam", lambda s, _: lam_block(s.a, s.lam)))


@piece
class GaussSeidel(OuterLoop):
    """Block coordinate descent: the counts, then the weights at the new counts."""

    def updates(self, a_block, lam_block, project_lam, a0, lam0):
        return _block_updates(a_block, lam_block), Blocks(a0, lam0)


@piece
class Jacobi(OuterLoop):
    """Both blocks from the same iterate."""

    def updates(self, a_block, lam_block, project_lam, a0, lam0):
        return (jacobi(*_block_updates(a_block, lam_block), merge=merge_fields("a", "lam")),), Blocks(a0, lam0)


@piece
class IPALM(OuterLoop):
    """Inertial PALM: each block starts from its extrapolated point
    (:func:`frugal.solvers.block.inertial_point`, projected)."""

    beta: float = IPALM_BETA

    def __post_init__(self):
        beta = check_float(self.beta, "beta", minimum=0.0)
        if beta >= 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")

    def updates(self, a_block, lam_block, project_lam, a0, lam0):
        def ipalm(s, _):
            a_new = a_block(jnp.maximum(inertial_point(s.a, s.a_prev, self.beta), 0.0), s.lam)
            lam_new = lam_block(a_new, project_lam(inertial_point(s.lam, s.lam_prev, self.beta)))
            return InertialBlocks(a_new, lam_new, s.a, s.lam)

        return (ipalm,), InertialBlocks(a0, lam0, a0, lam0)


#: Outer loops by the name ``outer=`` takes.
OUTER_LOOPS: dict[str, type[OuterLoop]] = {
    "gauss-seidel": GaussSeidel,
    "jacobi": Jacobi,
    "ipalm": IPALM,
}


# --------------------------------------------------------------------------- solvers


@piece
class Newton:
    """SEMSUN's joint solver: damped Fisher-scoring Newton iterations on the counts and the
    free coordinates of the weights together (:func:`frugal.solvers.newton.damped_newton`)."""


@piece
class BCD:
    """Block coordinate descent as published: per outer iteration an amplitude step with the
    signatures fixed and a latent step with the counts fixed, in the order of ``outer``."""

    amplitude: AmplitudeStep = Multiplicative()
    latent: LatentStep = LatentNewton()
    outer: OuterLoop = GaussSeidel()

    def __post_init__(self):
        for field, kind, registry in (("amplitude", AmplitudeStep, AMPLITUDE_STEPS),
                                      ("latent", LatentStep, LATENT_STEPS), ("outer", OuterLoop, OUTER_LOOPS)):
            value = getattr(self, field)
            if not isinstance(value, kind):
                known = ", ".join(f"{cls.__name__}()" for cls in registry.values())
                raise TypeError(f"BCD.{field} must be an instance of {kind.__name__} such as {known}; got {value!r}")


#: Solvers by the name ``solver=`` takes.
SOLVERS: dict[str, type] = {"newton": Newton, "bcd": BCD}


def _build(cls, **options):
    """``cls`` with those of ``options`` that are its fields (a step without ``tol`` ignores it)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in options.items() if k in fields})


def amplitude_step(name: str, n_iter: int, tol: float = 1e-7) -> AmplitudeStep:
    """The amplitude step named ``name`` (a key of :data:`AMPLITUDE_STEPS`) for ``n_iter``
    iterations; ``tol`` is the early stop of the steps that have one (``"multiplicative"``)."""
    if name not in AMPLITUDE_STEPS:
        raise ValueError(f"a_step must be one of {', '.join(map(repr, AMPLITUDE_STEPS))}; got {name!r}")
    return _build(AMPLITUDE_STEPS[name], n_iter=n_iter, tol=tol)


def latent_step(name: str, n_iter: int, *, learning_rate: float = 1e-2) -> LatentStep:
    """The latent step named ``name`` (a key of :data:`LATENT_STEPS`) for ``n_iter`` iterations;
    ``learning_rate`` is that of ``"adam"``."""
    if name not in LATENT_STEPS:
        raise ValueError(f"latent_step must be one of {', '.join(map(repr, LATENT_STEPS))}; got {name!r}")
    return _build(LATENT_STEPS[name], n_iter=n_iter, learning_rate=learning_rate)


def as_solver(solver, *, a_step=None, latent_step=None, outer=None, a_iter: int = 200, latent_iter=None):
    """The solver value of :func:`frugal.gamma.unmix`'s options.

    ``solver``: a :class:`Newton` or :class:`BCD` value, or its name (a key of
    :data:`SOLVERS`). By name, ``solver="bcd"`` is built from ``a_step`` (default
    ``"multiplicative"``, ``a_iter`` iterations), ``latent_step`` (default ``"newton"``,
    ``latent_iter`` iterations, default that step's own) and ``outer`` (default
    ``"gauss-seidel"``). Those three and ``latent_iter`` set the pieces of ``"bcd"`` given by
    name only: passing them with ``solver="newton"`` or with a solver value is an error, not
    an option silently ignored.
    """
    given = [n for n, v in (("a_step", a_step), ("latent_step", latent_step), ("outer", outer),
                            ("latent_iter", latent_iter)) if v is not None]
    if isinstance(solver, (Newton, BCD)):
        if given:
            raise ValueError(f"{' and '.join(given)} set{'s' if len(given) == 1 else ''} the pieces of solver='bcd' "
                             f"given by name; solver={solver!r} carries its own")
        return solver
    if not isinstance(solver, str):
        raise TypeError(f"solver must be 'newton', 'bcd', Newton() or BCD(...), got {solver!r}")
    check_choice(solver, "solver", SOLVERS)
    if solver == "newton":
        if given:
            raise ValueError(f"{' and '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to solver='bcd' only "
                             f"(solver='newton' moves the counts and the weights in one joint step)")
        return Newton()
    a_iter = check_int(a_iter, "a_iter", minimum=1)
    if a_step is not None:
        check_choice(a_step, "a_step", AMPLITUDE_STEPS)
    if latent_step is not None:
        check_choice(latent_step, "latent_step", LATENT_STEPS)
    if outer is not None:
        check_choice(outer, "outer", OUTER_LOOPS)
    latent_cls = LATENT_STEPS[latent_step or "newton"]
    n_latent = latent_cls().n_iter if latent_iter is None else check_int(latent_iter, "latent_iter", minimum=1)
    return BCD(amplitude=amplitude_step(a_step or "multiplicative", a_iter),
               latent=latent_cls(n_iter=n_latent),
               outer=OUTER_LOOPS[outer or "gauss-seidel"]())
