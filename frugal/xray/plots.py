"""Panels of sky maps (amplitude or physical-parameter maps) with matplotlib.

``plot_maps`` draws any set of maps; ``plot_map_panel`` is the titled panel that
``frugal xray unmix`` writes; ``plot_demo_maps`` sets the truth of a simulated cube beside
two fits (``frugal demo xray``).

Figures come from :mod:`frugal.plotting`: matplotlib is imported only when a panel is drawn,
so the package imports without it (``pip install frugal-unmix[plot]``), and the backend is
left alone.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from frugal._validation import check_array
from frugal.plotting import figure

__all__ = ["plot_demo_maps", "plot_map_panel", "plot_maps"]


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


def plot_map_panel(maps: dict, path=None, title: str | None = None):
    """All of ``maps`` (name -> (H, W)) in one titled figure of at most four columns.

    Returns the :class:`matplotlib.figure.Figure`; writes it to ``path`` when given.
    """
    fig, _ = plot_maps(maps, ncols=min(len(maps), 4))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_demo_maps(cube, pixels, sushi_result, path=None, title: str | None = None):
    """Rows kT, z, photon index and the amplitudes; columns truth / per-pixel / SUSHI, one
    colour scale per row (that of the truth), outside the remnant blank.

    cube: the simulated :class:`frugal.xray.XrayCube` (its ``params``, ``amplitude``,
    ``component_names`` and ``mask``); pixels, sushi_result: the
    :class:`frugal.xray.SushiResult` of :func:`frugal.xray.fit_pixels` and
    :func:`frugal.xray.sushi` on it. Returns the :class:`matplotlib.figure.Figure`; writes it
    to ``path`` when given.
    """
    rows = [(n, cube.params[n], pixels.params[n], sushi_result.params[n]) for n in ("kT", "z", "photon_index")]
    rows += [(f"{n} amplitude", cube.amplitude[c], pixels.amplitude[c], sushi_result.amplitude[c])
             for c, n in enumerate(cube.component_names)]
    fig = figure(figsize=(10.5, 3.0 * len(rows)))
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for (name, *values), row in zip(rows, axes):
        values = [np.where(cube.mask, v, np.nan) for v in values]
        lo, hi = np.nanpercentile(values[0], [1, 99])
        plot_maps(values, [f"{name}: {lab}" for lab in ("truth", "per-pixel", "SUSHI")], ax=list(row),
                  vmin=lo, vmax=hi)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
