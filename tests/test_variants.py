"""Solver variants: every amplitude step and every latent step reaches SciPy's optimum on a
convex instance."""

import numpy as np
import pytest
from scipy.optimize import minimize

import jax
import jax.numpy as jnp

from frugal.ops.proxes import project_box_section
from frugal.solvers import sum_to_one_basis
from frugal.solvers.variants import AMPLITUDE_STEPS, LATENT_STEPS, amplitude_step, latent_step


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
    # Same objective to float32 resolution, and the same amplitudes in the unit that matters,
    # the standard error: the distance to SciPy's optimum in the Fisher metric of the sources
    # that are present. Not a relative tolerance on each amplitude: the flat background-like
    # column makes the objective flat along one direction (standard errors of 6-16 % of the
    # amplitudes), where float32 resolves the optimum only to ~0.1 standard error; XLA's code
    # for another instruction set or optimisation level moves the stop by 0.05-0.1 (measured
    # with LLVM at -O0: 0.07 for "newton", 0.10 for "fista", up to 0.9 % of an amplitude).
    assert nll(a) - nll(a_ref) <= 1e-5 * abs(nll(a_ref)) + 1e-2
    big = a_ref > 1.0
    fisher = (S[:, big].T / (S @ a_ref)) @ S[:, big]
    d = a[big] - a_ref[big]
    assert np.sqrt(d @ fisher @ d) < 0.2, f"{name}: {np.sqrt(d @ fisher @ d):.3f} standard errors from the optimum"
    assert np.all(a[~big] < 0.2 * np.sqrt(np.diag(np.linalg.inv(fisher))).min())


#: Iterations per latent solver: enough for each to converge on the instance below.
LATENT_ITER = {"newton": 30, "pg": 500, "lbfgsb": 100, "adam": 3000}


@pytest.mark.parametrize("name", LATENT_STEPS)
def test_latent_steps_reach_the_scipy_optimum(name):
    """A Poisson deviance linear in two barycentric weights (convex), inside a box whose
    bound is active at the optimum; SciPy's bounded scalar minimiser on ``w``, the second weight."""
    from scipy.optimize import minimize_scalar

    rng = np.random.default_rng(4)
    m = 40
    rows = rng.gamma(2.0, size=(2, m))
    rows /= rows.sum(1, keepdims=True)
    y = rng.poisson(2000.0 * (0.2 * rows[0] + 0.8 * rows[1])).astype(float)
    lower, upper = np.array([0.3, -0.2]), np.array([1.2, 0.7])  # w <= 0.7: the bound holds

    def deviance_np(w):
        mu = 2000.0 * ((1 - w) * rows[0] + w * rows[1])
        return 2 * np.sum(mu - y + np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / mu), 0))

    ref = minimize_scalar(deviance_np, bounds=(max(lower[1], 1 - upper[0]), min(upper[1], 1 - lower[0])),
                          method="bounded", options={"xatol": 1e-10})
    rows_j, y_j = jnp.asarray(rows, jnp.float32), jnp.asarray(y, jnp.float32)
    lo, hi = jnp.asarray(lower, jnp.float32), jnp.asarray(upper, jnp.float32)

    def f(lam):
        mu = 2000.0 * lam @ rows_j
        return 2 * jnp.sum(mu - y_j + jnp.where(y_j > 0, y_j * jnp.log(jnp.where(y_j > 0, y_j, 1) / mu), 0))

    step = latent_step(name, LATENT_ITER[name])
    lam = jax.jit(lambda x: step(x, f, lambda v: project_box_section(v, lo, hi, 1.0), sum_to_one_basis(2),
                                 lo, hi))(jnp.array([0.5, 0.5], jnp.float32))
    lam = np.asarray(lam, float)
    assert abs(lam.sum() - 1) < 1e-5 and np.all(lam >= lower - 1e-6) and np.all(lam <= upper + 1e-6)
    assert deviance_np(lam[1]) - ref.fun <= 1e-3, (name, lam, ref.x)
    assert abs(lam[1] - ref.x) < 2e-3, (name, lam, ref.x)


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="a_step must be one of"):
        amplitude_step("gradient", 10)
    with pytest.raises(ValueError, match="latent_step must be one of"):
        latent_step("sgd", 10)


