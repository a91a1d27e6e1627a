"""Reading unmixing results as a physicist reports them.

``counting_error_table``  relative counting errors of several methods over Poisson draws,
                          with the coverage of their +-1 sigma intervals;
``latent_curve``          the calibration curve from a two-anchor IAE's barycentric weight to
                          the family's parameter (e.g. the steel thickness), when monotone;
``param_from_latent``     that parameter, with its standard error, for measured weights.
"""

from __future__ import annotations

import numpy as np

__all__ = ["counting_error_table", "latent_curve", "param_from_latent"]


def counting_error_table(results: dict, true_counts, names) -> str:
    """A text table of relative counting errors (%), median [q25, q75] over draws, per method.

    results: method name -> :class:`frugal.gamma.UnmixResult` of a batch of draws (counts
    ``(D, K)``); true_counts: ``(K,)``; names: the ``K`` source names. A last column gives
    the coverage of the +-1 sigma intervals (share of draws and sources within one standard
    error of the truth; about 0.68 when errors are right).
    """
    a_true = np.asarray(true_counts, dtype=np.float64)
    width = max(22, max(len(n) for n in names) + 2)
    lines = [f"{'method':10s}" + "".join(f"{n:>{width}s}" for n in names) + f"{'cover 1s':>10s}"]
    for method, res in results.items():
        a = np.atleast_2d(np.asarray(res.counts, dtype=np.float64))
        rel = 100.0 * (a - a_true) / a_true
        q25, q50, q75 = np.percentile(rel, [25, 50, 75], axis=0)
        cells = "".join(f"{f'{m:.1f} [{lo:.1f}, {hi:.1f}]':>{width}s}" for m, lo, hi in zip(q50, q25, q75))
        cover = np.mean(np.abs(a - a_true) <= np.atleast_2d(res.stderr))
        lines.append(f"{method:10s}{cells}{cover:10.2f}")
    return "\n".join(lines)


def latent_curve(model, spectra, params):
    """``(latent_1, parameter)`` pairs of the training spectra when the map is monotone, else None.

    With two anchors the weight of the second one moves along the family; when it is a
    monotone function of a single parameter (e.g. the thickness), measured weights can be
    read back as that parameter by interpolation.
    """
    params = np.asarray(params, dtype=np.float64)
    if model.n_anchors != 2 or params.ndim != 2 or params.shape[1] != 1:
        return None
    lam = model.interpolate(spectra)[:, 1].astype(np.float64)
    order = np.argsort(lam)
    p = params[order, 0]
    if not (np.all(np.diff(p) > 0) or np.all(np.diff(p) < 0)) or np.any(np.diff(lam[order]) <= 0):
        return None
    return {"latent": lam[order].tolist(), "param": p.tolist()}


def param_from_latent(curve, lam1, lam1_err):
    """Parameter and its standard error (delta method) for weights ``lam1`` on ``curve``."""
    x, p = np.asarray(curve["latent"]), np.asarray(curve["param"])
    value = np.interp(lam1, x, p)
    slope = np.interp(lam1, 0.5 * (x[1:] + x[:-1]), np.diff(p) / np.diff(x))
    return value, np.abs(slope) * lam1_err
