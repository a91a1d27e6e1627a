"""Deterministic smooth spectral families with known parameters.

They stand in for costly Monte Carlo simulations when testing or demonstrating the IAE: a
spectrum is a smooth continuum plus Gaussian lines whose position, width and strength move
with one or two parameters in [0, 1], so interpolating between two spectra linearly is wrong
(lines move) while the family itself is a smooth low-dimensional manifold.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from frugal._validation import check_float, check_int


class Family(NamedTuple):
    """A labelled family of spectra.

    spectra: ``(N, n)`` non-negative spectra (unit sum unless said otherwise).
    params: ``(N, p)`` the parameters that generated each spectrum.
    param_names: the ``p`` parameter names.
    energies: ``(n,)`` channel centres (arbitrary units for the toy families, keV for physics).
    """

    spectra: np.ndarray
    params: np.ndarray
    param_names: tuple
    energies: np.ndarray


class Split(NamedTuple):
    """Indices of anchors, training and test members of a family (disjoint)."""

    anchors: np.ndarray
    train: np.ndarray
    test: np.ndarray


def _line_spectra(t, u, energies):
    """Spectra for parameter arrays ``t`` (line position/strength) and ``u`` (widths/continuum)."""
    t = t[:, None]
    u = u[:, None]
    e = energies[None, :]
    continuum = np.exp(-e / (0.25 + 0.25 * u + 0.1 * t)) * (0.6 + 0.4 * e)
    lines = (
        (1.0 + 0.5 * t, 0.22 + 0.18 * t, 0.012 + 0.012 * u),  # (area, centre, sigma)
        (0.8 - 0.4 * t, 0.55 - 0.08 * t, 0.018 + 0.010 * u),
        (0.5 + 0.3 * u, 0.80 + 0.04 * t - 0.03 * u, 0.010 + 0.008 * t),
    )
    spectra = 0.35 * continuum / continuum.mean(axis=1, keepdims=True) / e.shape[1]
    for area, centre, sigma in lines:
        g = np.exp(-0.5 * ((e - centre) / sigma) ** 2)
        spectra = spectra + area * g / g.sum(axis=1, keepdims=True)
    return spectra / spectra.sum(axis=1, keepdims=True)


def line_family(
    n_spectra: int = 100,
    n_channels: int = 1000,
    *,
    n_params: int = 1,
    seed: int | None = 0,
) -> Family:
    """A family of continuum + three moving Gaussian lines, unit-sum spectra.

    With ``n_params=1`` the parameter ``t`` moves and reshapes the lines; ``n_params=2`` adds
    ``u``, which changes line widths and the continuum slope. Parameters lie in [0, 1]; the
    extreme values (``t = 0`` and ``t = 1``, or the four corners) are always members, so
    they can serve as anchors. ``seed=None`` gives an evenly spaced grid, otherwise the
    interior members are drawn uniformly at random with that seed (deterministic).
    """
    n_spectra = check_int(n_spectra, "n_spectra", minimum=4)
    n_channels = check_int(n_channels, "n_channels", minimum=8)
    if n_params not in (1, 2):
        raise ValueError(f"n_params must be 1 or 2, got {n_params!r}")
    energies = (np.arange(n_channels) + 0.5) / n_channels
    if n_params == 1:
        corners = np.array([[0.0], [1.0]])
    else:
        corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    n_inner = n_spectra - len(corners)
    if seed is None:
        if n_params == 1:
            inner = np.linspace(0.0, 1.0, n_inner + 2)[1:-1, None]
        else:
            side = int(np.ceil(np.sqrt(n_inner)))
            g = (np.arange(side) + 0.5) / side
            inner = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)[:n_inner]
    else:
        inner = np.random.default_rng(seed).uniform(0.0, 1.0, size=(n_inner, n_params))
    params = np.concatenate([corners, inner], axis=0)
    u = params[:, 1] if n_params == 2 else np.full(len(params), 0.5)
    spectra = _line_spectra(params[:, 0], u, energies)
    names = ("t",) if n_params == 1 else ("t", "u")
    return Family(spectra.astype(np.float32), params.astype(np.float32), names, energies.astype(np.float32))


def split(family: Family, *, test_fraction: float = 0.25, seed: int = 0) -> Split:
    """Anchors at the corners of the parameter box, the rest split at random into train/test.

    The anchors are the members closest to each corner of the bounding box of ``params``
    (two for one parameter, four for two).
    """
    test_fraction = check_float(test_fraction, "test_fraction", minimum=0.0)
    if test_fraction >= 1:
        raise ValueError(f"test_fraction must be < 1, got {test_fraction}")
    params = np.asarray(family.params, dtype=float)
    lo, hi = params.min(0), params.max(0)
    p = params.shape[1]
    corners = np.array(np.meshgrid(*[[0.0, 1.0]] * p, indexing="ij")).reshape(p, -1).T
    scaled = (params - lo) / np.where(hi > lo, hi - lo, 1.0)
    anchors = []
    for c in corners:
        order = np.argsort(np.linalg.norm(scaled - c, axis=1))
        anchors.append(next(int(i) for i in order if i not in anchors))
    rest = np.setdiff1d(np.arange(len(params)), anchors)
    rest = np.random.default_rng(seed).permutation(rest)
    n_test = int(round(test_fraction * len(rest)))
    return Split(np.array(anchors), np.sort(rest[n_test:]), np.sort(rest[:n_test]))
