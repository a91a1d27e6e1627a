"""The cube model of the SUSHI solver: its static description and state, the unit-sum spectra of the
components at free coordinates and their Jacobian, the mixture, the data term and the objective.

The mathematics is in :mod:`frugal.xray.sushi` (module doc, "Model" and "Objective").
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from frugal.ops.losses import TINY, gaussian_loss, poisson_weights
from frugal.ops.starlet import starlet_transform

__all__ = [
    "Control", "Data", "Models", "Spec", "State", "all_spectra", "cube_objective", "jacobian",
    "latent_slices", "mixture", "mu_derivatives", "pixel_loss", "project_maps", "project_rows", "regulariser",
    "scatter_rows", "spectra_at", "spectra_jacobian",
]

#: Floor of the model (counts) where a derivative divides by it: keeps y / mu^2 finite.
MU_FLOOR = 1e-10


class Spec(NamedTuple):
    """Static description of a run (a jit static argument; the iteration limit and whether
    the prox is on are traced, so one compiled program serves every stage)."""

    manifolds: tuple  # frugal.unmix.Manifold per component (single-input: c = 1)
    shape: tuple  # (H, W)
    loss: str
    n_scales: int
    trace_len: int  # static length of the objective trace, >= any iteration limit
    tol: float
    solver: object  # the PALM value of frugal.xray.solver.variants: sweep order, amplitude update


class Control(NamedTuple):
    """Traced scalars shared by all cubes of a batch (not vmapped: ``lax.cond`` stays a branch)."""

    use_prox: jax.Array  # bool: regularised sweeps, or per-pixel ones
    limit: jax.Array  # int: maximum number of sweeps
    gtol: jax.Array  # float: the optimality residual (standard errors) of CONVERGED


class Models(NamedTuple):
    states: tuple  # the manifold's params (IAEState) per component
    reference: tuple  # lambda_ref (d_c,)
    basis: tuple  # V (d_c, k_c): the manifold's tangent basis
    lower: tuple  # (d_c,) box of the weights
    upper: tuple


class Data(NamedTuple):
    """Data of the ``A`` active pixels (inside the mask, with counts; padded with weight 0)."""

    y: jax.Array  # (A, E) counts
    bkg: jax.Array  # (A, E) background
    inv_var: jax.Array  # (A, E) 1 / variance (Gaussian loss)
    weight: jax.Array  # (A,) 1 for an active pixel, 0 for padding
    index: jax.Array  # (A,) flat pixel index of each entry


class State(NamedTuple):
    t: tuple  # per component (d_c - 1, P) free coordinates, every pixel (maps)
    s: jax.Array  # (C, A) amplitudes of the active pixels
    spectra: jax.Array  # (C, A, E) unit-sum spectra at t (cached: the objective needs no decoding)
    nu: jax.Array  # (A,) Levenberg-Marquardt damping
    it: jax.Array  # sweeps done
    prev: tuple = ()  # outer="ipalm": (t, s) of the previous sweep; () otherwise
    # The stopping test (``solve_cube``): per active pixel, the optimality residual of the last
    # sweep's start; F after the last sweep; whether that sweep decreased F by less than
    # tol; how many sweeps in a row decreased it by nothing; whether the loop is done (the
    # last sweep only tested).
    res: jax.Array | float = np.inf
    f: jax.Array | float = np.inf
    terms: tuple = ()  # (data term per active pixel (A,), regulariser): F's changes, exactly
    small: jax.Array | bool = False
    flat: jax.Array | int = 0
    done: jax.Array | bool = False
    best: jax.Array | float = np.inf  # the smallest residual (max over pixels) met so far
    since: jax.Array | int = 0  # sweeps since it last improved by RESIDUAL_PROGRESS


def spectra_at(manifold, models: Models, c: int, t_rows):
    """Unit-sum spectra ``(A, E)`` of component ``c`` at free coordinates ``t_rows`` ``(A, k)``."""
    lam = models.reference[c] + t_rows @ models.basis[c].T
    return manifold.signatures(models.states[c], lam)[..., 0, :]


def all_spectra(spec: Spec, models: Models, data: Data, ts):
    return jnp.stack([spectra_at(man, models, c, t[:, data.index].T) for c, (man, t) in
                      enumerate(zip(spec.manifolds, ts))])


def project_rows(manifold, models: Models, c: int, t_rows):
    """Free coordinates projected onto the admissible set of component ``c`` (IAE weights: the
    training box within the plane)."""
    ref, basis = models.reference[c], models.basis[c]
    lam = manifold.project(ref + t_rows @ basis.T, models.lower[c], models.upper[c])
    return (lam - ref) @ basis


def project_maps(spec: Spec, models: Models, ts):
    return tuple(project_rows(man, models, c, t.T).T for c, (man, t) in enumerate(zip(spec.manifolds, ts)))


def mixture(data: Data, s, spectra):
    return data.bkg + jnp.einsum("ca,cae->ae", s, spectra)


def pixel_loss(loss: str, data: Data, mu):
    """Data term per active pixel ``(A,)``: half the Poisson deviance, summed as
    ``y log(y / mu) - y + mu`` (terms that vanish at a perfect fit, unlike
    ``mu - y log mu + const``, whose cancellation costs float32 its last four digits), or
    half the chi-square (:func:`frugal.ops.losses.gaussian_loss` with the weights
    ``1 / max(y, 1)``); 0 for padding.

    Not :func:`frugal.ops.losses.poisson_deviance`, whose form is exact to a few ulps of each
    channel's own deviance but takes two logarithms a channel: on a 94 x 94 x 375 cube it took
    12.6-14.3 ms an evaluation against 7.5 ms for this one (2 CPU cores), and SUSHI evaluates
    its data term several times a sweep: with it a sweep of ``benchmarks/xray_sushi.py`` took
    14-20 % longer. The loop's tests compare changes of this sum pixel by pixel, which this
    form resolves."""
    if loss == "poisson":
        pos = data.y > 0
        ratio = jnp.where(pos, data.y / jnp.maximum(mu, TINY), 1.0)
        val = jnp.sum(jnp.where(pos, data.y * jnp.log(ratio), 0.0) - data.y + mu, axis=-1)
    else:
        val = gaussian_loss(data.y, mu, weights=data.inv_var)
    return data.weight * val


def mu_derivatives(loss: str, data: Data, mu):
    """``d loss / d mu``, the Fisher weight (Gauss-Newton) and the observed curvature, ``(A, E)``."""
    w = data.weight[:, None]
    if loss == "poisson":
        ratio, inverse = poisson_weights(data.y, mu, MU_FLOOR)
        return w * (1.0 - ratio), w * inverse, w * ratio / jnp.maximum(mu, MU_FLOOR)
    c = w * data.inv_var
    return c * (mu - data.y), c, c


def regulariser(spec: Spec, ts, thresholds):
    h, w = spec.shape
    total = jnp.zeros((), ts[0].dtype)
    for t, wt in zip(ts, thresholds):
        detail = starlet_transform(t.reshape(t.shape[0], h, w), spec.n_scales)[:-1]  # (J, k, H, W)
        total = total + jnp.sum(wt * jnp.sum(jnp.abs(detail), axis=(-2, -1)))
    return total


def cube_objective(spec: Spec, data: Data, state: State, thresholds):
    """``F``: data term + weighted l1 norm of the starlet details of the free coordinates."""
    val = jnp.sum(pixel_loss(spec.loss, data, mixture(data, state.s, state.spectra)))
    return val + regulariser(spec, state.t, thresholds)


def spectra_jacobian(manifold, models: Models, c: int, t_rows):
    """``d S_c / d t`` ``(A, E, k)``: the manifold's directional derivatives along the columns
    of the tangent basis (pixels are independent, so one direction for every pixel gives each
    pixel's column; ``k`` is 1-3)."""
    lam = models.reference[c] + t_rows @ models.basis[c].T
    _, derivs = manifold.signature_jvps(models.states[c], lam, models.basis[c])
    return jnp.stack([dx[..., 0, :] for dx in derivs], axis=-1)


def jacobian(spec: Spec, models: Models, data: Data, state: State):
    """``d mu / d z`` ``(A, E, n)`` in ``z = (s_1..s_C, t_1..t_C)`` (columns ``S_c`` and
    ``s_c dS_c / dt_c``)."""
    cols = [jnp.transpose(state.spectra, (1, 2, 0))]  # d mu / d s_c = S_c
    for c, man in enumerate(spec.manifolds):
        d_spec = spectra_jacobian(man, models, c, state.t[c][:, data.index].T)
        cols.append(state.s[c][:, None, None] * d_spec)
    return jnp.concatenate(cols, axis=-1)


def latent_slices(spec: Spec):
    n_comp = len(spec.manifolds)
    out, i = [], n_comp
    for man in spec.manifolds:
        out.append(slice(i, i + man.n_free))
        i += man.n_free
    return out


def scatter_rows(t, data: Data, delta_rows):
    """Add per-entry changes ``(A, k)`` to the maps ``(k, P)`` (padding adds 0)."""
    return t.at[:, data.index].add((delta_rows * data.weight[:, None]).T)
