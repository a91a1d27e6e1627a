"""Damped projected Newton and its stop reasons, against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np

from frugal.ops.proxes import project_box_section
from frugal.solvers import Status, damped_newton, scaled_residual, status_names, sum_to_one_basis


def test_scaled_residual_is_zero_exactly_at_kkt_points():
    # min 0.5 h (x - c)^2 on x >= 0: optimum max(c, 0); residual sqrt(h) |x - x*| on the line.
    h, c = jnp.array([4.0, 1.0]), jnp.array([1.5, -2.0])
    x_star = jnp.maximum(c, 0.0)
    grad = lambda x: h * (x - c)  # noqa: E731
    assert float(scaled_residual(x_star, grad(x_star), h, lower=0.0)) == 0.0
    x = x_star + jnp.array([0.1, 0.0])
    np.testing.assert_allclose(float(scaled_residual(x, grad(x), h, lower=0.0)), 2.0 * 0.1, rtol=1e-6)
    # Without the bound the second coordinate is not optimal at 0: |c| sqrt(h) = 2.
    np.testing.assert_allclose(float(scaled_residual(x_star, grad(x_star), h)), 2.0, rtol=1e-6)


def test_newton_converges_on_a_box_section_and_reports_it():
    # Weights summing to one inside a box: closed-form optimum of a separable quadratic.
    target = jnp.array([0.7, 0.5, -0.2])
    lower, upper = jnp.zeros(3), jnp.ones(3)

    def f(lam):
        return 50.0 * jnp.sum((lam - target) ** 2)

    res = damped_newton(f, jnp.array([0.2, 0.3, 0.5]), basis=sum_to_one_basis(3),
                        project=lambda x: project_box_section(x, lower, upper, 1.0), gtol=1e-3)
    # KKT: lam = clip(target - nu, 0, 1) with sum 1 -> nu = 0.1, lam = (0.6, 0.4, 0).
    np.testing.assert_allclose(np.asarray(res.x), [0.6, 0.4, 0.0], atol=1e-5)
    assert int(res.status) == Status.CONVERGED and bool(res.converged)
    assert float(res.residual) <= 1e-3


def test_newton_reports_max_iter_stall_and_non_finite():
    rosen = lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2  # noqa: E731
    res = damped_newton(rosen, jnp.array([-1.2, 1.0]), max_iter=2, gtol=1e-6)
    assert int(res.status) == Status.MAX_ITER and not bool(res.converged)
    # A step-size rule that fires far from the optimum (xtol huge) is a stall, not convergence.
    res = damped_newton(rosen, jnp.array([-1.2, 1.0]), xtol=1e3, gtol=1e-6)
    assert int(res.status) == Status.STALLED and not bool(res.converged)
    res = damped_newton(lambda x: jnp.sum(x**2) * jnp.nan, jnp.array([1.0, 2.0]))
    assert int(res.status) == Status.NON_FINITE
    assert status_names(np.array([0, 1, 2, 3])).tolist() == ["converged", "max_iter", "stalled", "non_finite"]


def test_newton_status_under_vmap():
    def f(x, c):
        return jnp.sum((x - c) ** 2)

    cs = jnp.array([[1.0, 2.0], [jnp.nan, 0.0]])
    out = jax.vmap(lambda c: damped_newton(lambda x: f(x, c), jnp.zeros(2), gtol=1e-4))(cs)
    assert np.asarray(out.status).tolist() == [Status.CONVERGED, Status.NON_FINITE]
