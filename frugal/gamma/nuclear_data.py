r"""Embedded nuclear and photon-interaction data for the gamma-ray simulator.

Everything here is a small table of evaluated data, kept in the source so that the simulator
needs no download and gives the same result everywhere.

Emission lines
--------------
Photon energies (keV) and emission probabilities per decay (a fraction, not a percentage) of
the main gamma rays and X-rays, rounded to three or four significant figures, from the
evaluated decay data of the Decay Data Evaluation Project: LNHB / DDEP "Recommended data"
(Table de Radionucléides, http://www.lnhb.fr/nuclear-data/nuclear-data-table/), checked
against ENSDF as distributed by NNDC NuDat 3. Only lines that matter for a NaI(Tl) or HPGe
spectrum above ~10 keV are kept (weak lines below ~0.1 % are dropped except where they shape
a spectrum behind a thick shield, e.g. the 692 keV line of Co-57). X-rays are given as
Kalpha2, Kalpha1 and a combined Kbeta line at the intensity-weighted energy.
Daughters of the natural decay series (Pb-214, Bi-214, Ac-228, Pb-212, Tl-208) have their
own entries, per decay of that nuclide; :data:`BACKGROUND_SERIES` combines them in secular
equilibrium.

Photon attenuation
------------------
Total mass attenuation coefficients :math:`\mu/\rho` (cm²/g, coherent scattering included)
from J. H. Hubbell and S. M. Seltzer, *Tables of X-Ray Mass Attenuation Coefficients and Mass
Energy-Absorption Coefficients*, NISTIR 5632 (1995), NIST Standard Reference Database 126
(https://physics.nist.gov/PhysRefData/XrayMassCoef/), whose values agree with NIST XCOM. The
tables are reproduced for 10 keV to 20 MeV (energies converted to keV); at an absorption edge
the table lists the same energy twice (below, then above the edge). Compounds and mixtures
follow the additivity rule :math:`\mu/\rho = \sum_i w_i (\mu/\rho)_i` with mass fractions
:math:`w_i`, as NIST does.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# --------------------------------------------------------------------------------------
# Emission lines
# --------------------------------------------------------------------------------------


class Line(NamedTuple):
    """One photon emission: ``energy`` in keV, ``intensity`` per decay, ``kind``."""

    energy: float
    intensity: float
    kind: str  # "gamma", "xray" or "annihilation"


def _g(*pairs):
    return tuple(Line(float(e), float(p), "gamma") for e, p in pairs)


def _x(*pairs):
    return tuple(Line(float(e), float(p), "xray") for e, p in pairs)


#: Emission lines per nuclide (energy keV, probability per decay). See the module docstring.
LINES: dict[str, tuple[Line, ...]] = {
    "Am241": _g((26.3446, 0.0227), (33.196, 0.00126), (59.5409, 0.3592))
    # Np L X-rays (Ll, La, Lb, Lg groups)
    + _x((11.87, 0.0085), (13.93, 0.131), (17.75, 0.186), (20.87, 0.049)),
    "Ba133": _g(
        (53.1622, 0.0214),
        (79.6142, 0.0265),
        (80.9979, 0.329),
        (160.612, 0.00638),
        (223.2368, 0.00453),
        (276.3989, 0.0716),
        (302.8508, 0.1834),
        (356.0129, 0.6205),
        (383.8485, 0.0894),
    )
    # Cs K X-rays after electron capture
    + _x((30.625, 0.340), (30.973, 0.627), (34.96, 0.176), (35.82, 0.036)),
    "Co57": _g((14.4129, 0.0918), (122.06065, 0.8549), (136.47356, 0.1071), (692.41, 0.00149)),
    "Co60": _g((1173.228, 0.9985), (1332.492, 0.999826)),
    "Cs137": _g((661.657, 0.8510))
    # Ba K X-rays after internal conversion of the 661.7 keV transition in Ba-137m
    + _x((31.817, 0.0199), (32.194, 0.0364), (36.35, 0.0102), (37.26, 0.0021)),
    "Eu152": _g(
        (121.7817, 0.2853),
        (244.6974, 0.0755),
        (344.2785, 0.2659),
        (411.1165, 0.02237),
        (443.9606, 0.02827),
        (778.9045, 0.1293),
        (867.380, 0.0423),
        (964.057, 0.1451),
        (1085.837, 0.1011),
        (1089.737, 0.0173),
        (1112.076, 0.1367),
        (1212.948, 0.01415),
        (1299.142, 0.01633),
        (1408.013, 0.2087),
    )
    # Sm K X-rays (electron-capture branch)
    + _x((39.522, 0.208), (40.118, 0.377), (45.4, 0.148)),
    # beta+ (90.3 %) gives two 511 keV annihilation photons per positron
    "Na22": _g((1274.537, 0.9994)) + (Line(510.999, 1.806, "annihilation"),),
    "K40": _g((1460.822, 0.1066)),
    # natural-series daughters, per decay of the nuclide itself
    "Pb214": _g((53.2275, 0.01075), (241.997, 0.07268), (295.224, 0.18414), (351.932, 0.3560))
    + _x((74.815, 0.0636), (77.107, 0.1069), (87.0, 0.048)),
    "Bi214": _g(
        (609.312, 0.4549),
        (665.453, 0.0153),
        (768.356, 0.04892),
        (934.061, 0.0310),
        (1120.287, 0.1491),
        (1238.111, 0.05831),
        (1377.669, 0.03968),
        (1509.228, 0.02129),
        (1729.595, 0.02878),
        (1764.494, 0.1531),
        (1847.420, 0.02025),
        (2204.21, 0.04913),
    ),
    "Ac228": _g(
        (209.253, 0.0389),
        (270.245, 0.0346),
        (328.000, 0.0295),
        (338.320, 0.1127),
        (463.004, 0.0440),
        (794.947, 0.0425),
        (911.204, 0.258),
        (964.766, 0.0499),
        (968.971, 0.158),
        (1588.19, 0.0322),
    ),
    "Pb212": _g((238.632, 0.436), (300.087, 0.0318)) + _x((74.815, 0.104), (77.107, 0.175), (87.0, 0.078)),
    "Tl208": _g(
        (277.371, 0.066),
        (510.77, 0.226),
        (583.187, 0.850),
        (763.13, 0.0179),
        (860.557, 0.125),
        (2614.511, 0.99755),
    ),
}

#: Natural background emitters in secular equilibrium: nuclide -> decays per decay of the
#: series head (Tl-208 is fed by the 35.94 % alpha branch of Bi-212).
BACKGROUND_SERIES = {
    "U238": {"Pb214": 1.0, "Bi214": 1.0},
    "Th232": {"Ac228": 1.0, "Pb212": 1.0, "Tl208": 0.3594},
    "K40": {"K40": 1.0},
}

#: Typical specific activities (Bq/kg) of building materials / soil, UNSCEAR 2000 world
#: medians rounded: used to weight the series in the simulated natural background.
BACKGROUND_ACTIVITY = {"U238": 35.0, "Th232": 30.0, "K40": 400.0}


def _canonical(name: str) -> str | None:
    """Map 'cs-137', 'Cs137', '137Cs', 'CS_137' to the library key 'Cs137' (None if unknown)."""
    s = str(name).replace("-", "").replace("_", "").replace(" ", "").lower()
    # accept mass number first ("137cs")
    digits = "".join(c for c in s if c.isdigit())
    letters = "".join(c for c in s if c.isalpha())
    key = letters + digits
    for known in LINES:
        if known.lower() == key:
            return known
    return None


def nuclide_key(name: str) -> str:
    """The library key of a nuclide name; ``ValueError`` listing the known ones if unknown."""
    key = _canonical(name)
    if key is None:
        raise ValueError(
            f"nuclide {name!r} is not in the line library; known nuclides: {', '.join(sorted(LINES))}"
        )
    return key


def lines(nuclide: str, *, min_energy: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``(energies_keV, intensities_per_decay)`` of a nuclide's lines above ``min_energy``."""
    table = LINES[nuclide_key(nuclide)]
    e = np.array([ln.energy for ln in table])
    p = np.array([ln.intensity for ln in table])
    keep = e >= min_energy
    return e[keep], p[keep]


