"""Figures for a trained IAE (made with :mod:`frugal.plotting`: matplotlib is imported only
when a figure is asked for, and the backend is left alone)."""

from __future__ import annotations

import numpy as np

from frugal.plotting import colormap, figure


def plot_overview(model, test_spectra, test_params=None, *, energies=None, param_name="parameter",
                  n_path: int = 9, path=None):
    """Four panels: anchors, the interpolation path between them, test reconstructions, latent vs parameter.

    Returns the :class:`matplotlib.figure.Figure`; writes it to ``path`` when given.
    """
    from frugal.iae.metrics import nmse_db

    test_spectra = np.asarray(test_spectra)
    n = model.config.n_channels
    e = np.arange(n) if energies is None else np.asarray(energies)
    fig = figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2)
    first = lambda s: s[..., 0, :] if model.config.joint else s  # noqa: E731

    ax = axes[0, 0]
    for i, a in enumerate(first(model.anchors)):
        ax.plot(e, a, lw=1.2, label=f"anchor {i}")
    ax.set_title("Anchors")
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    d = model.n_anchors
    ts = np.linspace(0, 1, n_path)
    lam = np.zeros((n_path, d), np.float32)
    lam[:, 0], lam[:, 1] = 1 - ts, ts
    colors = colormap("viridis")(ts)
    for spec, c in zip(first(model.decode(lam)), colors):
        ax.plot(e, spec, color=c, lw=1)
    ax.set_title("Decoded path from anchor 0 to anchor 1")

    ax = axes[1, 0]
    rec = model.reconstruct(test_spectra)
    score = nmse_db(first(rec), first(test_spectra))
    for j, i in enumerate(np.linspace(0, len(test_spectra) - 1, min(3, len(test_spectra))).astype(int)):
        ax.plot(e, first(test_spectra)[i], color=f"C{j}", lw=2, alpha=0.4)
        ax.plot(e, first(rec)[i], color=f"C{j}", lw=1, ls="--", label=f"test {i}: {score[i]:.1f} dB")
    ax.set_title(f"Held-out spectra (solid) and reconstructions (dashed); median {np.median(score):.1f} dB")
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    lam_test = model.interpolate(test_spectra)
    if test_params is not None:
        p = np.asarray(test_params).reshape(len(test_spectra), -1)[:, 0]
        ax.scatter(p, lam_test[:, 1], s=14)
        ax.set_xlabel(param_name)
    else:
        ax.hist(lam_test[:, 1], bins=20)
        ax.set_xlabel("weight of anchor 1")
    ax.set_ylabel("weight of anchor 1")
    ax.set_title("Latent (barycentric weight) of held-out spectra")
    for a in axes[:, 0].tolist() + [axes[0, 1]]:
        a.set_xlabel("energy")
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
