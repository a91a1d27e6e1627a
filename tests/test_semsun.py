"""SEMSUN unmixing and its baselines on small simulated mixtures."""

import warnings

import numpy as np
import pytest

import frugal.iae as iae
from frugal.gamma.baselines import fixed, nmf, oracle
from frugal.gamma.semsun import unmix
from frugal.solvers import Status
from toys import GAMMA_CHANNELS

M = GAMMA_CHANNELS


@pytest.fixture(scope="module")
def sources(gamma_toy):
    """Two toy radionuclide families sharing one shielding-like parameter, a background."""
    return gamma_toy


def mixture(model, background, lam, counts):
    """Expected counts of background + the two model sources at weights lam."""
    sig = np.maximum(model.decode(np.asarray(lam, np.float32)), 0)
    sig = sig / sig.sum(-1, keepdims=True)
    rows = np.concatenate([background[None], sig], 0)
    return np.asarray(counts) @ rows, rows


TRUE_LAM = np.array([0.35, 0.65])
TRUE_A = np.array([3e4, 2e4, 1.5e4])


def test_oracle_on_noiseless_data_returns_the_truth(sources):
    model, background, _, _ = sources
    mu, rows = mixture(model, background, TRUE_LAM, TRUE_A)
    with pytest.warns(UserWarning, match="not all integers"):  # expected counts, not draws
        res = oracle(mu, rows[1:], background=background)
    np.testing.assert_allclose(res.counts, TRUE_A, rtol=1e-3)
    assert res.names == ("background", "source0", "source1")


def test_semsun_recovers_counts_and_latent_on_noiseless_mixture(sources):
    model, background, _, _ = sources
    mu, _ = mixture(model, background, TRUE_LAM, TRUE_A)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # expected counts are not integers
        for solver in ("newton", "bcd"):
            res = unmix(mu, model, background=background, latent0=[np.array([0.9, 0.1])], solver=solver)
            np.testing.assert_allclose(res.counts, TRUE_A, rtol=2e-3, err_msg=solver)
            np.testing.assert_allclose(res.latent[0], TRUE_LAM, atol=2e-3, err_msg=solver)
            assert res.converged


@pytest.fixture(scope="module")
def draws(sources):
    model, background, _, _ = sources
    mu, _ = mixture(model, background, TRUE_LAM, TRUE_A)
    rng = np.random.default_rng(1)
    y = rng.poisson(mu, size=(200, M))
    return y, unmix(y, model, background=background)


def test_semsun_on_poisson_draws_is_unbiased_with_calibrated_errors(draws):
    y, res = draws
    assert res.counts.shape == (200, 3) and res.latent[0].shape == (200, 2)
    assert np.all(res.converged)
    # Mean over 200 draws within 3 standard errors of the mean of the truth.
    spread = res.counts.std(0)
    assert np.all(np.abs(res.counts.mean(0) - TRUE_A) < 3 * spread / np.sqrt(200))
    # Fisher standard errors match the Monte Carlo spread within 20 %.
    np.testing.assert_allclose(np.median(res.stderr, 0), spread, rtol=0.2)
    lam_spread = res.latent[0][:, 1].std()
    assert abs(np.median(res.latent_stderr[0][:, 1]) / lam_spread - 1) < 0.2
    # ~68 % of the +-1 sigma intervals cover the truth.
    coverage = np.mean(np.abs(res.counts - TRUE_A) <= res.stderr, 0)
    assert np.all((coverage > 0.58) & (coverage < 0.78)), coverage


def test_batched_equals_looped(sources, draws):
    model, background, _, _ = sources
    y, res = draws
    for i in (0, 7):
        single = unmix(y[i], model, background=background)
        np.testing.assert_allclose(single.counts, res.counts[i], rtol=1e-4)
        np.testing.assert_allclose(single.latent[0], res.latent[0][i], atol=1e-5)
    chunked = unmix(y[:10], model, background=background, chunk_size=4)
    np.testing.assert_allclose(chunked.counts, res.counts[:10], rtol=1e-4)


def test_semsun_beats_wrong_fixed_signatures(sources, draws):
    model, background, _, _ = sources
    y, res = draws
    _, wrong = mixture(model, background, np.array([1.0, 0.0]), TRUE_A)
    biased = fixed(y, wrong[1:], background=background)
    err_semsun = np.abs(np.median(res.counts, 0) / TRUE_A - 1)
    err_fixed = np.abs(np.median(biased.counts, 0) / TRUE_A - 1)
    assert np.all(err_semsun < 0.01)
    assert np.max(err_fixed) > 5 * np.max(err_semsun)


