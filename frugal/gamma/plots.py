"""Figures of gamma-ray spectral families (matplotlib is imported only when a figure is drawn)."""

from __future__ import annotations

import numpy as np


def plot_family(family, ax=None, *, log: bool = True, max_curves: int = 12, cmap: str = "viridis", label=None):
    """Draw the spectra of a family coloured by their first parameter (e.g. thickness).

    ``family`` is a :class:`frugal.data.Family` (``spectra``, ``params``, ``param_names``,
    ``energies``). At most ``max_curves`` members, evenly spread over the family, are drawn
    (the whole family can hold hundreds). ``log`` uses a logarithmic count axis (zero bins
    are not drawn). A colour bar names the parameter. Returns the axes.
    """
    try:
        import matplotlib.pyplot as plt
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("figures need matplotlib: pip install 'frugal-unmix[plot]'") from err

    spectra = np.asarray(family.spectra, dtype=np.float64)
    if spectra.ndim == 1:
        spectra = spectra[None]
    energies = np.asarray(family.energies, dtype=np.float64)
    params = np.asarray(family.params, dtype=np.float64).reshape(spectra.shape[0], -1)
    name = family.param_names[0] if len(family.param_names) else "parameter"
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    order = np.argsort(params[:, 0], kind="stable")
    pick = order[np.unique(np.linspace(0, order.size - 1, min(max_curves, order.size)).round().astype(int))]
    lo, hi = params[:, 0].min(), params[:, 0].max()
    norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1)
    colours = plt.get_cmap(cmap)
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
