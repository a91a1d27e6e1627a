r"""Goodness of fit of a Poisson model from its deviance, usable at low counts.

The deviance :math:`D = \sum_j d_j`, :math:`d_j = 2\,[\,y_j \log(y_j/\mu_j) - (y_j - \mu_j)\,]`,
is :math:`\chi^2_{m-p}` only when every channel has many expected counts. At low counts the
per-channel moments differ a lot from (1, 2) (at :math:`\mu = 0.1`: mean 0.47, variance 0.86;
at :math:`\mu = 1`: 1.15, 1.36), so the chi-square p-value is badly wrong exactly where a
gamma spectrum lives (most channels of a 2 500-count spectrum hold 0 to 5 counts).

Here the exact moments of each :math:`d_j` under :math:`y_j \sim \mathrm{Poisson}(\mu_j)`
are summed (a sum over :math:`y = 0..127` for :math:`\mu < 30`; above, the expansions
:math:`E = 1 + 1/(6\mu) + 1/(6\mu^2)`, :math:`V = 2 + 2/(3\mu) + 1.4/\mu^2`, within 1e-4 of
the exact values there), the mean is reduced by the number ``p`` of fitted parameters (each
removes about one unit, as in the chi-square limit) with the variance scaled alike, and the
distribution of :math:`D` is approximated by the gamma law with those two moments
(a Satterthwaite-Welch scaled chi-square). The p-value is its upper tail. Monte Carlo
checks of the resulting false-alarm rates, from 0.05 to 1e4 counts per channel, are in
``tests/test_gof.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

#: Below this mean, the moments are summed exactly over ``y = 0 .. _N_TERMS - 1``.
_EXACT_BELOW = 30.0
_N_TERMS = 128


def deviance_moments(mu):
    r"""Mean and variance of the unit Poisson deviance :math:`d(y; \mu)` for
    :math:`y \sim \mathrm{Poisson}(\mu)`, elementwise (``mu >= 0``; 0 and 0 at ``mu = 0``)."""
    mu = jnp.asarray(mu)
    dtype = mu.dtype if jnp.issubdtype(mu.dtype, jnp.floating) else jnp.float32
    mu = mu.astype(dtype)
    small = jnp.clip(mu, 1e-30, _EXACT_BELOW)
    k = jnp.arange(_N_TERMS, dtype=dtype)
    log_mu = jnp.log(small)[..., None]
    log_pmf = k * log_mu - small[..., None] - jax.scipy.special.gammaln(k + 1.0)
    pmf = jnp.exp(log_pmf)
    klogk = jnp.where(k > 0, k * jnp.log(jnp.where(k > 0, k, 1.0)), 0.0)
    d = 2.0 * (klogk - k * log_mu - (k - small[..., None]))
    mean_exact = jnp.sum(pmf * d, -1)
    var_exact = jnp.maximum(jnp.sum(pmf * d * d, -1) - mean_exact**2, 0.0)
    big = jnp.maximum(mu, _EXACT_BELOW)
    mean_asym = 1.0 + 1.0 / (6.0 * big) + 1.0 / (6.0 * big**2)
    var_asym = 2.0 + 2.0 / (3.0 * big) + 1.4 / big**2
    exact = mu < _EXACT_BELOW
    zero = mu <= 0
    mean = jnp.where(zero, 0.0, jnp.where(exact, mean_exact, mean_asym))
    var = jnp.where(zero, 0.0, jnp.where(exact, var_exact, var_asym))
    return mean, var


def gof_pvalue(deviance, mu, n_params=0, *, axis=-1):
    r"""Upper-tail p-value of a Poisson deviance under the fitted model (see the module).

    deviance: the deviance of the fit (one per spectrum; ``mu``'s other axes).
    mu: the fitted expected counts per channel, reduced over ``axis``.
    n_params: the number of fitted parameters (counts and free latent coordinates), which
      lower the expected deviance by about one each.

    A small p-value (e.g. < 1e-3) says the model does not describe the spectrum: a missing
    source, a wrong background or calibration, a signature outside the learnt family.
    Returns NaN where the deviance is NaN, 0 where it is infinite (counts where the model
    expects none), 1 where the model expects no counts at all.
    """
    mean_j, var_j = deviance_moments(mu)
    return pvalue_from_moments(deviance, jnp.sum(mean_j, axis=axis), jnp.sum(var_j, axis=axis), n_params)


def pvalue_from_moments(deviance, mean, var, n_params=0):
    """:func:`gof_pvalue` from the deviance's moments already summed over the channels
    (``mean``, ``var``: sums of :func:`deviance_moments`), for callers that sum them their own
    way (over the pixels of a cube as well as per pixel)."""
    mean, var = jnp.asarray(mean), jnp.asarray(var)
    reduced = jnp.maximum(mean - n_params, 0.5 * mean)
    var = var * jnp.where(mean > 0, reduced / jnp.where(mean > 0, mean, 1.0), 1.0)
    ok = (reduced > 0) & (var > 0)
    shape = jnp.where(ok, reduced**2 / jnp.where(ok, var, 1.0), 1.0)
    scale = jnp.where(ok, var / jnp.where(ok, reduced, 1.0), 1.0)
    deviance = jnp.asarray(deviance, shape.dtype)
    finite = jnp.isfinite(deviance)
    p = jax.scipy.special.gammaincc(shape, jnp.where(finite, jnp.maximum(deviance, 0.0), 0.0) / scale)
    p = jnp.where(ok, p, 1.0)
    return jnp.where(jnp.isnan(deviance), jnp.nan, jnp.where(finite, p, 0.0))


#: The deviance moments are tabulated once on a grid of expected counts, uniform in
#: ``log mu`` from ``_MOMENT_LOG_RANGE`` (above, they are 1 and 2 to 1e-4), for
#: :func:`tabulated_deviance_moments`.
_MOMENT_LOG_RANGE = (np.log(1e-30), np.log(1e4))
_MOMENT_POINTS = 8193
_MOMENT_TABLE: list = []


def tabulated_deviance_moments(mu):
    """:func:`deviance_moments` of ``mu`` (NumPy, any shape, on the host) by linear
    interpolation in ``log mu`` of a table computed once (relative error below 1e-4; 0 at
    ``mu = 0``): a cube has millions of channels, and :func:`deviance_moments` sums 128
    terms for each."""
    lo, hi = _MOMENT_LOG_RANGE
    step = (hi - lo) / (_MOMENT_POINTS - 1)
    if not _MOMENT_TABLE:
        grid = np.exp(lo + step * np.arange(_MOMENT_POINTS))
        mean, var = deviance_moments(jnp.asarray(grid, jnp.float32))
        _MOMENT_TABLE.extend([np.asarray(mean, np.float32), np.asarray(var, np.float32)])
    mean_t, var_t = _MOMENT_TABLE
    mu = np.asarray(mu, np.float32)
    pos = mu > 0
    x = (np.log(np.where(pos, mu, 1.0)) - np.float32(lo)) / np.float32(step)
    x = np.clip(x, 0.0, _MOMENT_POINTS - 1.0 - 1e-3)
    i = x.astype(np.int32)
    frac = x - i
    mean = mean_t[i] + frac * (mean_t[i + 1] - mean_t[i])
    var = var_t[i] + frac * (var_t[i + 1] - var_t[i])
    return np.where(pos, mean, 0.0), np.where(pos, var, 0.0)


__all__ = ["deviance_moments", "gof_pvalue", "pvalue_from_moments", "tabulated_deviance_moments"]