def test_nmf_baseline_keeps_background_and_unit_sums(sources, draws):
    model, background, _, _ = sources
    y, _ = draws
    _, wrong = mixture(model, background, np.array([1.0, 0.0]), TRUE_A)
    res = nmf(y[:5], wrong[1:], background=background, max_iter=200)
    np.testing.assert_allclose(res.signatures[:, :, 0], np.broadcast_to(background, (5, M)), rtol=1e-5)
    np.testing.assert_allclose(res.signatures.sum(1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(res.counts.sum(1), y[:5].sum(1), rtol=1e-3)


def test_zero_counts_give_zeros_not_nan(sources):
    model, background, _, _ = sources
    res = unmix(np.zeros(M), model, background=background)
    np.testing.assert_array_equal(res.counts, 0.0)
    assert np.all(np.isfinite(res.latent[0])) and not np.any(np.isnan(res.stderr))
    assert not np.any(np.isnan(fixed(np.zeros(M), np.ones((1, M)), background=background).counts))


def test_individual_models_semsun_i(sources):
    """One IAE per source (SEMSUN-i): a model may cover fewer channels than the spectrum."""
    model, background, joint, s = sources
    m0 = iae.train(joint[s.train, 0], joint[s.anchors, 0], epochs=300, progress=False)
    m1 = iae.train(joint[s.train, 1, :80], joint[s.anchors, 1, :80], epochs=300, progress=False)
    a = np.array([2e4, 3e4, 2e4])
    s0 = m0.decode(np.array([0.3, 0.7], np.float32))
    s1 = np.r_[m1.decode(np.array([0.6, 0.4], np.float32)), np.zeros(M - 80)]
    rows = np.stack([background, s0 / s0.sum(), s1 / s1.sum()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = unmix(a @ rows, [m0, m1], background=background, names=["A", "B"])
    assert res.names == ("background", "A", "B")
    np.testing.assert_allclose(res.counts, a, rtol=3e-3)
    np.testing.assert_allclose(res.latent[0], [0.3, 0.7], atol=3e-3)
    np.testing.assert_allclose(res.latent[1], [0.6, 0.4], atol=3e-3)
    # Several models: by default every start (latent0, the middle, each anchor: 4 here), the
    # lowest deviance of the separate solves (same compiled program).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        separate = [unmix(a @ rows, [m0, m1], background=background, n_starts=n) for n in (1, 4)]
    np.testing.assert_array_equal(res.counts, separate[1].counts)
    assert res.loss <= separate[0].loss


def test_bad_input_is_named(sources):
    model, background, _, _ = sources
    with pytest.raises(ValueError, match="counts must be non-negative"):
        unmix(-np.ones(M), model, background=background)
    bad = np.ones(M)
    bad[3] = np.nan
    with pytest.raises(ValueError, match="counts contains 1 non-finite"):
        unmix(bad, model, background=background)
    with pytest.raises(ValueError, match="background has 90 channels but counts have 96"):
        unmix(np.ones(M), model, background=background[:90])
    with pytest.raises(ValueError, match="joint model models\\[0\\] has 96 channels, counts have 100"):
        unmix(np.ones(100), model)
    with pytest.raises(ValueError, match="counts is empty"):
        unmix(np.ones((0, M)), model)
    with pytest.warns(UserWarning, match="not all integers"):
        unmix(np.full(M, 10.5), model, background=background)
    with pytest.raises(TypeError, match="models\\[0\\] must be an IAEModel"):
        unmix(np.ones(M), ["not a model"])
    with pytest.raises(ValueError, match="solver must be one of"):
        unmix(np.ones(M), model, solver="slsqp")
    with pytest.raises(ValueError, match="names must have 2 entries"):
        unmix(np.ones(M), model, names=["only one"])


# Every amplitude step, latent step and outer loop appears at least once (the default
# bcd is multiplicative / newton / gauss-seidel); one compiled program per variant. Each
# step alone against the SciPy optimum: tests/test_variants.py.
@pytest.mark.parametrize("variant", [
    {"a_step": "fista", "latent_step": "pg"},
    {"a_step": "newton", "outer": "jacobi", "latent_step": "adam", "latent_iter": 100},
    {"outer": "ipalm", "latent_step": "lbfgsb"},
])
def test_bcd_variants_reach_the_same_optimum(sources, draws, variant):
    model, background, _, _ = sources
    y, res = draws
    out = unmix(y[:3], model, background=background, solver="bcd", **variant)
    # Same deviance as the default solver (a chi-square-like scale: 0.05 is negligible).
    np.testing.assert_allclose(out.loss, res.loss[:3], atol=0.05)
    np.testing.assert_allclose(out.counts, res.counts[:3], rtol=2e-3)


def test_trace_starts_at_the_start_and_ends_at_the_estimate(sources, tmp_path):
    """The recorded deviance is non-increasing and its last value is the reported loss;
    a memory-mapped integer batch gives the results of the same counts in memory."""
    model, background, _, _ = sources
    mu, _ = mixture(model, background, TRUE_LAM, TRUE_A)
    y = np.random.default_rng(3).poisson(mu, size=(6, M)).astype(np.int32)
    for solver in ("newton", "bcd"):
        res = unmix(y, model, background=background, solver=solver, max_iter=40, return_trace=True)
        assert res.trace.shape == (6, 41)
        for tr, n, loss, yi in zip(res.trace, res.n_iter, res.loss, y):
            run = tr[: n + 1]
            assert np.all(np.isfinite(run)) and np.all(np.isnan(tr[n + 1:])), solver
            # Up to float32 rounding of a sum of y log(y / mu) terms: a few ulps of sum(y).
            assert np.all(np.diff(run) <= 4 * np.finfo(np.float32).eps * yi.sum()), (solver, run)
            np.testing.assert_allclose(run[-1], loss, rtol=1e-5, err_msg=solver)
        assert run[0] > run[-1]  # it starts away from the optimum
    path = tmp_path / "counts.u16"
    mm = np.memmap(path, dtype=np.uint16, mode="w+", shape=y.shape)
    mm[:] = y
    mm.flush()
    mapped = unmix(np.memmap(path, dtype=np.uint16, mode="r", shape=y.shape), model, background=background,
                   chunk_size=4)
    # the same counts in memory (one compiled program for both; other dtypes and chunkings:
    # test_counts_of_any_dtype_and_total, tests/test_batching.py)
    whole = unmix(y.astype(np.uint16), model, background=background, chunk_size=4)
    np.testing.assert_array_equal(mapped.counts, whole.counts)
    assert mapped.trace is None and whole.trace is None


def test_float64_when_x64_is_on(sources):
    import jax

    model, background, _, _ = sources
    mu, _ = mixture(model, background, TRUE_LAM, TRUE_A)
    y = np.random.default_rng(4).poisson(mu, size=(2, M))
    single = unmix(y, model, background=background)
    with jax.enable_x64(True):
        double = unmix(y, model, background=background)
    assert single.counts.dtype == np.float32 and double.counts.dtype == np.float64
    # The same optimum, found to the precision of each type: evaluated in float64, the
    # float64 estimate is at least as good.
    np.testing.assert_allclose(double.counts, single.counts, rtol=1e-3)

    def deviance(res):
        mu = np.einsum("bmk,bk->bm", res.signatures.astype(np.float64), res.counts.astype(np.float64))
        return 2 * np.sum(mu - y + np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / mu), 0), -1)

    assert np.all(deviance(double) <= deviance(single) + 1e-6 * y.sum(-1))


def test_several_starts_keep_the_best_of_separate_solves(sources, draws):
    model, background, _, _ = sources
    y = draws[0][:24]
    lo, hi = model.latent_bounds
    # The default (middle) start, then, in closed form for two anchors, the anchor's weights
    # (1, 0) or (0, 1) moved onto the segment {(t, 1 - t)} inside the training bounds.
    t_range = (max(lo[0], 1 - hi[1]), min(hi[0], 1 - lo[1]))
    mid = 0.5 * (lo + hi)
    starts = [mid / mid.sum()] + [np.array([t, 1 - t]) for t in (np.clip(1.0, *t_range), np.clip(0.0, *t_range))]
    separate = [unmix(y, model, background=background, latent0=[x]) for x in starts]
    best = np.argmin(np.stack([r.loss for r in separate]), axis=0)
    res = unmix(y, model, background=background, n_starts=3)
    rows = np.arange(len(y))
    np.testing.assert_array_equal(res.loss, np.stack([r.loss for r in separate])[best, rows])
    np.testing.assert_array_equal(res.counts, np.stack([r.counts for r in separate])[best, rows])
    np.testing.assert_array_equal(res.latent[0], np.stack([r.latent[0] for r in separate])[best, rows])
    with pytest.raises(ValueError, match="n_starts"):
        unmix(y, model, background=background, n_starts=0)


@pytest.fixture(scope="module")
def far_batch(sources):
    """Noiseless mixtures at random weights and counts, every solve started at the far anchor."""
    model, background, _, _ = sources
    rng = np.random.default_rng(11)
    lo, hi = model.latent_bounds
    w = rng.uniform(max(lo[1], 1 - hi[0]) + 0.02, min(hi[1], 1 - lo[0]) - 0.02, 24)
    lam = np.stack([1 - w, w], 1)
    a = rng.uniform(5e3, 5e4, (24, 3))
    mu = np.stack([mixture(model, background, lam_i, a_i)[0] for lam_i, a_i in zip(lam, a)])
    return mu, lam, a


@pytest.mark.parametrize("solver", ["newton", "bcd"])
def test_far_start_noiseless_mixtures_are_found_or_flagged(sources, far_batch, solver):
    """From the far anchor, where multiplicative updates used to drive the model sources to
    zero and stop "converged", every noiseless mixture is recovered, and is flagged converged."""
    model, background, _, _ = sources
    mu, lam, a = far_batch
    far = np.array([1.0, 0.0]) if np.mean(lam[:, 0]) < 0.5 else np.array([0.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = unmix(mu, model, background=background, latent0=[far], solver=solver)
    ok = np.all(np.abs(res.counts / a - 1) < 0.01, 1) & np.all(np.abs(res.latent[0] - lam) < 1e-2, 1)
    assert np.all(ok), (solver, np.flatnonzero(~ok), res.counts[~ok], a[~ok], res.status[~ok])
    assert np.all(res.status == Status.CONVERGED)
    # Without the global start the solver may stall, but it must then say so.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        plain = unmix(mu, model, background=background, latent0=[far], solver=solver, grid_start=False)
    wrong = ~(np.all(np.abs(plain.counts / a - 1) < 0.01, 1))
    assert not np.any(plain.converged[wrong] & (plain.gof_pvalue[wrong] > 1e-3))
    np.testing.assert_allclose(plain.latent[0].sum(1), 1.0, atol=1e-5)


def test_counts_of_any_dtype_and_total(sources):
    """Large integers are converted exactly, huge totals scaled internally: the estimates scale
    with the counts (the Poisson optimum is equivariant), standard errors with their root."""
    model, background, _, _ = sources
    mu, _ = mixture(model, background, TRUE_LAM, TRUE_A)
    y = np.random.default_rng(7).poisson(mu).astype(np.float64)
    base = unmix(y, model, background=background)
    for factor, dtype in ((1e5, np.int64), (1e5, np.uint64), (1e12, np.float64)):
        big = (y * factor).astype(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # float32 resolution at huge totals
            res = unmix(big, model, background=background)
        assert res.status == Status.CONVERGED and np.all(np.isfinite(res.counts)), (factor, dtype)
        np.testing.assert_allclose(res.counts / factor, base.counts, rtol=2e-3, err_msg=str(dtype))
        np.testing.assert_allclose(res.stderr / np.sqrt(factor), base.stderr, rtol=2e-2)
        assert res.loss > 0 and np.isfinite(res.loss)
    with pytest.raises(ValueError, match="enable float64"):
        unmix(y * 1e36, model, background=background)


def test_zero_spectrum_is_converged_and_grad_names_unmix_function(sources):
    import jax

    model, background, _, _ = sources
    res = unmix(np.zeros(M), model, background=background)
    assert res.status == Status.CONVERGED and res.gof_pvalue == 1.0
    mu, _ = mixture(model, background, TRUE_LAM, TRUE_A)
    with pytest.raises(TypeError, match="unmix_function"):
        jax.grad(lambda b: unmix(np.round(mu), model, background=b).counts.sum())(background)


def test_goodness_of_fit_flags_a_missing_source(sources):
    model, background, _, _ = sources
    mu, _ = mixture(model, background, TRUE_LAM, TRUE_A)
    rng = np.random.default_rng(9)
    y = rng.poisson(mu, size=(40, M))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        good = unmix(y, model, background=background, return_signatures=False)
        line = np.zeros(M)
        line[40:43] = [0.25, 0.5, 0.25]
        bad = unmix(rng.poisson(mu + 3000 * line, size=(5, M)), model, background=background)
    assert good.signatures is None
    assert np.mean(good.gof_pvalue < 0.05) < 0.2 and np.all(good.gof_pvalue > 1e-4)
    assert np.all(bad.gof_pvalue < 1e-3)
    with pytest.warns(UserWarning, match="goodness-of-fit"):
        unmix(rng.poisson(mu + 3000 * line), model, background=background)
