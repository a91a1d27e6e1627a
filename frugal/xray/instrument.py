r"""The toy instrument of the X-ray cube simulator (:mod:`frugal.xray.simulate`).

Its energy channels (:func:`energies`, :func:`channel_edges`; by default 375 channels over
3-8.5 keV, SUSHI's toy model), the finer true-energy grid a continuum is sampled on before
folding, and its response. None of it is a real instrument response, only shapes with the
right orders of magnitude (all energies in keV):

* effective area :math:`A(E) = 600\,\mathrm{cm^2} \exp[-\tfrac12((E-1.5)/3.2)^2]`, a smooth
  fall-off with energy shaped like the grazing-incidence mirror reflectivity of
  Chandra/XMM-class telescopes (about 440 cm² at 4 keV, 180 at 6.5, 75 at 8 keV);
* Gaussian energy redistribution of CCD-like resolution,
  :math:`\mathrm{FWHM}(E) = 150\,\mathrm{eV}\,\sqrt{E / 6\,\mathrm{keV}}` (Fano-limited
  scaling), folded as a matrix :math:`R_{ct}` = probability that a photon of true energy
  :math:`E_t` lands in channel ``c`` (the Gaussian integrated over the channel's edges) acting
  on the continuum sampled on a finer true-energy grid, and analytically for lines (a
  Gaussian line folded by a Gaussian response stays Gaussian, integrated over each channel).
  Flux redistributed outside the band is lost, as with a real response.
"""

from __future__ import annotations

import numpy as np

from frugal._special import erfc
from frugal._validation import check_array, check_float, check_int

__all__ = [
    "BAND",
    "N_CHANNELS",
    "FWHM_AT_6KEV",
    "energies",
    "channel_edges",
    "channel_grid",
    "true_grid",
    "fwhm",
    "sigma",
    "effective_area",
    "gaussian_bins",
    "response_matrix",
]

#: Default band (keV) and number of channels of the toy instrument (SUSHI's toy model).
BAND = (3.0, 8.5)
N_CHANNELS = 375

#: Energy resolution: FWHM at 6 keV (keV), scaling as sqrt(E).
FWHM_AT_6KEV = 0.150


# --------------------------------------------------------------------------- energy grids


def energies(n_channels: int = N_CHANNELS, e_min: float = BAND[0], e_max: float = BAND[1]) -> np.ndarray:
    """Centres (keV) of ``n_channels`` equal-width channels tiling ``[e_min, e_max]``."""
    n_channels = check_int(n_channels, "n_channels", minimum=2)
    e_min = check_float(e_min, "e_min", minimum=0.0, strict=True)
    e_max = check_float(e_max, "e_max", minimum=e_min, strict=True)
    width = (e_max - e_min) / n_channels
    return e_min + width * (np.arange(n_channels) + 0.5)


def channel_edges(energies: np.ndarray) -> np.ndarray:
    """Channel edges (``E + 1``, keV) from channel centres: midpoints between centres, the
    outer edges half a channel beyond the first and last centres."""
    e = check_array(energies, "energies", ndim=1, dtype=np.float64)
    if e.size < 2 or np.any(np.diff(e) <= 0):
        raise ValueError("energies must be at least 2 strictly increasing channel centres (keV)")
    mid = 0.5 * (e[1:] + e[:-1])
    return np.concatenate([[e[0] - (mid[0] - e[0])], mid, [e[-1] + (e[-1] - mid[-1])]])


def channel_grid(energy_grid) -> tuple[np.ndarray, np.ndarray]:
    """Channel centres and edges (keV) of ``energy_grid`` (:func:`energies` if ``None``), checked positive."""
    e = energies() if energy_grid is None else check_array(energy_grid, "energies", ndim=1, dtype=np.float64)
    edges = channel_edges(e)
    if edges[0] <= 0:
        raise ValueError("energies must be positive (keV)")
    return e, edges


def true_grid(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres and widths of the true-energy grid a continuum is sampled on before folding.

    It reaches 6 sigma of resolution beyond the band so edge channels receive the flux
    redistributed from outside, and is at least as fine as 10 eV (a fifth of the narrowest
    resolution sigma) so that the midpoint rule is exact to well below a per cent.
    """
    lo = max(edges[0] - 6.0 * sigma(edges[0]), 0.05)
    hi = edges[-1] + 6.0 * sigma(edges[-1])
    step = min(float(np.min(np.diff(edges))), 0.01)
    n = int(np.ceil((hi - lo) / step))
    width = (hi - lo) / n
    return lo + width * (np.arange(n) + 0.5), np.full(n, width)


# --------------------------------------------------------------------------- instrument


def fwhm(energy) -> np.ndarray:
    """Energy resolution FWHM (keV) at ``energy`` (keV): 150 eV at 6 keV, scaling as sqrt(E)."""
    return FWHM_AT_6KEV * np.sqrt(np.asarray(energy, dtype=np.float64) / 6.0)


def sigma(energy):
    """Gaussian standard deviation (keV) of the energy resolution at ``energy`` (keV): FWHM / 2.355."""
    return fwhm(energy) / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def effective_area(energy) -> np.ndarray:
    """Effective area (cm²) at ``energy`` (keV): a Gaussian fall-off
    ``600 exp(-((E - 1.5) / 3.2)^2 / 2)`` with the shape of grazing-incidence mirror
    reflectivity (smooth, no edges; ~440 cm² at 4 keV, ~75 cm² at 8 keV)."""
    e = np.asarray(energy, dtype=np.float64)
    return 600.0 * np.exp(-0.5 * ((e - 1.5) / 3.2) ** 2)


def gaussian_bins(edges, mu, sigma):
    """Probability mass of N(mu, sigma^2) in each bin ``[edges[i], edges[i+1]]``.

    ``mu`` and ``sigma`` broadcast together (shape ``S``); the result has shape ``S + (n,)``.
    With ``q`` the tail mass beyond each edge (on the far side from ``mu``), a bin wholly
    above ``mu`` holds ``q_i - q_{i+1}``, one wholly below ``q_{i+1} - q_i`` and the bin
    containing ``mu`` ``1 - q_i - q_{i+1}``: far-tail bins keep their relative accuracy
    instead of cancelling to zero, for one ``erfc`` per edge.
    """
    mu = np.asarray(mu, dtype=np.float64)[..., None]
    sigma = np.maximum(np.asarray(sigma, dtype=np.float64), 1e-9)[..., None]
    u = (edges - mu) / (np.sqrt(2.0) * sigma)
    q = 0.5 * erfc(np.abs(u))
    above = u[..., :-1] >= 0
    below = u[..., 1:] <= 0
    q_lo, q_hi = q[..., :-1], q[..., 1:]
    return np.where(above, q_lo - q_hi, np.where(below, q_hi - q_lo, 1.0 - q_lo - q_hi))


def response_matrix(energies=None, true_energies=None) -> np.ndarray:
    """Redistribution matrix ``R`` (``E`` channels x ``T`` true energies).

    ``R[c, t]`` is the probability that a photon of true energy ``true_energies[t]`` (keV) is
    recorded in channel ``c``: a Gaussian of FWHM :func:`fwhm` integrated over the channel's
    edges. Columns sum to less than one near the band edges (flux lost outside the band).
    The effective area is *not* included. ``true_energies`` defaults to the channel centres.
    """
    e, edges = channel_grid(energies)
    t = e if true_energies is None else check_array(true_energies, "true_energies", ndim=1, dtype=np.float64)
    return gaussian_bins(edges, t, sigma(t)).T
