r"""Transport of the gamma-ray simulator's photons through the shield and the surroundings.

The part of :mod:`frugal.gamma.physics` between the source and the crystal face: the
photons of a source at the centre of a spherical shell of steel or lead that reach the
detector uncollided, scattered once (exact geometry), scattered several times (multigroup
two-stream transport, scaled by :data:`MULTIPLE_SCATTER_GAIN`), as lead K X-rays, or
backscattered by the surroundings (:func:`incident_flux`). The cross-sections and the
deposit grid come from :mod:`frugal.gamma.detector`; the formulas are given in the
:mod:`frugal.gamma.simulate` docstring.

Units: energies in keV, lengths in cm (thicknesses in mm only in the public functions of
:mod:`frugal.gamma.simulate`), densities in g/cm³. Fluxes are photons per decay,
unnormalised, on the grid cells ``[k h, (k+1) h)`` keV, ``h`` =
:data:`frugal.gamma.detector.GRID_KEV`, ``k = 0 .. n_cells - 1``, relative to the unshielded
flux of one decay.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from frugal.gamma import nuclear_data as nd
from frugal.gamma.detector import (
    ELECTRON_MASS_KEV,
    GRID_KEV,
    deposit,
    interaction_shares,
    klein_nishina_angular,
    klein_nishina_total,
)

__all__ = [
    "MULTIPLE_SCATTER_GAIN",
    "SHELL_INNER_RADIUS_CM",
    "SHIELDS",
    "SOURCE_DETECTOR_CM",
    "incident_flux",
    "scattered_flux",
    "surroundings",
]

#: Shield materials (see :data:`frugal.gamma.nuclear_data.MATERIALS`).
SHIELDS: tuple[str, ...] = ("steel", "lead")

#: Geometry of the simulated set-up: source at the centre of a spherical shell of this inner
#: radius (cm), detector face at this distance (cm) from the source.
SHELL_INNER_RADIUS_CM = 5.0
SOURCE_DETECTOR_CM = 20.0

#: Scale of the multiply-scattered flux relative to an isolated shell (see :mod:`frugal.gamma.simulate`:
#: 2.2 reproduces the Geant4 steel-sphere reference spectra, 1 is a bare shell).
MULTIPLE_SCATTER_GAIN = 2.2


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


def _deposit_box(values, lo, hi, n_cells, h=GRID_KEV):
    """Like :func:`deposit`, but each value is spread evenly over the energy interval
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
    _, f_photo, _, _ = interaction_shares(energy, "lead")
    jump = nd.mass_attenuation(_PB_K_EDGE * 1.0001, "lead") / nd.mass_attenuation(_PB_K_EDGE * 0.9999, "lead")
    tau_k = mu0 * f_photo * (1.0 - 1.0 / jump)
    total = np.zeros((x.shape[0], n_cells))
    for e_x, share in _PB_K_XRAYS:
        mu_x = nd.mass_attenuation(e_x, "lead") * rho
        emitted = prob * tau_k * _PB_OMEGA_K * share / (4 * np.pi) * np.exp(-mu0 * x - mu_x * ell) * weight
        total += deposit(emitted, np.full_like(emitted, e_x), n_cells)
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
