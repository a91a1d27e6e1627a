r"""Physics of the gamma-ray simulator up to the energy deposited in the crystal.

Everything :mod:`frugal.gamma.simulate` (spectra folded with the energy resolution, in
NumPy) and :mod:`frugal.gamma.resolution` (the same resolution in JAX, differentiable)
both need, so that the two stay one model: the energy axis and the 1 keV deposit grid,
the detector model (:class:`Detector`, presets, resolution width, discriminator,
interaction probabilities, Compton continuum), the transport of photons through the
spherical shield and back from the surroundings, and the source terms (nuclide line lists,
natural background). The formulas are given in the :mod:`frugal.gamma.simulate` docstring.

Units: energies in keV, lengths in cm (thicknesses in mm only in the public functions of
:mod:`frugal.gamma.simulate`), densities in g/cm³. Fluxes and deposits are photons or
counts per decay (or per photon on the crystal face), unnormalised, on the grid cells
``[k h, (k+1) h)`` keV, ``h`` = :data:`GRID_KEV`, ``k = 0 .. n_cells - 1``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from frugal._special import erfc
from frugal._validation import check_array, check_choice, check_float, check_int
from frugal.gamma import nuclear_data as nd

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

#: Shield materials (see :data:`frugal.gamma.nuclear_data.MATERIALS`).
SHIELDS: tuple[str, ...] = ("steel", "lead")

#: Electron rest energy (keV) and classical electron radius (cm).
ELECTRON_MASS_KEV = 510.99895
CLASSICAL_ELECTRON_RADIUS_CM = 2.8179403262e-13

#: Geometry of the simulated set-up: source at the centre of a spherical shell of this inner
#: radius (cm), detector face at this distance (cm) from the source.
SHELL_INNER_RADIUS_CM = 5.0
SOURCE_DETECTOR_CM = 20.0

#: Scale of the multiply-scattered flux relative to an isolated shell (see :mod:`frugal.gamma.simulate`:
#: 2.2 reproduces the Geant4 steel-sphere reference spectra, 1 is a bare shell).
MULTIPLE_SCATTER_GAIN = 2.2

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


def _interaction_shares(energy, material):
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
    mu, f_photo, f_compton, f_pair = _interaction_shares(e, det.material)
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
# Shield and surroundings
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _shell_geometry(n_theta: int, n_depth: int):
    """Quadrature nodes: polar angles (midpoints) and Gauss-Legendre depth fractions."""
    dtheta = np.pi / n_theta
    theta = (np.arange(n_theta) + 0.5) * dtheta
    u, w = np.polynomial.legendre.leggauss(n_depth)
    return theta, 2 * np.pi * np.sin(theta) * dtheta, 0.5 * (u + 1.0), 0.5 * w


def _shell_paths(t_cm, n_theta=192, n_depth=12):
    """Exit geometry of photons leaving the shell towards the detector, for every node.

    Returns ``cos_s`` (cosine of the angle between the emission direction and the direction
    to the detector), ``ell`` (path through the shield on the way out, cm), ``weight``
    (solid angle x depth quadrature x inverse-square gain, cm) with shape ``(T, X, Theta)``.
    """
    theta, domega, frac, wx = _shell_geometry(n_theta, n_depth)
    R, d = SHELL_INNER_RADIUS_CM, SOURCE_DETECTOR_CM
    t = t_cm[:, None, None]
    x = t * frac[None, :, None]  # depth of the scattering point
    r = R + x
    c = np.cos(theta)[None, None, :]
    dist = np.sqrt(r**2 + d**2 - 2 * r * d * c)
    cos_s = (d * c - r) / dist
    b = (d * r * c - r**2) / dist  # projection of the position on the direction of flight
    s_out = -b + np.sqrt(np.maximum(b**2 - r**2 + (R + t) ** 2, 0.0))
    disc = b**2 - r**2 + R**2
    crosses = (disc > 0) & (-b - np.sqrt(np.maximum(disc, 0.0)) > 0)
    ell = s_out - np.where(crosses, 2 * np.sqrt(np.maximum(disc, 0.0)), 0.0)
    weight = domega[None, None, :] * (t * wx[None, :, None]) * (d / dist) ** 2
    return x, cos_s, np.maximum(ell, 0.0), weight


def _deposit(values, energies, n_cells, h=GRID_KEV):
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


def _deposit_box(values, lo, hi, n_cells, h=GRID_KEV):
    """Like :func:`_deposit`, but each value is spread evenly over the energy interval
    ``[lo, hi]``: the exact cell overlaps, through the cumulative sum of the slope changes of
    each interval's ramp (two ``bincount`` per end point)."""
    T = values.shape[0]
    a = np.minimum(lo, hi).reshape(T, -1) / h
    b = np.maximum(lo, hi).reshape(T, -1) / h
    b = np.maximum(b, a + 1e-6)
    slope = values.reshape(T, -1) / (b - a)  # per unit cell
    offset = (np.arange(T) * (n_cells + 2))[:, None]
    size = T * (n_cells + 2)
    acc = np.zeros(size)
    for end, sign in ((a, 1.0), (b, -1.0)):
        i = np.floor(np.clip(end, 0.0, n_cells)).astype(np.int64)
        part = np.clip(end, 0.0, n_cells) - i  # position inside the cell
        acc += np.bincount((i + offset).ravel(), (sign * slope * (1.0 - part)).ravel(), minlength=size)
        acc += np.bincount((i + 1 + offset).ravel(), (sign * slope * part).ravel(), minlength=size)
    out = np.cumsum(acc.reshape(T, n_cells + 2), axis=1)[:, :n_cells]
    # the running sum leaves ~1e-16 relative rounding residue where no interval lies
    return np.where(out > 1e-12 * np.max(np.abs(out), axis=1, keepdims=True), out, 0.0)


