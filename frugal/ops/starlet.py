r"""Starlet transform: the isotropic undecimated B3-spline wavelet ("à trous" algorithm).

Given a signal or image :math:`x`, the starlet transform with :math:`J` scales is

.. math::

    c_0 = x, \qquad c_j = h_j \star c_{j-1}, \qquad w_j = c_{j-1} - c_j \quad (j = 1..J),

where :math:`h_j` is the separable B3-spline filter :math:`h = [1, 4, 6, 4, 1] / 16` with
:math:`2^{j-1} - 1` zeros inserted between its taps (taps at offsets
:math:`0, \pm 2^{j-1}, \pm 2^j`), applied along every transformed axis. The first scale uses
the plain filter, so that the Dirac norms of the 2-D detail planes are the classical
0.890, 0.201, 0.086, 0.041, 0.020, ... The coefficients are stacked as
:math:`[w_1, \dots, w_J, c_J]` on a new **leading** axis of length :math:`J + 1`, and the
inverse is simply the sum of all planes (the transform is a telescoping sum).

Boundaries are mirrored exactly like ``scipy.ndimage.convolve1d(..., mode="reflect")``
(half-sample symmetric, ``d c b a | a b c d | d c b a``), repeatedly when the dilated filter
is wider than the signal, so any size works, including sizes smaller than the filter.

The transform acts on the last ``ndim`` axes; any leading axes are a batch (e.g. a
``(C, d, H, W)`` stack of latent maps gives coefficients of shape ``(J + 1, C, d, H, W)``).
Everything is a pure function of static shapes: the reflected index arrays are built with
NumPy at trace time, so the transform jits, vmaps and differentiates.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from frugal._validation import check_int

#: The B3-spline filter taps.
B3_TAPS = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _reflect_index(i: np.ndarray, n: int) -> np.ndarray:
    """Map any integer index onto ``0..n-1`` by half-sample symmetric reflection.

    The reflected signal has period ``2 n``; one period reads ``x_0..x_{n-1}, x_{n-1}..x_0``.
    This reproduces scipy.ndimage's ``mode="reflect"`` for arbitrarily far indices.
    """
    r = np.mod(i, 2 * n)
    return np.where(r < n, r, 2 * n - 1 - r)


@functools.lru_cache(maxsize=None)
def _padded_index(n: int, dilation: int) -> np.ndarray:
    """Indices of the signal extended by ``2 * dilation`` reflected samples on each side."""
    pad = 2 * dilation
    return _reflect_index(np.arange(-pad, n + pad), n).astype(np.int32)


def _smooth_axis(c, axis: int, dilation: int):
    """Convolve ``c`` along ``axis`` with the B3 filter dilated by ``dilation``.

    One gather builds the reflected extension, then five static slices give the taps: cheaper
    than five gathers and exact for every size.
    """
    n = c.shape[axis]
    ext = jnp.take(c, jnp.asarray(_padded_index(n, dilation)), axis=axis)
    out = None
    for k, tap in enumerate(B3_TAPS):
        piece = jax.lax.slice_in_dim(ext, k * dilation, k * dilation + n, axis=axis)
        term = piece * jnp.asarray(tap, dtype=c.dtype)
        out = term if out is None else out + term
    return out


def _check_ndim(x, ndim) -> int:
    ndim = check_int(ndim, "ndim", minimum=1)
    if jnp.ndim(x) < ndim:
        raise ValueError(f"x must have at least ndim={ndim} dimension(s), got shape {jnp.shape(x)}")
    return ndim


def _as_float(x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def starlet_transform(x, n_scales: int, *, ndim: int = 2):
    r"""Forward starlet transform over the last ``ndim`` axes of ``x``.

    Returns an array of shape ``(n_scales + 1, *x.shape)``: the detail planes
    :math:`w_1..w_J` (finest first) followed by the coarse plane :math:`c_J`.
    ``starlet_inverse`` (the plain sum over the first axis) reconstructs ``x`` exactly.

    Args:
      x: signal (``ndim=1``), image (``ndim=2``), ... with optional leading batch axes.
      n_scales: number of detail planes :math:`J \ge 1`.
      ndim: number of trailing axes transformed.
    """
    n_scales = check_int(n_scales, "n_scales", minimum=1)
    x = _as_float(x)
    ndim = _check_ndim(x, ndim)
    return _transform(x, n_scales, ndim)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _transform(x, n_scales: int, ndim: int):
    # Compiled as one program: eager dispatch of the many small gathers and slices is slower.
    axes = range(x.ndim - ndim, x.ndim)
    planes = []
    c = x
    for j in range(n_scales):
        smooth = c
        for ax in axes:
            smooth = _smooth_axis(smooth, ax, 2**j)
        planes.append(c - smooth)
        c = smooth
    planes.append(c)
    return jnp.stack(planes, axis=0)


def starlet_inverse(coeffs):
    r"""Inverse starlet transform: :math:`x = c_J + \sum_j w_j`, the sum over the first axis."""
    return jnp.sum(jnp.asarray(coeffs), axis=0)


def _per_scale(thresholds, n_detail: int, ndim_total: int, dtype):
    """Broadcast per-scale thresholds aligned on the leading (scale) axis."""
    t = jnp.asarray(thresholds, dtype=dtype)
    if t.ndim == 0:
        return t
    if t.shape[0] not in (1, n_detail):
        raise ValueError(
            f"thresholds must have shape (), (J,) or (J, ...) with J={n_detail} detail planes, got {t.shape}"
        )
    if t.ndim > ndim_total:
        raise ValueError(f"thresholds has more dimensions ({t.ndim}) than the coefficients ({ndim_total})")
    return t.reshape(t.shape + (1,) * (ndim_total - t.ndim))


def starlet_l1_prox(coeffs, thresholds):
    r"""Soft-threshold the detail planes, leave the coarse plane untouched.

    .. math:: w_j \leftarrow \mathrm{sign}(w_j) \max(|w_j| - t_j, 0), \qquad c_J \leftarrow c_J

    This is the proximal operator of :math:`\sum_j \|t_j \odot w_j\|_1` in the coefficient
    domain. ``thresholds`` is aligned with the scale axis: a scalar, shape ``(J,)`` (one per
    scale), ``(J, *batch)`` (one per scale and map) or the full ``(J, *batch, *spatial)``;
    missing trailing axes broadcast.
    """
    coeffs = jnp.asarray(coeffs)
    n_detail = coeffs.shape[0] - 1
    if n_detail < 1:
        raise ValueError(
            f"coeffs must hold at least one detail plane and the coarse plane, got shape {coeffs.shape}"
        )
    t = _per_scale(thresholds, n_detail, coeffs.ndim, coeffs.dtype)
    detail = coeffs[:-1]
    detail = jnp.sign(detail) * jnp.maximum(jnp.abs(detail) - t, 0.0)
    return jnp.concatenate([detail, coeffs[-1:]], axis=0)


def starlet_prox(x, thresholds, n_scales: int, *, ndim: int = 2):
    r"""Starlet denoising operator :math:`W^{-1}\,\mathrm{ST}_t(W x)`.

    Transform, soft-threshold the detail planes (``starlet_l1_prox``), reconstruct. The
    starlet is redundant (not orthogonal), so this is the synthesis-side approximation of the
    prox of :math:`\|t \odot W x\|_1` used by SUSHI on each latent map; with ``t = 0`` it is
    the identity, with a huge ``t`` it returns the coarse plane :math:`c_J`.
    """
    return starlet_inverse(starlet_l1_prox(starlet_transform(x, n_scales, ndim=ndim), thresholds))


def mad_sigma(coeffs, *, ndim: int = 2):
    r"""Per-scale noise level of the detail planes by the median absolute deviation.

    .. math:: \sigma_j = \mathrm{median}(|w_j - \mathrm{median}(w_j)|) / 0.6745

    over the last ``ndim`` (spatial) axes. Returns shape ``(J, *batch)``, directly usable as
    ``k * mad_sigma(coeffs)`` thresholds in ``starlet_l1_prox``. For white Gaussian noise of
    standard deviation :math:`\sigma`, :math:`\sigma_j \approx \sigma \cdot`
    ``starlet_dirac_norms(J, ndim)[j]``.
    """
    coeffs = jnp.asarray(coeffs)
    ndim = check_int(ndim, "ndim", minimum=1)
    if coeffs.ndim < ndim + 1:
        raise ValueError(f"coeffs must have at least ndim + 1 = {ndim + 1} dimensions, got shape {coeffs.shape}")
    detail = coeffs[:-1]
    flat = detail.reshape(detail.shape[: detail.ndim - ndim] + (-1,))
    med = jnp.median(flat, axis=-1, keepdims=True)
    return jnp.median(jnp.abs(flat - med), axis=-1) / 0.6745


@functools.lru_cache(maxsize=None)
def _dirac_norms(n_scales: int, ndim: int) -> tuple:
    # The support of c_J has radius 2 (2^J - 1); a grid twice that avoids any boundary effect.
    half = 2 * (2**n_scales - 1) + 1
    n = 2 * half + 1
    if n**ndim > 2**24:
        raise ValueError(f"starlet_dirac_norms: grid of {n}^{ndim} too large for n_scales={n_scales}")
    x = np.zeros((n,) * ndim)
    x[(half,) * ndim] = 1.0
    c = x
    norms = []
    for j in range(n_scales):
        smooth = c
        for ax in range(ndim):
            idx = _reflect_index(np.arange(n)[:, None] + (np.arange(5) - 2)[None, :] * 2**j, n)
            taken = np.take(smooth, idx, axis=ax)  # (..., n, 5, ...)
            smooth = np.tensordot(taken, B3_TAPS, axes=([ax + 1], [0]))
        norms.append(float(np.sqrt(np.sum((c - smooth) ** 2))))
        c = smooth
    return tuple(norms)


def starlet_dirac_norms(n_scales: int, ndim: int = 2) -> np.ndarray:
    r"""l2 norm of each detail plane of the starlet transform of a unit Dirac.

    The noise in :math:`w_j` of white noise of unit variance has standard deviation equal to
    this norm, so thresholds are written :math:`t_j = k \sigma \|w_j(\delta)\|_2`. About
    0.890, 0.201, 0.086, 0.041, 0.020 in 2-D and 0.723, 0.285, 0.178, 0.122, 0.086 in 1-D.
    Returns a NumPy float64 array of shape ``(n_scales,)``.
    """
    n_scales = check_int(n_scales, "n_scales", minimum=1)
    ndim = check_int(ndim, "ndim", minimum=1)
    return np.array(_dirac_norms(n_scales, ndim))


__all__ = [
    "B3_TAPS",
    "mad_sigma",
    "starlet_dirac_norms",
    "starlet_inverse",
    "starlet_l1_prox",
    "starlet_prox",
    "starlet_transform",
]
