r"""Detector energy resolution as a pure, differentiable JAX function.

The simulator (:mod:`frugal.gamma.simulate`) builds a spectrum in two stages: the energy
*deposited* in the crystal (full-energy lines, X-ray and pair escape peaks, Compton and
scattered continua), then the Gaussian energy resolution of the detector. This module
exposes the first stage as NumPy arrays (:func:`deposit`, :func:`background_deposit`) and
writes the second in JAX (:func:`fold`, :func:`broaden`, :func:`broaden_lines`), so that a
spectrum, and everything computed from it -- a SEMSUN fit through
:func:`frugal.gamma.unmix_function` included -- can be differentiated with respect to the
resolution parameters, or the parameters fitted by gradient descent.

Resolution model (the one of :class:`frugal.gamma.simulate.Detector`):

.. math:: \mathrm{FWHM}(E) = \sqrt{w_0^2 + \bigl(w_1 (E/E_{ref})^{a}\bigr)^2},
          \qquad \sigma(E) = \mathrm{FWHM}(E) / (2\sqrt{2\ln 2}),

with ``noise_kev`` :math:`= w_0`, ``fwhm_ref_kev`` :math:`= w_1`, ``ref_kev``
:math:`= E_{ref}` and ``exponent`` :math:`= a` (:func:`resolution_params` gives those of a
detector preset). A deposit at energy :math:`E` is recorded at :math:`X \sim
\mathcal{N}(E, \sigma(E)^2)`, and bins :math:`[b_j, b_{j+1})` integrate the density exactly:

* a **line** of area :math:`A` at :math:`E` puts :math:`A\,[\Phi(u_{j+1}) - \Phi(u_j)]`,
  :math:`u_j = (b_j - E)/\sigma(E)`, in bin :math:`j`;
* a **continuum** given as counts :math:`c_i` spread evenly over the cells
  :math:`[e_i, e_i + h)` of a fine grid (each cell blurred with the :math:`\sigma` of its
  centre) puts :math:`c_i\,[\bar\Phi_{i,j+1} - \bar\Phi_{i,j}]` in bin :math:`j`, with the
  cell average of the normal CDF in closed form,

  .. math:: \bar\Phi_{i,j} = \frac1h\int_{e_i}^{e_i+h}\Phi\Bigl(\frac{b_j - E}{\sigma}\Bigr)\mathrm{d}E
            = \frac{\sigma}{h}\,\bigl[F(u_{ij}) - F(u_{ij} - h/\sigma)\bigr], \qquad
            F(z) = z\,\Phi(z) + \varphi(z),

  :math:`u_{ij} = (b_j - e_i)/\sigma`.

Bins on the far side of the Gaussian are computed as differences of the *other* tail
(:math:`1 - \Phi`), as the simulator does, so that far tails keep their relative accuracy.
:math:`\Phi` is computed from ``jax.scipy.special.erfc`` (of a positive argument on the
side that is used), so every output is smooth in :math:`w_0, w_1, a` -- and in the line
energies, the bin edges (an energy calibration), the line areas and the cell counts, which
may all be traced as well (they are value-checked only when concrete).

At a detector's own parameters, ``fold(deposit(...), edges, **resolution_params(det))``
reproduces :func:`frugal.gamma.simulate.signature` (and ``background_deposit`` reproduces
:func:`frugal.gamma.simulate.background`) to a few 1e-6 of the peak height (the
simulator's NumPy ``erfc`` is good to 1.2e-7, an error that the cell averages amplify by
up to :math:`\sigma/h`). The deposit is computed by the simulator's own physics
(:mod:`frugal.gamma.physics`: ``response_weights``, ``compton_shape``, ``incident_flux``,
``continuum_deposit``, ``threshold``), so the two stay one model; the discriminator
efficiency, which the simulator applies at the deposited energy, is already included in
the deposit.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erfc

from frugal._validation import check_array, check_choice, check_float
from frugal.gamma import physics

__all__ = [
    "Deposit",
    "background_deposit",
    "broaden",
    "broaden_lines",
    "deposit",
    "fold",
    "fwhm",
    "resolution_params",
    "smearing_matrix",
]

_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))

#: Width (keV) of the cells of :attr:`Deposit.density`: the simulator's deposit grid, from 0 keV.
CELL_KEV = physics.GRID_KEV


class Deposit(NamedTuple):
    """Energy deposited in the crystal before the resolution (a pytree of arrays).

    line_energies: ``(L,)`` keV, energies of the discrete lines (full-energy peaks, X-ray
      and pair escape peaks) in the order of ``line_areas``' last axis.
    line_areas: ``(..., L)`` counts in each line (per decay, unnormalised).
    density: ``(..., n_cells)`` counts of the continuum in each cell ``[k h, (k+1) h)`` of
      the simulator's grid (``h`` = :data:`CELL_KEV`), spread evenly within the cell.

    The leading axes (none, or one thickness axis) are those of the spectra ``fold`` returns.
    """

    line_energies: np.ndarray
    line_areas: np.ndarray
    density: np.ndarray


# --------------------------------------------------------------------------------------
# Argument checks that let tracers through
# --------------------------------------------------------------------------------------


def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _scalar(value, name: str, *, minimum: float | None = None, strict: bool = False):
    """A scalar resolution parameter: value-checked when concrete, shape-checked when traced."""
    if _is_tracer(value):
        if jnp.ndim(value) != 0:
            raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(value)}")
        return value
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {np.shape(value)}")
    check_float(value, name, minimum=minimum, strict=strict)
    return value


def _values(x, name: str, *, ndim=None, nonnegative: bool = True):
    """An array argument that may be differentiated: checked when concrete, as a JAX array."""
    if _is_tracer(x):
        if ndim is not None and jnp.ndim(x) not in ((ndim,) if isinstance(ndim, int) else ndim):
            raise ValueError(f"{name} must have {ndim} dimension(s), got shape {jnp.shape(x)}")
        return x
    arr = check_array(x, name, ndim=ndim, nonnegative=nonnegative, dtype=None)
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be an array of numbers, got dtype {arr.dtype}")
    return jnp.asarray(x)


def _edges(edges):
    """Bin edges: checked when concrete (a NumPy array then), passed through when traced."""
    if _is_tracer(edges):
        if jnp.ndim(edges) != 1 or edges.shape[0] < 2:
            raise ValueError(f"edges must be a 1-d array of at least two energies (keV), got shape {jnp.shape(edges)}")
        return edges
    edges = check_array(edges, "edges", ndim=1, dtype=np.float64)
    if edges.size < 2 or np.any(np.diff(edges) <= 0) or edges[0] < 0:
        raise ValueError("edges must be at least two increasing, non-negative energies (keV)")
    return edges


def _energies(x, name: str):
    """Line energies: checked when concrete, passed through when traced."""
    if _is_tracer(x):
        if jnp.ndim(x) != 1:
            raise ValueError(f"{name} must have 1 dimension(s), got shape {jnp.shape(x)}")
        return x
    arr = check_array(x, name, ndim=1, dtype=np.float64)
    if np.any(arr <= 0):
        raise ValueError(f"{name} must be positive energies (keV), found minimum {arr.min():.4g}")
    return arr


def _resolution(fwhm_ref_kev, ref_kev, exponent, noise_kev):
    fwhm_ref_kev = _scalar(fwhm_ref_kev, "fwhm_ref_kev", minimum=0.0, strict=True)
    ref_kev = check_float(ref_kev, "ref_kev", minimum=0.0, strict=True)
    exponent = _scalar(exponent, "exponent")
    noise_kev = _scalar(noise_kev, "noise_kev", minimum=0.0)
    return fwhm_ref_kev, ref_kev, exponent, noise_kev


def _dtype(*xs):
    return jnp.result_type(float, *[x for x in xs if hasattr(x, "dtype")])


# --------------------------------------------------------------------------------------
# Resolution (JAX)
# --------------------------------------------------------------------------------------


def resolution_params(detector="NaI") -> dict:
    """Resolution keyword arguments of a detector preset (``"NaI"``, ``"HPGe"``) or a
    :class:`~frugal.gamma.simulate.Detector`: ``fwhm_ref_kev``, ``ref_kev``, ``exponent``,
    ``noise_kev``, ready for ``fold(dep, edges, **resolution_params(det))``."""
    det = physics.as_detector(detector)
    return {
        "fwhm_ref_kev": float(det.fwhm_ref_kev),
        "ref_kev": float(det.e_ref_kev),
        "exponent": float(det.fwhm_exponent),
        "noise_kev": float(det.fwhm_noise_kev),
    }


def _fwhm(e, w1, ref, a, w0):
    e = jnp.maximum(e, 1e-3)
    stat = w1 * (e / ref) ** a
    return jnp.sqrt(w0**2 + stat**2)


def fwhm(energy, fwhm_ref_kev, *, ref_kev: float = 661.657, exponent=0.6, noise_kev=0.0):
    r"""FWHM (keV) at ``energy`` keV: :math:`\sqrt{w_0^2 + (w_1 (E/E_{ref})^a)^2}` (JAX).

    The defaults of ``ref_kev`` and ``exponent`` are those of the 3"x3" NaI(Tl) preset;
    ``fwhm_ref_kev`` (:math:`w_1`), ``exponent`` and ``noise_kev`` may be traced.
    """
    w1, ref, a, w0 = _resolution(fwhm_ref_kev, ref_kev, exponent, noise_kev)
    e = _values(energy, "energy")
    return _fwhm(e.astype(_dtype(e, w1, a, w0)), w1, ref, a, w0)


def _phi_cdf(z):
    """Normal CDF, accurate in the lower tail (``erfc`` of a positive argument there)."""
    return 0.5 * erfc(-z / np.sqrt(2.0))


def _tail_F(z):
    r""":math:`F(-|z|)`, the small side of the antiderivative of the normal CDF
    :math:`F(z) = z\Phi(z) + \varphi(z)`; the other side follows from :math:`F(z) = z + F(-z)`."""
    a = jnp.abs(z)
    return jnp.exp(-0.5 * a * a) / np.sqrt(2.0 * np.pi) - a * _phi_cdf(-a)


def _cell_matrix(lo, h, sig, edges):
    """``(n_cells, n_bins)``: mass in each bin of cells ``[lo, lo + h)`` blurred by ``sig``."""
    u = (edges[None, :] - lo[:, None]) / sig[:, None]
    v = u - h / sig[:, None]
    scale = sig[:, None] / h
    tu, tv = _tail_F(u), _tail_F(v)
    relu = jax.nn.relu
    below = scale * (tu - tv + relu(u) - relu(v))  # mean over the cell of P(X < edge): F(u) - F(v)
    above = scale * (tv - tu + relu(-v) - relu(-u))  # mean over the cell of P(X > edge): F(-v) - F(-u)
    mass = jnp.where(v[:, :-1] >= 0, above[:, :-1] - above[:, 1:], below[:, 1:] - below[:, :-1])
    return jnp.maximum(mass, 0.0)


def _line_matrix(centres, sig, edges):
    """``(L, n_bins)``: mass of N(centre, sig^2) in each bin (tail differences on each side)."""
    u = (edges[None, :] - centres[:, None]) / sig[:, None]
    lower, upper = _phi_cdf(u), _phi_cdf(-u)
    mass = jnp.where(u[:, :-1] >= 0, upper[:, :-1] - upper[:, 1:], lower[:, 1:] - lower[:, :-1])
    return jnp.maximum(mass, 0.0)


def smearing_matrix(
    n_cells: int,
    edges,
    fwhm_ref_kev,
    *,
    ref_kev: float = 661.657,
    exponent=0.6,
    noise_kev=0.0,
    cell_kev: float = CELL_KEV,
    start_kev: float = 0.0,
):
    r"""``(n_cells, n_bins)`` matrix folding counts in cells ``[s + k h, s + (k+1) h)``
    (``s = start_kev``, ``h = cell_kev``) with the resolution, integrated over the bins.

    Row :math:`i` is the distribution over the bins of a count spread evenly over cell
    :math:`i`, blurred with :math:`\sigma` of the cell centre (see the module docstring); it
    sums to 1 less what falls outside the bins. Differentiable in the resolution parameters.
    """
    if isinstance(n_cells, bool) or not isinstance(n_cells, (int, np.integer)) or n_cells < 1:
        raise ValueError(f"n_cells must be a positive integer, got {n_cells!r}")
    edges = _edges(edges)
    w1, ref, a, w0 = _resolution(fwhm_ref_kev, ref_kev, exponent, noise_kev)
    h = check_float(cell_kev, "cell_kev", minimum=0.0, strict=True)
    s = check_float(start_kev, "start_kev", minimum=0.0)
    dtype = _dtype(w1, a, w0)
    lo = jnp.asarray(s + h * np.arange(int(n_cells)), dtype)
    sig = _fwhm(lo + 0.5 * h, w1, ref, a, w0) / _FWHM_PER_SIGMA
    return _cell_matrix(lo, h, sig, jnp.asarray(edges, dtype))


def broaden(
    density,
    edges,
    fwhm_ref_kev,
    *,
    ref_kev: float = 661.657,
    exponent=0.6,
    noise_kev=0.0,
    cell_kev: float = CELL_KEV,
    start_kev: float = 0.0,
):
    r"""Fold a continuum given per fine-grid cell with the resolution: ``(..., n_bins)``.

    density: ``(..., n_cells)`` counts in cells ``[s + k h, s + (k+1) h)`` (``s =
      start_kev``, ``h = cell_kev``), each spread evenly over its cell; may be traced.
    edges: ``(n_bins + 1,)`` increasing bin edges (keV).
    fwhm_ref_kev, exponent, noise_kev: :math:`w_1, a, w_0` of the FWHM law (may be traced);
      ``ref_kev`` :math:`E_{ref}` (defaults: the NaI(Tl) preset's).

    Returns ``density @ smearing_matrix(...)``: the expected counts per bin.
    """
    density = _values(density, "density", ndim=(1, 2))
    sm = smearing_matrix(int(density.shape[-1]), edges, fwhm_ref_kev, ref_kev=ref_kev, exponent=exponent,
                         noise_kev=noise_kev, cell_kev=cell_kev, start_kev=start_kev)
    return density.astype(sm.dtype) @ sm


def broaden_lines(
    energies,
    areas,
    edges,
    fwhm_ref_kev,
    *,
    ref_kev: float = 661.657,
    exponent=0.6,
    noise_kev=0.0,
):
    r"""Fold discrete lines with the resolution: ``(..., n_bins)`` expected counts per bin.

    energies: ``(L,)`` line energies (keV); areas: ``(..., L)`` counts in each line. Line :math:`\ell` puts :math:`A_\ell [\Phi(u_{j+1}) - \Phi(u_j)]`,
    :math:`u_j = (b_j - E_\ell)/\sigma(E_\ell)`, in bin :math:`j`.
    """
    e = _energies(energies, "energies")
    areas = _values(areas, "areas", ndim=(1, 2))
    if areas.shape[-1] != e.shape[0]:
        raise ValueError(f"areas must have {e.shape[0]} line(s) on its last axis (one per energy), "
                         f"got shape {areas.shape}")
    edges = _edges(edges)
    w1, ref, a, w0 = _resolution(fwhm_ref_kev, ref_kev, exponent, noise_kev)
    dtype = _dtype(areas, w1, a, w0)
    centres = jnp.asarray(e, dtype)
    sig = _fwhm(centres, w1, ref, a, w0) / _FWHM_PER_SIGMA
    return areas.astype(dtype) @ _line_matrix(centres, sig, jnp.asarray(edges, dtype))


def fold(
    dep: Deposit,
    edges,
    fwhm_ref_kev,
    *,
    ref_kev: float = 661.657,
    exponent=0.6,
    noise_kev=0.0,
    normalise: bool = True,
):
    """Spectrum of a :class:`Deposit` seen with the given resolution: lines and continuum
    folded and summed, ``(..., n_bins)``, unit sum over the bins if ``normalise``.

    At a detector's parameters (``**resolution_params(detector)``) this is
    :func:`frugal.gamma.simulate.signature` (or ``background``) of the same deposit, as a
    differentiable function of ``fwhm_ref_kev``, ``exponent`` and ``noise_kev`` (and of the
    deposit's ``line_areas`` and ``density``).
    """
    if not isinstance(dep, Deposit):
        raise TypeError(f"dep must be a Deposit (from deposit() or background_deposit()), got {type(dep).__name__}")
    kw = dict(ref_kev=ref_kev, exponent=exponent, noise_kev=noise_kev)
    out = broaden_lines(dep.line_energies, dep.line_areas, edges, fwhm_ref_kev, **kw)
    out = out + broaden(dep.density, edges, fwhm_ref_kev, cell_kev=CELL_KEV, **kw)
    out = jnp.maximum(out, 0.0)
    if normalise:
        out = out / jnp.sum(out, axis=-1, keepdims=True)
    return out


# --------------------------------------------------------------------------------------
# Deposits (NumPy, from the simulator's physics)
# --------------------------------------------------------------------------------------


def _lines_and_continuum(e0, weights, det, n_cells):
    """The deposit of discrete lines ``e0`` (L,) with weights (T, L): mirrors the line part of
    :func:`frugal.gamma.simulate.signature` before its folding."""
    r = physics.response_weights(e0, det)
    ka, kb = det.xray_kev
    m = physics.ELECTRON_MASS_KEV
    centres = [e0, e0 - ka, e0 - kb, e0 - m, e0 - 2 * m]
    shares = [r.peak, r.escape * (1 - det.kbeta_share), r.escape * det.kbeta_share, r.single, r.double]
    energies, areas = [], []
    for c, a in zip(centres, shares):
        ok = (a > 0) & (c > 0)
        if np.any(ok):
            energies.append(c[ok])
            areas.append(weights[:, ok] * (a[ok] * physics.threshold(c[ok], det))[None, :])
    continuum = weights @ (r.compton[:, None] * physics.compton_shape(e0, n_cells, det))
    return np.concatenate(energies), np.concatenate(areas, axis=1), continuum


def _gate(density, det, n_cells):
    return density * physics.threshold(CELL_KEV * (np.arange(n_cells) + 0.5), det)[None, :]


def deposit(nuclide, thickness_mm, *, shield: str = "steel", detector="NaI", edges=None) -> Deposit:
    """Unbroadened deposit of :func:`frugal.gamma.simulate.signature` (same arguments).

    ``fold(deposit(n, t, ...), edges, **resolution_params(detector))`` equals
    ``simulate.signature(n, t, ...)``. ``detector`` sets everything but the resolution
    (efficiencies, escape peaks, threshold); ``edges`` only the grid length. Leading axis of
    ``line_areas`` and ``density``: none for a scalar thickness, ``T`` for ``T`` thicknesses.
    Arrays are per decay and unnormalised (``fold`` normalises).
    """
    shield = check_choice(shield, "shield", physics.SHIELDS)
    det = physics.as_detector(detector)
    edges = physics.check_edges(edges)
    e0, p = physics.nuclide_lines(nuclide)
    t = check_array(thickness_mm, "thickness_mm", ndim=(0, 1), nonnegative=True, dtype=np.float64)
    t_cm = np.atleast_1d(t) / 10.0
    n_cells = physics.grid_cells(e0, edges, det)
    primary, flux = physics.incident_flux(e0, p, t_cm, shield, det, n_cells)
    energies, areas, continuum = _lines_and_continuum(e0, primary, det, n_cells)
    continuum = continuum + physics.continuum_deposit(flux, det, n_cells)
    density = _gate(continuum, det, n_cells)
    if t.ndim == 0:
        return Deposit(energies, areas[0], density[0])
    return Deposit(energies, areas, density)


def background_deposit(edges=None, detector="NaI") -> Deposit:
    """Unbroadened deposit of :func:`frugal.gamma.simulate.background` (``(L,)`` areas,
    ``(n_cells,)`` density): ``fold(background_deposit(e, d), e, **resolution_params(d))``
    equals ``simulate.background(e, d)``: the same line list and room continuum
    (:func:`frugal.gamma.physics.background_lines`, ``background_continuum``)."""
    det = physics.as_detector(detector)
    edges = physics.check_edges(edges)
    e0, w = physics.background_lines()
    n_cells = physics.grid_cells(e0, edges, det)
    cont = physics.background_continuum(e0, w, n_cells)
    line_e, line_a, continuum = _lines_and_continuum(e0, w[None, :], det, n_cells)
    continuum = continuum + physics.continuum_deposit(cont[None, :], det, n_cells)
    return Deposit(line_e, line_a[0], _gate(continuum, det, n_cells)[0])
