"""Figures of merit of X-ray unmixing results.

``fit_summary`` / ``fit_line``: why SUSHI or the per-pixel fit stopped and how well it fits
(JSON-ready, and as one terminal line); ``map_errors``: the errors of the amplitude and
parameter maps against a simulated cube's truth.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_line", "fit_summary", "map_errors"]


def fit_summary(result) -> dict:
    """Stop reason and goodness of fit of a :class:`~frugal.xray.SushiResult` (JSON-ready):
    the cube's status, optimality residual (standard errors), deviance and p-value, and the
    pixels (with counts) that did not pass the optimality test or are badly fitted
    (p < 1e-3)."""
    from frugal.solvers.status import status_counts, status_names

    p_pix = np.asarray(result.pixel_gof_pvalue)
    return {"status": str(status_names(result.status)), "residual": float(result.residual),
            "deviance": float(result.deviance), "gof_pvalue": float(result.gof_pvalue),
            "pixel_status": status_counts(result.pixel_status),
            "pixels_badly_fitted": int(np.sum(np.isfinite(p_pix) & (p_pix < 1e-3))),
            "pixels_fitted": int(np.sum(np.isfinite(p_pix)))}


def fit_line(fit: dict) -> str:
    """One line of :func:`fit_summary` for the terminal."""
    others = {k: v for k, v in fit["pixel_status"].items() if k != "converged"}
    pixels = ", ".join(f"{v} {k}" for k, v in others.items()) or "all converged"
    return (f"status: {fit['status']} (optimality residual {fit['residual']:.3g} standard errors; pixels: "
            f"{pixels}); goodness of fit: deviance {fit['deviance']:.1f}, p = {fit['gof_pvalue']:.3g}, "
            f"{fit['pixels_badly_fitted']} of {fit['pixels_fitted']} pixels with p < 1e-3")


def map_errors(result, cube) -> dict:
    """Amplitude NMSE (dB) per component, median absolute errors of the parameter maps
    inside the remnant mask and component-cube NMSE (dB) of a result on a simulated cube.

    NMSE in dB as everywhere in frugal (:func:`frugal.iae.nmse_db`): ``-20 log10(||x_hat -
    x|| / ||x||)``, higher is better.
    """
    from frugal.iae.metrics import nmse_db

    mask = cube.mask
    out = {}
    for c, name in enumerate(cube.component_names):
        out[f"{name}_amplitude_nmse_db"] = float(nmse_db(result.amplitude[c], cube.amplitude[c], axis=None))
        out[f"{name}_cube_nmse_db"] = float(nmse_db(result.components[c], cube.components[c], axis=None))
    for name, truth in cube.params.items():
        if name in result.params:
            out[f"{name}_mae"] = float(np.median(np.abs(result.params[name] - truth)[mask]))
    return out