def _cell_bounds(e):
    """Energy interval of each angular node: half-way to its neighbours along the last axis."""
    mid = 0.5 * (e[..., 1:] + e[..., :-1])
    lo = np.concatenate([e[..., :1] - (mid[..., :1] - e[..., :1]), mid], axis=-1)
    hi = np.concatenate([mid, e[..., -1:] + (e[..., -1:] - mid[..., -1:])], axis=-1)
    return lo, hi


def scattered_flux(e0, p, t_cm, shield, n_cells):
    """Incident spectrum of photons scattered (or fluoresced) in the shell: ``(T, n_cells)``
    photons per keV cell, relative to the unshielded flux of one decay."""
    T = t_cm.shape[0]
    out = np.zeros((T, n_cells))
    if not np.any(t_cm > 0):
        return out
    mat = nd.MATERIALS[shield]
    rho = mat.density
    n_e = nd.electrons_per_gram(shield) * rho  # electrons / cm^3
    x, cos_s, ell, weight = _shell_paths(t_cm)
    for energy, prob in zip(e0, p):
        mu0 = nd.mass_attenuation(energy, shield) * rho
        k = energy / ELECTRON_MASS_KEV
        e1 = energy / (1.0 + k * (1.0 - cos_s))
        mu1 = nd.mass_attenuation(e1, shield) * rho
        once = prob * n_e * klein_nishina_angular(energy, cos_s) * np.exp(-mu0 * x - mu1 * ell) * weight
        out += _deposit_box(once, *_cell_bounds(e1), n_cells)
        if shield == "lead" and energy > 88.0:
            out += _lead_fluorescence(energy, prob, x, ell, weight, rho, n_cells)
    return out + MULTIPLE_SCATTER_GAIN * _multiple_scatter(e0, p, t_cm, shield, n_cells)


def _compton_kernel(energy, group_lo, width, n_groups, n_cos=96):
    """Shares of Compton scatters at ``energy`` (E,) landing in each energy group, split by
    hemisphere: ``(forward, backward)``, each ``(E, n_groups)``; rows of both sum to 1."""
    e = np.asarray(energy, dtype=np.float64)[:, None]
    c = -1.0 + (np.arange(n_cos) + 0.5) * (2.0 / n_cos)  # midpoints in cos(theta)
    w = klein_nishina_angular(e, c[None, :])
    w = w / w.sum(axis=1, keepdims=True)
    e1 = e / (1.0 + e / ELECTRON_MASS_KEV * (1.0 - c[None, :]))
    g = np.clip(np.floor((e1 - group_lo) / width).astype(np.int64), -1, n_groups - 1)
    rows = np.broadcast_to(np.arange(e.shape[0])[:, None], g.shape)
    out = []
    for hemisphere in (c > 0, c <= 0):
        m = (g >= 0) & hemisphere[None, :]
        k = np.bincount((rows * n_groups + g)[m], w[m], minlength=e.shape[0] * n_groups)
        out.append(k.reshape(e.shape[0], n_groups))
    return out[0], out[1]


#: Mean direction cosine of the diffuse streams of the two-stream model (diffusivity 1/0.6).
_MU_BAR = 0.6


