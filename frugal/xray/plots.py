"""Panels of sky maps (amplitude or physical-parameter maps) with matplotlib.

Figures come from :mod:`frugal.plotting`: matplotlib is imported only when a panel is drawn,
so the package imports without it (``pip install frugal-unmix[plot]``), and the backend is
left alone.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from frugal._validation import check_array
from frugal.plotting import figure

__all__ = ["plot_maps"]


def plot_maps(maps, names=None, ax=None, *, cmap="viridis", ncols=None, colorbar=True, **imshow_kwargs):
    """Draw each map of ``maps`` in its own panel, with a title and a colour bar.

    Parameters
    ----------
    maps : (N, H, W) array, (H, W) array or dict name -> (H, W) array
        Maps in numpy order (row = sky y); drawn with ``origin="lower"`` as FITS viewers do.
        NaN pixels (e.g. outside a mask) are left blank.
    names : sequence of N str, optional
        Panel titles (the dict's keys for a dict; ``map 0``, ``map 1``... otherwise).
    ax : Axes or sequence of N Axes, optional
        Where to draw; a new figure with ``ncols`` columns (default ``min(N, 4)``) otherwise.
    cmap, imshow_kwargs
        Passed to ``Axes.imshow``.

    Returns
    -------
    (figure, list of Axes)
        A new :class:`matplotlib.figure.Figure` when ``ax`` is None, else that of ``ax``.
    """
    if isinstance(maps, Mapping):
        if names is None:
            names = list(maps)
        maps = [maps[k] for k in names]
    arr = check_array(maps, "maps", ndim=(2, 3), finite=False, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    n = arr.shape[0]
    names = [f"map {i}" for i in range(n)] if names is None else [str(v) for v in names]
    if len(names) != n:
        raise ValueError(f"names must have one entry per map ({n}), got {len(names)}")

    if ax is None:
        ncols = min(n, 4) if ncols is None else int(ncols)
        nrows = -(-n // ncols)
        fig = figure(figsize=(3.6 * ncols, 3.2 * nrows))
        grid = fig.subplots(nrows, ncols, squeeze=False)
        axes = list(grid.ravel())
        for extra in axes[n:]:
            extra.set_axis_off()
        axes = axes[:n]
    else:
        axes = list(np.ravel(np.asarray(ax, dtype=object)))
        if len(axes) != n:
            raise ValueError(f"ax must hold one Axes per map ({n}), got {len(axes)}")
        fig = axes[0].figure
    for a, m, name in zip(axes, arr, names):
        image = a.imshow(m, origin="lower", cmap=cmap, **imshow_kwargs)
        a.set_title(name)
        a.set_xticks([])
        a.set_yticks([])
        if colorbar:
            fig.colorbar(image, ax=a, fraction=0.046, pad=0.04)
    return fig, axes
