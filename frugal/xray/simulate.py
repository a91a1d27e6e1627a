r"""A deterministic toy model of an X-ray hyperspectral cube of a young supernova remnant.

In the spirit of the toy model of Lascar, Bobin & Acero, A&A 686, A259 (2024) (SUSHI): a
cube of ``E`` energy channels over 3-8.5 keV (375 by default) on an ``H x W`` sky grid
(94 x 94 by default), mixing two components whose spectral shape varies across the sky,
observed with Poisson noise. Everything is closed form and vectorised (NumPy, float64);
none of it is an atomic database or a real instrument response, only shapes with the right
physics and orders of magnitude for testing unmixing methods.

Physics (all energies in keV)
-----------------------------
**Thermal component** (optically thin plasma in collisional ionisation equilibrium, kT in
keV, redshift z):

* bremsstrahlung continuum per unit energy and emission measure,
  :math:`c(E, kT) = g(E, kT)\, e^{-E/kT} / \sqrt{kT}`, with the power-law approximation
  :math:`g = (E/kT)^{-0.4}` of the velocity-averaged Gaunt factor (adequate to ~20 % for
  0.5 < E/kT < 20, the range met here);
* K-shell emission lines of Si, S, Ar, Ca, Fe and Ni (:data:`LINES`). Each line has the
  photon flux :math:`F_\ell = W_\ell(kT)\, c(E_\ell, kT)`: its *equivalent width*
  :math:`W_\ell(kT) = W_\ell^{\max} \exp[-\tfrac12 (\ln(kT/kT_\ell)/s)^2]` is a Gaussian in
  :math:`\ln kT` around the temperature :math:`kT_\ell` where the ion's emissivity peaks
  (:math:`s` = :data:`LINE_LOG_WIDTH`, ~0.3 dex). Line excitation shares the continuum's
  Boltzmann factor, so this is the ion-fraction shape times collisional excitation. Because
  Fe XXVI peaks at a higher temperature than Fe XXV, the Fe XXVI / Fe XXV ratio rises
  monotonically with kT (a classic thermometer);
* Doppler shift / cosmological redshift: a photon emitted at :math:`E'` is observed at
  :math:`E = E'/(1+z)`; the continuum per observed energy is :math:`(1+z)\,c(E(1+z))` and a
  line sits at :math:`E_\ell/(1+z)`. Bulk velocities of a few thousand km/s give
  :math:`|z| \lesssim 0.01` (:math:`z \approx v_\parallel / c`);
* optional intrinsic line broadening by a velocity dispersion ``velocity_dispersion``
  (km/s), :math:`\sigma_E = E_\ell \sigma_v / c`.

**Synchrotron component**: a power law in photon flux, :math:`E^{-\Gamma}` (photon index
:math:`\Gamma` ~ 2-3.5 for X-ray synchrotron filaments).

**Interstellar absorption** multiplies both: :math:`\exp(-N_H \sigma(E))` with
:math:`\sigma(E) = 2.4\times10^{-22}\,\mathrm{cm^2}\,(E/1\,\mathrm{keV})^{-8/3}`, the order
of magnitude and slope of the Morrison & McCammon (1983) cross-section per H atom above the
oxygen edge (no edges; in the 3-8.5 keV band only the Fe and Ca edges, ignored here, would
matter). ``nh`` is in units of :math:`10^{22}\,\mathrm{cm^{-2}}`.

**Instrument** (:func:`effective_area`, :func:`fwhm`, :func:`response_matrix`):

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

A *spectrum* returned by :func:`thermal_spectrum` / :func:`synchrotron_spectrum` is the
expected counts per channel of a unit-sum (normalised) source, by default folded through the
instrument: exactly what a pixel of the cube contains up to its amplitude.

Sky model (:func:`remnant_model`, :func:`simulate_cube`)
---------------------------------------------------------
A remnant of outer radius ~0.85 of the half field, with a slightly irregular rim; outside
the rim both amplitude maps are exactly zero (pixels without source):

* thermal amplitude: the projection of a uniformly emitting shell (inner radius 0.7 of the
  rim), limb brightened, modulated in azimuth, plus a few Gaussian ejecta knots;
* synchrotron amplitude: thin filaments just inside the rim, bright on two opposite limbs
  (bilateral, SN 1006-like), plus a faint projected thin shell;
* parameter maps, smooth and defined everywhere: kT in [1, 4] keV (a smooth random field
  with hotter or cooler knots); line-of-sight velocity of an expanding shell,
  :math:`z = z_{\max} \tanh[(0.007 \sqrt{1-\rho^2}\,h + z_{\rm knots}) / z_{\max}]` with a
  smooth front/back field ``h`` in [-1, 1] (0.007 = 2100 km/s), Doppler-shifted knots of
  0.003-0.006 and a smooth saturation at :math:`z_{\max}` = 0.0095; photon index 2.1 at the
  filaments steepening to ~3.1 inwards (synchrotron cooling), within [2.0, 3.3]
  (:data:`PARAM_RANGES`). All lie inside the default ranges of :func:`thermal_family` and
  :func:`synchrotron_family`, so models trained on those cover the cube.

Counts are Poisson draws of the expected cube; ``exposure`` sets the mean expected counts
per remnant pixel (all channels and components together).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from frugal._special import erfc
from frugal._validation import check_array, check_choice, check_float, check_int
from frugal.data import Family  # the labelled-family type shared with the other packages

__all__ = [
    "BAND",
    "N_CHANNELS",
    "LINES",
    "EXPOSURE_PRESETS",
    "PARAM_RANGES",
    "Line",
    "Family",
    "XrayCube",
    "energies",
    "channel_edges",
    "fwhm",
    "effective_area",
    "absorption_cross_section",
    "transmission",
    "gaunt_factor",
    "bremsstrahlung",
    "line_equivalent_widths",
    "response_matrix",
    "thermal_spectrum",
    "synchrotron_spectrum",
    "thermal_family",
    "synchrotron_family",
    "anchor_indices",
    "remnant_model",
    "simulate_cube",
]

#: Default band (keV) and number of channels of the toy instrument (SUSHI's toy model).
BAND = (3.0, 8.5)
N_CHANNELS = 375

#: Speed of light in km/s (velocities in this module are in km/s).
C_KM_S = 299_792.458

#: Energy resolution: FWHM at 6 keV (keV), scaling as sqrt(E).
FWHM_AT_6KEV = 0.150

#: Photo-absorption cross-section per H atom at 1 keV (cm^2) and its slope in energy.
SIGMA_1KEV_CM2 = 2.4e-22
SIGMA_SLOPE = -8.0 / 3.0

#: Default hydrogen column density, in units of 1e22 cm^-2 (Galactic-plane remnant).
NH_DEFAULT = 1.0

#: Width, in natural log of kT, of each ion's emissivity peak (0.7 in ln = 0.3 dex).
LINE_LOG_WIDTH = 0.7

#: Exposure presets: mean expected counts per remnant pixel, summed over channels.
EXPOSURE_PRESETS = {"high": 2000.0, "low": 200.0}


class Line(NamedTuple):
    """An emission line: rest energy (keV), temperature of peak emissivity (keV) and the
    equivalent width (keV) reached at that temperature."""

    name: str
    energy: float
    peak_kT: float
    peak_ew: float


#: K-shell lines of the toy plasma (rest energies in keV). Peak temperatures follow the
#: ionisation balance of each ion in collisional equilibrium (He-like ions peak at lower kT
#: than H-like ones); peak equivalent widths are orders of magnitude of ejecta-rich young
#: remnants. Lines below 3 keV only leak into the band through the response's tail.
LINES: tuple[Line, ...] = (
    Line("Si XIII", 1.865, 0.9, 0.50),
    Line("Si XIV", 2.006, 1.8, 0.20),
    Line("S XV", 2.461, 1.3, 0.40),
    Line("S XVI", 2.623, 2.5, 0.15),
    Line("Ar XVII", 3.140, 1.7, 0.15),
    Line("Ar XVIII", 3.323, 3.2, 0.06),
    Line("Ca XIX", 3.902, 2.3, 0.15),
    Line("Ca XX", 4.108, 4.5, 0.05),
    Line("Fe XXV", 6.700, 4.5, 1.00),
    Line("Fe XXVI", 6.966, 11.0, 0.40),
    Line("Ni XXVII", 7.806, 5.5, 0.06),
    Line("Fe XXV Kb", 7.881, 4.5, 0.12),
)

_LINE_E = np.array([line.energy for line in LINES])
_LINE_KT = np.array([line.peak_kT for line in LINES])
_LINE_EW = np.array([line.peak_ew for line in LINES])


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


def _channel_grid(energy_grid) -> tuple[np.ndarray, np.ndarray]:
    e = energies() if energy_grid is None else check_array(energy_grid, "energies", ndim=1, dtype=np.float64)
    edges = channel_edges(e)
    if edges[0] <= 0:
        raise ValueError("energies must be positive (keV)")
    return e, edges


def _true_grid(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres and widths of the true-energy grid a continuum is sampled on before folding.

    It reaches 6 sigma of resolution beyond the band so edge channels receive the flux
    redistributed from outside, and is at least as fine as 10 eV (a fifth of the narrowest
    resolution sigma) so that the midpoint rule is exact to well below a per cent.
    """
    lo = max(edges[0] - 6.0 * _sigma(edges[0]), 0.05)
    hi = edges[-1] + 6.0 * _sigma(edges[-1])
    step = min(float(np.min(np.diff(edges))), 0.01)
    n = int(np.ceil((hi - lo) / step))
    width = (hi - lo) / n
    return lo + width * (np.arange(n) + 0.5), np.full(n, width)


