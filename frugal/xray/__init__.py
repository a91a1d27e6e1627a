"""frugal.xray: X-ray hyperspectral cubes (simulator, FITS I/O, plots; SUSHI unmixing).

``simulate`` is a deterministic toy model of a supernova-remnant cube (thermal plasma +
synchrotron, Poisson counts) with labelled training families for the IAE (the instrument in
``instrument``, the emission models in ``emission``); ``io`` reads and
writes cubes and maps as FITS (needs astropy); ``plots`` draws map panels (needs matplotlib);
``sushi`` unmixes a cube with spatially regularised IAE components (SUSHI, Lascar, Bobin &
Acero, A&A 686, A259, 2024) and ``fit_pixels`` is the per-pixel baseline; ``ParameterMap``
turns latent maps into physical-parameter maps (kT, z, photon index). Their results carry
why the loop stopped (``status``: converged only when a first-order optimality test passed)
and a goodness of fit (``deviance``, ``gof_pvalue``, per cube and per pixel).

``solver`` holds SUSHI's pure core (one module per piece of the algorithm: the cube model,
the data step, the prox step, the amplitude sweeps, the loop); ``builtin`` the built-in
training families and models of the demos; ``report`` the fit summaries and map errors. The
command line (``frugal xray ...``) lives in :mod:`frugal.cli.xray`.
"""

from frugal.xray.io import FitsCube, read_cube, read_maps, write_cube, write_maps
from frugal.xray.params import ParameterMap
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
from frugal.xray.solver.variants import (
    PALM,
    EMAmplitudes,
    GaussSeidelSweep,
    InertialSweep,
    JointSweep,
    NewtonAmplitudes,
)
from frugal.xray.sushi import SushiResult, fit_pixels, sushi

__all__ = [
    "EMAmplitudes",
    "Family",
    "FitsCube",
    "GaussSeidelSweep",
    "InertialSweep",
    "JointSweep",
    "NewtonAmplitudes",
    "PALM",
    "ParameterMap",
    "SushiResult",
    "XrayCube",
    "anchor_indices",
    "energies",
    "fit_pixels",
    "plot_maps",
    "read_cube",
    "read_maps",
    "simulate_cube",
    "sushi",
    "synchrotron_family",
    "synchrotron_spectrum",
    "thermal_family",
    "thermal_spectrum",
    "write_cube",
    "write_maps",
]
