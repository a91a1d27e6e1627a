"""Honest stop reasons of NNPU, KL-NMF, the gamma baselines and BSP (``iae.project``).

``CONVERGED`` must mean that a first-order optimality test passed (checked here against
SciPy optima and independent NumPy residuals), never merely that the iterates stopped
changing; the goodness-of-fit p-values must be about uniform on correct models and tiny on
wrong ones.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats

import frugal.iae as iae
from frugal.gamma.baselines import fixed, nmf
from frugal.iae import model as M
from frugal.solvers import Status, kl_nmf, nmf_residual, nnpu, poisson_count_residual, poisson_stderr
from frugal.solvers.multiplicative import nnpu_unchecked

M_CH = 40


def _signatures(rng, m=M_CH, k=3):
    """Peaked, overlapping, unit-sum signatures on a common continuum (gamma-like)."""
    ch = np.arange(m)
    cols = []
    for i in range(k):
        centre = (i + 1) * m / (k + 1)
        peak = np.exp(-0.5 * ((ch - centre) / 2.5) ** 2)
        cols.append(peak + 0.3 * np.exp(-ch / (10 + 5 * i)) + 0.02 * rng.random(m))
    s = np.stack(cols, axis=1)
    return s / s.sum(axis=0)


def _nll(a, s, y):
    m = s @ a
    return np.sum(m - y * np.log(np.maximum(m, 1e-300)))


def _scipy_counts(s, y):
    def grad(a, s, y):
        return s.sum(0) - s.T @ (y / np.maximum(s @ a, 1e-300))

    k = s.shape[1]
    return scipy.optimize.minimize(
        _nll, np.full(k, y.sum() / k), args=(s, y), jac=grad, method="L-BFGS-B", bounds=[(0, None)] * k,
        options=dict(ftol=1e-15, gtol=1e-10, maxiter=5000),
    ).x


def _count_residual_numpy(a, s, y):
    """Independent float64 KKT residual in standard errors (expected Fisher diagonal)."""
    mu = s @ a
    g = s.sum(0) - s.T @ (y / mu)
    h = (s**2).T @ (1.0 / mu)
    return np.max(np.sqrt(h) * np.abs(a - np.maximum(a - g / h, 0.0)))


# ------------------------------------------------------------------------------- NNPU


def test_nnpu_converged_at_the_scipy_optimum():
    rng = np.random.default_rng(2)
    s = _signatures(rng, 30, 4)
    a_true = np.array([300.0, 0.0, 150.0, 60.0])  # one absent source: a bound may be active
    y = rng.poisson(s @ a_true).astype(np.float64)
    ref = _scipy_counts(s, y)
    # The residual is zero at the SciPy optimum and agrees with an independent NumPy one.
    with jax.enable_x64(True):
        r_ref = float(poisson_count_residual(jnp.asarray(ref), jnp.asarray(s), jnp.asarray(y)))
        assert r_ref < 1e-3 and r_ref == pytest.approx(_count_residual_numpy(ref, s, y), abs=1e-6)
        # A tenth of a standard error away is not optimal.
        err = np.asarray(poisson_stderr(jnp.asarray(ref), jnp.asarray(s)))
        off = ref + np.array([0.1 * err[0], 0, 0, 0])
        r_off = float(poisson_count_residual(jnp.asarray(off), jnp.asarray(s), jnp.asarray(y)))
        assert r_off == pytest.approx(_count_residual_numpy(off, s, y), rel=1e-6) and r_off > 0.02
    for accelerate in (False, True):
        res = nnpu(s, y, max_iter=5000, accelerate=accelerate)
        assert int(res.status) == Status.CONVERGED and bool(res.converged)
        assert float(res.residual) <= 1e-2
        got = np.asarray(res.counts, np.float64)
        assert np.all(np.abs(got - ref) <= 0.05 * np.maximum(err, 1.0))


def test_nnpu_max_iter_and_non_finite():
    rng = np.random.default_rng(3)
    s = _signatures(rng)
    y = rng.poisson(s @ np.array([800.0, 400.0, 200.0])).astype(np.float32)
    res = nnpu(s, y, max_iter=1)
    assert int(res.status) == Status.MAX_ITER and not bool(res.converged) and int(res.n_iter) == 1
    bad = y.copy()
    bad[5] = np.nan
    out = nnpu_unchecked(jnp.asarray(s, jnp.float32), jnp.asarray(bad), jnp.ones(3), jnp.ones(3, bool), 50, 1e-8, True)
    assert int(out.status) == Status.NON_FINITE and not bool(out.converged) and np.isnan(float(out.residual))
    # An empty spectrum: zeros, and zero is the optimum.
    res = nnpu(s, np.zeros(M_CH))
    assert int(res.status) == Status.CONVERGED and float(res.residual) == 0.0


def test_nnpu_source_stuck_at_zero_is_not_converged():
    rng = np.random.default_rng(4)
    s = _signatures(rng)
    a = np.array([800.0, 400.0, 200.0])
    y = rng.poisson(s @ a).astype(np.float32)
    # Multiplicative updates cannot leave 0: the others settle, the relative change stops
    # the loop, but the gradient of the missing source says it should be positive.
    res = nnpu(s, y, a0=np.array([800.0, 0.0, 200.0]), max_iter=5000, accelerate=True)
    assert float(res.counts[1]) == 0.0
    assert int(res.status) == Status.STALLED and not bool(res.converged) and float(res.residual) > 5
    # A relative-change rule that fires at once (huge tol) is not convergence either.
    res = nnpu(s, y, tol=10.0)
    assert int(res.n_iter) == 1 and int(res.status) == Status.STALLED
    # Batched: the status is per spectrum.
    res = nnpu(s, np.stack([y, y]), a0=np.array([[800.0, 0.0, 200.0], [800.0, 400.0, 200.0]]), max_iter=5000)
    assert np.asarray(res.status).tolist() == [Status.STALLED, Status.CONVERGED]


# ------------------------------------------------------------------------------- KL-NMF


def _nmf_residual_numpy(a, s, y, fixed):
    """Box KKT of the problem in (counts of the fixed columns, products a_k S_k of the free ones)."""
    mu = s @ a
    r = [_count_residual_numpy(a, s, y)]
    for k in np.where(~fixed)[0]:
        b = a[k] * s[:, k]
        r.append(np.max(np.abs(b - np.maximum(b - mu + y, 0.0)) / np.sqrt(mu)))
    return max(r)


def test_kl_nmf_status_is_the_kkt_test_of_counts_and_signatures():
    rng = np.random.default_rng(6)
    s = _signatures(rng)
    y = rng.poisson(s @ np.array([2000.0, 1000.0, 500.0])).astype(np.float32)
    start = np.roll(s, 2, axis=0)
    start = (start / start.sum(0)).astype(np.float32)
    fixed_cols = np.array([True, False, False])
    res = kl_nmf(y, start, fixed_columns=fixed_cols, max_iter=3000, tol=0.0)
    a, sig = np.asarray(res.counts, np.float64), np.asarray(res.signatures, np.float64)
    r_np = _nmf_residual_numpy(a, sig, y.astype(np.float64), fixed_cols)
    assert float(res.residual) == pytest.approx(r_np, rel=1e-3, abs=1e-4)
    assert int(res.status) == Status.CONVERGED and bool(res.converged) and r_np <= 1e-2
    # At a converged point no feasible direction lowers the NLL: SciPy started there, over
    # the fixed column's count and the free products B = a_k S_k >= 0, gains nothing.
    y64 = y.astype(np.float64)
    b0 = np.concatenate([a[:1], (sig[:, 1:] * a[1:]).ravel()])

    def nll(z):
        mu = sig[:, 0] * z[0] + z[1:].reshape(M_CH, 2).sum(1)
        return np.sum(mu - y64 * np.log(np.maximum(mu, 1e-300)))

    def grad(z):
        mu = sig[:, 0] * z[0] + z[1:].reshape(M_CH, 2).sum(1)
        w = 1.0 - y64 / mu
        return np.concatenate([[sig[:, 0] @ w], np.repeat(w, 2)])

    opt = scipy.optimize.minimize(nll, b0, jac=grad, method="L-BFGS-B", bounds=[(0, None)] * b0.size,
                                  options=dict(ftol=1e-15, gtol=1e-10, maxiter=5000))
    assert nll(b0) - opt.fun < 1e-2
    # A point that is not optimal scores high: the start, and one sweep from it.
    with jax.enable_x64(True):
        r0 = float(nmf_residual(jnp.asarray(a * 0 + 1000.0), jnp.asarray(start, jnp.float64), jnp.asarray(y64),
                                jnp.asarray(fixed_cols)))
    assert r0 > 1.0
    one = kl_nmf(y, start, fixed_columns=fixed_cols, max_iter=1)
    assert int(one.status) == Status.MAX_ITER and not bool(one.converged)


def test_kl_nmf_dead_column_is_not_converged():
    rng = np.random.default_rng(7)
    s = _signatures(rng)
    y = rng.poisson(s @ np.array([2000.0, 1000.0, 500.0])).astype(np.float32)
    # Source 1 (free) starts, and so stays, at zero; the others are fixed shapes, which
    # cannot take its counts: its channels stay underfitted, the loop stops on a small
    # change, and the KKT test sees that source 1 should grow.
    fixed_cols = np.array([True, False, True])
    res = kl_nmf(y, s.astype(np.float32), a0=np.array([2000.0, 0.0, 500.0]), fixed_columns=fixed_cols,
                 max_iter=300, tol=1e-3)
    assert float(res.counts[1]) == 0.0
    assert int(res.status) == Status.STALLED and not bool(res.converged) and float(res.residual) > 5.0


# ------------------------------------------------------------------------------ baselines


def test_oracle_status_and_gof_calibrated_wrong_signatures_rejected():
    rng = np.random.default_rng(8)
    s = _signatures(rng)
    background, sources = s[:, 0], s[:, 1:].T
    mu = s @ np.array([1500.0, 700.0, 300.0])
    y = rng.poisson(mu, size=(300, M_CH))
    res = fixed(y, sources, background=background)
    assert res.status.shape == (300,) and np.all(res.status == Status.CONVERGED) and np.all(res.converged)
    p = res.gof_pvalue
    assert p.shape == (300,) and np.all((p >= 0) & (p <= 1))
    assert scipy.stats.kstest(p, "uniform").pvalue > 1e-3
    assert 0.02 < np.mean(p < 0.1) < 0.2
    # Wrong signatures (shifted by two channels): rejected (same shapes: no recompilation).
    bad = fixed(y, np.roll(sources, 2, axis=1), background=background)
    assert np.all(bad.gof_pvalue < 1e-6)


def test_nmf_baseline_fills_status_and_gof():
    rng = np.random.default_rng(9)
    s = _signatures(rng)
    y = rng.poisson(s @ np.array([1500.0, 700.0, 300.0]), size=(3, M_CH))
    res = nmf(y, np.roll(s[:, 1:].T, 2, axis=1), background=s[:, 0], max_iter=2)
    assert res.status.shape == (3,) and np.all(res.status == Status.MAX_ITER) and not np.any(res.converged)
    assert res.gof_pvalue.shape == (3,) and np.all((res.gof_pvalue >= 0) & (res.gof_pvalue <= 1))


# ------------------------------------------------------------------------- BSP (project)


@pytest.fixture(scope="module")
def model():
    """A small untrained-but-varied dense IAE (two anchors, leaky ReLU: a kinked family).

    Training is not needed to test stop reasons, only a decoder whose output moves with
    the weights; the output layer is random instead of Flax's zeros.
    """
    n = M_CH
    ch = np.arange(n)
    anchors = np.stack([np.exp(-0.5 * ((ch - c) / 3.0) ** 2) + 0.2 for c in (12.0, 26.0)])
    anchors = jnp.asarray((anchors / anchors.sum(1, keepdims=True)).reshape(2, 1, n), jnp.float32)
    reference = anchors.mean(0)
    config = M.IAEConfig(n_channels=n, n_anchors=2, latent_dim=4, width=16, depth=1)
    enc, dec = config.networks()
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x = anchors / reference
    enc_params = enc.init(k1, x[:1])
    dec_params = dec.init(k2, enc.apply(enc_params, x[:1]))
    out = dec_params["params"]["output"]
    out = {**out, "kernel": 0.3 * jax.random.normal(k3, out["kernel"].shape)}
    dec_params = {"params": {**dec_params["params"], "output": out}}
    params = {"encoder": enc_params, "decoder": dec_params}
    return M.IAEModel(config, M.make_state(config, params, reference, anchors))


def _shape(model, l1):
    return np.asarray(model.decode(np.array([1 - l1, l1], np.float32)), np.float64)


def _scipy_latent(model, y, loss):
    """The free weight minimising the profiled loss (float64 loss of the float32 decoder)."""

    def f(l1):
        s = _shape(model, l1)
        if loss == "poisson":
            s = np.maximum(s, 0.0)
            m = y.sum() / s.sum() * s
            return 2 * np.sum(np.where(y > 0, y * np.log(np.maximum(y, 1e-300) / m), 0.0) - (y - m))
        alpha = max(y @ s / (s @ s), 0.0)
        return 0.5 * np.sum((y - alpha * s) ** 2)

    grid = np.linspace(-1.0, 2.0, 61)
    best = grid[np.argmin([f(g) for g in grid])]
    opt = scipy.optimize.minimize_scalar(f, bounds=(best - 0.05, best + 0.05), method="bounded",
                                         options=dict(xatol=1e-9))
    h = 1e-3
    curv = (f(opt.x + h) - 2 * f(opt.x) + f(opt.x - h)) / h**2
    return opt.x, f(opt.x), curv


FAR = (-0.8, 1.5, 1.9)


@pytest.fixture(scope="module")
def poisson_batch(model):
    """300 draws of one member, 4 spectra outside the family, 3 members far from the start:
    one batch, one compilation."""
    rng = np.random.default_rng(10)
    truth = 3e3 * _shape(model, 0.6)
    draws = rng.poisson(truth, size=(300, M_CH))
    # A line the model does not have.
    wrong = rng.poisson(truth + 400.0 * np.exp(-0.5 * ((np.arange(M_CH) - 33) / 1.0) ** 2), size=(4, M_CH))
    # Members far from where fast interpolation starts (the encoder is untrained).
    far = rng.poisson(3e3 * np.stack([_shape(model, l1) for l1 in FAR]))
    y = np.concatenate([draws, wrong, far]).astype(np.float32)
    return y, iae.project(model, y, loss="poisson")


def test_project_poisson_converged_at_scipy_optimum_and_gof(model, poisson_batch):
    y, res = poisson_batch
    assert np.all(res.status[:300] == Status.CONVERGED) and np.all(res.status[304:] == Status.CONVERGED)
    # Same optimum as SciPy's, within a few hundredths of a standard error.
    for i in (0, 1, 2, 304, 305, 306):
        l1, dev, curv = _scipy_latent(model, y[i].astype(np.float64), "poisson")
        se = np.sqrt(2.0 / curv)  # the deviance is twice the NLL
        assert abs(res.latent[i, 1] - l1) < 0.05 * se, (i, res.latent[i], l1, se)
        assert res.loss[i] == pytest.approx(dev, abs=1e-3 * max(dev, 1.0))
    p = res.gof_pvalue
    assert p.shape == (307,) and scipy.stats.kstest(p[:300], "uniform").pvalue > 1e-3
    assert np.all(p[300:304] < 1e-6) and np.all(p[304:] > 1e-4)


def test_project_max_iter_is_not_converged(model, poisson_batch):
    y, full = poisson_batch
    one = iae.project(model, y, loss="poisson", max_iter=1)
    assert np.all(one.n_iter <= 1)
    # One Newton iteration cannot reach the optimum of the far members: not converged.
    far = np.abs(one.latent[:, 1] - full.latent[:, 1]) > 1e-3
    assert np.all(far[304:])
    assert np.all(one.status[far] == Status.MAX_ITER)


def test_project_gaussian_converged_at_scipy_optimum(model):
    rng = np.random.default_rng(11)
    truth = 2.0 * _shape(model, 0.3)
    noisy = truth + 0.02 * truth.max() * rng.normal(size=(3, M_CH))
    y = np.concatenate([noisy, truth[None]]).astype(np.float32)  # and one noiseless
    res = iae.project(model, y, loss="gaussian")
    assert np.all(res.status == Status.CONVERGED) and res.gof_pvalue is None
    for i in range(3):
        l1, loss, curv = _scipy_latent(model, y[i].astype(np.float64), "gaussian")
        sigma2 = 2 * loss / (M_CH - 2)
        se = np.sqrt(sigma2 / curv)
        assert abs(res.latent[i, 1] - l1) < 0.05 * se, (i, res.latent[i], l1, se)
    assert abs(res.latent[3, 1] - 0.3) < 1e-3


def test_bracketed_test_accepts_a_kink_minimum_only():
    from frugal.iae.projection import GTOL, bracketed_minimum
    from frugal.solvers.newton import sum_to_one_basis

    basis = sum_to_one_basis(2)
    c = 0.3

    def kinked(lam):  # a V-shaped minimum at lam_1 = c, plus a smooth part
        return 10.0 * jnp.abs(lam[1] - c) + 50.0 * (lam[1] - c) ** 2

    def smooth(lam):
        return 50.0 * (lam[1] - c) ** 2

    def curvature(x, v):  # 100 * v_1^2: the smooth part's curvature along v
        return 100.0 * v[1] ** 2

    def test(f, l1):
        return bool(bracketed_minimum(f, jnp.array([1 - l1, l1]), basis, lambda v: v, GTOL, curvature))

    assert test(kinked, c) and test(kinked, c + 1e-4) and not test(kinked, c + 0.05)
    # Smooth: the standard error along the free weight is 1/10 (curvature 100 in lam_1):
    # within a hundredth of it passes, a tenth fails.
    assert test(smooth, c + 0.5e-3) and not test(smooth, c + 1e-2)
    # A bound that blocks the move on the descending side: optimal there.
    box = lambda v: jnp.clip(v, jnp.array([0.0, 0.0]), jnp.array([1.0, 0.2]))  # noqa: E731
    assert bool(bracketed_minimum(smooth, jnp.array([0.8, 0.2]), basis, box, GTOL, curvature))