# --------------------------------------------------------------------------- instrument


def fwhm(energy) -> np.ndarray:
    """Energy resolution FWHM (keV) at ``energy`` (keV): 150 eV at 6 keV, scaling as sqrt(E)."""
    return FWHM_AT_6KEV * np.sqrt(np.asarray(energy, dtype=np.float64) / 6.0)


def _sigma(energy):
    return fwhm(energy) / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def effective_area(energy) -> np.ndarray:
    """Effective area (cm²) at ``energy`` (keV): a Gaussian fall-off
    ``600 exp(-((E - 1.5) / 3.2)^2 / 2)`` with the shape of grazing-incidence mirror
    reflectivity (smooth, no edges; ~440 cm² at 4 keV, ~75 cm² at 8 keV)."""
    e = np.asarray(energy, dtype=np.float64)
    return 600.0 * np.exp(-0.5 * ((e - 1.5) / 3.2) ** 2)


def _gaussian_bins(edges, mu, sigma):
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


def _add_lines(spectra, edges, centre, width, flux):
    """Add Gaussian lines (``centre``, ``width``, ``flux`` of shape ``(..., L)``) integrated
    over the channels to ``spectra`` (``(..., E)``), in place.

    Each line is evaluated only on the channels within 8 sigma of where it falls in any of
    the spectra (the mass beyond is < 1e-15): a loop over the few lines, vectorised over
    the spectra, several times cheaper than every line on every channel.
    """
    for ell in range(centre.shape[-1]):
        mu, sig = centre[..., ell], np.maximum(width[..., ell], 1e-9)
        i0 = max(int(np.searchsorted(edges, np.min(mu - 8 * sig), side="right")) - 1, 0)
        i1 = min(int(np.searchsorted(edges, np.max(mu + 8 * sig), side="left")) + 1, len(edges))
        if i1 - i0 < 2:
            continue  # out of the band
        spectra[..., i0 : i1 - 1] += flux[..., ell, None] * _gaussian_bins(edges[i0:i1], mu, sig)
    return spectra


