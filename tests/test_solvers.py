"""Solver core against independent implementations (NumPy loops, SciPy, closed forms, Monte Carlo)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from frugal.solvers import (
    block_solve,
    chain,
    jacobi,
    kl_nmf,
    lbfgsb,
    merge_fields,
    nnpu,
    poisson_fisher,
    poisson_multiplicative_step,
    poisson_stderr,
    projected_gradient,
    projected_newton_diag,
    proximal_gradient_step,
    Status,
    repeat,
    scaled_residual,
    update_field,
)

M, K = 48, 3


def _signatures(rng, m=M, k=K):
    """Peaked, overlapping, unit-sum signatures on a common continuum (gamma-like)."""
    ch = np.arange(m)
    cols = []
    for i in range(k):
        centre = (i + 1) * m / (k + 1)
        peak = np.exp(-0.5 * ((ch - centre) / 2.5) ** 2)
        cols.append(peak + 0.3 * np.exp(-ch / (10 + 5 * i)) + 0.02 * rng.random(m))
    s = np.stack(cols, axis=1)
    return s / s.sum(axis=0)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    s = _signatures(rng)
    a = np.array([2000.0, 1000.0, 500.0])
    return s, a


def _step_numpy(a, s, y, free=None):
    """Slow reference of the EM update, one element at a time."""
    m, k = s.shape
    model = [sum(s[j, l] * a[l] for l in range(k)) for j in range(m)]
    out = np.array(a, dtype=float)
    for l in range(k):
        if free is not None and not free[l]:
            continue
        num = sum(s[j, l] * y[j] / model[j] for j in range(m) if model[j] > 0)
        den = sum(s[j, l] for j in range(m))
        out[l] = a[l] * num / den if den > 0 else 0.0
    return out


# ---------------------------------------------------------------- multiplicative


def test_multiplicative_step_matches_numpy_loop(problem):
    s, a = problem
    rng = np.random.default_rng(1)
    y = rng.poisson(s @ a).astype(np.float64)
    y[:5] = 0  # empty channels
    a0 = np.array([1500.0, 1200.0, 300.0])
    got = poisson_multiplicative_step(jnp.asarray(a0), jnp.asarray(s), jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(got), _step_numpy(a0, s, y), rtol=1e-5)
    free = np.array([True, False, True])
    got = poisson_multiplicative_step(jnp.asarray(a0), jnp.asarray(s), jnp.asarray(y), free=free)
    np.testing.assert_allclose(np.asarray(got), _step_numpy(a0, s, y, free), rtol=1e-5)
    # A zero column and a channel where the model vanishes: no NaN, same as the reference.
    s0 = s.copy()
    s0[:, 1] = 0.0
    s0[10, :] = 0.0
    got = np.asarray(poisson_multiplicative_step(jnp.asarray(a0), jnp.asarray(s0), jnp.asarray(y)))
    assert np.all(np.isfinite(got)) and got[1] == 0.0
    np.testing.assert_allclose(got, _step_numpy(a0, s0, y), rtol=1e-5)


@pytest.mark.parametrize("accelerate", [False, True])
def test_nnpu_noiseless_recovers_truth(problem, accelerate):
    s, a = problem
    res = nnpu(s, s @ a, max_iter=5000, accelerate=accelerate)
    assert bool(res.converged)
    np.testing.assert_allclose(np.asarray(res.counts), a, rtol=1e-4)


def test_nnpu_matches_scipy_lbfgsb():
    rng = np.random.default_rng(2)
    s = _signatures(rng, 30, 4)
    a_true = np.array([300.0, 0.0, 150.0, 60.0])  # one absent source: optimum may sit on the bound
    y = rng.poisson(s @ a_true).astype(np.float64)

    def nll(a):
        m = s @ a
        return np.sum(m - y * np.log(np.maximum(m, 1e-300)))

    def grad(a):
        return s.sum(0) - s.T @ (y / np.maximum(s @ a, 1e-300))

    ref = scipy.optimize.minimize(
        nll, np.full(4, y.sum() / 4), jac=grad, method="L-BFGS-B", bounds=[(0, None)] * 4,
        options=dict(ftol=1e-15, gtol=1e-9, maxiter=5000),
    ).x
    res = nnpu(s, y, max_iter=5000, accelerate=True)
    got = np.asarray(res.counts)
    # Same optimum: amplitudes within 1 % of a standard error, and the same NLL.
    stderr = np.asarray(poisson_stderr(jnp.asarray(ref), jnp.asarray(s)))
    assert np.all(np.abs(got - ref) <= 0.01 * np.maximum(stderr, 1.0))
    assert float(res.loss) == pytest.approx(nll(ref), rel=1e-6)


def test_fisher_matches_numpy_and_monte_carlo(problem):
    s, a = problem
    f_np = s.T @ np.diag(1.0 / (s @ a)) @ s
    np.testing.assert_allclose(np.asarray(poisson_fisher(jnp.asarray(a), jnp.asarray(s))), f_np, rtol=1e-5)
    err = np.asarray(poisson_stderr(jnp.asarray(a), jnp.asarray(s)))
    np.testing.assert_allclose(err, np.sqrt(np.diag(np.linalg.inv(f_np))), rtol=1e-4)

    draws = np.random.default_rng(3).poisson(s @ a, size=(200, M)).astype(np.float32)
    est = np.asarray(nnpu(s, draws, max_iter=2000).counts)  # one vmapped batch
    spread = est.std(axis=0, ddof=1)
    np.testing.assert_allclose(spread, err, rtol=0.2)
    assert np.all(np.abs(est.mean(axis=0) - a) < 4 * err / np.sqrt(200))


def test_stderr_inactive_and_unidentified_sources(problem):
    s, a = problem
    a_b = np.array([2000.0, 0.0, 500.0])
    f = np.asarray(poisson_fisher(jnp.asarray(a_b), jnp.asarray(s)), dtype=np.float64)
    err = np.asarray(poisson_stderr(jnp.asarray(a_b), jnp.asarray(s)))
    active = [0, 2]
    np.testing.assert_allclose(err[active], np.sqrt(np.diag(np.linalg.inv(f[np.ix_(active, active)]))), rtol=1e-4)
    assert err[1] == pytest.approx(1.0 / np.sqrt(f[1, 1]), rel=1e-4)
    s0 = s.copy()
    s0[:, 1] = 0.0
    err0 = np.asarray(poisson_stderr(jnp.asarray(a), jnp.asarray(s0)))
    assert np.isinf(err0[1]) and np.all(np.isfinite(err0[[0, 2]]))


def test_no_nan_on_empty_spectrum_and_zero_column(problem):
    s, a = problem
    res = nnpu(s, np.zeros(M))
    np.testing.assert_array_equal(np.asarray(res.counts), 0.0)
    assert float(res.loss) == 0.0 and bool(res.converged)
    s0 = s.copy()
    s0[:, 2] = 0.0
    y = np.random.default_rng(4).poisson(s @ a).astype(np.float32)
    for accelerate in (False, True):
        r = nnpu(s0, y, accelerate=accelerate)
        assert np.all(np.isfinite(np.asarray(r.counts))) and np.isfinite(float(r.loss))
        assert float(r.counts[2]) == 0.0
    assert np.all(np.isfinite(np.asarray(poisson_fisher(jnp.zeros(K), jnp.asarray(s)))))
    assert not np.any(np.isnan(np.asarray(poisson_stderr(jnp.zeros(K), jnp.asarray(s)))))
    r = kl_nmf(np.zeros(M), s, max_iter=5)
    assert np.all(np.isfinite(np.asarray(r.signatures))) and np.all(np.isfinite(np.asarray(r.counts)))


def test_nnpu_batch_equals_loop(problem):
    s, a = problem
    ys = np.random.default_rng(5).poisson(s @ a, size=(4, M)).astype(np.float32)
    loop = np.stack([np.asarray(nnpu(s, y).counts) for y in ys])
    # float32 NNPU stops at a relative change of 10 eps (~1.2e-6): batched and looped runs
    # round differently and may stop an iteration apart, so agree to ~10 such steps.
    rtol = 2e-5
    np.testing.assert_allclose(np.asarray(nnpu(s, ys).counts), loop, rtol=rtol)
    vm = jax.jit(jax.vmap(lambda y: nnpu(s, y).counts))(jnp.asarray(ys))
    np.testing.assert_allclose(np.asarray(vm), loop, rtol=rtol)
    # One signature matrix per spectrum.
    sb = np.broadcast_to(s, (4, M, K))
    np.testing.assert_allclose(np.asarray(nnpu(sb, ys).counts), loop, rtol=rtol)


def test_kl_nmf_monotone_and_fixed_column(problem):
    s, a = problem
    rng = np.random.default_rng(6)
    ys = rng.poisson(s @ a, size=(2, M)).astype(np.float32)
    s_start = np.roll(s, 2, axis=0)  # wrong shapes to start from
    s_start = (s_start / s_start.sum(0)).astype(np.float32)
    fixed = np.array([True, False, False])
    res = kl_nmf(ys, s_start, fixed_columns=fixed, max_iter=60, tol=1e-7)
    trace = np.asarray(res.trace)
    assert trace.shape == (2, 60)
    for tr, n in zip(trace, np.asarray(res.n_iter)):
        tr = tr[:n]
        assert np.all(np.diff(tr) <= 1e-5 * np.abs(tr[1:]))  # non-increasing up to float32 rounding
        assert tr[-1] < tr[0]
    sig = np.asarray(res.signatures)
    np.testing.assert_array_equal(sig[:, :, 0], np.broadcast_to(s_start[:, 0], (2, M)))
    np.testing.assert_allclose(sig.sum(axis=1), 1.0, rtol=1e-5)
    # The NLL reported is the one of the returned factors.
    for b in range(2):
        model = sig[b] @ np.asarray(res.counts)[b]
        nll = np.sum(model - ys[b] * np.log(model))
        assert float(res.loss[b]) == pytest.approx(nll, rel=1e-5)


# ---------------------------------------------------------------- block solver


class TwoBlock(NamedTuple):
    x: jax.Array
    y: jax.Array


def _quadratic():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(4, 4))
    q = a @ a.T + 0.5 * np.eye(4)
    b = rng.normal(size=4)
    return q.astype(np.float32), b.astype(np.float32)


def _block_updates():
    def objective(state, data):
        q, b = data
        z = jnp.concatenate([state.x, state.y])
        return 0.5 * z @ q @ z - b @ z

    def x_min(state, data):  # exact minimiser in x given y
        q, b = data
        return jnp.linalg.solve(q[:2, :2], b[:2] - q[:2, 2:] @ state.y)

    def y_min(state, data):
        q, b = data
        return jnp.linalg.solve(q[2:, 2:], b[2:] - q[2:, :2] @ state.x)

    return objective, update_field("x", x_min), update_field("y", y_min)


def test_block_solve_two_block_quadratic():
    q, b = _quadratic()
    objective, ux, uy = _block_updates()
    state0 = TwoBlock(jnp.zeros(2), jnp.zeros(2))
    def optimality(state, data):  # scaled gradient residual of 0.5 z'Qz - b'z
        qq, bb = data
        z = jnp.concatenate([state.x, state.y])
        return scaled_residual(z, qq @ z - bb, jnp.diagonal(qq))

    # Without an optimality test, a change-based rule that fires is a stall, not convergence.
    plain = block_solve((ux, uy), objective, state0, (q, b), max_iter=200, tol=1e-9)
    assert int(plain.status) == Status.STALLED and not bool(plain.converged)
    res = block_solve((ux, uy), objective, state0, (q, b), max_iter=200, tol=None, optimality=optimality,
                      gtol=1e-4)
    z = np.concatenate([np.asarray(res.state.x), np.asarray(res.state.y)])
    z_star = np.linalg.solve(q.astype(np.float64), b)
    np.testing.assert_allclose(z, z_star, atol=2e-3 * max(1.0, np.abs(z_star).max()))
    n = int(res.n_iter)
    trace = np.asarray(res.trace)
    assert bool(res.converged) and int(res.status) == Status.CONVERGED and 1 <= n < 200
    assert float(res.residual) <= 1e-4
    assert np.all(np.diff(trace[:n]) <= 1e-6 * np.abs(trace[1:n]).max())
    assert np.all(np.isnan(trace[n:]))
    assert float(res.objective) == trace[n - 1]

    # vmap over a batch of right-hand sides equals a loop.
    bs = np.stack([b, -b, 2 * b])
    def solve(bb):
        return block_solve((ux, uy), objective, state0, (q, bb), max_iter=200, tol=None, optimality=optimality,
                           gtol=1e-5).state.x

    loop = np.stack([np.asarray(jax.jit(solve)(bb)) for bb in bs])
    np.testing.assert_allclose(np.asarray(jax.vmap(solve)(bs)), loop, rtol=1e-5, atol=1e-6)


def test_block_combinators():
    q, b = _quadratic()
    objective, ux, uy = _block_updates()
    data = (q, b)
    s0 = TwoBlock(jnp.ones(2), jnp.ones(2))
    # chain == sequential application; repeat == n applications.
    sweep = chain(ux, uy)
    manual = uy(ux(s0, data), data)
    np.testing.assert_allclose(np.asarray(sweep(s0, data).y), np.asarray(manual.y))
    three = repeat(sweep, 3)(s0, data)
    ref = s0
    for _ in range(3):
        ref = sweep(ref, data)
    np.testing.assert_allclose(np.asarray(three.x), np.asarray(ref.x), rtol=1e-6)
    # jacobi computes both blocks from the same state.
    jac = jacobi(ux, uy, merge=merge_fields("x", "y"))(s0, data)
    np.testing.assert_allclose(np.asarray(jac.x), np.asarray(ux(s0, data).x))
    np.testing.assert_allclose(np.asarray(jac.y), np.asarray(uy(s0, data).y))
    # User stop rule and min_iter.
    res = block_solve(sweep, objective, s0, data, max_iter=50, tol=None, stop=lambda o, n, d: True, min_iter=4)
    assert int(res.n_iter) == 4 and int(res.status) == Status.STALLED
    res = block_solve(sweep, objective, s0, data, max_iter=5, tol=None)
    assert int(res.n_iter) == 5 and int(res.status) == Status.MAX_ITER and not bool(res.converged)
    # A non-finite objective stops the loop, not converged.
    res = block_solve(lambda s, d: s._replace(x=s.x * jnp.inf), objective, s0, data, max_iter=10)
    assert int(res.n_iter) == 1 and int(res.status) == Status.NON_FINITE and not bool(res.converged)
    with pytest.raises(TypeError, match="updates"):
        block_solve((ux, 3), objective, s0, data)
    with pytest.raises(ValueError, match="max_iter"):
        block_solve(sweep, objective, s0, data, max_iter=0)


# ---------------------------------------------------------------- inner solvers


@pytest.fixture(scope="module")
def box_qp():
    rng = np.random.default_rng(8)
    a = rng.normal(size=(6, 6))
    q = a @ a.T / 6 + 0.3 * np.eye(6)
    b = 2.0 * rng.normal(size=6)
    lo, hi = -0.5 * np.ones(6), 0.8 * np.ones(6)
    ref = scipy.optimize.minimize(
        lambda x: 0.5 * x @ q @ x - b @ x, np.zeros(6), jac=lambda x: q @ x - b, method="L-BFGS-B",
        bounds=list(zip(lo, hi)), options=dict(ftol=1e-15, gtol=1e-12),
    ).x
    # Clean active set: the projected gradient vanishes at the reference.
    g = q @ ref - b
    assert np.all(np.abs(ref - np.clip(ref - g, lo, hi)) < 1e-7)
    return q.astype(np.float32), b.astype(np.float32), lo, hi, ref


def test_projected_gradient_box_qp(box_qp):
    q, b, lo, hi, ref = box_qp
    f = lambda x, q, b: 0.5 * x @ q @ x - b @ x  # noqa: E731
    box = lambda x: jnp.clip(x, lo, hi)  # noqa: E731
    res = projected_gradient(f, jnp.zeros(6), project=box, args=(q, b), max_iter=500, tol=1e-7)
    assert bool(res.converged)
    np.testing.assert_allclose(np.asarray(res.x), ref, atol=1e-4)
    # Unconstrained closed form, and a pytree variable.
    split = lambda p: f(jnp.concatenate([p["u"], p["v"]]), q, b)  # noqa: E731
    res = projected_gradient(split, {"u": jnp.zeros(3), "v": jnp.zeros(3)}, max_iter=2000, tol=1e-7)
    z = np.concatenate([np.asarray(res.x["u"]), np.asarray(res.x["v"])])
    np.testing.assert_allclose(z, np.linalg.solve(q.astype(np.float64), b), atol=1e-3)


def test_lbfgsb_box_qp_and_vmap(box_qp):
    q, b, lo, hi, ref = box_qp
    f = lambda x, q, b: 0.5 * x @ q @ x - b @ x  # noqa: E731
    # One compiled program (jaxopt's L-BFGS-B is slow to compile): a vmapped batch of two.
    bs = jnp.stack([jnp.asarray(b), jnp.asarray(b)])
    def solve(bb):
        return lbfgsb(f, jnp.zeros(6), lo, hi, args=(q, bb), max_iter=200, tol=1e-6, linesearch="backtracking")

    res = jax.jit(jax.vmap(solve))(bs)
    assert np.all(np.asarray(res.converged))
    np.testing.assert_allclose(np.asarray(res.x), np.stack([ref, ref]), atol=1e-4)
    np.testing.assert_allclose(np.asarray(res.value), 0.5 * ref @ q @ ref - b @ ref, rtol=1e-5)


def test_projected_newton_diag_and_prox_step():
    x = jnp.array([1.0, 2.0, 0.5, 3.0, 1.0])
    g = jnp.array([0.5, 10.0, 1.0, jnp.nan, -1.0])
    h = jnp.array([1.0, 2.0, 0.0, 1.0, 4.0])
    got = np.asarray(projected_newton_diag(g, h, x))
    # x - g / H clipped at 0; no move where H = 0 or g is not finite.
    np.testing.assert_allclose(got, [0.5, 0.0, 0.5, 3.0, 1.25])
    got = np.asarray(projected_newton_diag(g, h, x, hess_floor=2.0, upper=1.2))
    np.testing.assert_allclose(got, [0.75, 0.0, 0.0, 1.2, 1.2])
    z = proximal_gradient_step(x, jnp.ones(5), 0.5, prox=lambda u, t: jnp.maximum(u - t, 0.0))
    np.testing.assert_allclose(np.asarray(z), np.maximum(np.asarray(x) - 1.0, 0.0))


def test_argument_errors(problem):
    s, a = problem
    with pytest.raises(ValueError, match="counts"):
        nnpu(s, -np.ones(M))
    with pytest.raises(ValueError, match="channels"):
        nnpu(s, np.ones(M + 1))
    with pytest.raises(ValueError, match="signatures"):
        nnpu(np.ones(M), np.ones(M))
    with pytest.raises(ValueError, match="a0"):
        nnpu(s, np.ones(M), a0=np.ones(K + 1))
    with pytest.raises(ValueError, match="max_iter"):
        nnpu(s, np.ones(M), max_iter=0)
    with pytest.raises(ValueError, match="fixed_columns"):
        kl_nmf(np.ones(M), s, fixed_columns=np.ones(K + 2, bool))
