"""Starlet transform against an independent scipy.ndimage implementation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.ndimage import convolve1d

from frugal.ops.starlet import (
    mad_sigma,
    starlet_dirac_norms,
    starlet_inverse,
    starlet_l1_prox,
    starlet_prox,
    starlet_transform,
)


def scipy_starlet(x, n_scales, ndim):
    """Reference: dilated B3 kernel, scipy's reflect boundary, float64."""
    x = np.asarray(x, dtype=np.float64)
    axes = range(x.ndim - ndim, x.ndim)
    c = x
    planes = []
    for j in range(n_scales):
        step = 2**j
        kernel = np.zeros(4 * step + 1)
        kernel[::step] = np.array([1, 4, 6, 4, 1]) / 16.0
        smooth = c
        for ax in axes:
            smooth = convolve1d(smooth, kernel, axis=ax, mode="reflect")
        planes.append(c - smooth)
        c = smooth
    planes.append(c)
    return np.stack(planes)


@pytest.mark.parametrize(
    "shape, n_scales, ndim",
    [
        ((37,), 4, 1),  # odd 1-D
        ((3,), 4, 1),  # smaller than the dilated filter (width 33 at scale 4)
        ((2, 1), 3, 1),  # batch of length-1 signals
        ((13, 9), 3, 2),  # odd 2-D
        ((5, 3), 4, 2),  # tiny image, repeated reflection
        ((2, 11, 6), 2, 2),  # batch of images
    ],
)
def test_matches_scipy_and_reconstructs(shape, n_scales, ndim):
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    coeffs = np.asarray(starlet_transform(x, n_scales, ndim=ndim))
    ref = scipy_starlet(x, n_scales, ndim)
    assert coeffs.shape == (n_scales + 1,) + shape
    np.testing.assert_allclose(coeffs, ref, atol=2e-6, rtol=0)
    np.testing.assert_allclose(np.asarray(starlet_inverse(coeffs)), x, atol=1e-6, rtol=0)


def test_dirac_norms_independent():
    # scipy reference applied to a Dirac in the middle of a grid wider than the support.
    n = 2 * 64 + 1
    dirac = np.zeros((n, n))
    dirac[n // 2, n // 2] = 1.0
    ref2 = np.sqrt((scipy_starlet(dirac, 5, 2)[:5] ** 2).sum(axis=(1, 2)))
    np.testing.assert_allclose(starlet_dirac_norms(5, 2), ref2, rtol=1e-10)
    np.testing.assert_allclose(starlet_dirac_norms(5, 2), [0.890, 0.201, 0.086, 0.041, 0.020], atol=1.5e-3)
    d1 = np.zeros(n)
    d1[n // 2] = 1.0
    ref1 = np.sqrt((scipy_starlet(d1, 4, 1)[:4] ** 2).sum(axis=1))
    np.testing.assert_allclose(starlet_dirac_norms(4, 1), ref1, rtol=1e-10)
    # First 1-D plane in closed form: [-1, -4, 10, -4, -1] / 16.
    assert starlet_dirac_norms(1, 1)[0] == pytest.approx(np.sqrt(134) / 16)


def test_mad_sigma_on_gaussian_noise():
    sigma = 2.5
    noise = sigma * np.random.default_rng(2).normal(size=(2, 128, 128)).astype(np.float32)
    coeffs = starlet_transform(noise, 4)
    est = np.asarray(mad_sigma(coeffs))
    assert est.shape == (4, 2)
    expected = sigma * starlet_dirac_norms(4, 2)[:, None]
    np.testing.assert_allclose(est, np.broadcast_to(expected, est.shape), rtol=0.1)


def test_prox_limits_and_soft_threshold():
    x = jnp.asarray(np.random.default_rng(3).normal(size=(17, 12)), dtype=jnp.float32)
    coeffs = starlet_transform(x, 3)
    np.testing.assert_allclose(np.asarray(starlet_prox(x, 0.0, 3)), np.asarray(x), atol=1e-6)
    np.testing.assert_allclose(np.asarray(starlet_prox(x, 1e6, 3)), np.asarray(coeffs[-1]), atol=1e-6)
    # Per-scale thresholds hit the detail planes only, each with its own value.
    t = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    out = np.asarray(starlet_l1_prox(coeffs, t))
    c = np.asarray(coeffs)
    ref = np.sign(c[:3]) * np.maximum(np.abs(c[:3]) - t[:, None, None], 0)
    np.testing.assert_allclose(out[:3], ref, atol=1e-7)
    np.testing.assert_array_equal(out[3], c[3])
    with pytest.raises(ValueError, match="thresholds"):
        starlet_l1_prox(coeffs, np.ones(5))


def test_batch_vmap_jit_equal_loop():
    xs = np.random.default_rng(4).normal(size=(3, 10, 7)).astype(np.float32)
    loop = np.stack([np.asarray(starlet_transform(x, 3)) for x in xs])  # (B, J+1, H, W)
    vm = np.asarray(jax.vmap(lambda x: starlet_transform(x, 3))(xs))
    np.testing.assert_allclose(vm, loop, atol=1e-6)
    batched = np.asarray(jax.jit(lambda x: starlet_transform(x, 3))(xs))  # (J+1, B, H, W)
    np.testing.assert_allclose(np.moveaxis(batched, 1, 0), loop, atol=1e-6)
    # Thresholds per scale and per map, aligned on the scale axis.
    t = np.abs(np.random.default_rng(5).normal(size=(3, 3))).astype(np.float32)
    prox_b = np.asarray(starlet_prox(xs, t, 3))
    prox_loop = np.stack([np.asarray(starlet_prox(xs[i], t[:, i], 3)) for i in range(3)])
    np.testing.assert_allclose(prox_b, prox_loop, atol=1e-6)


def test_gradient_through_prox_is_finite():
    x = jnp.linspace(-1.0, 1.0, 24).reshape(4, 6)
    g = jax.grad(lambda x: jnp.sum(starlet_prox(x, 0.05, 2) ** 2))(x)
    assert np.all(np.isfinite(np.asarray(g)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_scales"):
        starlet_transform(np.zeros((4, 4)), 0)
    with pytest.raises(ValueError, match="ndim"):
        starlet_transform(np.zeros(4), 2, ndim=2)
