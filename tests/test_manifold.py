"""The manifold protocol (frugal.unmix): the IAE's fast directional derivatives against JAX's
autodiff of its signatures, the protocol's checks, and a closed-form manifold (no IAE)
unmixed by SUSHI's solver with no change to it. SEMSUN on a closed-form manifold runs in
docs/architecture.md (tests/test_docs.py)."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toys import random_iae

from frugal.unmix import BarycentricManifold, BoxManifold, Manifold, ManifoldModel, as_models
from frugal.xray import fit_pixels


def test_iae_jvps_equal_autodiff_of_its_signatures():
    model = random_iae(3, np.exp(-np.linspace(0, 3, 40)) + 0.2, seed=2)
    man, params = model.manifold, model.state
    lam = jnp.asarray(np.random.default_rng(0).dirichlet(np.ones(3), size=7), jnp.float32)
    basis = man.tangent_basis(jnp.float32)
    fast, derivs = man.signature_jvps(params, lam, basis)
    slow, slow_derivs = Manifold.signature_jvps(man, params, lam, basis)  # jax.jvp of signatures
    np.testing.assert_allclose(fast, man.signatures(params, lam), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fast, slow, rtol=1e-6, atol=1e-9)
    for got, want in zip(derivs, slow_derivs):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-7 * float(jnp.max(jnp.abs(want))))
    # And against a central difference along the first direction (float32: a loose check).
    h = 1e-2
    fd = (man.signatures(params, lam + h * basis[:, 0]) - man.signatures(params, lam - h * basis[:, 0])) / (2 * h)
    np.testing.assert_allclose(derivs[0], fd, rtol=0.05, atol=0.02 * float(jnp.max(jnp.abs(fd))))
    # The tangent keeps the weights on their plane; the projection lands in the box section.
    np.testing.assert_allclose(basis.sum(0), 0.0, atol=1e-6)
    x = man.project(jnp.array([0.9, 0.9, -0.5]), jnp.zeros(3), jnp.full(3, 0.7))
    np.testing.assert_allclose(float(x.sum()), 1.0, rtol=1e-6)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 0.7 + 1e-6


@dataclasses.dataclass(frozen=True)
class PowerLaw(BarycentricManifold):
    """``S(E) ~ E^-Gamma`` with the index ``Gamma = lambda . params["index"]`` (barycentric in
    the anchors' indices): a closed form, no network."""

    n_channels: int
    n_coords: int = 2
    n_inputs: int = 1

    def signatures(self, params, coords, n_channels=None):
        gamma = coords @ params["index"]
        x = params["energy"] ** -gamma[..., None, None]
        return x / jnp.sum(x, axis=-1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class MovingLine(BarycentricManifold):
    """A Gaussian line at ``lambda . params["centre"]`` over a weak continuum."""

    n_channels: int
    n_coords: int = 2
    n_inputs: int = 1

    def signatures(self, params, coords, n_channels=None):
        centre = coords @ params["centre"]
        x = jnp.exp(-0.5 * ((params["energy"] - centre[..., None, None]) / 0.4) ** 2) + 0.02
        return x / jnp.sum(x, axis=-1, keepdims=True)


def test_protocol_checks_name_the_argument():
    energy = jnp.linspace(1.0, 8.0, 32)[None]
    params = {"energy": energy, "index": jnp.array([1.5, 3.0])}
    with pytest.raises(ValueError, match="lower must have shape \\(2,\\)"):
        ManifoldModel(PowerLaw(32), params, [0.0, 0.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="sum\\(lower\\) <= 1"):
        ManifoldModel(PowerLaw(32), params, [0.6, 0.6], [1.0, 1.0])
    with pytest.raises(TypeError, match="manifold must be a frugal.unmix.Manifold"):
        ManifoldModel("power law", params, [0.0, 0.0], [1.0, 1.0])

    @dataclasses.dataclass(frozen=True)
    class Temperature(BoxManifold):
        n_channels: int = 32
        n_coords: int = 1
        n_inputs: int = 1

        def signatures(self, params, coords, n_channels=None):
            x = jnp.exp(-params["energy"] / coords[..., None, :1])
            return x / jnp.sum(x, axis=-1, keepdims=True)

    # Box coordinates are solver-ready (projection, tangent), but the unmixing calls set up
    # their starts on the weights' simplex: refused with a reason, not mis-started.
    with pytest.raises(TypeError, match="barycentric coordinates"):
        as_models(ManifoldModel(Temperature(), params, [0.0], [1.0]))
    np.testing.assert_array_equal(Temperature().project(jnp.array([2.0]), jnp.array([0.5]), jnp.array([1.5])), [1.5])


def test_sushi_fits_a_closed_form_manifold_with_no_change_to_its_solver():
    """Per-pixel SUSHI (``fit_pixels``) on a cube of two closed-form components whose index
    and line centre vary over the sky: the truth is recovered and flagged converged."""
    e, h, w = 32, 4, 5
    energy = jnp.linspace(1.0, 8.0, e)[None]
    power = ManifoldModel(PowerLaw(e), {"energy": energy, "index": jnp.array([1.5, 3.0])}, [0.0, 0.0], [1.0, 1.0])
    line = ManifoldModel(MovingLine(e), {"energy": energy, "centre": jnp.array([5.0, 7.0])}, [0.0, 0.0], [1.0, 1.0])
    rng = np.random.default_rng(3)
    lam = [rng.uniform(0.15, 0.85, (h, w)) for _ in range(2)]
    amp = rng.uniform(3e3, 6e3, (2, h, w))
    cube = np.zeros((e, h, w))
    for c, mdl in enumerate((power, line)):
        weights = jnp.asarray(np.stack([lam[c], 1 - lam[c]], -1).reshape(-1, 2), jnp.float32)
        sig = np.asarray(mdl.manifold.signatures(mdl.params, weights))[:, 0]  # (P, E)
        cube += amp[c] * sig.T.reshape(e, h, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # noiseless: counts are not integers
        res = fit_pixels(cube.astype(np.float32), [power, line], max_iter=60)
    assert np.all(res.converged)
    for c in range(2):
        np.testing.assert_allclose(res.latent[c][0], lam[c], atol=5e-3, err_msg=f"component {c}")
    np.testing.assert_allclose(res.amplitude, amp, rtol=5e-3)
