"""Goodness of fit of the Poisson deviance: exact moments and Monte Carlo false-alarm rates."""

import numpy as np
import pytest
import scipy.stats
from scipy.special import xlogy

from frugal.ops.gof import deviance_moments, gof_pvalue, tabulated_deviance_moments
from frugal.ops.losses import poisson_deviance


def _exact_moments(mu):
    k = np.arange(0, int(mu + 40 * np.sqrt(mu) + 60))
    p = scipy.stats.poisson.pmf(k, mu)
    d = 2 * (xlogy(k, k / mu) - (k - mu))
    m = np.sum(p * d)
    return m, np.sum(p * (d - m) ** 2)


@pytest.mark.parametrize("mu", [0.01, 0.3, 1.0, 4.0, 29.0, 31.0, 200.0, 1e4])
def test_moments_against_a_slow_numpy_sum(mu):
    mean, var = (float(x) for x in deviance_moments(np.float32(mu)))
    m_ref, v_ref = _exact_moments(mu)
    np.testing.assert_allclose(mean, m_ref, rtol=2e-4)
    np.testing.assert_allclose(var, v_ref, rtol=2e-3)


@pytest.mark.parametrize("level", [0.05, 0.3, 3.0, 1e3])
def test_false_alarm_rate_at_any_statistics(level):
    """Known mu, Poisson draws: the p-values are uniform (the chi-square one is not at low counts)."""
    rng = np.random.default_rng(0)
    m = 200
    mu = level * rng.uniform(0.2, 1.8, m)
    y = rng.poisson(mu, size=(4000, m))
    dev = np.asarray(poisson_deviance(y.astype(np.float32), mu.astype(np.float32)))
    p = np.asarray(gof_pvalue(dev, np.broadcast_to(mu, y.shape).astype(np.float32)))
    for alpha in (0.01, 0.05, 0.5):
        rate = np.mean(p < alpha)
        assert abs(rate - alpha) < 4 * np.sqrt(alpha * (1 - alpha) / len(p)) + 0.005, (alpha, rate)
    if level <= 0.3:
        chi2 = scipy.stats.chi2.sf(dev, m)
        assert abs(np.mean(chi2 < 0.05) - 0.05) > 0.03  # the naive approximation fails here


def test_fitted_parameters_and_bad_models():
    rng = np.random.default_rng(1)
    shape = rng.uniform(0.5, 1.5, 100)
    shape /= shape.sum()
    y = rng.poisson(500 * shape, size=(3000, 100)).astype(np.float32)
    mu = y.sum(1, keepdims=True) * shape  # one fitted amplitude
    dev = np.asarray(poisson_deviance(y, mu.astype(np.float32)))
    p = np.asarray(gof_pvalue(dev, mu.astype(np.float32), n_params=1))
    assert abs(np.mean(p < 0.05) - 0.05) < 0.015
    # A 50 % tilt of the shape at 5 000 counts: expected excess deviance ~400 for sd ~14.
    y5 = rng.poisson(5000 * shape, size=(200, 100)).astype(np.float32)
    tilt = shape * np.linspace(0.5, 1.5, 100)
    wrong = (y5.sum(1, keepdims=True) * tilt / tilt.sum()).astype(np.float32)
    assert np.all(np.asarray(gof_pvalue(poisson_deviance(y5, wrong), wrong, 1)) < 1e-3)
    assert float(gof_pvalue(np.inf, mu[0])) == 0.0
    assert np.isnan(float(gof_pvalue(np.nan, mu[0])))
    assert float(gof_pvalue(0.0, np.zeros(5))) == 1.0


def test_tabulated_moments_match_the_exact_sums():
    """The interpolated table against the exact moments (SciPy sums), 1e-4 relative."""
    mus = np.concatenate([[0.0], np.geomspace(1e-3, 5e3, 41)])
    mean, var = tabulated_deviance_moments(mus)
    assert mean[0] == 0.0 and var[0] == 0.0
    for mu, m_hat, v_hat in zip(mus[1:], mean[1:], var[1:]):
        m, v = _exact_moments(mu)
        assert abs(m_hat - m) <= 1e-4 * m + 1e-6, (mu, m_hat, m)
        assert abs(v_hat - v) <= 1e-4 * v + 1e-6, (mu, v_hat, v)
    # any shape
    assert tabulated_deviance_moments(np.ones((2, 3)))[0].shape == (2, 3)
