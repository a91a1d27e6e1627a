"""frugal.xray: X-ray hyperspectral cubes (simulator, FITS I/O, plots; SUSHI unmixing).

``simulate`` is a deterministic toy model of a supernova-remnant cube (thermal plasma +
synchrotron, Poisson counts) with labelled training families for the IAE; ``io`` reads and
writes cubes and maps as FITS (needs astropy); ``plots`` draws map panels (needs matplotlib).
"""

from frugal.xray.io import FitsCube, read_cube, read_maps, write_cube, write_maps
from frugal.xray.plots import plot_maps
from frugal.xray.simulate import (
    Family,
    XrayCube,
    anchor_indices,
    energies,
    simulate_cube,
    synchrotron_family,
    synchrotron_spectrum,
    thermal_family,
    thermal_spectrum,
)

__all__ = [
    "Family",
    "FitsCube",
    "XrayCube",
    "anchor_indices",
    "energies",
    "plot_maps",
    "read_cube",
    "read_maps",
    "simulate_cube",
    "synchrotron_family",
    "synchrotron_spectrum",
    "thermal_family",
    "thermal_spectrum",
    "write_cube",
    "write_maps",
]
