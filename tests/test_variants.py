"""Solver variants: every amplitude step reaches SciPy's optimum on a convex instance."""

import numpy as np
import pytest
from scipy.optimize import minimize

import jax
import jax.numpy as jnp

from frugal.solvers.variants import AMPLITUDE_STEPS, amplitude_step, latent_step


@pytest.fixture(scope="module")
def convex_instance():
    rng = np.random.default_rng(3)
    m, k = 60, 4
    S = rng.gamma(2.0, size=(m, k))
    S[:, 0] = np.linspace(1, 2, m)  # a flat, background-like column overlapping the others
    S /= S.sum(0)
    a_true = np.array([3000.0, 800.0, 0.0, 1500.0])  # one source absent: the bound is active
    y = rng.poisson(S @ a_true).astype(float)

    def nll(a):
        mu = S @ a
        return np.sum(mu - y * np.log(np.maximum(mu, 1e-300)))

    def grad(a):
        return S.T @ (1 - y / np.maximum(S @ a, 1e-300))

    ref = minimize(nll, np.full(k, y.sum() / k), jac=grad, method="L-BFGS-B", bounds=[(0, None)] * k,
                   options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 10_000})
    return S, y, ref.x, nll


@pytest.mark.parametrize("name", AMPLITUDE_STEPS)
def test_amplitude_steps_reach_the_scipy_optimum(convex_instance, name):
    S, y, a_ref, nll = convex_instance
    step = jax.jit(amplitude_step(name, 3000, tol=1e-9))
    a0 = jnp.full(S.shape[1], y.sum() / S.shape[1], jnp.float32)
    a = np.asarray(step(a0, jnp.asarray(S, jnp.float32), jnp.asarray(y, jnp.float32)), float)
    assert np.all(a >= 0)
    # Same objective to float32 resolution, same amplitudes where they are not tiny.
    assert nll(a) - nll(a_ref) <= 1e-5 * abs(nll(a_ref)) + 1e-2
    big = a_ref > 1.0
    np.testing.assert_allclose(a[big], a_ref[big], rtol=5e-3)


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="a_step must be one of"):
        amplitude_step("gradient", 10)
    with pytest.raises(ValueError, match="latent_step must be one of"):
        latent_step("sgd", 10)