def response_matrix(energies=None, true_energies=None) -> np.ndarray:
    """Redistribution matrix ``R`` (``E`` channels x ``T`` true energies).

    ``R[c, t]`` is the probability that a photon of true energy ``true_energies[t]`` (keV) is
    recorded in channel ``c``: a Gaussian of FWHM :func:`fwhm` integrated over the channel's
    edges. Columns sum to less than one near the band edges (flux lost outside the band).
    The effective area is *not* included. ``true_energies`` defaults to the channel centres.
    """
    e, edges = _channel_grid(energies)
    t = e if true_energies is None else check_array(true_energies, "true_energies", ndim=1, dtype=np.float64)
    return _gaussian_bins(edges, t, _sigma(t)).T


# --------------------------------------------------------------------------- astrophysics


def absorption_cross_section(energy) -> np.ndarray:
    """Photo-absorption cross-section per H atom (cm²): ``2.4e-22 (E/1 keV)^(-8/3)``."""
    return SIGMA_1KEV_CM2 * np.asarray(energy, dtype=np.float64) ** SIGMA_SLOPE


def transmission(energy, nh) -> np.ndarray:
    """Interstellar transmission ``exp(-N_H sigma(E))``; ``nh`` in 1e22 cm^-2 (``energy``
    and ``nh`` broadcast together)."""
    return np.exp(-np.asarray(nh, dtype=np.float64) * 1e22 * absorption_cross_section(energy))


