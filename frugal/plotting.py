"""The one way frugal makes figures.

Figures are built as :class:`matplotlib.figure.Figure` objects, not through ``pyplot``:

* a ``Figure`` needs no GUI backend, so ``fig.savefig(path)`` works on a headless machine
  without forcing the Agg backend; a library must never switch the backend, because that
  breaks the user's own plots in a Jupyter session or a GUI application;
* pyplot keeps every figure it makes alive in a global registry until ``plt.close``; a
  ``Figure`` is freed like any other object once it is no longer referenced.

A returned ``Figure`` is drawn by Jupyter when it is a cell's value (or via
``IPython.display.display(fig)``), not by ``plt.show()``. matplotlib is imported only when a
figure is asked for, so frugal imports without it (``pip install 'frugal-unmix[plot]'``).
"""

from __future__ import annotations

__all__ = ["colormap", "figure"]

_MISSING = "figures need matplotlib: pip install 'frugal-unmix[plot]'"


def figure(**kw):
    """A new :class:`matplotlib.figure.Figure`; ``kw`` go to its constructor (``figsize``, ``dpi``,
    ``layout``...). Draw with ``fig.subplots(...)`` and ``fig.colorbar(...)``, write with
    ``fig.savefig(path)``; nothing to close."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(_MISSING) from err
    return Figure(**kw)


def colormap(cmap="viridis"):
    """The :class:`matplotlib.colors.Colormap` named ``cmap`` (a Colormap is returned as is),
    without pyplot's ``plt.cm`` / ``plt.get_cmap``."""
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(_MISSING) from err
    return matplotlib.colormaps.get_cmap(cmap)
