r"""Barycentric span projection (BSP): fit a spectrum with a member of the learnt family.

For data ``y`` (``c x n``) find weights ``lambda`` (``sum = 1``, optionally within bounds)
and an amplitude ``alpha >= 0`` minimising ``D(y, alpha * Psi(lambda Omega))`` where ``D``
is the Gaussian loss ``||y - m||^2 / 2`` or the Poisson NLL ``sum m - y log m``.

The amplitude is profiled out in closed form (``alpha = max(0, <y, s> / <s, s>)`` for the
Gaussian loss, ``alpha = sum(y) / sum(s)`` for the Poisson one), leaving a problem in the
``d - 1`` free weights only, solved by the damped projected Newton of
:mod:`frugal.solvers.newton` with exact JAX derivatives, started from fast interpolation of
``y`` (one encoder pass). One jit-compiled program is vmapped over the batch.

Stop reasons (``status``, :class:`frugal.solvers.status.Status`): ``CONVERGED`` means that
a first-order test passed at about a hundredth of a standard error of the weights: the
Newton solve's residual (:class:`frugal.solvers.newton.NewtonResult` ``residual``, on a
deviance scale: :math:`\sqrt 2` times standard errors) is at most 0.02, or, at a kink of a
piecewise-linear decoder where that one-sided test cannot pass, the slope changes sign
within that distance along every tangent direction (``bracketed_minimum``). Otherwise the
loop's own reason: ``MAX_ITER``, ``STALLED`` (it stopped on a small step or decrease) or
``NON_FINITE``. The scale of each loss:

* Poisson: the objective is the deviance (twice the NLL), whose curvature is twice the
  Fisher information: the test reads standard errors (times sqrt 2; floored by what the dtype
  resolves at the data's total counts; the deviance is evaluated in a form that float32
  resolves near the optimum even at 10^8 counts).
* Gaussian: the noise level is unknown, so the half squared error :math:`L` is put on a
  chi-square scale, :math:`2 L / \hat\sigma^2` with
  :math:`\hat\sigma^2 = 2 L / (n - d)` the residual variance (``n`` channels, ``d - 1`` free
  weights and the amplitude), the standard error of the weights being the one of that
  noise level. :math:`\hat\sigma^2` is taken at the start, then once more at the first
  solution (a second Newton solve from there, usually zero or one iteration, within the
  same ``max_iter``), so that the final test uses the noise level of the fit itself. It is
  floored at :math:`(10^{-4}\,\|y\|)^2 / n` in float32, i.e. a noise of 1e-4 of the
  data's RMS (a noiseless spectrum has no noise to measure, and float32 decoders do not
  resolve the weights much better than that; ``1e-12`` in float64).

``gof_pvalue`` (Poisson only) is :func:`frugal.ops.gof.gof_pvalue` of the deviance with
``d`` fitted parameters (``d - 1`` free weights and the amplitude).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from frugal._precision import full_precision
from frugal._validation import check_choice, check_int
from frugal.iae import model as M
from frugal.iae.barycenter import constrain_weights
from frugal.ops.gof import gof_pvalue
from frugal.ops.losses import TINY, gaussian_loss, poisson_deviance
from frugal.ops.proxes import project_box_section
from frugal.solvers.batching import first_of_batch
from frugal.solvers.multiplicative import residual_floor
from frugal.solvers.newton import damped_newton, sum_to_one_basis
from frugal.solvers.status import Status, decide

#: Optimality tolerance of the Newton solve, on a deviance / chi-square scale: 0.02 is
#: about a hundredth of a standard error (the scaled residual is sqrt(2) standard errors).
GTOL = 0.02


class ProjectionResult(NamedTuple):
    """Result of :func:`project` (a leading batch axis when a batch was given).

    latent: ``(d,)`` barycentric weights; amplitude: ``alpha``; spectrum: the fitted
    ``alpha * Psi(lambda Omega)`` (same shape as ``y``); loss: the data loss at the
    solution (half squared error, or the Poisson deviance: about the number of channels
    for a good fit); n_iter: Newton iterations; status: why the solve stopped
    (:class:`frugal.solvers.status.Status` codes, ``0`` = converged: the first-order test
    passed, see the module); gof_pvalue: for ``loss="poisson"``, the goodness-of-fit
    p-value of the deviance (``None`` for the Gaussian loss, whose noise level is unknown);
    residual: the Newton solve's residual, compared with 0.02 (at a kink minimum it may
    exceed that while ``status`` says converged, see the module).
    """

    latent: np.ndarray
    amplitude: np.ndarray
    spectrum: np.ndarray
    loss: np.ndarray
    n_iter: np.ndarray
    status: np.ndarray | None = None
    gof_pvalue: np.ndarray | None = None
    residual: np.ndarray | None = None

    @property
    def converged(self):
        """``status == Status.CONVERGED`` (the optimality test passed)."""
        return None if self.status is None else np.asarray(self.status) == Status.CONVERGED


def profiled_amplitude(y, s, loss: str):
    """The optimal ``alpha >= 0`` for a fixed shape ``s`` (closed form)."""
    if loss == "poisson":
        return jnp.sum(y) / jnp.maximum(jnp.sum(s), TINY)
    return jnp.maximum(jnp.vdot(y, s) / jnp.maximum(jnp.vdot(s, s), TINY), 0.0)


def _data_loss(y, m, loss):
    if loss == "poisson":
        # The deviance has the NLL's minimiser but is ~n at the optimum instead of ~-sum(y):
        # float32 then resolves its decrease to the last iterations.
        return poisson_deviance(y.ravel(), jnp.maximum(m, 0.0).ravel())
    return gaussian_loss(y.ravel(), m.ravel())


class _Solved(NamedTuple):
    x: jax.Array
    value: jax.Array
    status: jax.Array
    residual: jax.Array


def _noise_floor(y):
    """Smallest residual variance the Gaussian test uses (see the module), ``(c, n)`` data."""
    rel = 1e-4 if y.dtype == jnp.float32 else 1e-12
    return (rel**2) * jnp.sum(y * y) / y.size + TINY


def bracketed_minimum(objective, x, basis, project, gtol, curvature):
    r"""First-order test that also holds at a kink: along each tangent direction ``v_i``
    the slope changes sign within a hundredth of a standard error.

    Decoders with piecewise-linear activations (leaky ReLU) make the objective's gradient
    jump where an activation switches; its minimum often sits on such a kink, where the
    one-sided gradient JAX returns never passes the smooth test. Here, with
    :math:`D_i^2 = v_i^\top F v_i` (``curvature``: the Fisher information of the objective)
    and the step :math:`\epsilon_i = \max(\tfrac12 \mathrm{gtol} / D_i,\ 4\,\mathrm{ulp})`
    (half the tolerance in standard errors, or what the dtype resolves), the moves
    :math:`\delta = P(x \pm \epsilon_i v_i) - x` must not descend faster than
    :math:`\tfrac12 \mathrm{gtol}\,D_i` at their end point:
    :math:`\nabla f(x + \delta)\cdot\delta \ge -\tfrac12 \mathrm{gtol}\,D_i \|\delta\|`. For a
    smooth objective that is the scaled-residual test itself (``|g_i| / D_i <= gtol``);
    at a kink minimum it passes; a move blocked by a bound passes on its side.
    """
    dscale = jnp.sqrt(jax.vmap(lambda v: curvature(x, v))(basis.T)) + jnp.finfo(x.dtype).tiny
    ulp = 4 * jnp.finfo(x.dtype).eps * jnp.maximum(jnp.max(jnp.abs(x)), 1.0)
    step = jnp.maximum(0.5 * gtol / dscale, ulp)
    moves = jnp.concatenate([basis.T * step[:, None], -basis.T * step[:, None]])  # (2r, d)
    scales = jnp.concatenate([dscale, dscale])

    def side(move, di):
        p = project(x + move)
        delta = p - x
        slope = jax.jvp(objective, (p,), (delta,))[1]
        return slope >= -0.5 * gtol * di * jnp.linalg.norm(delta)

    return jnp.all(jax.vmap(side)(moves, scales))


@partial(jax.jit, static_argnames=("config", "loss", "bounded", "max_iter"))
def _project_batch(state, y, lower, upper, *, config, loss, bounded, max_iter, xtol):
    d = config.n_anchors
    basis = sum_to_one_basis(d, y.dtype)
    project = (lambda lam: project_box_section(lam, lower, upper, 1.0)) if bounded else None
    # The encoder was trained on spectra of the training set's scale: rescale y to it.
    train_total = jnp.sum(state.anchors.mean(0))
    n_dof = max(y[0].size - d, 1)

    def one(yi):
        shape_in = yi * train_total / jnp.maximum(jnp.sum(yi), TINY)
        lam0 = M.interpolate(config, state, shape_in)
        lam0 = constrain_weights(lam0, "box" if bounded else None, lower, upper)

        def fitted(lam):
            s = M.decode(config, state, lam)
            if loss == "poisson":
                s = jnp.maximum(s, 0.0)
            return profiled_amplitude(yi, s, loss) * s

        def solve(objective, start, n_max, gtol):
            return damped_newton(objective, start, basis=basis, project=project, max_iter=n_max, xtol=xtol,
                                 gtol=gtol)

        if loss == "poisson":
            # Deviance residual floor: sqrt(2) times the NLL's, in standard errors.
            floor = jnp.sqrt(2.0) * residual_floor(yi, yi, yi.dtype)
            gtol = jnp.maximum(GTOL, floor)

            def objective(lam):
                return _data_loss(yi, fitted(lam), loss)

            res = solve(objective, lam0, max_iter, gtol)
            n_iter = res.n_iter

            def weight(m):  # the deviance's Fisher information: 2 / m per channel
                return jnp.where(m > TINY, 2.0 / jnp.maximum(m, TINY), 0.0)
        else:
            def variance(lam):
                return jnp.maximum(2.0 * _data_loss(yi, fitted(lam), loss) / n_dof, _noise_floor(yi))

            def chi2(var):
                return lambda lam: 2.0 * _data_loss(yi, fitted(lam), loss) / var

            def stage(_, carry):
                # Solve at the noise level of the current point: the start's overestimates
                # it, so a second pass from the first solution (usually zero or one
                # iteration, within the budget left) makes the test the fit's own.
                x, used = carry[0], carry[1]
                r = solve(chi2(variance(x)), x, max_iter - used, GTOL)
                return r.x, used + r.n_iter, r.value, r.status, r.residual

            zero = jnp.zeros((), yi.dtype)
            carry = (lam0, jnp.int32(0), zero, jnp.int32(Status.MAX_ITER), zero)
            lam1, n_iter, value1, status1, residual1 = jax.lax.fori_loop(0, 2, stage, carry)
            res = _Solved(lam1, value1, status1, residual1)
            var1 = variance(lam1)
            objective, gtol = chi2(var1), GTOL

            def weight(m):  # the chi-square's information: 2 / sigma^2 per channel
                return jnp.full_like(m, 2.0) / var1

        finite = jnp.all(jnp.isfinite(res.x)) & jnp.isfinite(res.value)

        def curvature(lam, v):
            m, dm = jax.jvp(fitted, (lam,), (v,))
            return jnp.sum(weight(m) * dm * dm)

        kink_ok = bracketed_minimum(objective, res.x, basis, project or (lambda v: v), gtol, curvature)
        optimal = (res.residual <= gtol) | kink_ok
        status = decide(finite, optimal, res.status == Status.MAX_ITER)
        s = M.decode(config, state, res.x)
        if loss == "poisson":
            s = jnp.maximum(s, 0.0)
        alpha = profiled_amplitude(yi, s, loss)
        spectrum = alpha * s
        value = res.value if loss == "poisson" else _data_loss(yi, spectrum, loss)
        return res.x, alpha, spectrum, value, n_iter, status, res.residual

    return jax.vmap(one)(y)


_gof_batch = jax.jit(gof_pvalue, static_argnums=(2,))


@full_precision
def project(
    model: M.IAEModel,
    y,
    *,
    loss: str = "gaussian",
    bounds=None,
    max_iter: int = 30,
    xtol: float = 1e-6,
) -> ProjectionResult:
    """Barycentric span projection of ``y`` (one spectrum or a batch) onto the model's family.

    loss: ``"gaussian"`` or ``"poisson"`` (``y`` then holds counts: non-negative).
    bounds: ``None`` (weights only sum to one), ``"simplex"`` (also ``>= 0``),
      ``"training"`` (within the range seen on the training set) or a pair of ``(d,)``
      arrays ``(lower, upper)``.
    max_iter: Newton iterations at most (both Gaussian solves together).
    xtol: step size below which an iteration stops (``status`` then says whether the
      optimality test passed: ``converged`` or ``stalled``).
    """
    check_choice(loss, "loss", ("gaussian", "poisson"))
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    arr, batched = model._spectra(y, "y", nonnegative=(loss == "poisson"))
    lower, upper = model.weight_bounds(bounds)
    out = _project_batch(
        model.state, arr, jnp.asarray(lower, arr.dtype), jnp.asarray(upper, arr.dtype),
        config=model.config, loss=loss, bounded=bounds is not None, max_iter=max_iter, xtol=xtol,
    )
    pvalue = None
    if loss == "poisson":  # its own program: compiled once per shape, whatever the model
        pvalue = np.asarray(_gof_batch(out[3], out[2].reshape(out[2].shape[0], -1), model.n_anchors))
    latent, amplitude, spectrum, value, n_iter, status, residual = (np.asarray(o) for o in out)
    spectrum = spectrum.reshape((-1,) + model.signal_shape)
    if not batched:
        latent, amplitude, spectrum, value, n_iter, status, residual, pvalue = first_of_batch(
            (latent, amplitude, spectrum, value, n_iter, status, residual, pvalue))
    return ProjectionResult(latent, amplitude, spectrum, value, n_iter, status, pvalue, residual)