def gaunt_factor(energy, kT) -> np.ndarray:
    """Velocity-averaged free-free Gaunt factor, power-law approximation ``(E/kT)^-0.4``."""
    return (np.asarray(energy, dtype=np.float64) / np.asarray(kT, dtype=np.float64)) ** -0.4


def bremsstrahlung(energy, kT) -> np.ndarray:
    """Thermal bremsstrahlung photon spectrum per keV per unit emission measure (arbitrary
    units): ``g(E, kT) exp(-E/kT) / sqrt(kT)``. ``energy`` and ``kT`` broadcast."""
    e = np.asarray(energy, dtype=np.float64)
    kT = np.asarray(kT, dtype=np.float64)
    return gaunt_factor(e, kT) * np.exp(-e / kT) / np.sqrt(kT)


def line_equivalent_widths(kT) -> np.ndarray:
    """Equivalent width (keV) of each line of :data:`LINES` at temperature ``kT`` (keV):
    ``W_max exp(-(ln(kT / kT_peak) / s)^2 / 2)``. Shape ``kT.shape + (len(LINES),)``."""
    lnr = np.log(np.asarray(kT, dtype=np.float64)[..., None] / _LINE_KT)
    return _LINE_EW * np.exp(-0.5 * (lnr / LINE_LOG_WIDTH) ** 2)


def _normalise(spectra, normalize):
    if not normalize:
        return spectra
    return spectra / np.sum(spectra, axis=-1, keepdims=True)


def thermal_spectrum(
    kT,
    z=0.0,
    *,
    nh=NH_DEFAULT,
    energies=None,
    lines: bool = True,
    instrument: bool = True,
    velocity_dispersion: float = 0.0,
    normalize: bool = True,
) -> np.ndarray:
    """Spectrum of an absorbed thermal plasma, one per element of ``broadcast(kT, z, nh)``.

    Parameters
    ----------
    kT : array_like
        Plasma temperature (keV), > 0.
    z : array_like
        Redshift / Doppler shift, > -1 (``v_parallel / c`` for bulk motions).
    nh : array_like
        Absorbing column in 1e22 cm^-2, >= 0.
    energies : array, optional
        Channel centres (keV); :func:`energies` by default.
    lines : bool
        Include the emission lines of :data:`LINES` (``False``: continuum only).
    instrument : bool
        Fold through the effective area and energy resolution (expected counts per channel);
        ``False`` gives the absorbed photon spectrum integrated over each channel.
    velocity_dispersion : float
        Intrinsic line broadening (km/s, Gaussian sigma).
    normalize : bool
        Scale each spectrum to unit sum over channels (default). Otherwise the scale is
        that of a unit emission measure in arbitrary units, comparable between calls.

    Returns
    -------
    ndarray, shape ``broadcast(kT, z, nh).shape + (E,)``
    """
    kT = check_array(kT, "kT", dtype=np.float64)
    z = check_array(z, "z", dtype=np.float64)
    nh = check_array(nh, "nh", dtype=np.float64, nonnegative=True)
    if np.any(kT <= 0):
        raise ValueError(f"kT must be > 0 keV, found minimum {kT.min():.4g}")
    if np.any(z <= -1):
        raise ValueError(f"z must be > -1, found minimum {z.min():.4g}")
    sigma_v = check_float(velocity_dispersion, "velocity_dispersion", minimum=0.0)
    kT, z, nh = np.broadcast_arrays(kT, z, nh)
    e, edges = _channel_grid(energies)
    one_z = (1.0 + z)[..., None]

    # continuum: (1 + z) c(E (1 + z)) per observed keV, sampled where it is integrated
    if instrument:
        et, dt = _true_grid(edges)
        photons = one_z * bremsstrahlung(et * one_z, kT[..., None]) * dt
        photons *= effective_area(et) * transmission(et, nh[..., None])
        spectra = photons @ response_matrix(e, et).T
    else:
        photons = one_z * bremsstrahlung(e * one_z, kT[..., None]) * np.diff(edges)
        spectra = photons * transmission(e, nh[..., None])

    if lines:
        # only lines that can reach the band (the response's tail is < 1e-12 beyond 0.5 keV)
        near = (_LINE_E > edges[0] - 0.5) & (_LINE_E < edges[-1] + 0.5)
        rest = _LINE_E[near]
        flux = line_equivalent_widths(kT)[..., near] * bremsstrahlung(rest, kT[..., None])
        observed = rest / one_z  # (..., L)
        width = observed * sigma_v / C_KM_S
        if instrument:
            width = np.sqrt(width**2 + _sigma(observed) ** 2)
            flux = flux * effective_area(observed)
        flux = flux * transmission(observed, nh[..., None])
        spectra = _add_lines(np.array(spectra), edges, observed, width, flux)
    return _normalise(spectra, normalize)


