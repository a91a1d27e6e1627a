r"""A deterministic toy model of an X-ray hyperspectral cube of a young supernova remnant.

In the spirit of the toy model of Lascar, Bobin & Acero, A&A 686, A259 (2024) (SUSHI): a
cube of ``E`` energy channels over 3-8.5 keV (375 by default) on an ``H x W`` sky grid
(94 x 94 by default), mixing two components whose spectral shape varies across the sky,
observed with Poisson noise. Everything is closed form and vectorised (NumPy, float64);
none of it is an atomic database or a real instrument response, only shapes with the right
physics and orders of magnitude for testing unmixing methods.

The model is in three modules: :mod:`frugal.xray.emission` holds the spectra of the two
components (thermal plasma with K-shell lines, synchrotron power law, interstellar
absorption: the physics and its references), :mod:`frugal.xray.instrument` the toy
instrument (channels, effective area, Gaussian energy redistribution), and this one the
labelled training families of the IAE (:func:`thermal_family`, :func:`synchrotron_family`,
:func:`anchor_indices`) and the sky model below. The public names of the other two are
re-exported here.

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

from frugal._validation import check_array, check_choice, check_float, check_int
from frugal.data import Family  # the labelled-family type shared with the other packages
from frugal.xray.emission import (  # noqa: F401  the spectra, re-exported (__all__)
    C_KM_S,
    LINE_LOG_WIDTH,
    LINES,
    NH_DEFAULT,
    SIGMA_1KEV_CM2,
    SIGMA_SLOPE,
    Line,
    absorption_cross_section,
    bremsstrahlung,
    gaunt_factor,
    line_equivalent_widths,
    synchrotron_spectrum,
    thermal_spectrum,
    transmission,
)
from frugal.xray.instrument import (  # noqa: F401  the instrument, re-exported (__all__)
    BAND,
    FWHM_AT_6KEV,
    N_CHANNELS,
    channel_edges,
    channel_grid,
    effective_area,
    energies,
    fwhm,
    response_matrix,
)

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

#: Exposure presets: mean expected counts per remnant pixel, summed over channels.
EXPOSURE_PRESETS = {"high": 2000.0, "low": 200.0}


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
    e, _ = channel_grid(energies)
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
    e, _ = channel_grid(energies)
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
