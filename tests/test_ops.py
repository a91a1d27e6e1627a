"""frugal.ops: the box-section projection against an exact NumPy solution, the Poisson terms
against the textbook formulas in float64, at zero counts and at large totals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frugal.ops.losses import TINY, poisson_deviance, poisson_nll, poisson_weights
from frugal.ops.proxes import project_box_section, project_simplex


def exact_box_section(x, lower, upper, total):
    """argmin ||u - x|| over {sum u = total, lower <= u <= upper}, exactly, in float64.

    u = clip(x - tau, lower, upper) (KKT); the sum is piecewise linear and non-increasing in
    tau with breakpoints at x - upper and x - lower: find the segment where it crosses
    ``total`` among the sorted breakpoints and interpolate linearly there.
    """
    x, lower, upper = (np.asarray(v, np.float64) for v in (x, lower, upper))

    def total_at(tau):
        return np.sum(np.clip(x - tau, lower, upper))

    knots = np.concatenate([x - upper, x - lower])
    knots = np.sort(knots[np.isfinite(knots)])
    # Beyond the outermost finite knots the sum keeps its slope: extend by one unit each side.
    knots = np.concatenate([[knots[0] - abs(total) - np.abs(x).max() - 1.0], knots,
                            [knots[-1] + abs(total) + np.abs(x).max() + 1.0]])
    sums = np.array([total_at(t) for t in knots])
    j = np.flatnonzero((sums[:-1] >= total) & (sums[1:] <= total))[0]
    t0, t1, s0, s1 = knots[j], knots[j + 1], sums[j], sums[j + 1]
    tau = t0 if s0 == s1 else t0 + (s0 - total) * (t1 - t0) / (s0 - s1)
    return np.clip(x - tau, lower, upper)


def random_case(rng, d):
    lower = rng.uniform(-1.0, 0.3, d)
    upper = lower + rng.uniform(0.05, 1.5, d)
    upper[rng.random(d) < 0.2] = np.inf  # some coordinates bounded below only
    hi_sum = np.sum(np.where(np.isfinite(upper), upper, lower + 5.0))
    total = rng.uniform(lower.sum(), hi_sum)
    x = rng.normal(0.0, 2.0, d)
    return x, lower, upper, total


@pytest.mark.parametrize("d", [2, 3, 7])
def test_box_section_projection_is_the_exact_solution(d):
    rng = np.random.default_rng(d)
    cases = [random_case(rng, d) for _ in range(40)]
    x, lower, upper, total = (np.stack([c[i] for c in cases]) for i in range(4))
    with jax.enable_x64(True):
        # one vmapped call over the cases (each its own box and total)
        ours = np.asarray(jax.vmap(project_box_section)(jnp.asarray(x), jnp.asarray(lower), jnp.asarray(upper),
                                                        jnp.asarray(total)))
    for i in range(len(cases)):
        exact = exact_box_section(x[i], lower[i], upper[i], total[i])
        np.testing.assert_allclose(ours[i], exact, atol=1e-10, err_msg=str(i))
        assert abs(ours[i].sum() - total[i]) < 1e-10
        assert np.all(ours[i] >= lower[i] - 1e-12) and np.all(ours[i] <= upper[i] + 1e-12)
    # float32: the same to float32 resolution of the inputs
    ours32 = np.asarray(jax.vmap(project_box_section)(jnp.asarray(x, jnp.float32), jnp.asarray(lower, jnp.float32),
                                                      jnp.asarray(upper, jnp.float32), jnp.asarray(total, jnp.float32)))
    exact = np.stack([exact_box_section(*c) for c in cases])
    np.testing.assert_allclose(ours32, exact, atol=2e-6 * (1 + np.abs(x).max()))


def test_simplex_and_unbounded_closed_forms():
    x = np.array([[0.3, -0.2, 1.4], [2.0, 2.0, 2.0], [-1.0, 0.0, 5.0]])
    for row in x:
        np.testing.assert_allclose(np.asarray(project_simplex(row, 2.0)),
                                   exact_box_section(row, np.zeros(3), np.full(3, np.inf), 2.0), atol=1e-6)
    # no bounds: the orthogonal projection onto the plane, x - (sum x - total) / d
    np.testing.assert_allclose(np.asarray(project_box_section(x, total=1.0)),
                               x - (x.sum(-1, keepdims=True) - 1.0) / 3, atol=1e-6)


def textbook_deviance(y, m):
    y, m = np.asarray(y, np.float64), np.asarray(m, np.float64)
    safe = np.where(y > 0, y, 1.0)
    return 2.0 * np.sum(np.where(y > 0, y * np.log(safe / m), 0.0) - (y - m), axis=-1)


def test_poisson_terms_at_zero_counts_are_finite_with_finite_gradients():
    y = np.array([0.0, 0.0, 3.0, 7.0], np.float32)
    m = np.array([0.0, 2.5, 3.0, 1e-3], np.float32)
    dev = float(poisson_deviance(y, m))
    # y = 0 contributes 2 m (the limit of y log(y / m) is 0); the rest as in the textbook
    assert dev == pytest.approx(2 * 2.5 + textbook_deviance(y[2:], m[2:]), rel=1e-6)
    assert float(poisson_nll(y, m)) == pytest.approx(np.sum(m) - np.sum(y[2:] * np.log(m[2:])), rel=1e-6)
    # a zero model where there are counts: floored, finite (a huge, not infinite, deviance)
    assert np.isfinite(float(poisson_deviance(np.array([5.0]), np.array([0.0]))))
    for f in (poisson_deviance, poisson_nll):
        g = np.asarray(jax.grad(lambda mm: f(jnp.asarray(y), mm))(jnp.asarray(m)))
        assert np.all(np.isfinite(g)), f.__name__
        # d/dm at y = 0 is the slope of the 2 m (or m) term, at m = 0 too (the right derivative)
        assert g[0] == pytest.approx(2.0 if f is poisson_deviance else 1.0) and g[1] == g[0]
    assert float(poisson_deviance(np.zeros(5), np.zeros(5))) == 0.0


def test_poisson_weights_give_the_gradient_and_fisher_information_safe_at_zero():
    """The weights every solver's Gauss-Newton system uses: ``J^T (1 - y/mu)`` is autodiff's
    gradient of the NLL of a linear model, ``J^T diag(1/mu) J`` the expectation of its Hessian
    (the Hessian at ``y = mu``), and a vanishing model gets no NaN or inf."""
    rng = np.random.default_rng(0)
    signatures = rng.uniform(0.1, 1.0, (12, 3))
    a = np.array([5.0, 2.0, 9.0])
    y = rng.poisson(signatures @ a).astype(np.float64)
    mu = signatures @ a
    ratio, inverse = (np.asarray(w) for w in poisson_weights(jnp.asarray(y), jnp.asarray(mu)))
    np.testing.assert_allclose(ratio, y / mu, rtol=1e-6)
    np.testing.assert_allclose(inverse, 1 / mu, rtol=1e-6)
    nll = lambda aa, yy: poisson_nll(yy, jnp.asarray(signatures, jnp.float32) @ aa)  # noqa: E731
    grad = np.asarray(jax.grad(nll)(jnp.asarray(a, jnp.float32), jnp.asarray(y, jnp.float32)))
    np.testing.assert_allclose(signatures.T @ (1 - ratio), grad, rtol=1e-4, atol=1e-4)
    hess = np.asarray(jax.hessian(nll)(jnp.asarray(a, jnp.float32), jnp.asarray(mu, jnp.float32)))
    np.testing.assert_allclose((signatures.T * inverse) @ signatures, hess, rtol=1e-4)
    # A vanishing model: no information where nothing was seen either; where counts were
    # seen, a huge finite pull (the sources there must grow).
    ratio, inverse = (np.asarray(w) for w in poisson_weights(jnp.array([0.0, 4.0, 0.0]), jnp.array([0.0, 0.0, 2.0])))
    np.testing.assert_array_equal(ratio[[0, 2]], [0.0, 0.0])
    np.testing.assert_array_equal(inverse, [0.0, 1 / np.float32(TINY), 0.5])
    assert np.isfinite(ratio[1]) and ratio[1] == pytest.approx(4.0 / TINY)


def test_deviance_keeps_float32_accuracy_at_large_totals():
    """The cancellation-free form: at 1e6 counts per channel the float32 deviance of a near-fit
    stays within a few ulps of each channel's own term, where the textbook form in float32 is
    off by ~eps * sum(y)."""
    rng = np.random.default_rng(0)
    mu = rng.uniform(5e5, 2e6, (4, 200))
    y = rng.poisson(mu).astype(np.float64)
    exact = textbook_deviance(y, mu)  # float64, ~200 per spectrum
    ours = np.asarray(poisson_deviance(y.astype(np.float32), mu.astype(np.float32)), np.float64)
    # the float32 rounding of mu alone moves each term by up to ~eps |y - mu| / mu * 2 y
    np.testing.assert_allclose(ours, textbook_deviance(y.astype(np.float32), mu.astype(np.float32)), rtol=2e-5)
    np.testing.assert_allclose(ours, exact, rtol=5e-5)
    naive32 = 2.0 * np.sum(y.astype(np.float32) * np.log(y.astype(np.float32) / mu.astype(np.float32))
                           - (y.astype(np.float32) - mu.astype(np.float32)), axis=-1, dtype=np.float32)
    assert np.max(np.abs(ours - exact)) < 0.01 * np.max(np.abs(naive32 - exact))