def synchrotron_spectrum(
    photon_index,
    *,
    nh=NH_DEFAULT,
    energies=None,
    instrument: bool = True,
    normalize: bool = True,
) -> np.ndarray:
    """Spectrum of an absorbed power law ``E^-photon_index`` (photons per keV), one per
    element of ``broadcast(photon_index, nh)``; shape ``... + (E,)``.

    ``instrument`` and ``normalize`` as in :func:`thermal_spectrum` (unnormalised scale:
    1 photon/keV at 1 keV before absorption).
    """
    gamma = check_array(photon_index, "photon_index", dtype=np.float64)
    nh = check_array(nh, "nh", dtype=np.float64, nonnegative=True)
    gamma, nh = np.broadcast_arrays(gamma, nh)
    e, edges = _channel_grid(energies)
    if instrument:
        et, dt = _true_grid(edges)
        photons = et ** -gamma[..., None] * dt * effective_area(et) * transmission(et, nh[..., None])
        spectra = photons @ response_matrix(e, et).T
    else:
        spectra = e ** -gamma[..., None] * np.diff(edges) * transmission(e, nh[..., None])
    return _normalise(spectra, normalize)


# --------------------------------------------------------------------------- training families


def _check_range(rng, name, *, positive=False):
    lo_hi = check_array(rng, name, shape=(2,), ndim=1, dtype=np.float64)
    lo, hi = float(lo_hi[0]), float(lo_hi[1])
    if not lo < hi:
        raise ValueError(f"{name} must be (low, high) with low < high, got {tuple(lo_hi)}")
    if positive and lo <= 0:
        raise ValueError(f"{name} must be positive, got {tuple(lo_hi)}")
    return lo, hi


def _design(n: int, p: int, seed: int) -> np.ndarray:
    """``n`` points in ``[0, 1]^p``: the ``2^p`` corners first, then a Latin hypercube
    (one point per stratum and axis, random within strata and in pairing, from ``seed``)."""
    corners = np.array(np.meshgrid(*[[0.0, 1.0]] * p, indexing="ij")).reshape(p, -1).T
    m = n - len(corners)
    if m <= 0:
        return corners[:n]
    rng = np.random.default_rng(seed)
    strata = np.stack([rng.permutation(m) for _ in range(p)], axis=1)
    lhs = (strata + rng.uniform(size=(m, p))) / m
    return np.concatenate([corners, lhs])


