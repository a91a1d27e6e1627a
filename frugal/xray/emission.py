r"""Emission models of the X-ray cube simulator (:mod:`frugal.xray.simulate`): the spectra
of its two components, absorbed, optionally folded through :mod:`frugal.xray.instrument`.

In the spirit of the toy model of Lascar, Bobin & Acero, A&A 686, A259 (2024) (SUSHI).
Everything is closed form and vectorised (NumPy, float64); none of it is an atomic database,
only shapes with the right physics and orders of magnitude for testing unmixing methods.

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

A *spectrum* returned by :func:`thermal_spectrum` / :func:`synchrotron_spectrum` is the
expected counts per channel of a unit-sum (normalised) source, by default folded through the
instrument: exactly what a pixel of the cube contains up to its amplitude.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from frugal._validation import check_array, check_float
from frugal.xray.instrument import channel_grid, effective_area, gaussian_bins, response_matrix, sigma, true_grid

__all__ = [
    "C_KM_S",
    "SIGMA_1KEV_CM2",
    "SIGMA_SLOPE",
    "NH_DEFAULT",
    "LINE_LOG_WIDTH",
    "LINES",
    "Line",
    "absorption_cross_section",
    "transmission",
    "gaunt_factor",
    "bremsstrahlung",
    "line_equivalent_widths",
    "thermal_spectrum",
    "synchrotron_spectrum",
]

#: Speed of light in km/s (velocities in this module are in km/s).
C_KM_S = 299_792.458

#: Photo-absorption cross-section per H atom at 1 keV (cm^2) and its slope in energy.
SIGMA_1KEV_CM2 = 2.4e-22
SIGMA_SLOPE = -8.0 / 3.0

#: Default hydrogen column density, in units of 1e22 cm^-2 (Galactic-plane remnant).
NH_DEFAULT = 1.0

#: Width, in natural log of kT, of each ion's emissivity peak (0.7 in ln = 0.3 dex).
LINE_LOG_WIDTH = 0.7


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
        spectra[..., i0 : i1 - 1] += flux[..., ell, None] * gaussian_bins(edges[i0:i1], mu, sig)
    return spectra


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
    e, edges = channel_grid(energies)
    one_z = (1.0 + z)[..., None]

    # continuum: (1 + z) c(E (1 + z)) per observed keV, sampled where it is integrated
    if instrument:
        et, dt = true_grid(edges)
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
            width = np.sqrt(width**2 + sigma(observed) ** 2)
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
    e, edges = channel_grid(energies)
    if instrument:
        et, dt = true_grid(edges)
        photons = et ** -gamma[..., None] * dt * effective_area(et) * transmission(et, nh[..., None])
        spectra = photons @ response_matrix(e, et).T
    else:
        spectra = e ** -gamma[..., None] * np.diff(edges) * transmission(e, nh[..., None])
    return _normalise(spectra, normalize)
