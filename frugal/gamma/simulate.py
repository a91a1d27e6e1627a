r"""Deterministic gamma-ray signatures of radionuclides behind a shield, as seen by a detector.

A *signature* is the expected spectrum (per decay, then normalised to unit sum over the
chosen energy bins) of a point source of one radionuclide at the centre of a spherical
shield of thickness :math:`t`, seen by a detector 20 cm away. As :math:`t` grows the
photopeaks fade and counts move into a low-energy continuum of down-scattered photons: the
spectral variability that the IAE learns and SEMSUN unmixes. Everything is closed form or a
fixed quadrature on embedded tables (:mod:`frugal.gamma.nuclear_data`): no random numbers,
no Monte Carlo, identical output everywhere. It is a physics-shaped stand-in for a Geant4
simulation, not a replacement for one: shapes and trends are right, absolute efficiencies
are good to a few tens of percent.

Energies are in keV, thicknesses in mm (cm inside the physics), densities in g/cm³.

1. Emission
-----------
Each nuclide emits lines :math:`(E_i, p_i)` per decay (:data:`frugal.gamma.nuclear_data.LINES`,
DDEP/LNHB recommended data).

2. Shield (spherical shell, inner radius 5 cm, source at its centre)
--------------------------------------------------------------------
* **Primary (uncollided) photons**: :math:`p_i\,e^{-\mu(E_i) t}` with
  :math:`\mu = (\mu/\rho)\,\rho` from the NIST tables (NISTIR 5632), log-log interpolated.
* **Once-scattered photons** (the build-up): a photon emitted in direction :math:`\omega`
  Compton scatters at depth :math:`x` of the shell with probability
  :math:`n_e\,\mathrm{d}\sigma_{KN}/\mathrm{d}\Omega\,\mathrm{d}x` towards the detector,
  through the angle :math:`\theta_s` between :math:`\omega` and the direction to the
  detector, leaving with the Compton energy :math:`E' = E/(1 + k(1-\cos\theta_s))`,
  :math:`k = E/m_ec^2`, and is attenuated along its exact exit path :math:`\ell` through the
  shell (crossing the cavity for scatters in the far wall). Relative to the unshielded
  primary flux,

  .. math:: \phi_1(E') = \int \mathrm{d}\Omega_\omega \int_0^t \mathrm{d}x\;
      n_e \frac{\mathrm{d}\sigma_{KN}}{\mathrm{d}\Omega}(\theta_s)\,
      e^{-\mu(E) x - \mu(E') \ell}\, \frac{d^2}{|D - P|^2},

  evaluated with a midpoint rule in the polar angle and Gauss-Legendre in depth. Forward
  scatters (near side) fill the valley below each photopeak; scatters in the far wall send
  photons back at :math:`\theta_s \approx 180°` and build the **backscatter peak** near
  :math:`E/(1+2k)` (184 keV for Cs-137, ~210 keV for Co-60) that grows with thickness.
* **Multiply scattered photons**: multigroup two-stream transport in slab geometry
  (:func:`frugal.gamma.physics.scattered_flux`). Far from the source a spherical shell sends as many photons
  towards every direction, so only the number leaving its outer surface matters; photons
  heading inwards cross the cavity into the opposite wall. In 6 keV energy groups, outward
  and inward currents obey :math:`\pm\mathrm{d}J_\pm/\mathrm{d}z = -(\mu_g/\bar\mu)J_\pm + s_\pm`
  (:math:`\bar\mu = 0.6`), solved exactly layer by layer; Klein-Nishina sends each Compton
  scatter to lower groups, in the same stream for forward angles and the other one for
  backward angles. For an isolated shell this agrees with an analogue Monte Carlo to ~10 %
  in the number of escaping photons (0.5-3 cm of iron, 662 keV). The Geant4 reference
  spectra (SEMSUN steel-sphere data set) hold about twice as many multiply scattered
  photons (presumably from material of that set-up not modelled here), so this term is
  scaled by :data:`frugal.gamma.physics.MULTIPLE_SCATTER_GAIN` = 2.2, which brings the simulated steel
families within
  15-24 dB NMSE of the Geant4 ones for Cs-137, Co-60 and Ba-133; set it to 1 for a bare
  shell.
* **Fluorescence of a lead shield**: K-shell photoabsorption in Pb emits Pb K X-rays
  (72.8, 75.0, 84.9 keV) isotropically with yield :math:`\omega_K = 0.963`, attenuated on
  their way out; computed with the same shell quadrature.
* **Surroundings**: a fraction (:attr:`Detector.backscatter`) of the primary photons come
  back from material around the source and detector at 110-180°, the small backscatter bump
  of an unshielded source.

3. Detector response (per photon reaching the crystal face)
----------------------------------------------------------
* entrance window transmission (Al) and interaction probability
  :math:`1 - e^{-\mu_d(E) L}` over the crystal depth :math:`L`;
* interactions split into photoabsorption :math:`\tau`, Compton :math:`\sigma_C` (Klein-Nishina
  :math:`n_e\sigma_{KN}`) and pair production :math:`\kappa`
  (:math:`\kappa/\rho \approx 6\cdot10^{-4}\,(Z^2/A)(1 - 2m_ec^2/E)^3` cm²/g, a threshold
  law scaled to the XCOM value for iodine near 2 MeV; pair production only matters above
  ~1.5 MeV), :math:`\tau = \mu - \sigma_C - \kappa`;
* **full-energy peak**: photoabsorption without X-ray escape, plus Compton events whose
  scattered photon is absorbed too, with probability :math:`g(E) = 1/(1 + E/E_g)`, plus
  pair events that keep both annihilation photons. The peak-to-total ratio
  :math:`P/T = [\tau(1-f_{esc}) + \sigma_C g + \kappa q_{FE}]/\mu` falls from ~0.9 at
  120 keV to ~0.5 at 662 keV and ~0.3 at 1.3 MeV for a 3"x3" NaI(Tl);
* **Compton continuum**: the Klein-Nishina recoil-electron spectrum
  :math:`\mathrm{d}\sigma/\mathrm{d}T \propto 2 + s^2/(k^2(1-s)^2) + s(s-2/k)/(1-s)`,
  :math:`s = T/E`, up to the **Compton edge** :math:`T_{max} = E\,2k/(1+2k)` (477 keV for
  662 keV), plus a share :math:`m = \min(0.6, m_0\,g/(1-g))` of multiple-Compton events
  spread evenly between the edge and the photopeak (:math:`m_0` =
  :attr:`Detector.multi_compton`; the share grows at low energy, where most photons that
  scatter once scatter again);
* **X-ray escape peaks** at :math:`E - E_K` (I K X-rays 28.5/32.3 keV in NaI, Ge 9.9/11.0 keV
  in HPGe) with the escape probability of a semi-infinite slab at normal incidence,
  :math:`f_{esc} = \tfrac12\,\omega_K (1 - 1/r_K)
  [1 - (\mu_X/\mu)\ln(1 + \mu/\mu_X)]` (:math:`r_K` the K jump ratio);
* single and double escape peaks (:math:`E - 511`, :math:`E - 1022` keV) for pair events;
* Gaussian energy resolution
  :math:`\mathrm{FWHM}(E) = \sqrt{w_0^2 + (w_1 (E/E_{ref})^{a})^2}`: for the 3"x3" NaI(Tl)
  preset 6.6 % at 662 keV with :math:`a = 0.6` (fits the Geant4 reference spectra from 32 to
  1332 keV to 5 %; a pure Poisson-statistics term would be :math:`a = 0.5`); for HPGe
  :math:`w_0 = 0.8` keV electronic noise and :math:`w_1 = 1.61` keV at 1332 keV with
  :math:`a = 0.5` (1.8 keV FWHM at 1332 keV, ~0.95 keV at 122 keV);
* a soft low-energy threshold (discriminator) at :attr:`Detector.threshold_kev`.
  True-coincidence summing and pile-up are not modelled.

Continua are accumulated on a 1 keV deposit grid and folded with the resolution in closed
form (each grid cell is a uniform density convolved with the Gaussian of its centre, exact
bin integrals); discrete lines and their escape peaks are integrated exactly over the bins.

4. Background and mixtures
--------------------------
:func:`background` is the spectrum of natural radioactivity around the detector (K-40, the
U-238 and Th-232 series in equilibrium: 609, 1120, 1461, 1764, 2614 keV lines and the
annihilation line) plus the smooth continuum of photons scattered in the room, and
:func:`mixture` draws Poisson counts of a linear mixture, ``y ~ Poisson(sum_k a_k s_k)``.

Default binning: 800 bins of 2 keV from 18 keV (bin ``k`` covers ``[18 + 2k, 20 + 2k)`` keV),
the preprocessing of the published SEMSUN experiments (:func:`bin_edges`).

Code layout: the physics up to the energy deposited in the crystal (emission lines, shield
transport, detector response, the 1 keV grid) is in :mod:`frugal.gamma.physics`, shared with
:mod:`frugal.gamma.resolution`; this module folds the deposits with the energy resolution
and holds the public functions (the detector presets, binning and constants of
:mod:`frugal.gamma.physics` are re-exported here).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from frugal._validation import check_array, check_choice, check_int
from frugal.data.families import Family
from frugal.gamma import nuclear_data as nd
from frugal.gamma.physics import (  # noqa: F401  constants re-exported for simulate.X users
    CLASSICAL_ELECTRON_RADIUS_CM,
    MULTIPLE_SCATTER_GAIN,
    SHELL_INNER_RADIUS_CM,
    SOURCE_DETECTOR_CM,
)
from frugal.gamma.physics import (  # the presets and binning are re-exported (__all__)
    DETECTORS,
    ELECTRON_MASS_KEV,
    GRID_KEV,
    SHIELDS,
    Detector,
    as_detector,
    background_continuum,
    background_lines,
    bin_centres,
    bin_edges,
    check_edges,
    compton_shape,
    continuum_deposit,
    fwhm,
    grid_cells,
    incident_flux,
    normal_cdf,
    nuclide_lines,
    response_weights,
    sigma,
    threshold,
)

__all__ = [
    "DETECTORS",
    "Detector",
    "NUCLIDES",
    "SHIELDS",
    "background",
    "bin_centres",
    "bin_edges",
    "family",
    "full_energy_efficiency",
    "fwhm",
    "mixture",
    "peak_to_total",
    "signature",
    "transmission",
]

#: Nuclides of the embedded line library (:data:`frugal.gamma.nuclear_data.LINES`).
NUCLIDES: tuple[str, ...] = tuple(sorted(nd.LINES))

#: Thicknesses simulated together.
_CHUNK = 128


def peak_to_total(energy, detector="NaI") -> np.ndarray:
    """Peak-to-total ratio: share of interacting photons that deposit their full energy."""
    r = response_weights(energy, as_detector(detector))
    return r.peak / r.total


def full_energy_efficiency(energy, detector="NaI") -> np.ndarray:
    """Intrinsic full-energy peak efficiency: full-energy events per photon on the crystal face."""
    return response_weights(energy, as_detector(detector)).peak


# --------------------------------------------------------------------------------------
# Shield
# --------------------------------------------------------------------------------------


def transmission(energy, thickness_mm, shield: str = "steel") -> np.ndarray:
    r"""Uncollided transmission :math:`\exp(-(\mu/\rho)(E)\,\rho\,t)` through ``thickness_mm``.

    The result has shape ``thickness.shape + energy.shape`` (an outer product): T thicknesses
    and L energies give ``(T, L)``, a scalar energy ``(T,)``.
    """
    check_choice(shield, "shield", SHIELDS)
    t = check_array(thickness_mm, "thickness_mm", nonnegative=True, dtype=np.float64)
    e = check_array(energy, "energy", nonnegative=True, dtype=np.float64)
    mu = nd.mass_attenuation(e, shield) * nd.MATERIALS[shield].density  # 1/cm
    return np.exp(-np.multiply.outer(t / 10.0, mu))


# --------------------------------------------------------------------------------------
# Folding with the detector
# --------------------------------------------------------------------------------------


def _gaussian_bins(centres, sig, edges):
    """Mass of N(centre, sig²) in each bin: ``(L, n_bins)`` for ``(L,)`` centres.

    Bins above the centre are differences of upper-tail masses, bins below of lower-tail
    masses, so far tails keep their relative accuracy instead of rounding to ~1e-17 noise.
    """
    u = (edges[None, :] - centres[:, None]) / sig[:, None]
    lower = normal_cdf(u)  # P(X < edge)
    upper = normal_cdf(-u)  # P(X > edge)
    return np.clip(np.where(u[:, :-1] >= 0, upper[:, :-1] - upper[:, 1:], lower[:, 1:] - lower[:, :-1]), 0.0, None)


@lru_cache(maxsize=4)
def _smearing(det: Detector, edges_key: bytes, n_cells: int, h: float = GRID_KEV):
    """``(n_cells, n_bins)`` matrix folding a piecewise-constant deposit density (cells of width
    ``h``) with the Gaussian resolution of each cell centre, integrated exactly over the bins:
    with :math:`F(u) = u\\Phi(u) + \\varphi(u)`, the mean over a cell of :math:`\\Phi((b-E)/\\sigma)`
    is :math:`\\sigma/h\\,[F((b-E_{lo})/\\sigma) - F((b-E_{hi})/\\sigma)]`."""
    edges = np.frombuffer(edges_key, dtype=np.float64)
    lo = h * np.arange(n_cells)
    sig = sigma(lo + 0.5 * h, det)[:, None]
    u = (edges[None, :] - lo[:, None]) / sig
    v = u - h / sig

    def F(z):  # antiderivative of the normal CDF; F(z) = z + F(-z)
        return z * normal_cdf(z) + np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)

    below = sig / h * (F(u) - F(v))  # mean over the cell of P(X < edge)
    above = sig / h * (F(-v) - F(-u))  # mean over the cell of P(X > edge)
    # tail differences on each side of the cell keep far tails accurate
    centre_below = v[:, :-1] >= 0  # bin entirely above the cell
    mass = np.where(centre_below, above[:, :-1] - above[:, 1:], below[:, 1:] - below[:, :-1])
    gate = threshold(lo + 0.5 * h, det)[:, None]
    return np.clip(mass, 0.0, None) * gate


def _line_deposits(energy, weights, det, n_cells, edges, sm):
    """Binned spectrum ``(T, n_bins)`` of discrete lines at ``energy`` (L,) with weights (T, L)."""
    e = np.asarray(energy, dtype=np.float64)
    r = response_weights(e, det)
    ka, kb = det.xray_kev
    centres = [e, e - ka, e - kb, e - ELECTRON_MASS_KEV, e - 2 * ELECTRON_MASS_KEV]
    areas = [
        r.peak,
        r.escape * (1 - det.kbeta_share),
        r.escape * det.kbeta_share,
        r.single,
        r.double,
    ]
    rows = np.zeros((e.size, edges.size - 1))
    for c, a in zip(centres, areas):
        ok = (a > 0) & (c > 0)
        if np.any(ok):
            cc = np.where(ok, c, 1.0)
            rows += np.where(ok, a * threshold(cc, det), 0.0)[:, None] * _gaussian_bins(cc, sigma(cc, det), edges)
    continuum = r.compton[:, None] * compton_shape(e, n_cells, det)
    return weights @ rows + (weights @ continuum) @ sm


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def _expected(e0, p, t_mm, shield, det, edges):
    """Expected counts per bin and per decay (unit detector solid angle): ``(T, n_bins)``."""
    t_cm = t_mm / 10.0
    n_cells = grid_cells(e0, edges, det)
    sm = _smearing(det, edges.tobytes(), n_cells)
    primary, flux = incident_flux(e0, p, t_cm, shield, det, n_cells)
    spectra = _line_deposits(e0, primary, det, n_cells, edges, sm) + continuum_deposit(flux, det, n_cells) @ sm
    return np.maximum(spectra, 0.0)


def signature(
    nuclide,
    thickness_mm,
    *,
    shield: str = "steel",
    detector="NaI",
    edges=None,
    normalise: bool = True,
) -> np.ndarray:
    """Spectral signature of ``nuclide`` behind ``thickness_mm`` of ``shield``.

    Parameters
    ----------
    nuclide: a name from :data:`NUCLIDES` (``"Cs137"``, ``"Cs-137"`` and ``"137Cs"`` all work)
        or an array of ``(energy_keV, photons_per_decay)`` rows.
    thickness_mm: a thickness (mm) or an array of ``T`` thicknesses, each >= 0.
    shield: ``"steel"`` (iron, 7.874 g/cm³) or ``"lead"`` (11.35 g/cm³).
    detector: ``"NaI"`` (3"x3" NaI(Tl)), ``"HPGe"``, or a :class:`Detector`.
    edges: bin edges in keV (default :func:`bin_edges`: 800 bins of 2 keV from 18 keV).
    normalise: unit sum over the bins (default); otherwise expected counts per decay and per
        photon reaching the detector face (the solid angle is left out).

    Returns ``(n_bins,)`` for a scalar thickness, ``(T, n_bins)`` for an array (float64).
    """
    shield = check_choice(shield, "shield", SHIELDS)
    det = as_detector(detector)
    edges = check_edges(edges)
    e0, p = nuclide_lines(nuclide)
    t = check_array(thickness_mm, "thickness_mm", ndim=(0, 1), nonnegative=True, dtype=np.float64)
    t1 = np.atleast_1d(t)
    # chunks bound the memory of the transport arrays (~20 MB per 128 thicknesses)
    spectra = np.concatenate(
        [_expected(e0, p, t1[i : i + _CHUNK], shield, det, edges) for i in range(0, t1.size, _CHUNK)]
    )
    if normalise:
        total = spectra.sum(axis=1, keepdims=True)
        if np.any(total <= 0):
            raise ValueError("no counts fall in the chosen bins; check edges against the line energies")
        spectra = spectra / total
    return spectra[0] if t.ndim == 0 else spectra


def family(
    nuclide,
    thicknesses,
    *,
    shield: str = "steel",
    detector="NaI",
    edges=None,
) -> Family:
    """A family of unit-sum signatures over ``thicknesses`` (mm), as a :class:`frugal.data.Family`.

    ``spectra`` ``(T, n_bins)`` float32, ``params`` ``(T, 1)`` thickness in mm,
    ``param_names = ("thickness_mm",)``, ``energies`` the bin centres (keV).
    """
    t = check_array(thicknesses, "thicknesses", ndim=1, nonnegative=True, dtype=np.float64)
    edges = check_edges(edges)
    spectra = signature(nuclide, t, shield=shield, detector=detector, edges=edges)
    return Family(
        spectra.astype(np.float32),
        t[:, None].astype(np.float32),
        ("thickness_mm",),
        bin_centres(edges).astype(np.float32),
    )


def background(edges=None, detector="NaI", *, normalise: bool = True) -> np.ndarray:
    r"""Natural background spectrum (unit sum over the bins by default).

    Lines of K-40 and of the U-238 (Pb-214, Bi-214) and Th-232 (Ac-228, Pb-212, Tl-208)
    series in secular equilibrium, with typical activities of building materials
    (:data:`frugal.gamma.nuclear_data.BACKGROUND_ACTIVITY`) and the flux of a thick source,
    :math:`\propto A\,p/(\mu/\rho)(E)` (concrete taken as aluminium), plus annihilation
    photons (511 keV) and a smooth continuum of photons scattered in the room,
    :math:`\propto (E/100)^{-1.6}\,e^{-(60/E)^3}`, all folded with the detector response.
    """
    det = as_detector(detector)
    edges = check_edges(edges)
    e0, w = background_lines()
    n_cells = grid_cells(e0, edges, det)
    sm = _smearing(det, edges.tobytes(), n_cells)
    cont = background_continuum(e0, w, n_cells)
    spectrum = _line_deposits(e0, w[None, :], det, n_cells, edges, sm)
    spectrum = spectrum + continuum_deposit(cont[None, :], det, n_cells) @ sm
    spectrum = np.maximum(spectrum[0], 0.0)
    return spectrum / spectrum.sum() if normalise else spectrum


def mixture(signatures, expected_counts, *, seed=0, n_draws: int | None = None) -> np.ndarray:
    r"""Poisson counts of a linear mixture: :math:`y \sim \mathrm{Poisson}(\sum_k a_k s_k)`.

    ``signatures``: ``(K, n)`` shared by all mixtures, or ``(B, K, n)`` one set per mixture;
    ``expected_counts``: ``(K,)`` or ``(B, K)``, the expected number of counts of each
    source (with unit-sum signatures, ``a_k`` is the mean total count of source ``k``).
    ``n_draws`` adds a leading axis of independent draws. ``seed`` is an int or a
    :class:`numpy.random.Generator`. Returns int64 counts of shape
    ``([n_draws,] [B,] n)``.
    """
    s = check_array(signatures, "signatures", ndim=(2, 3), nonnegative=True, dtype=np.float64)
    a = check_array(expected_counts, "expected_counts", ndim=(1, 2), nonnegative=True, dtype=np.float64)
    if a.shape[-1] != s.shape[-2]:
        raise ValueError(
            f"expected_counts has {a.shape[-1]} sources but signatures has {s.shape[-2]} "
            f"(shapes {a.shape} and {s.shape})"
        )
    if s.ndim == 3 and (a.ndim != 2 or a.shape[0] != s.shape[0]):
        raise ValueError(
            f"signatures of shape {s.shape} need expected_counts of shape ({s.shape[0]}, {s.shape[1]}), got {a.shape}"
        )
    lam = np.einsum("...k,...kn->...n", a, s) if s.ndim == 3 else a @ s
    if n_draws is not None:
        n_draws = check_int(n_draws, "n_draws", minimum=1)
        lam = np.broadcast_to(lam, (n_draws,) + lam.shape)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return rng.poisson(lam).astype(np.int64)