def _multiple_scatter(e0, p, t_cm, shield, n_cells, n_layers=24, group_kev=6.0, low_kev=15.0):
    r"""Photons leaving the shell after two or more Compton scatters: ``(T, n_cells)``.

    Multigroup two-stream transport in slab geometry. Far from the source a spherical shell
    sends the same number of photons towards every direction, so only the number leaving
    its outer surface matters; photons going inwards cross the cavity and re-enter the
    opposite wall (reflecting inner boundary). In energy group :math:`g` the outward and
    inward currents obey :math:`\pm\,\mathrm{d}J_\pm/\mathrm{d}z = -(\mu_g/\bar\mu) J_\pm +
    s_\pm(z)` (:math:`\bar\mu` = :data:`_MU_BAR`), solved exactly for sources constant per
    layer. A collision in group :math:`g` is a Compton scatter with probability
    :math:`\sigma_g/\mu_g`; Klein-Nishina sends it to lower groups, in the same stream for
    forward angles and the opposite one for backward angles. Compton scattering only lowers
    the energy, so one sweep from the highest group down solves all orders. The first
    collisions of the primary beam seed the sweep; the photons that escape right after their
    first scatter are left out here (:func:`scattered_flux` computes them in exact geometry).
    """
    T = t_cm.shape[0]
    top = float(np.max(e0))
    n_groups = int(np.ceil((top - low_kev) / group_kev)) + 1
    if n_groups < 2 or not np.any(t_cm > 0):
        return np.zeros((T, n_cells))
    centre = low_kev + group_kev * (np.arange(n_groups) + 0.5)
    rho = nd.MATERIALS[shield].density
    mu = nd.mass_attenuation(centre, shield) * rho
    sig = np.minimum(nd.electrons_per_gram(shield) * rho * klein_nishina_total(centre), mu)
    k_fwd, k_back = _compton_kernel(centre, low_kev, group_kev, n_groups)
    # small-angle scatters staying in their group are treated as no interaction
    removal = mu - sig * np.diag(k_fwd)
    np.fill_diagonal(k_fwd, 0.0)
    np.fill_diagonal(k_back, 0.0)

    dz = t_cm / n_layers  # (T,)
    z = dz[:, None] * np.arange(n_layers + 1)[None, :]  # layer boundaries
    # first collisions of the primary beam (normal incidence), exact layer averages
    first = np.zeros((n_groups, 2, T, n_layers))  # [group, stream (+,-)]
    f1, b1 = _compton_kernel(e0, low_kev, group_kev, n_groups)
    for i, (energy, prob) in enumerate(zip(e0, p)):
        mu0 = nd.mass_attenuation(energy, shield) * rho
        s0 = nd.electrons_per_gram(shield) * rho * klein_nishina_total(energy)
        att = np.exp(-mu0 * z)
        dens = prob * (att[:, :-1] - att[:, 1:]) / np.where(dz > 0, dz, 1.0)[:, None] * (s0 / mu0)
        first[:, 0] += f1[i][:, None, None] * dens[None]
        first[:, 1] += b1[i][:, None, None] * dens[None]

    # Compton scatters (per cm) of each processed group, by stream: the sources of the lower
    # groups are matrix-vector products with the kernels (stream kept forward, flipped back)
    scat = np.zeros((n_groups, 2, T * n_layers))
    kf_all = (sig / mu)[:, None] * k_fwd  # [from, to]
    kb_all = (sig / mu)[:, None] * k_back
    n = np.arange(n_layers + 1)[:, None]
    m = np.arange(n_layers)[None, :]
    lag = n - 1 - m
    powers_n = np.arange(n_layers + 1)[None, :]
    out_groups = np.zeros((T, n_groups))
    for g in range(n_groups - 1, -1, -1):
        hi = slice(g + 1, n_groups)
        later = np.stack(
            [
                kf_all[hi, g] @ scat[hi, 0] + kb_all[hi, g] @ scat[hi, 1],
                kf_all[hi, g] @ scat[hi, 1] + kb_all[hi, g] @ scat[hi, 0],
            ]
        ).reshape(2, T, n_layers)
        src = np.stack([first[g], later])  # [order (1st, later), stream, T, L]
        if not src.any():
            continue
        a = removal[g] / _MU_BAR
        decay = np.exp(-a * dz)  # (T,)
        gain = -np.expm1(-a * dz) / a
        prop = np.where(lag >= 0, gain[:, None, None] * decay[:, None, None] ** np.maximum(lag, 0), 0.0)
        # inward stream: march from the outer surface (J-(t) = 0) towards the cavity
        s_in = src[:, 1, :, ::-1]  # (2, T, L) in the order of travel
        j_in = np.einsum("tnm,otm->otn", prop, s_in)  # (2, T, L+1), j_in[..., 0] at z = t
        # outward stream starts with what came back through the cavity
        s_out = src[:, 0]
        j_out = j_in[..., -1:] * (decay[:, None] ** powers_n)[None] + np.einsum("tnm,otm->otn", prop, s_out)
        out_groups[:, g] = j_out[1, :, -1]  # orders >= 2 that escape
        # mean currents over each layer, then collisions per cm
        frac = np.where(dz > 0, gain / np.where(dz > 0, dz, 1.0), 1.0)[:, None]  # (1 - e^{-a dz}) / (a dz)
        c_out = a * (j_out[..., :-1] * frac + s_out / a * (1.0 - frac)).sum(axis=0)  # (T, L), both orders
        c_in = a * (j_in[..., :-1] * frac + s_in / a * (1.0 - frac)).sum(axis=0)[:, ::-1]
        scat[g, 0] = c_out.ravel()
        scat[g, 1] = c_in.ravel()
    # spread each group evenly over its deposit cells
    lo_cell = np.clip(((low_kev + group_kev * np.arange(n_groups)) / GRID_KEV).astype(np.int64), 0, n_cells)
    hi_cell = np.clip(((low_kev + group_kev * (np.arange(n_groups) + 1)) / GRID_KEV).astype(np.int64), 0, n_cells)
    spread = np.zeros((n_groups, n_cells))
    for g in range(n_groups):
        if hi_cell[g] > lo_cell[g]:
            spread[g, lo_cell[g] : hi_cell[g]] = 1.0 / (hi_cell[g] - lo_cell[g])
    return out_groups @ spread


