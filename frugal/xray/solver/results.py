"""What :func:`frugal.xray.sushi` and :func:`frugal.xray.fit_pixels` return: the result type, the
goodness of fit of the fitted cube, and the maps assembled from the solver state of the active pixels.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from frugal.ops.gof import pvalue_from_moments, tabulated_deviance_moments
from frugal.solvers.batching import first_of_batch
from frugal.solvers.status import Status

__all__ = ["SushiResult", "assemble_result", "goodness_of_fit"]


class SushiResult(NamedTuple):
    """Result of :func:`sushi` and :func:`fit_pixels` (a leading batch axis on every array
    when a batch of cubes was given).

    amplitude: ``(C, H, W)`` expected counts of each component per pixel (all channels).
    latent: one ``(d_c, H, W)`` map of barycentric weights per component.
    components: ``(C, E, H, W)`` fitted cube of each component.
    model: ``(E, H, W)`` fitted expected counts (background included).
    params: dict name -> ``(H, W)`` physical-parameter maps (from ``param_maps``; empty
      without them; a name shared by two components is prefixed ``"<component>:"``).
    objective: ``F`` at the start and after each sweep (non-increasing; NaN-padded for a
      batch).
    n_iter: sweeps of the loop; converged: ``status == Status.CONVERGED`` (the first-order
      optimality test passed; module doc, "Stop reasons").
    thresholds: per component, ``(n_scales, d_c - 1)`` l1 weights ``w`` (zeros for
      :func:`fit_pixels`).
    n_iter_init: sweeps of the per-pixel fit SUSHI started from (0 with ``init``).
    names: the component names.
    status: why the loop stopped (:class:`frugal.solvers.Status`, ``int32``): ``CONVERGED``
      when ``residual <= gtol``, else ``MAX_ITER`` (the iteration limit), ``STALLED`` (``F``
      stopped decreasing short of the test) or ``NON_FINITE``.
    residual: the optimality residual of the result, in standard errors: the largest over
      the pixels of ``pixel_residual``.
    deviance: the Poisson deviance of the fitted model over the pixels inside the mask
      (whatever ``loss``: the data are counts).
    gof_pvalue: its goodness-of-fit p-value (:func:`frugal.ops.gof.gof_pvalue`, valid at low
      counts), with ``C + sum(d_c - 1)`` fitted parameters per pixel with counts for
      :func:`fit_pixels`. For :func:`sushi` the number of effective parameters is an
      approximation: ``C`` amplitudes per pixel (not regularised) plus, of the latent maps,
      the unpenalised coarse starlet plane only, ``sum(d_c - 1) / 4^n_scales`` per pixel (the
      surviving detail coefficients are not counted, so the p-value errs on the large side;
      counting all ``C + sum(d_c - 1)`` would make it tiny on cubes drawn from the models
      themselves, the regularised fit's deviance being that of about ``C`` parameters per
      pixel). Below 1e-3 the models do not describe the cube (a missing component, a wrong
      background or calibration, a hot pixel).
    pixel_status: ``(H, W)`` the status of each pixel: ``CONVERGED`` where its own residual
      passes the test, else the cube's reason (``MAX_ITER``, ``STALLED``), ``NON_FINITE``
      where its values are not finite. Pixels without counts or outside the mask have nothing
      to fit: ``CONVERGED``, residual 0.
    pixel_residual: ``(H, W)`` each pixel's optimality residual (standard errors).
    pixel_deviance: ``(H, W)`` each pixel's Poisson deviance (NaN outside the mask; inf
      where it has counts in a channel the model gives none).
    pixel_gof_pvalue: ``(H, W)`` its p-value, ``C + sum(d_c - 1)`` parameters per pixel:
      the per-pixel test of :func:`fit_pixels` (for :func:`sushi` the parameters per pixel
      of ``gof_pvalue``); NaN outside the mask.
    """

    amplitude: np.ndarray
    latent: tuple
    components: np.ndarray
    model: np.ndarray
    params: dict
    objective: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    thresholds: tuple
    n_iter_init: np.ndarray
    names: tuple
    status: np.ndarray | None = None
    residual: np.ndarray | None = None
    deviance: np.ndarray | None = None
    gof_pvalue: np.ndarray | None = None
    pixel_status: np.ndarray | None = None
    pixel_residual: np.ndarray | None = None
    pixel_deviance: np.ndarray | None = None
    pixel_gof_pvalue: np.ndarray | None = None


def goodness_of_fit(y, model, inside, active, n_free):
    """Per pixel ``(B, P)`` and per cube ``(B,)``: the Poisson deviance of the fitted model and
    its p-value (:func:`frugal.ops.gof.gof_pvalue`'s method): ``n_free`` fitted parameters per
    pixel with counts, none in a pixel without (its amplitudes are 0, the exact optimum);
    NaN outside the mask. ``y``, ``model``: ``(B, E, P)``."""
    b, e, p = y.shape
    y64, mu64 = y.astype(np.float64), model.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(y64 > 0, y64 * np.log(y64 / mu64), 0.0) - y64 + mu64
    deviance = np.where(inside, 2.0 * term.sum(1), np.nan)  # (B, P); inf: counts the model cannot explain
    mean, var = tabulated_deviance_moments(np.maximum(model, 0.0))
    mean, var = mean.sum(1, dtype=np.float64), var.sum(1, dtype=np.float64)  # (B, P)
    n_params = np.where(active, float(n_free), 0.0)
    pixel_p = np.where(inside, np.asarray(pvalue_from_moments(deviance, mean, var, n_params)), np.nan)
    total = np.where(inside, deviance, 0.0).sum(1)
    cube_p = np.asarray(pvalue_from_moments(total, np.where(inside, mean, 0.0).sum(1),
                                            np.where(inside, var, 0.0).sum(1), n_params.sum(1)))
    return deviance, pixel_p, total, cube_p


def assemble_result(state, f0, trace, n_iter, outcome, thr, n_init, geometry, models, param_maps, names, y, bkg,
              mask, index, weight, batched, n_free):
    b, e, h, w = y.shape
    n_comp = len(models)
    amplitude = np.zeros((b, n_comp, h * w), np.float32)
    spectra = np.zeros((b, n_comp, h * w, e), np.float32)
    s_act, sp_act = np.asarray(state.s), np.asarray(state.spectra)
    for i in range(b):  # over cubes: scatter the active pixels back into the maps
        real = weight[i] > 0
        amplitude[i][:, index[i, real]] = s_act[i][:, real]
        spectra[i][:, index[i, real]] = sp_act[i][:, real]
    components = (amplitude[..., None] * spectra).transpose(0, 1, 3, 2).reshape(b, n_comp, e, h, w)
    model = bkg + components.sum(axis=1)
    inside = mask.reshape(b, h * w)

    # Stop reasons and goodness of fit. Pixels without a data term (no counts, or outside the
    # mask) have nothing to optimise: optimal (residual 0), as coordinates without curvature.
    pixel_status = np.full((b, h * w), int(Status.CONVERGED), np.int32)
    pixel_residual = np.zeros((b, h * w), np.float32)
    ps, pr = np.asarray(outcome.pixel_status), np.asarray(outcome.pixel_residual)
    active = np.zeros((b, h * w), bool)
    for i in range(b):
        real = weight[i] > 0
        pixel_status[i, index[i, real]] = ps[i, real]
        pixel_residual[i, index[i, real]] = pr[i, real]
        active[i, index[i, real]] = True
    pixel_dev, pixel_p, deviance, gof_p = goodness_of_fit(y.reshape(b, e, h * w), model.reshape(b, e, h * w),
                                                          inside, active, n_free)
    status = np.asarray(outcome.status).astype(np.int32)
    residual = np.asarray(outcome.residual).astype(np.float32)
    converged = status == int(Status.CONVERGED)
    stats = [status, residual, deviance.astype(np.float32), gof_p.astype(np.float32),
             pixel_status.reshape(b, h, w), pixel_residual.reshape(b, h, w),
             pixel_dev.reshape(b, h, w).astype(np.float32), pixel_p.reshape(b, h, w).astype(np.float32)]
    latent = []
    for c in range(n_comp):
        ref = np.asarray(geometry.reference[c])
        lam = ref[None, :, None] + np.einsum("dk,bkp->bdp", np.asarray(geometry.basis[c]), np.asarray(state.t[c]))
        lam = np.where(inside[:, None, :], lam, ref[None, :, None])
        latent.append(lam.reshape(b, -1, h, w).astype(np.float32))
    params = {}
    all_names = [nm for pm in param_maps if pm is not None for nm in pm.names]
    for c, pm in enumerate(param_maps):
        if pm is None:
            continue
        for nm, values in pm(latent[c], axis=1).items():
            key = nm if all_names.count(nm) == 1 else f"{names[c]}:{nm}"
            params[key] = values.astype(np.float32)
    n_iter = np.asarray(n_iter)
    objective = np.concatenate([np.asarray(f0)[:, None], np.asarray(trace)], axis=1)
    objective[np.arange(objective.shape[1])[None, :] > n_iter[:, None]] = np.nan
    objective = objective[:, : int(n_iter.max()) + 1]
    thresholds = tuple(np.asarray(t) for t in thr)
    amplitude = amplitude.reshape(b, n_comp, h, w)
    n_init = np.asarray(n_init)
    if not batched:
        amplitude, components, model, latent, objective, n_iter, converged, n_init, thresholds, stats = \
            first_of_batch((amplitude, components, model, latent, objective, n_iter, converged, n_init, thresholds,
                            stats))
        params = {k: v[0] for k, v in params.items()}  # in their order (a pytree's dict keys are sorted)
    return SushiResult(amplitude, tuple(latent), components, model, params, objective, n_iter, converged,
                       thresholds, n_init, names, *stats)