# --------------------------------------------------------------------------------------
# Photon attenuation (NIST SRD 126 / NISTIR 5632), energy in keV, mu/rho in cm^2/g
# --------------------------------------------------------------------------------------

_E_STD = (
    10, 15, 20, 30, 40, 50, 60, 80, 100, 150, 200, 300, 400, 500, 600, 800, 1000, 1250, 1500,
    2000, 3000, 4000, 5000, 6000, 8000, 10000, 15000, 20000,
)

_MU_RHO_RAW = {
    # element: (energies keV, mu/rho cm2/g); repeated energy = absorption edge (below, above)
    "Al": (
        _E_STD,
        (
            26.23, 7.955, 3.441, 1.128, 0.5685, 0.3681, 0.2778, 0.2018, 0.1704, 0.1378, 0.1223,
            0.1042, 0.09276, 0.08445, 0.07802, 0.06841, 0.06146, 0.05496, 0.05006, 0.04324,
            0.03541, 0.03106, 0.02836, 0.02655, 0.02437, 0.02318, 0.02195, 0.02168,
        ),
    ),
    "Na": (
        _E_STD,
        (
            15.57, 4.694, 2.057, 0.7197, 0.3969, 0.2804, 0.2268, 0.1796, 0.1585, 0.1335, 0.1199,
            0.1029, 0.09185, 0.08372, 0.07736, 0.06788, 0.06100, 0.05454, 0.04968, 0.04282,
            0.03487, 0.03037, 0.02753, 0.02559, 0.02319, 0.02181, 0.02023, 0.01970,
        ),
    ),
    "Fe": (
        _E_STD,
        (
            170.6, 57.08, 25.68, 8.176, 3.629, 1.958, 1.205, 0.5952, 0.3717, 0.1964, 0.1460,
            0.1099, 0.09400, 0.08414, 0.07704, 0.06699, 0.05995, 0.05350, 0.04883, 0.04265,
            0.03621, 0.03312, 0.03146, 0.03057, 0.02991, 0.02994, 0.03092, 0.03224,
        ),
    ),
    "Ge": (
        (10, 11.1, 11.1) + _E_STD[1:],
        (
            37.42, 28.11, 198.1, 91.52, 42.22, 13.85, 6.207, 3.335, 2.023, 0.9501, 0.5550, 0.2491,
            0.1661, 0.1131, 0.09327, 0.08212, 0.07452, 0.06426, 0.05727, 0.05101, 0.04657,
            0.04086, 0.03524, 0.03275, 0.03158, 0.03107, 0.03103, 0.03156, 0.03340, 0.03528,
        ),
    ),
    "I": (
        (10, 15, 20, 30, 33.17, 33.17) + _E_STD[4:],
        (
            162.6, 55.12, 25.43, 8.561, 6.553, 35.82, 22.10, 12.32, 7.579, 3.510, 1.942, 0.6978,
            0.3663, 0.1771, 0.1217, 0.09701, 0.08313, 0.06749, 0.05841, 0.05111, 0.04647,
            0.04124, 0.03716, 0.03607, 0.03608, 0.03655, 0.03815, 0.04002, 0.04455, 0.04823,
        ),
    ),
    "Pb": (
        (10, 13.04, 13.04, 15, 15.2, 15.2, 15.86, 15.86, 20, 30, 40, 50, 60, 80, 88.0, 88.0)
        + _E_STD[8:],
        (
            130.6, 67.01, 162.1, 111.6, 107.8, 148.5, 134.4, 154.8, 86.36, 30.32, 14.36, 8.041,
            5.021, 2.419, 1.910, 7.683, 5.549, 2.014, 0.9985, 0.4031, 0.2323, 0.1614, 0.1248,
            0.08870, 0.07102, 0.05876, 0.05222, 0.04606, 0.04234, 0.04197, 0.04272, 0.04391,
            0.04675, 0.04972, 0.05658, 0.06206,
        ),
    ),
}

