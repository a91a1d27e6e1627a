"""Figures of gamma-ray spectral families (made with :mod:`frugal.plotting`: matplotlib is
imported only when a figure is drawn, and the backend is left alone)."""

from __future__ import annotations

import numpy as np

from frugal.plotting import colormap, figure


def plot_family(family, ax=None, *, log: bool = True, max_curves: int = 12, cmap: str = "viridis", label=None):
    """Draw the spectra of a family coloured by their first parameter (e.g. thickness).

    ``family`` is a :class:`frugal.data.Family` (``spectra``, ``params``, ``param_names``,
    ``energies``). At most ``max_curves`` members, evenly spread over the family, are drawn
    (the whole family can hold hundreds). ``log`` uses a logarithmic count axis (zero bins
    are not drawn). A colour bar names the parameter. Returns the axes (on a new
    :class:`matplotlib.figure.Figure`, ``ax.figure``, when ``ax`` is None).
    """
    colours = colormap(cmap)  # raises the install hint when matplotlib is missing
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    spectra = np.asarray(family.spectra, dtype=np.float64)
    if spectra.ndim == 1:
        spectra = spectra[None]
    energies = np.asarray(family.energies, dtype=np.float64)
    params = np.asarray(family.params, dtype=np.float64).reshape(spectra.shape[0], -1)
    name = family.param_names[0] if len(family.param_names) else "parameter"
    if ax is None:
        ax = figure(figsize=(8, 4.5), layout="constrained").subplots()
    order = np.argsort(params[:, 0], kind="stable")
    pick = order[np.unique(np.linspace(0, order.size - 1, min(max_curves, order.size)).round().astype(int))]
    lo, hi = params[:, 0].min(), params[:, 0].max()
    norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1)
    for i in pick:
        y = np.where(spectra[i] > 0, spectra[i], np.nan) if log else spectra[i]
        ax.plot(energies, y, lw=0.9, color=colours(norm(params[i, 0])))
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("energy (keV)")
    ax.set_ylabel("counts per bin" + (" (unit sum)" if np.allclose(spectra.sum(axis=1), 1.0, rtol=1e-4) else ""))
    if label:
        ax.set_title(label)
    sm = ScalarMappable(norm=norm, cmap=colours)
    ax.figure.colorbar(sm, ax=ax, label=name.replace("_", " "))
    return ax


def plot_fit(counts, signatures, amounts, *, energies=None, names=None, title=None, path=None):
    """The fit of one spectrum by a mixture, and its Poisson (Pearson) residuals.

    counts: ``(m,)`` measured counts; signatures: ``(m, K)`` unit-sum columns (as in
    :attr:`frugal.gamma.UnmixResult.signatures`); amounts: ``(K,)`` expected counts of each
    source, so the model is ``mu = signatures @ amounts``. The top panel draws the data,
    ``mu`` and each source's contribution on a log scale; the bottom panel the residuals
    ``(y - mu) / sqrt(mu)``, which are about N(0, 1) channel by channel when the model is
    right (Poisson counts above a few per channel), with +-2 guides. Returns the
    :class:`matplotlib.figure.Figure`; writes it to ``path`` when given.
    """
    y = np.asarray(counts, dtype=np.float64)
    s = np.asarray(signatures, dtype=np.float64)
    a = np.asarray(amounts, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"counts must be one spectrum (m,), got shape {y.shape}")
    if s.ndim != 2 or s.shape[0] != y.size:
        raise ValueError(f"signatures must be (m, K) with m = {y.size}, got shape {s.shape}")
    if a.shape != (s.shape[1],):
        raise ValueError(f"amounts must have {s.shape[1]} entries (one per signature), got shape {a.shape}")
    e = np.arange(y.size, dtype=np.float64) if energies is None else np.asarray(energies, dtype=np.float64)
    if e.shape != y.shape:
        raise ValueError(f"energies must have {y.size} values, got {e.size}")
    names = [f"source {k}" for k in range(a.size)] if names is None else list(names)
    parts = s * a
    mu = parts.sum(axis=1)
    fig = figure(figsize=(9, 6), layout="constrained")
    ax, axr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.step(e, np.where(y > 0, y, np.nan), where="mid", color="0.3", lw=0.8, label="data")
    for k in range(a.size):
        ax.plot(e, np.where(parts[:, k] > 0, parts[:, k], np.nan), lw=1.0, label=f"{names[k]}: {a[k]:.4g}")
    ax.plot(e, mu, color="k", lw=1.3, ls="--", label="model")
    ax.set_yscale("log")
    # keep the axis on the counts: components far below one count per channel only clutter it
    ax.set_ylim(max(0.3, 0.5 * np.min(mu[mu > 0])) if np.any(mu > 0) else 0.3, 3 * max(y.max(), mu.max(), 1.0))
    ax.set_ylabel("counts per bin")
    ax.legend(fontsize=8, ncol=2)
    if title:
        ax.set_title(title)
    ok = mu > 0
    resid = np.where(ok, (y - mu) / np.sqrt(np.where(ok, mu, 1.0)), np.nan)
    axr.plot(e, resid, ".", ms=2, color="C0")
    for level in (-2, 0, 2):
        axr.axhline(level, color="0.5", lw=0.8, ls="-" if level == 0 else ":")
    axr.set_ylabel("(y - mu) / sqrt(mu)")
    axr.set_xlabel("energy (keV)" if energies is not None else "bin")
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