def thermal_family(
    n: int,
    *,
    kT_range=(0.5, 5.0),
    z_range=(-0.01, 0.01),
    nh=NH_DEFAULT,
    energies=None,
    lines: bool = True,
    seed: int = 0,
) -> Family:
    """``n`` thermal spectra over a 2-D design in (kT, z), params columns ``("kT", "z")``.

    The design's first four rows are the corners of the box (kT log-spaced, since the
    spectral shape changes by equal amounts for equal ratios of kT), the others a Latin
    hypercube from ``seed``; :func:`anchor_indices` picks the corners as IAE anchors.
    """
    n = check_int(n, "n", minimum=4)
    seed = check_int(seed, "seed", minimum=0)
    k_lo, k_hi = _check_range(kT_range, "kT_range", positive=True)
    z_lo, z_hi = _check_range(z_range, "z_range")
    if z_lo <= -1:
        raise ValueError(f"z_range must be > -1, got {(z_lo, z_hi)}")
    u = _design(n, 2, seed)
    kT = k_lo * (k_hi / k_lo) ** u[:, 0]
    z = z_lo + (z_hi - z_lo) * u[:, 1]
    e, _ = _channel_grid(energies)
    spectra = thermal_spectrum(kT, z, nh=nh, energies=e, lines=lines)
    return Family(spectra, np.stack([kT, z], axis=1), ("kT", "z"), e)


def synchrotron_family(
    n: int,
    *,
    index_range=(1.5, 3.5),
    nh=NH_DEFAULT,
    energies=None,
    seed: int = 0,
) -> Family:
    """``n`` absorbed power laws, photon index over ``index_range``; params ``("photon_index",)``.

    Rows 0 and 1 are the two ends of the range, the rest a stratified random design from
    ``seed``.
    """
    n = check_int(n, "n", minimum=2)
    seed = check_int(seed, "seed", minimum=0)
    lo, hi = _check_range(index_range, "index_range")
    gamma = lo + (hi - lo) * _design(n, 1, seed)[:, 0]
    e, _ = _channel_grid(energies)
    spectra = synchrotron_spectrum(gamma, nh=nh, energies=e)
    return Family(spectra, gamma[:, None], ("photon_index",), e)