#: Atomic number and standard atomic weight (g/mol) of the embedded elements.
ELEMENTS = {
    "Na": (11, 22.98977),
    "Al": (13, 26.98154),
    "Fe": (26, 55.845),
    "Ge": (32, 72.630),
    "I": (53, 126.90447),
    "Pb": (82, 207.2),
}


class Material(NamedTuple):
    """A material: mass fractions of its elements and its density (g/cm³)."""

    composition: dict
    density: float


_W_NA = 22.98977 / (22.98977 + 126.90447)

#: Materials known to the simulator. "steel" is modelled as pure iron (7.874 g/cm³): carbon
#: steels are > 98 % Fe and their attenuation differs from iron's by < 1 % above 50 keV.
MATERIALS = {
    "steel": Material({"Fe": 1.0}, 7.874),
    "iron": Material({"Fe": 1.0}, 7.874),
    "lead": Material({"Pb": 1.0}, 11.35),
    "aluminium": Material({"Al": 1.0}, 2.699),
    "NaI": Material({"Na": _W_NA, "I": 1.0 - _W_NA}, 3.667),
    "Ge": Material({"Ge": 1.0}, 5.323),
}


def _log_tables():
    """Per element: strictly increasing log-energies (edges split by 1e-9) and log mu/rho."""
    out = {}
    for el, (e, mu) in _MU_RHO_RAW.items():
        e = np.array(e, dtype=float)
        mu = np.array(mu, dtype=float)
        assert e.shape == mu.shape, el
        le = np.log(e)
        # the lower side of an edge sits an infinitesimal below the edge energy
        dup = np.nonzero(np.diff(e) == 0)[0]
        le[dup] -= 1e-9
        assert np.all(np.diff(le) > 0), el
        out[el] = (le, np.log(mu))
    return out


