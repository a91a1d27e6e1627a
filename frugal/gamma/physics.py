r"""Physics of the gamma-ray simulator up to the energy deposited in the crystal.

Everything :mod:`frugal.gamma.simulate` (spectra folded with the energy resolution, in
NumPy) and :mod:`frugal.gamma.resolution` (the same resolution in JAX, differentiable)
both need, so that the two stay one model: the energy axis and the 1 keV deposit grid,
the detector model (:class:`Detector`, presets, resolution width, discriminator,
interaction probabilities, Compton continuum), the transport of photons through the
spherical shield and back from the surroundings, and the source terms (nuclide line lists,
natural background). The formulas are given in the :mod:`frugal.gamma.simulate` docstring.

This module holds the source terms and gathers the rest under its one name: the energy
axis, the deposit grid and the detector model live in :mod:`frugal.gamma.detector`, the
shield and the surroundings in :mod:`frugal.gamma.transport` (both re-exported here).

Units: energies in keV, lengths in cm (thicknesses in mm only in the public functions of
:mod:`frugal.gamma.simulate`), densities in g/cm³. Fluxes and deposits are photons or
counts per decay (or per photon on the crystal face), unnormalised, on the grid cells
``[k h, (k+1) h)`` keV, ``h`` = :data:`GRID_KEV`, ``k = 0 .. n_cells - 1``.
"""

from __future__ import annotations

import numpy as np

from frugal._validation import check_array
from frugal.gamma import nuclear_data as nd
from frugal.gamma.detector import (  # noqa: F401  the energy axis and detector model, re-exported (__all__)
    CLASSICAL_ELECTRON_RADIUS_CM,
    DETECTORS,
    ELECTRON_MASS_KEV,
    GRID_KEV,
    Detector,
    Response,
    as_detector,
    bin_centres,
    bin_edges,
    check_edges,
    compton_shape,
    continuum_deposit,
    fwhm,
    grid_cells,
    klein_nishina_angular,
    klein_nishina_total,
    normal_cdf,
    response_weights,
    sigma,
    threshold,
)
from frugal.gamma.transport import (  # noqa: F401  the shield and surroundings, re-exported (__all__)
    MULTIPLE_SCATTER_GAIN,
    SHELL_INNER_RADIUS_CM,
    SHIELDS,
    SOURCE_DETECTOR_CM,
    incident_flux,
    scattered_flux,
    surroundings,
)

__all__ = [
    "BACKGROUND_CONTINUUM",
    "CLASSICAL_ELECTRON_RADIUS_CM",
    "DETECTORS",
    "Detector",
    "ELECTRON_MASS_KEV",
    "GRID_KEV",
    "MULTIPLE_SCATTER_GAIN",
    "Response",
    "SHELL_INNER_RADIUS_CM",
    "SHIELDS",
    "SOURCE_DETECTOR_CM",
    "as_detector",
    "background_continuum",
    "background_lines",
    "bin_centres",
    "bin_edges",
    "check_edges",
    "compton_shape",
    "continuum_deposit",
    "fwhm",
    "grid_cells",
    "incident_flux",
    "klein_nishina_angular",
    "klein_nishina_total",
    "normal_cdf",
    "nuclide_lines",
    "response_weights",
    "scattered_flux",
    "sigma",
    "surroundings",
    "threshold",
]


# --------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------


def nuclide_lines(nuclide):
    """(energies, intensities) of a library nuclide, or of a user list of (keV, per decay) pairs."""
    if isinstance(nuclide, str):
        return nd.lines(nuclide)
    arr = check_array(nuclide, "nuclide", ndim=2, shape=(2,), nonnegative=True, dtype=np.float64)
    if np.any(arr[:, 0] <= 0):
        raise ValueError("nuclide: line energies must be positive (keV)")
    return arr[:, 0], arr[:, 1]


#: Room-scatter continuum of the natural background: incident photons per keV proportional
#: to (E / 100 keV)^-GAMMA, cut at low energy by absorption, times this share of the line flux.
BACKGROUND_CONTINUUM = {"share": 6.0, "index": 1.6, "cut_kev": 60.0}


def background_lines():
    """Energies (keV) and relative fluxes of the natural background lines (see
    :func:`frugal.gamma.simulate.background`), the 511 keV annihilation line last."""
    energies, weights = [], []
    for series, members in nd.BACKGROUND_SERIES.items():
        for nuc, branching in members.items():
            e, p = nd.lines(nuc, min_energy=20.0)
            energies.append(e)
            weights.append(nd.BACKGROUND_ACTIVITY[series] * branching * p)
    e0 = np.concatenate(energies + [np.array([ELECTRON_MASS_KEV])])
    w = np.concatenate(weights)
    w = np.concatenate([w, [0.02 * w.sum()]])  # annihilation of cosmic and Tl-208 pair events
    return e0, w / nd.mass_attenuation(e0, "aluminium")


def background_continuum(e0, w, n_cells) -> np.ndarray:
    """Room-scatter continuum of the natural background, ``(n_cells,)`` photons per grid cell:
    :data:`BACKGROUND_CONTINUUM` below the top line of ``e0`` (keV), scaled to the total
    line flux ``w`` of :func:`background_lines`."""
    centre = GRID_KEV * (np.arange(n_cells) + 0.5)
    c = BACKGROUND_CONTINUUM
    cont = (centre / 100.0) ** -c["index"] * np.exp(-((c["cut_kev"] / centre) ** 3))
    cont = cont * (centre < np.max(e0))
    return c["share"] * w.sum() * cont / cont.sum()