def anchor_indices(params, *, n_per_axis: int = 2, log_axes=()) -> np.ndarray:
    """Indices of the samples nearest to a regular ``n_per_axis^p`` grid over the bounding
    box of ``params`` (``(n, p)``): with the default 2, the corners of the parameter box,
    which are the natural IAE anchors (interpolation inside their convex hull).

    Distances are measured after scaling each axis to [0, 1] (in log for the columns listed
    in ``log_axes``). Duplicates are removed, order follows the grid.
    """
    x = check_array(params, "params", ndim=(1, 2), dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x.copy()
    n_per_axis = check_int(n_per_axis, "n_per_axis", minimum=2)
    for a in log_axes:
        if np.any(x[:, a] <= 0):
            raise ValueError(f"params column {a} must be positive to be scaled in log")
        x[:, a] = np.log(x[:, a])
    lo, hi = x.min(axis=0), x.max(axis=0)
    u = (x - lo) / np.where(hi > lo, hi - lo, 1.0)
    p = x.shape[1]
    ticks = np.linspace(0.0, 1.0, n_per_axis)
    grid = np.array(np.meshgrid(*[ticks] * p, indexing="ij")).reshape(p, -1).T
    nearest = np.argmin(np.sum((grid[:, None, :] - u[None]) ** 2, axis=-1), axis=1)
    _, first = np.unique(nearest, return_index=True)
    return nearest[np.sort(first)]


# --------------------------------------------------------------------------- sky model


class XrayCube(NamedTuple):
    """A simulated cube and its ground truth (all expected values in counts).

    counts : (E, H, W) Poisson counts; expected : (E, H, W) their expectation;
    energies : (E,) channel centres (keV); amplitude : (C, H, W) expected counts of each
    component per pixel (all channels); params : dict of (H, W) maps ``kT`` (keV), ``z``,
    ``photon_index``; components : (C, E, H, W) expected counts per component;
    component_names : ``("thermal", "synchrotron")``; mask : (H, W) True inside the remnant;
    background : (E, H, W) expected background counts (zeros unless requested).
    """

    counts: np.ndarray
    expected: np.ndarray
    energies: np.ndarray
    amplitude: np.ndarray
    params: dict
    components: np.ndarray
    component_names: tuple[str, ...]
    mask: np.ndarray
    background: np.ndarray


#: Documented ranges of the parameter maps of :func:`remnant_model`.
PARAM_RANGES = {"kT": (1.0, 4.0), "z": (-0.01, 0.01), "photon_index": (2.0, 3.3)}

_SYNCHROTRON_FRACTION = 0.3  # share of the remnant's counts in the synchrotron component


def _smooth_field(x, y, rng, n_modes=6, scale=2.0):
    """A smooth random field of zero mean and unit variance (a sum of low-frequency plane
    waves with random directions and phases, wavelengths ~1-2 remnant radii)."""
    angle = rng.uniform(0, 2 * np.pi, n_modes)
    k = rng.uniform(0.5, 1.0, n_modes) * np.pi / scale * 2
    phase = rng.uniform(0, 2 * np.pi, n_modes)
    amp = rng.normal(size=n_modes)
    waves = np.cos(k * (np.cos(angle) * x[..., None] + np.sin(angle) * y[..., None]) + phase)
    return waves @ amp / np.sqrt(0.5 * np.sum(amp**2))


def remnant_model(shape=(94, 94), *, seed: int = 0) -> tuple[np.ndarray, dict, np.ndarray]:
    """Relative amplitude maps ``(2, H, W)`` (thermal, synchrotron; each of unit mean over
    the remnant), parameter maps ``{"kT", "z", "photon_index"}`` and the remnant mask.

    Coordinates are in units of the half field (the shorter side), so the morphology has the
    same look at any grid size; the random details (rim irregularity, brightness modulation,
    knots, parameter fields) come from ``seed``.
    """
    if len(shape) != 2:
        raise ValueError(f"shape must be (H, W), got {shape!r}")
    h = check_int(shape[0], "shape[0]", minimum=8)
    w = check_int(shape[1], "shape[1]", minimum=8)
    seed = check_int(seed, "seed", minimum=0)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    half = 0.5 * min(h, w)
    y, x = np.meshgrid((np.arange(h) - (h - 1) / 2) / half, (np.arange(w) - (w - 1) / 2) / half, indexing="ij")
    cx, cy = rng.uniform(-0.04, 0.04, 2)
    x, y = x - cx, y - cy
    r = np.hypot(x, y)
    theta = np.arctan2(y, x)
    # irregular rim: radius modulated by a few low azimuthal harmonics
    harm = np.arange(2, 5)
    rim = 0.85 * (1.0 + np.cos(harm * theta[..., None] + rng.uniform(0, 2 * np.pi, 3)) @ rng.uniform(0.01, 0.03, 3))
    rho = r / rim
    mask = rho < 1.0

    # thermal: projected uniform shell between 0.7 and 1 of the rim, azimuthal modulation, knots
    rho_in = 0.7
    shell = np.sqrt(np.clip(1 - rho**2, 0, None)) - np.sqrt(np.clip(rho_in**2 - rho**2, 0, None))
    shell *= 1.0 + 0.3 * np.cos(theta - rng.uniform(0, 2 * np.pi))
    n_knots = 4
    knot_r = rng.uniform(0.3, 0.85, n_knots)
    knot_t = rng.uniform(0, 2 * np.pi, n_knots)
    knot_w = rng.uniform(0.04, 0.07, n_knots)
    knot_x, knot_y = knot_r * 0.85 * np.cos(knot_t), knot_r * 0.85 * np.sin(knot_t)
    knot_d2 = (x[..., None] - knot_x) ** 2 + (y[..., None] - knot_y) ** 2
    knots = np.exp(-0.5 * knot_d2 / knot_w**2)  # (H, W, K)
    thermal = np.where(mask, shell + knots @ rng.uniform(0.5, 1.0, n_knots), 0.0)

    # synchrotron: thin filaments inside the rim on two opposite limbs + faint thin shell
    limb = rng.uniform(0, np.pi)
    filaments = np.exp(-0.5 * ((rho - 0.95) / 0.03) ** 2) * (0.1 + 0.9 * np.cos(theta - limb) ** 4)
    thin = np.sqrt(np.clip(1 - rho**2, 0, None)) - np.sqrt(np.clip(0.9**2 - rho**2, 0, None))
    synchrotron = np.where(mask, filaments + 0.1 * thin, 0.0)

    amplitude = np.stack([thermal, synchrotron])
    amplitude /= amplitude[:, mask].mean(axis=1)[:, None, None]

    # parameter maps, smooth everywhere (defined outside the remnant too)
    k_lo, k_hi = PARAM_RANGES["kT"]
    hot = np.tanh(0.7 * _smooth_field(x, y, rng) + 1.2 * knots @ rng.choice([-1.0, 1.0], n_knots))
    kT = k_lo + (k_hi - k_lo) * 0.5 * (1.0 + hot)
    front_back = np.tanh(1.5 * _smooth_field(x, y, rng))
    z_knots = knots @ (rng.choice([-1.0, 1.0], n_knots) * rng.uniform(0.003, 0.006, n_knots))
    # a smooth saturation keeps |z| below 0.0095 where a knot sits on a fast part of the shell
    z_max = 0.0095
    z = z_max * np.tanh((0.007 * np.sqrt(np.clip(1 - rho**2, 0, None)) * front_back + z_knots) / z_max)
    steepening = 1.0 - np.exp(-np.clip(1.0 - rho, 0, None) / 0.15)
    photon_index = 2.1 + 1.0 * steepening + 0.1 * np.tanh(_smooth_field(x, y, rng))
    params = {"kT": kT, "z": z, "photon_index": photon_index}
    return amplitude, params, mask


def simulate_cube(
    shape=(94, 94),
    *,
    n_channels: int = N_CHANNELS,
    exposure="high",
    nh=NH_DEFAULT,
    background: float = 0.0,
    seed: int = 0,
    noise_seed: int | None = None,
) -> XrayCube:
    """Simulate a remnant cube (see the module docstring for the model).

    Parameters
    ----------
    shape : (H, W)
        Sky grid.
    n_channels : int
        Channels over :data:`BAND`.
    exposure : "high", "low" or float
        Mean expected counts per remnant pixel, all channels and components together
        (:data:`EXPOSURE_PRESETS`: 2000 and 200).
    nh : float
        Absorbing column (1e22 cm^-2), uniform over the field.
    background : float
        Expected background counts per pixel (all channels), flat in channel, everywhere.
    seed : int
        Seed of the morphology and parameter maps (and of the noise unless ``noise_seed``).
    noise_seed : int, optional
        Seed of the Poisson draw alone: several noisy cubes of one truth.
    """
    if isinstance(exposure, str):
        exposure = EXPOSURE_PRESETS[check_choice(exposure, "exposure", tuple(EXPOSURE_PRESETS))]
    exposure = check_float(exposure, "exposure", minimum=0.0, strict=True)
    background = check_float(background, "background", minimum=0.0)
    seed = check_int(seed, "seed", minimum=0)
    noise_seed = seed if noise_seed is None else check_int(noise_seed, "noise_seed", minimum=0)
    e = energies(n_channels)

    relative, params, mask = remnant_model(shape, seed=seed)
    h, w = mask.shape
    amplitude = relative * exposure * np.array([1 - _SYNCHROTRON_FRACTION, _SYNCHROTRON_FRACTION])[:, None, None]

    # spectra only where there is source; zero amplitude elsewhere
    inside = np.flatnonzero(mask)
    spectra = np.zeros((2, len(e), h * w))
    kT, z = params["kT"].ravel()[inside], params["z"].ravel()[inside]
    spectra[0][:, inside] = thermal_spectrum(kT, z, nh=nh, energies=e).T
    spectra[1][:, inside] = synchrotron_spectrum(params["photon_index"].ravel()[inside], nh=nh, energies=e).T
    components = spectra.reshape(2, len(e), h, w) * amplitude[:, None]

    bkg = np.broadcast_to(np.full((len(e), 1, 1), background / len(e)), (len(e), h, w)).copy()
    expected = components.sum(axis=0) + bkg
    counts = np.random.default_rng(np.random.SeedSequence([noise_seed, 2])).poisson(expected)
    return XrayCube(
        counts=counts,
        expected=expected,
        energies=e,
        amplitude=amplitude,
        params=params,
        components=components,
        component_names=("thermal", "synchrotron"),
        mask=mask,
        background=bkg,
    )