_LOG_TABLES = _log_tables()


def element_mass_attenuation(energy, element: str) -> np.ndarray:
    r"""Total :math:`\mu/\rho` (cm²/g) of an element at ``energy`` (keV), log-log interpolated.

    Linear interpolation of :math:`\ln\mu/\rho` in :math:`\ln E` between table points (the
    NIST recommendation between edges); outside 10 keV-20 MeV the end segments are
    extrapolated with their power law.
    """
    le, lmu = _LOG_TABLES[element]
    x = np.log(np.asarray(energy, dtype=float))
    y = np.interp(x, le, lmu)
    # power-law extrapolation beyond the table ends (np.interp would clamp)
    lo_slope = (lmu[1] - lmu[0]) / (le[1] - le[0])
    hi_slope = (lmu[-1] - lmu[-2]) / (le[-1] - le[-2])
    y = np.where(x < le[0], lmu[0] + lo_slope * (x - le[0]), y)
    y = np.where(x > le[-1], lmu[-1] + hi_slope * (x - le[-1]), y)
    return np.exp(y)


def material_key(name: str) -> str:
    """Library key of a material name (case-insensitive); ``ValueError`` naming the known ones."""
    for key in MATERIALS:
        if key.lower() == str(name).lower() or (key == "aluminium" and str(name).lower() == "aluminum"):
            return key
    raise ValueError(f"material {name!r} is not known; known materials: {', '.join(MATERIALS)}")


def mass_attenuation(energy, material: str = "steel") -> np.ndarray:
    r"""Total mass attenuation coefficient :math:`\mu/\rho` (cm²/g) of a material at ``energy`` keV."""
    mat = MATERIALS[material_key(material)]
    return sum(w * element_mass_attenuation(energy, el) for el, w in mat.composition.items())


def electrons_per_gram(material: str) -> float:
    r"""Electron density per unit mass, :math:`N_A \sum_i w_i Z_i / A_i` (electrons/g)."""
    mat = MATERIALS[material_key(material)]
    return 6.02214076e23 * sum(w * ELEMENTS[el][0] / ELEMENTS[el][1] for el, w in mat.composition.items())
