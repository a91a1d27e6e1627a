r"""Energy axis, deposit grid and detector model of the gamma-ray simulator.

The part of :mod:`frugal.gamma.physics` that happens in the crystal: the energy axis and the
1 keV deposit grid, the detector model (:class:`Detector`, presets, resolution width,
discriminator, interaction probabilities, Compton continuum), the photon interaction
cross-sections (Klein-Nishina, pair production) the shield transport
(:mod:`frugal.gamma.transport`) shares, and the deposit of an incident continuum. The
formulas are given in the :mod:`frugal.gamma.simulate` docstring.

Units: energies in keV, lengths in cm, densities in g/cm³. Deposits are counts per photon
on the crystal face, unnormalised, on the grid cells ``[k h, (k+1) h)`` keV, ``h`` =
:data:`GRID_KEV`, ``k = 0 .. n_cells - 1``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from frugal._special import erfc
from frugal._validation import check_array, check_choice, check_float, check_int
from frugal.gamma import nuclear_data as nd

__all__ = [
    "CLASSICAL_ELECTRON_RADIUS_CM",
    "DETECTORS",
    "Detector",
    "ELECTRON_MASS_KEV",
    "GRID_KEV",
    "Response",
    "as_detector",
    "bin_centres",
    "bin_edges",
    "check_edges",
    "compton_shape",
    "continuum_deposit",
    "deposit",
    "fwhm",
    "grid_cells",
    "interaction_shares",
    "klein_nishina_angular",
    "klein_nishina_total",
    "normal_cdf",
    "response_weights",
    "sigma",
    "threshold",
]

#: Electron rest energy (keV) and classical electron radius (cm).
ELECTRON_MASS_KEV = 510.99895
CLASSICAL_ELECTRON_RADIUS_CM = 2.8179403262e-13

#: Width (keV) of the deposit grid on which continua are accumulated before smearing.
GRID_KEV = 1.0


# --------------------------------------------------------------------------------------
# Energy axis
# --------------------------------------------------------------------------------------


def bin_edges(n_bins: int = 800, width_kev: float = 2.0, start_kev: float = 18.0) -> np.ndarray:
    """Edges (keV) of ``n_bins`` contiguous bins: bin ``k`` covers ``[start + k w, start + (k+1) w)``.

    The default is the published SEMSUN preprocessing: 800 bins of 2 keV from 18 keV (bin
    ``k`` holds the 1 keV channels ``18 + 2k`` and ``19 + 2k``), i.e. 18-1618 keV.
    """
    n_bins = check_int(n_bins, "n_bins", minimum=1)
    width_kev = check_float(width_kev, "width_kev", minimum=0.0, strict=True)
    start_kev = check_float(start_kev, "start_kev", minimum=0.0)
    return start_kev + width_kev * np.arange(n_bins + 1, dtype=np.float64)


def bin_centres(edges) -> np.ndarray:
    """Centres of the bins with these edges (keV)."""
    edges = check_edges(edges)
    return 0.5 * (edges[:-1] + edges[1:])


def check_edges(edges) -> np.ndarray:
    """Bin edges (keV) as a float64 array, checked increasing and non-negative;
    ``None`` gives the default :func:`bin_edges`."""
    if edges is None:
        return bin_edges()
    edges = check_array(edges, "edges", ndim=1, dtype=np.float64)
    if edges.size < 2 or np.any(np.diff(edges) <= 0) or edges[0] < 0:
        raise ValueError("edges must be at least two increasing, non-negative energies (keV)")
    return edges


def grid_cells(e0, edges, det) -> int:
    """Number of deposit cells (of :data:`GRID_KEV`) covering the top line ``e0`` (keV) or
    bin edge, plus 8 sigma of the resolution at the top edge and 4 cells of margin."""
    top = max(float(np.max(e0)), float(edges[-1])) + 8 * float(sigma(edges[-1], det)) + 4 * GRID_KEV
    return int(np.ceil(top / GRID_KEV))


# --------------------------------------------------------------------------------------
# Detector model
# --------------------------------------------------------------------------------------


class Detector(NamedTuple):
    """Parameters of a detector response (see :mod:`frugal.gamma.simulate` for the formulas).

    Build a variant with ``DETECTORS["NaI"]._replace(fwhm_ref_kev=40.0)``.
    """

    name: str
    material: str  #: crystal material key in :data:`frugal.gamma.nuclear_data.MATERIALS`
    depth_cm: float  #: mean path through the crystal of photons from the source
    window_cm: float  #: aluminium-equivalent entrance window (housing, reflector, dead layer)
    fwhm_noise_kev: float  #: constant FWHM term w0
    fwhm_ref_kev: float  #: FWHM term w1 at ``e_ref_kev``
    e_ref_kev: float
    fwhm_exponent: float  #: a in w1 (E/E_ref)^a
    absorb_kev: float  #: E_g of the multiple-Compton full absorption probability 1/(1+E/E_g)
    multi_compton: float  #: share of the Compton continuum between edge and photopeak
    xray_kev: tuple  #: (K-alpha, K-beta) energies of the crystal's escaping X-rays
    kbeta_share: float  #: K-beta share of the K X-rays
    fluorescence_yield: float  #: omega_K of the crystal's heavy element
    jump_ratio: float  #: K-edge jump ratio r_K of the crystal's heavy element
    k_edge_kev: float
    pair_keep: tuple  #: (single escape, double escape) shares of pair events
    threshold_kev: float  #: discriminator level (50 % point)
    backscatter: float  #: share of primary photons backscattered by the surroundings


#: Detector presets: a 3"x3" NaI(Tl) scintillator and a coaxial HPGe (~40 % relative efficiency).
DETECTORS = {
    "NaI": Detector(
        name="NaI",
        material="NaI",
        depth_cm=7.0,
        window_cm=0.05,
        fwhm_noise_kev=0.0,
        fwhm_ref_kev=0.066 * 661.657,
        e_ref_kev=661.657,
        fwhm_exponent=0.6,
        absorb_kev=565.0,
        multi_compton=0.08,
        xray_kev=(28.51, 32.29),
        kbeta_share=0.18,
        fluorescence_yield=0.884,
        jump_ratio=5.47,
        k_edge_kev=33.17,
        pair_keep=(0.25, 0.08),
        threshold_kev=10.0,
        backscatter=0.015,
    ),
    "HPGe": Detector(
        name="HPGe",
        material="Ge",
        depth_cm=5.5,
        window_cm=0.1,
        fwhm_noise_kev=0.8,
        fwhm_ref_kev=1.612,
        e_ref_kev=1332.492,
        fwhm_exponent=0.5,
        absorb_kev=376.0,
        multi_compton=0.06,
        xray_kev=(9.876, 10.98),
        kbeta_share=0.12,
        fluorescence_yield=0.546,
        jump_ratio=7.05,
        k_edge_kev=11.10,
        pair_keep=(0.35, 0.15),
        threshold_kev=5.0,
        backscatter=0.015,
    ),
}


def as_detector(detector) -> Detector:
    """A :class:`Detector` itself, or the preset of that name in :data:`DETECTORS`."""
    if isinstance(detector, Detector):
        return detector
    check_choice(detector, "detector", tuple(DETECTORS))
    return DETECTORS[detector]


def fwhm(energy, detector="NaI") -> np.ndarray:
    r"""Full width at half maximum (keV) of a photopeak at ``energy`` keV:
    :math:`\sqrt{w_0^2 + (w_1 (E/E_{ref})^a)^2}`."""
    det = as_detector(detector)
    e = np.maximum(np.asarray(energy, dtype=np.float64), 1e-3)
    stat = det.fwhm_ref_kev * (e / det.e_ref_kev) ** det.fwhm_exponent
    return np.sqrt(det.fwhm_noise_kev**2 + stat**2)


def sigma(energy, det) -> np.ndarray:
    """Standard deviation (keV) of the Gaussian resolution at ``energy`` keV: FWHM / 2.355."""
    return fwhm(energy, det) / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def klein_nishina_total(energy) -> np.ndarray:
    """Klein-Nishina cross-section per electron (cm²) at ``energy`` keV."""
    k = np.asarray(energy, dtype=np.float64) / ELECTRON_MASS_KEV
    l2k = np.log1p(2 * k)
    return (
        2
        * np.pi
        * CLASSICAL_ELECTRON_RADIUS_CM**2
        * (
            (1 + k) / k**2 * (2 * (1 + k) / (1 + 2 * k) - l2k / k)
            + l2k / (2 * k)
            - (1 + 3 * k) / (1 + 2 * k) ** 2
        )
    )


def klein_nishina_angular(energy, cos_theta) -> np.ndarray:
    r""":math:`\mathrm{d}\sigma_{KN}/\mathrm{d}\Omega` per electron (cm²/sr)."""
    k = np.asarray(energy, dtype=np.float64) / ELECTRON_MASS_KEV
    ratio = 1.0 / (1.0 + k * (1.0 - cos_theta))  # E'/E
    return 0.5 * CLASSICAL_ELECTRON_RADIUS_CM**2 * ratio**2 * (ratio + 1.0 / ratio - (1.0 - cos_theta**2))


def _pair_mass(energy, material) -> np.ndarray:
    """Approximate pair-production mass coefficient (cm²/g), zero below 1022 keV."""
    e = np.asarray(energy, dtype=np.float64)
    mat = nd.MATERIALS[nd.material_key(material)]
    z2a = sum(w * nd.ELEMENTS[el][0] ** 2 / nd.ELEMENTS[el][1] for el, w in mat.composition.items())
    x = np.clip(1.0 - 2 * ELECTRON_MASS_KEV / np.maximum(e, 1e-3), 0.0, None)
    return 6.0e-4 * z2a * x**3


def interaction_shares(energy, material):
    """Total mu/rho and the shares (photo, Compton, pair) of interactions in ``material``."""
    mu = nd.mass_attenuation(energy, material)
    compton = np.minimum(nd.electrons_per_gram(material) * klein_nishina_total(energy), mu)
    pair = np.minimum(_pair_mass(energy, material), mu - compton)
    photo = np.clip(mu - compton - pair, 0.0, None)
    return mu, photo / mu, compton / mu, pair / mu


def _escape_probability(energy, det) -> np.ndarray:
    """Probability that a photoabsorption event loses a K X-ray (semi-infinite slab formula)."""
    e = np.asarray(energy, dtype=np.float64)
    mu = nd.mass_attenuation(e, det.material)
    mu_x = nd.mass_attenuation(det.xray_kev[0], det.material)
    r = mu / mu_x
    geometric = 1.0 - np.log1p(r) / r
    f = 0.5 * det.fluorescence_yield * (1.0 - 1.0 / det.jump_ratio) * geometric
    return np.where(e > det.k_edge_kev, f, 0.0)


class Response(NamedTuple):
    """Per incident photon on the crystal face: probabilities of each kind of event."""

    peak: np.ndarray
    escape: np.ndarray  # K X-ray escape peak (split K-alpha/K-beta later)
    single: np.ndarray  # pair single escape
    double: np.ndarray  # pair double escape
    compton: np.ndarray  # Compton continuum (single + multiple)
    total: np.ndarray  # interaction probability


def response_weights(energy, det: Detector) -> Response:
    """Probabilities of each kind of event (:class:`Response`, arrays shaped like ``energy``)
    for a photon of ``energy`` keV reaching the crystal face of ``det``."""
    e = np.asarray(energy, dtype=np.float64)
    window = np.exp(-nd.mass_attenuation(e, "aluminium") * nd.MATERIALS["aluminium"].density * det.window_cm)
    mu, f_photo, f_compton, f_pair = interaction_shares(e, det.material)
    interact = window * (1.0 - np.exp(-mu * nd.MATERIALS[det.material].density * det.depth_cm))
    esc = _escape_probability(e, det)
    g = 1.0 / (1.0 + e / det.absorb_kev)
    se, de = det.pair_keep
    peak = f_photo * (1.0 - esc) + f_compton * g + f_pair * (1.0 - se - de)
    return Response(
        peak=interact * peak,
        escape=interact * f_photo * esc,
        single=interact * f_pair * se,
        double=interact * f_pair * de,
        compton=interact * f_compton * (1.0 - g),
        total=interact,
    )


def normal_cdf(u):
    """Standard normal CDF (NumPy), accurate in the lower tail."""
    return 0.5 * erfc(-u / np.sqrt(2.0))


def threshold(energy, det):
    """Discriminator efficiency at a deposited ``energy`` (keV): a smooth step, 50 % at
    ``det.threshold_kev``, 10-90 % over ~3 keV."""
    return normal_cdf((np.asarray(energy, dtype=np.float64) - det.threshold_kev) / 1.2)


def compton_shape(energy, n_cells, det, h=GRID_KEV):
    """Deposit distribution (rows sum to 1) of Compton continuum events, ``(L, n_cells)``.

    Klein-Nishina recoil spectrum on [0, T_max] (share ``1 - multi_compton``) plus an even
    plateau on [T_max, E] (multiple Compton scattering), integrated over the cells.
    """
    e = np.asarray(energy, dtype=np.float64)[:, None]
    k = e / ELECTRON_MASS_KEV
    t_max = e * 2 * k / (1 + 2 * k)
    lo = h * np.arange(n_cells)[None, :]
    hi = lo + h
    # single scattering: midpoint of the part of each cell below the edge
    top = np.minimum(hi, t_max)
    width = np.clip(top - lo, 0.0, None)
    s = np.clip(0.5 * (lo + top) / e, 0.0, 0.999999)
    kn = 2 + s**2 / (k**2 * (1 - s) ** 2) + s / (1 - s) * (s - 2 / k)
    single = np.clip(kn, 0.0, None) * width
    single /= np.maximum(single.sum(axis=1, keepdims=True), 1e-300)
    # multiple scattering: uniform between the edge and the full energy
    overlap = np.clip(np.minimum(hi, e) - np.maximum(lo, t_max), 0.0, None)
    plateau = overlap / np.maximum(e - t_max, 1e-12)
    g = 1.0 / (1.0 + e / det.absorb_kev)
    m = np.minimum(det.multi_compton * g / (1.0 - g), 0.6)
    return (1 - m) * single + m * plateau


# --------------------------------------------------------------------------------------
# Deposits on the grid
# --------------------------------------------------------------------------------------


def deposit(values, energies, n_cells, h=GRID_KEV):
    """Histogram ``values`` (``(T, ...)``) at ``energies`` (same shape) on a grid of cells of
    width ``h`` keV, sharing each between the two nearest cell centres: ``(T, n_cells)``."""
    T = values.shape[0]
    v = values.reshape(T, -1)
    pos = energies.reshape(T, -1) / h - 0.5
    lo = np.clip(np.floor(pos).astype(np.int64), 0, n_cells - 1)
    frac = np.clip(pos - lo, 0.0, 1.0)
    hi = np.minimum(lo + 1, n_cells - 1)
    offset = (np.arange(T) * n_cells)[:, None]
    out = np.bincount((lo + offset).ravel(), (v * (1 - frac)).ravel(), minlength=T * n_cells)
    out += np.bincount((hi + offset).ravel(), (v * frac).ravel(), minlength=T * n_cells)
    return out.reshape(T, n_cells)


def continuum_deposit(flux, det, n_cells, h=GRID_KEV):
    """Energy deposited ``(T, n_cells)`` by an incident continuum given as photons per grid cell
    ``(T, n_cells)``: full-energy, X-ray and pair escape, and Compton deposits, before the
    resolution and the discriminator."""
    used = np.nonzero(np.any(flux > 0, axis=0))[0]
    if used.size == 0:
        return np.zeros((flux.shape[0], n_cells))
    e = h * (used + 0.5)
    f = flux[:, used]
    r = response_weights(e, det)
    dep = np.zeros((flux.shape[0], n_cells))
    dep[:, used] += f * r.peak
    ka, kb = det.xray_kev
    for shift, a in (
        (ka, r.escape * (1 - det.kbeta_share)),
        (kb, r.escape * det.kbeta_share),
        (ELECTRON_MASS_KEV, r.single),
        (2 * ELECTRON_MASS_KEV, r.double),
    ):
        ok = (a > 0) & (e - shift > 0)
        if np.any(ok):
            dep += deposit(f[:, ok] * a[ok], np.broadcast_to(e[ok] - shift, f[:, ok].shape), n_cells)
    dep += (f * r.compton) @ compton_shape(e, n_cells, det)
    return dep

