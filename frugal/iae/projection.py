"""Barycentric span projection (BSP): fit a spectrum with a member of the learnt family.

For data ``y`` (``c x n``) find weights ``lambda`` (``sum = 1``, optionally within bounds)
and an amplitude ``alpha >= 0`` minimising ``D(y, alpha * Psi(lambda Omega))`` where ``D``
is the Gaussian loss ``||y - m||^2 / 2`` or the Poisson NLL ``sum m - y log m``.

The amplitude is profiled out in closed form (``alpha = max(0, <y, s> / <s, s>)`` for the
Gaussian loss, ``alpha = sum(y) / sum(s)`` for the Poisson one), leaving a problem in the
``d - 1`` free weights only, solved by the damped projected Newton of
:mod:`frugal.solvers.newton` with exact JAX derivatives, started from fast interpolation of
``y`` (one encoder pass). One jit-compiled program is vmapped over the batch.
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
from frugal.ops.losses import TINY, gaussian_loss, poisson_deviance
from frugal.ops.proxes import project_box_section
from frugal.solvers.newton import damped_newton, sum_to_one_basis


class ProjectionResult(NamedTuple):
    """Result of :func:`project` (a leading batch axis when a batch was given).

    latent: ``(d,)`` barycentric weights; amplitude: ``alpha``; spectrum: the fitted
    ``alpha * Psi(lambda Omega)`` (same shape as ``y``); loss: the data loss at the
    solution (half squared error, or the Poisson deviance: about the number of channels
    for a good fit); n_iter: Newton iterations.
    """

    latent: np.ndarray
    amplitude: np.ndarray
    spectrum: np.ndarray
    loss: np.ndarray
    n_iter: np.ndarray


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


@partial(jax.jit, static_argnames=("config", "loss", "bounded", "max_iter"))
def _project_batch(state, y, lower, upper, *, config, loss, bounded, max_iter, xtol):
    d = config.n_anchors
    basis = sum_to_one_basis(d, y.dtype)
    project = (lambda lam: project_box_section(lam, lower, upper, 1.0)) if bounded else None
    # The encoder was trained on spectra of the training set's scale: rescale y to it.
    train_total = jnp.sum(state.anchors.mean(0))

    def one(yi):
        shape_in = yi * train_total / jnp.maximum(jnp.sum(yi), TINY)
        lam0 = M.interpolate(config, state, shape_in)
        lam0 = constrain_weights(lam0, "box" if bounded else None, lower, upper)

        def objective(lam):
            s = M.decode(config, state, lam)
            if loss == "poisson":
                s = jnp.maximum(s, 0.0)
            return _data_loss(yi, profiled_amplitude(yi, s, loss) * s, loss)

        res = damped_newton(objective, lam0, basis=basis, project=project, max_iter=max_iter, xtol=xtol)
        s = M.decode(config, state, res.x)
        if loss == "poisson":
            s = jnp.maximum(s, 0.0)
        alpha = profiled_amplitude(yi, s, loss)
        return res.x, alpha, alpha * s, res.value, res.n_iter

    return jax.vmap(one)(y)


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
    """
    check_choice(loss, "loss", ("gaussian", "poisson"))
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    arr, batched = model._spectra(y, "y", nonnegative=(loss == "poisson"))
    d = model.n_anchors
    if bounds is None:
        lower, upper = np.full(d, -np.inf), np.full(d, np.inf)
    elif isinstance(bounds, str):
        check_choice(bounds, "bounds", ("simplex", "training"))
        lower, upper = (np.zeros(d), np.full(d, np.inf)) if bounds == "simplex" else model.latent_bounds
    else:
        try:
            lower, upper = (np.broadcast_to(np.asarray(b, float), (d,)) for b in bounds)
        except (TypeError, ValueError) as err:
            raise ValueError(f"bounds must be None, 'simplex', 'training' or (lower, upper) of shape ({d},)") from err
        if np.any(lower > upper) or lower.sum() > 1 or upper.sum() < 1:
            raise ValueError("bounds must satisfy lower <= upper and sum(lower) <= 1 <= sum(upper)")
    out = _project_batch(
        model.state, arr, jnp.asarray(lower, arr.dtype), jnp.asarray(upper, arr.dtype),
        config=model.config, loss=loss, bounded=bounds is not None, max_iter=max_iter, xtol=xtol,
    )
    latent, amplitude, spectrum, value, n_iter = (np.asarray(o) for o in out)
    spectrum = spectrum.reshape((-1,) + model.signal_shape)
    if not batched:
        latent, amplitude, spectrum, value, n_iter = latent[0], amplitude[0], spectrum[0], value[0], n_iter[0]
    return ProjectionResult(latent, amplitude, spectrum, value, n_iter)