# --------------------------------------------------------------------------- pieces as values


def test_pieces_are_values_and_names_are_shorthands():
    """A solver given by name is the value of the same pieces: equal, so one jit cache entry."""
    from frugal.solvers import (BCD, IPALM, Adam, DiagonalNewton, Fista, GaussSeidel, Jacobi, LatentNewton,
                                Multiplicative, Newton, ProjectedGradient, as_solver)

    assert as_solver("newton") == Newton()
    assert as_solver("bcd") == BCD() == BCD(Multiplicative(200), LatentNewton(5), GaussSeidel())
    assert as_solver("bcd", a_step="fista", latent_step="pg", outer="ipalm", a_iter=50, latent_iter=7) == \
        BCD(amplitude=Fista(n_iter=50), latent=ProjectedGradient(n_iter=7), outer=IPALM())
    # each latent step keeps its own default iterations when latent_iter is not given
    assert as_solver("bcd", latent_step="adam").latent == Adam(n_iter=50)
    assert as_solver("bcd", a_step="newton", outer="jacobi").outer == Jacobi()
    assert as_solver("bcd", a_step="newton").amplitude == DiagonalNewton(n_iter=200)
    values = {BCD(), as_solver("bcd"), BCD(outer=IPALM(beta=0.5)), BCD(outer=IPALM())}
    assert len(values) == 3
    assert amplitude_step("fista", 10) == Fista(n_iter=10)
    assert latent_step("adam", 10, learning_rate=0.1) == Adam(n_iter=10, learning_rate=0.1)


def test_a_step_by_value_reuses_the_program_of_its_name(convex_instance):
    from functools import partial

    from frugal.solvers import Fista

    @partial(jax.jit, static_argnums=0)
    def run(step, a, S, y):
        return step(a, S, y)

    S, y, _, _ = convex_instance
    S, y = jnp.asarray(S, jnp.float32), jnp.asarray(y, jnp.float32)
    a0 = jnp.full(S.shape[1], 100.0, jnp.float32)
    by_value = run(Fista(n_iter=20), a0, S, y)
    by_name = run(amplitude_step("fista", 20), a0, S, y)
    np.testing.assert_array_equal(by_value, by_name)
    assert run._cache_size() == 1
    run(Fista(n_iter=21), a0, S, y)
    assert run._cache_size() == 2


def test_options_that_do_not_apply_are_refused():
    from frugal.gamma import unmix
    from frugal.solvers import BCD, IPALM, Fista, LatentNewton, as_solver
    from toys import random_iae

    with pytest.raises(ValueError, match="outer applies to solver='bcd' only"):
        as_solver("newton", outer="jacobi")
    with pytest.raises(ValueError, match="a_step and latent_iter apply to solver='bcd' only"):
        as_solver("newton", a_step="fista", latent_iter=3)
    with pytest.raises(ValueError, match="a_step sets the pieces of solver='bcd' given by name"):
        as_solver(BCD(), a_step="fista")
    with pytest.raises(ValueError, match="solver must be one of 'newton', 'bcd'"):
        as_solver("palm")
    with pytest.raises(TypeError, match="solver must be"):
        as_solver(Fista())
    with pytest.raises(TypeError, match="BCD.amplitude must be an instance of AmplitudeStep"):
        BCD(amplitude="fista")
    with pytest.raises(TypeError, match="BCD.latent must be an instance of LatentStep"):
        BCD(latent=Fista())
    with pytest.raises(ValueError, match="n_iter must be >= 1"):
        LatentNewton(n_iter=0)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        IPALM(beta=1.0)
    # unmix refuses them before any compilation
    model = random_iae(3, np.linspace(2.0, 1.0, 40), seed=0)
    y = np.full(40, 10.0, np.float32)
    with pytest.raises(ValueError, match="a_step applies to solver='bcd' only"):
        unmix(y, model, a_step="fista")
    with pytest.raises(ValueError, match="carries its own"):
        unmix(y, model, solver=BCD(), outer="ipalm")
    with pytest.raises(ValueError, match="needs models with two anchors"):
        unmix(y, model, solver="bcd", latent_step="lbfgsb")