#: Pb K X-rays: energy (keV) and share of K-shell vacancies filled radiatively by each.
_PB_K_XRAYS = ((72.805, 0.276), (74.969, 0.462), (84.94, 0.162), (87.3, 0.063))
_PB_OMEGA_K = 0.963
_PB_K_EDGE = 88.0


def _lead_fluorescence(energy, prob, x, ell, weight, rho, n_cells):
    mu0 = nd.mass_attenuation(energy, "lead") * rho
    _, f_photo, _, _ = _interaction_shares(energy, "lead")
    jump = nd.mass_attenuation(_PB_K_EDGE * 1.0001, "lead") / nd.mass_attenuation(_PB_K_EDGE * 0.9999, "lead")
    tau_k = mu0 * f_photo * (1.0 - 1.0 / jump)
    total = np.zeros((x.shape[0], n_cells))
    for e_x, share in _PB_K_XRAYS:
        mu_x = nd.mass_attenuation(e_x, "lead") * rho
        emitted = prob * tau_k * _PB_OMEGA_K * share / (4 * np.pi) * np.exp(-mu0 * x - mu_x * ell) * weight
        total += _deposit(emitted, np.full_like(emitted, e_x), n_cells)
    return total


def surroundings(e0, weights, det, n_cells, n_theta=48):
    """Photons backscattered by the surroundings per grid cell: ``(T, n_cells)``, from the
    ``(T, L)`` primary (uncollided) photons of the lines ``e0`` (keV); ``0.0`` if
    ``det.backscatter`` is 0."""
    if det.backscatter <= 0:
        return 0.0
    theta = np.linspace(np.radians(110), np.pi, n_theta)
    c = np.cos(theta)
    out = 0.0
    for i, energy in enumerate(e0):
        ang = klein_nishina_angular(energy, c) * np.sin(theta)
        ang = det.backscatter * ang / ang.sum()
        e1 = energy / (1.0 + energy / ELECTRON_MASS_KEV * (1.0 - c))
        vals = weights[:, i, None] * ang[None, :]
        lo, hi = _cell_bounds(np.broadcast_to(e1, vals.shape))
        out = out + _deposit_box(vals, lo, hi, n_cells)
    return out


def incident_flux(e0, p, t_cm, shield, det, n_cells):
    """Photons reaching the crystal face from lines ``e0`` (keV, ``p`` per decay) behind
    ``t_cm`` (T,) of ``shield``: the uncollided ``(T, L)`` line intensities and the scattered
    continuum ``(T, n_cells)`` per grid cell (shield and surroundings), relative to the
    unshielded flux of one decay."""
    mu = nd.mass_attenuation(e0, shield) * nd.MATERIALS[shield].density
    primary = p[None, :] * np.exp(-mu[None, :] * t_cm[:, None])  # (T, L)
    flux = scattered_flux(e0, p, t_cm, shield, n_cells) + surroundings(e0, primary, det, n_cells)
    return primary, flux


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
            dep += _deposit(f[:, ok] * a[ok], np.broadcast_to(e[ok] - shift, f[:, ok].shape), n_cells)
    dep += (f * r.compton) @ compton_shape(e, n_cells, det)
    return dep


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
