"""frugal.gamma: gamma-ray spectrometry -- simulator, spectrum I/O, unmixing.

simulate  deterministic signatures of radionuclides behind steel or lead (NaI / HPGe),
          natural background, Poisson mixtures
physics   the model up to the energy deposited in the crystal, shared by simulate and
          resolution: the source lines and background (here), the detector (``detector``:
          energy axis, resolution, interactions and response) and the shield (``transport``)
io        spectra (.spe, N42, text, CSV, NPY)
families  training families (Geant4 layout, manifests), the published preprocessing and split
textfiles the bounded, validated reading of text files both use
plots     figures of families (matplotlib imported lazily)
semsun    ``unmix``: SEMSUN Poisson unmixing with signatures on IAE manifolds (its pure core
          and argument handling in ``solver``: ``solver.core``, ``solver.inputs``)
calibration spectra of another energy calibration: the models' signatures integrated over
          the measured channels (``unmix(..., energies=...)``)
baselines ``fixed`` / ``oracle`` (counts only) and ``nmf`` with the same call shape
differentiable ``unmix_function``: SEMSUN as a pure function with implicit/unrolled gradients
resolution the detector's energy resolution in JAX (differentiable), to fit it through SEMSUN
builtin   the built-in simulated problem of the demos and the solver benchmark
report    counting-error tables, the weight-to-thickness curve of a two-anchor IAE

SEMSUN's solvers are values of :mod:`frugal.solvers.variants` (``Newton()``, ``BCD(...)``);
the command line (``frugal gamma ...``) lives in :mod:`frugal.cli.gamma`.
"""

from frugal.gamma.baselines import fixed, nmf, oracle
from frugal.gamma import resolution
from frugal.gamma.differentiable import unmix_function
from frugal.gamma.semsun import UnmixResult, unmix

from frugal.gamma.io import (
    Spectrum,
    preprocess,
    published_split,
    read_background,
    read_family,
    read_spectrum,
    write_spe,
)
from frugal.gamma.plots import plot_family
from frugal.gamma.simulate import (
    DETECTORS,
    NUCLIDES,
    SHIELDS,
    Detector,
    background,
    bin_centres,
    bin_edges,
    family,
    full_energy_efficiency,
    fwhm,
    mixture,
    peak_to_total,
    signature,
    transmission,
)

__all__ = [
    "DETECTORS",
    "NUCLIDES",
    "SHIELDS",
    "Detector",
    "Spectrum",
    "UnmixResult",
    "background",
    "bin_centres",
    "bin_edges",
    "family",
    "fixed",
    "full_energy_efficiency",
    "fwhm",
    "mixture",
    "nmf",
    "oracle",
    "peak_to_total",
    "plot_family",
    "preprocess",
    "published_split",
    "read_background",
    "read_family",
    "read_spectrum",
    "resolution",
    "signature",
    "transmission",
    "unmix",
    "unmix_function",
    "write_spe",
]
