"""Tests of SUSHI, the per-pixel baseline and the latent -> parameter maps.

The cubes are generated from the decoders of two small hand-built IAEs (random smooth
decoders, no training: the model is exact and nothing but the solver is tested), 12 x 12
pixels and 40 channels. Every compiled program is shared: one cube shape, one batch of two.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frugal.iae import model as M
from frugal.solvers import Status, sum_to_one_basis
from frugal.xray import (
    PALM,
    EMAmplitudes,
    GaussSeidelSweep,
    InertialSweep,
    JointSweep,
    NewtonAmplitudes,
    ParameterMap,
    SushiResult,
    fit_pixels,
    sushi,
)
from frugal.xray import simulate as xs
from toys import XRAY_CHANNELS, random_iae

E, H, W = XRAY_CHANNELS, 12, 12


def unit_spectra(model, lam):
    """Unit-sum spectra ``(E, H, W)`` of weight maps ``lam`` ``(d, H, W)``."""
    x = model.decode(lam.reshape(lam.shape[0], -1).T)
    return (x / x.sum(-1, keepdims=True)).T.reshape(-1, *lam.shape[1:])


@pytest.fixture(scope="module")
def models(xray_toy_models):
    return xray_toy_models


@pytest.fixture(scope="module")
def truth(models):
    """Smooth weight maps (within the unit simplex's neighbourhood) and amplitude maps."""
    yy, xx = np.mgrid[0:H, 0:W] / (H - 1)
    latent = []
    for mdl in models:
        d = mdl.n_anchors
        t = np.stack([0.5 * np.sin(2.5 * xx + 1.3 * a) * np.cos(1.7 * yy - a) for a in range(d - 1)])
        latent.append((1.0 / d + np.einsum("dk,khw->dhw", np.asarray(sum_to_one_basis(d)), t)).astype(np.float32))
    amplitude = np.stack([200 + 300 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.4) ** 2) / 0.15),
                          80 + 150 * xx * yy]).astype(np.float32)
    expected = sum(amplitude[c] * unit_spectra(m, latent[c]) for c, m in enumerate(models))
    return amplitude, latent, expected.astype(np.float32)


@pytest.fixture(scope="module")
def noiseless(models, truth):
    cube = truth[2]
    # Without noise the MAD of the per-pixel maps measures structure, not noise: a small k.
    return fit_pixels(cube, models), sushi(cube, models, k_mad=0.1)


@pytest.fixture(scope="module")
def faint(models, truth):
    """A Poisson draw of a faint version of the cube (~50-150 counts per pixel)."""
    cube = np.random.default_rng(0).poisson(0.3 * truth[2]).astype(np.float32)
    pixels = fit_pixels(cube, models)
    return cube, pixels, sushi(cube, models, init=pixels)


@pytest.fixture(scope="module")
def exposed(models, truth):
    """A well-exposed Poisson draw of the cube (~300-700 counts per pixel) and its default
    per-pixel fit."""
    cube = np.random.default_rng(2).poisson(truth[2]).astype(np.float32)
    return cube, fit_pixels(cube, models)


def rms(a, b):
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


# --------------------------------------------------------------------------- exact model


def test_noiseless_cube_is_recovered(noiseless, truth):
    amplitude, latent, expected = truth
    pixels, reg = noiseless
    np.testing.assert_allclose(pixels.amplitude, amplitude, rtol=2e-3)
    for c in range(2):
        np.testing.assert_allclose(pixels.latent[c], latent[c], atol=5e-3)
    np.testing.assert_allclose(pixels.model, expected, rtol=1e-3, atol=1e-3)
    # SUSHI shrinks the (small) starlet details of the true maps too: close, not exact.
    np.testing.assert_allclose(reg.amplitude, amplitude, rtol=1e-2)
    for c in range(2):
        assert np.max(np.abs(reg.latent[c] - latent[c])) < 0.02
    assert isinstance(reg, SushiResult) and reg.names == ("component0", "component1")
    assert reg.n_iter_init == pixels.n_iter and reg.n_iter >= 1
    assert pixels.components.shape == (2, E, H, W) and reg.model.shape == (E, H, W)
    np.testing.assert_allclose(reg.components.sum(0), reg.model, rtol=1e-5, atol=1e-5)
    assert all(np.allclose(lam.sum(0), 1.0, atol=1e-5) for lam in reg.latent)


def test_objective_trace_is_non_increasing(noiseless, faint):
    _, pixels, reg = faint
    for trace in (noiseless[0].objective, noiseless[1].objective, pixels.objective, reg.objective):
        assert len(trace) >= 2 and np.all(np.isfinite(trace))
        assert np.all(np.diff(trace) <= 1e-6 * np.abs(trace[:-1]) + 1e-3), np.diff(trace).max()
    # the regularised objective really is minimised, not merely kept
    assert reg.objective[-1] < reg.objective[0] - 1.0
    assert reg.status in (Status.CONVERGED, Status.STALLED) and reg.converged == (reg.status == Status.CONVERGED)


# --------------------------------------------------------------------------- solver variants


def _assert_monotone(trace):
    assert len(trace) >= 2 and np.all(np.isfinite(trace))
    assert np.all(np.diff(trace) <= 1e-6 * np.abs(trace[:-1]) + 1e-3), np.diff(trace).max()


# With the default (ipalm, newton) of the fixtures, every outer loop and every amplitude step
# runs, each step under two loops (one compiled program per variant).
@pytest.mark.parametrize("outer, amp_step", [("joint", "newton"), ("gauss-seidel", "multiplicative"),
                                             ("ipalm", "multiplicative")])
def test_solver_variants_reach_the_default_objective(models, exposed, faint, outer, amp_step):
    """Every variant (the default, ipalm / newton, is the fixtures') decreases the objective
    monotonically and reaches the default's: the per-pixel problems are the same, and SUSHI
    started from the same per-pixel fit has the same thresholds, hence the same objective.
    One compiled program per variant serves both runs."""
    cube, default = exposed
    pixels = fit_pixels(cube, models, outer=outer, amp_step=amp_step)
    faint_cube, faint_pixels, faint_default = faint
    reg = sushi(faint_cube, models, init=faint_pixels, outer=outer, amp_step=amp_step)
    for res in (pixels, reg):
        _assert_monotone(res.objective)
    # the per-pixel fit passes the optimality test, except with EM amplitude steps after a
    # latent-only data step (slow: it stalls ~0.3 standard errors away, and says so);
    # SUSHI's loop ends on its stopping rule
    if (outer, amp_step) == ("gauss-seidel", "multiplicative"):
        assert pixels.status in (Status.CONVERGED, Status.STALLED)
    else:
        assert pixels.converged and pixels.status == Status.CONVERGED and pixels.residual <= 0.1
    assert pixels.converged == (pixels.status == Status.CONVERGED)
    assert reg.status in (Status.CONVERGED, Status.STALLED)
    # float32 sums of ~3000 per-pixel terms and the stopping rule (tol 1e-5): ~3e-4 apart
    assert abs(pixels.objective[-1] - default.objective[-1]) <= 1e-3 * default.objective[-1]
    for a, b in zip(reg.thresholds, faint_default.thresholds):
        np.testing.assert_array_equal(a, b)
    assert abs(reg.objective[-1] - faint_default.objective[-1]) <= 3e-3 * faint_default.objective[-1]
    assert reg.objective[-1] < reg.objective[0] - 1.0


@pytest.mark.parametrize("loss", ["poisson", "gaussian"])
def test_multiplicative_amplitude_sweeps_reach_the_newton_optimum(loss):
    """With the spectra fixed the amplitude problem is convex: the EM (Poisson) or weighted
    least-squares multiplicative updates decrease every pixel's data term and reach the
    optimum of the Newton sweeps, a zero start included (the restart)."""
    from frugal.xray.solver.amplitudes import amplitude_sweep
    from frugal.xray.solver.cube import Data, Spec, State, mixture, pixel_loss
    from frugal.xray.solver.variants import as_palm

    rng = np.random.default_rng(4)
    n_pix, n_chan = 50, E
    spectra = rng.gamma(2.0, size=(2, n_pix, n_chan)).astype(np.float32)
    spectra /= spectra.sum(-1, keepdims=True)
    s_true = rng.uniform(50, 500, (2, n_pix)).astype(np.float32)
    s_true[1, :10] = 0.0  # the optimum of some pixels is on the boundary
    bkg = np.full((n_pix, n_chan), 0.5, np.float32)
    y = rng.poisson(bkg + np.einsum("ca,cae->ae", s_true, spectra)).astype(np.float32)
    data = Data(jnp.asarray(y), jnp.asarray(bkg), jnp.asarray(1.0 / np.maximum(y, 1.0)),
                jnp.ones(n_pix, jnp.float32), jnp.arange(n_pix, dtype=jnp.int32))
    s0 = np.full((2, n_pix), 100.0, np.float32)
    s0[0, :5] = 0.0
    state = State((), jnp.asarray(s0), jnp.asarray(spectra), jnp.zeros(n_pix), jnp.zeros((), jnp.int32))

    def run(amp_step, n):
        spec = Spec(manifolds=(None, None), shape=(1, n_pix), loss=loss, n_scales=1, trace_len=1, tol=0.0,
                    solver=as_palm(amp_step=amp_step))
        sweep = amplitude_sweep(spec)

        def body(st, _):
            st = sweep(st, data)
            return st, pixel_loss(loss, data, mixture(data, st.s, st.spectra))

        return jax.jit(lambda st: jax.lax.scan(body, st, None, length=n))(state)

    (em, em_trace), (_, newton_trace) = run("multiplicative", 2000), run("newton", 200)
    ell0 = pixel_loss(loss, data, mixture(data, state.s, state.spectra))
    em_trace = np.concatenate([np.asarray(ell0)[None], np.asarray(em_trace)])
    assert np.all(np.diff(em_trace, axis=0) <= 1e-6 * np.abs(em_trace[:-1]) + 1e-4)
    best = np.asarray(newton_trace[-1])
    np.testing.assert_allclose(em_trace[-1], best, rtol=2e-4, atol=2e-3)
    assert np.all(np.asarray(em.s)[0, :5] > 0)  # restarted from 0


# --------------------------------------------------------------------------- one step, independently


def _pixel_step(models, y, amp, lams):
    """One sweep of the per-pixel loop for one pixel, written independently with jax.grad /
    jax.jacfwd: Levenberg-Marquardt on z = (s, t) (Marquardt damping 1e-3, latent step
    clipped at 0.25), then the amplitude Newton steps damped by the Newton decrement (or the
    EM update, if better, more than 3 standard errors from the optimum)."""
    refs = [jnp.full(m.n_anchors, 1.0 / m.n_anchors) for m in models]
    bases = [sum_to_one_basis(m.n_anchors) for m in models]

    def spectrum(c, t):
        x = jnp.maximum(M.decode(models[c].config, models[c].state, refs[c] + bases[c] @ t)[0], 0.0)
        return x / jnp.sum(x)

    def mu(s, ts):
        return s[0] * spectrum(0, ts[0]) + s[1] * spectrum(1, ts[1])

    def nll(z):
        m = mu(z[:2], [z[2:4], z[4:5]])
        return jnp.sum(m - jnp.where(y > 0, y * jnp.log(m), 0.0))

    z0 = jnp.concatenate([amp, *[(lam - r) @ v for lam, r, v in zip(lams, refs, bases)]])
    jac = jax.jacfwd(lambda z: mu(z[:2], [z[2:4], z[4:5]]))(z0)
    fisher = jac.T @ (jac / mu(z0[:2], [z0[2:4], z0[4:5]])[:, None])
    delta = -jnp.linalg.solve(fisher + 1e-3 * jnp.diag(jnp.diag(fisher)), jax.grad(nll)(z0))
    # the reference holds where the step, before the trust region, crosses no bound (s >= 0,
    # weights in [-0.5, 1.5]; else the library solves the bounded subproblem): the caller
    # keeps those pixels
    lam1 = jnp.concatenate([r + v @ t for r, v, t in zip(refs, bases, [(z0 + delta)[2:4], (z0 + delta)[4:5]])])
    feasible = jnp.all(z0[:2] + delta[:2] >= 0) & jnp.all(lam1 >= -0.5) & jnp.all(lam1 <= 1.5)
    # the trust region: max-norm 0.25 on the latent steps, one factor for both blocks unless
    # one block's factor is over 20 times smaller than the other's (then clipped alone)
    f = [jnp.minimum(1.0, 0.25 / jnp.max(jnp.abs(delta[sl]))) for sl in (slice(2, 4), slice(4, 5))]
    common = jnp.minimum(f[0], f[1])
    alone = [f[0] * 20 < f[1], f[1] * 20 < f[0]]
    scale = jnp.concatenate([jnp.full(2, jnp.where(alone[0], f[1], jnp.where(alone[1], f[0], common))),
                             jnp.full(2, jnp.where(alone[0], f[0], common)),
                             jnp.full(1, jnp.where(alone[1], f[1], common))])
    delta = delta * scale
    z1 = jnp.where(nll(z0 + delta) <= nll(z0), z0 + delta, z0)
    s, ts = z1[:2], [z1[2:4], z1[4:5]]
    for c in range(2):  # Gauss-Seidel amplitude steps, damped by the Newton decrement
        m, sc = mu(s, ts), spectrum(c, ts[c])
        g, h = jnp.sum(sc * (1 - y / m)), jnp.sum(sc**2 * y / m**2)
        trial = s.at[c].set(jnp.maximum(s[c] - g / h / (1 + jnp.abs(g) / jnp.sqrt(h)), 0.0))
        # more than 3 standard errors from the Newton optimum: the EM update competes
        em = s.at[c].set(s[c] * jnp.sum(sc * y / m))
        use_em = (jnp.abs(g) / jnp.sqrt(h) > 3) & (trial[c] > 0) & (
            nll(jnp.concatenate([em, *ts])) < nll(jnp.concatenate([trial, *ts])))
        trial = jnp.where(use_em, em, trial)
        s = jnp.where(nll(jnp.concatenate([trial, *ts])) <= nll(jnp.concatenate([s, *ts])), trial, s)
    return s, [r + v @ t for r, v, t in zip(refs, bases, ts)], feasible


def test_one_sweep_without_regularisation_is_the_independent_per_pixel_step(models, truth):
    amplitude, latent, expected = truth
    cube = np.random.default_rng(2).poisson(expected).astype(np.float32)
    start_amp = 1.1 * amplitude
    start_lat = [lam + 0.04 * np.asarray(sum_to_one_basis(lam.shape[0]))[:, :1, None] for lam in latent]
    # The reference is the joint Levenberg-Marquardt step of outer="joint".
    one = fit_pixels(cube, models, init=(start_amp, start_lat), max_iter=1, outer="joint")
    assert one.n_iter == 1
    # the same sweep given as a value: the same program, the same numbers
    by_value = fit_pixels(cube, models, init=(start_amp, start_lat), max_iter=1, solver=PALM(outer=JointSweep()))
    np.testing.assert_array_equal(by_value.amplitude, one.amplitude)
    for a, b in zip(by_value.latent, one.latent):
        np.testing.assert_array_equal(a, b)
    ii, jj = np.array([0, 3, 6, 11, 9]), np.array([0, 7, 6, 2, 10])
    reference = jax.jit(jax.vmap(lambda y, a, l0, l1: _pixel_step(models, y, a, [l0, l1])))
    s, lams, feasible = reference(cube[:, ii, jj].T, start_amp[:, ii, jj].T, start_lat[0][:, ii, jj].T,
                                  start_lat[1][:, ii, jj].T)
    # where no bound binds, the bounded step is this one (at least 3 of the 5 pixels)
    keep = np.asarray(feasible)
    assert keep.sum() >= 3, keep
    ii, jj, s, lams = ii[keep], jj[keep], np.asarray(s)[keep], [np.asarray(x)[keep] for x in lams]
    # float32 tolerance relative to the pixel's total (a faint component is ill-conditioned)
    err = np.abs(one.amplitude[:, ii, jj].T - s)
    assert np.all(err <= 2e-4 * s.sum(1, keepdims=True)), err / s.sum(1, keepdims=True)
    for c in range(2):
        np.testing.assert_allclose(one.latent[c][:, ii, jj].T, lams[c], atol=2e-5)
    # SUSHI without regularisation takes the same step (its prox is then the identity, up to
    # the rounding of the starlet's reconstruction, which may flip an amplitude step's test)
    free = sushi(cube, models, init=(start_amp, start_lat), k_mad=0.0, max_iter=1, outer="joint")
    np.testing.assert_allclose(free.amplitude, one.amplitude, rtol=1e-3)
    for c in range(2):
        np.testing.assert_allclose(free.latent[c], one.latent[c], atol=1e-5)
    assert all(np.all(t == 0) for t in free.thresholds)


# --------------------------------------------------------------------------- noise, regularisation


def test_sushi_beats_the_per_pixel_fit_on_a_faint_cube(truth, faint):
    _, latent, _ = truth
    _, pixels, reg = faint
    for c in range(2):
        err_pix, err_reg = rms(pixels.latent[c], latent[c]), rms(reg.latent[c], latent[c])
        assert err_reg < 0.6 * err_pix, (c, err_reg, err_pix)
    assert all(np.all(t > 0) for t in reg.thresholds)
    assert reg.n_iter_init == 0


def test_a_batch_of_cubes_is_solved_as_each_alone(models, truth, faint):
    cube, pixels, _ = faint
    other = np.random.default_rng(5).poisson(truth[2]).astype(np.float32)
    batch = np.stack([cube, other])
    init = (np.stack([pixels.amplitude] * 2), [np.stack([lam] * 2) for lam in pixels.latent])
    for fn in (fit_pixels, sushi):
        both = fn(batch, models, max_iter=2, init=init)
        assert both.amplitude.shape == (2, 2, H, W) and both.latent[0].shape == (2, 3, H, W)
        assert both.objective.shape[0] == 2 and both.n_iter.shape == (2,)
        for b in range(2):
            alone = fn(batch[b], models, max_iter=2, init=(init[0][b], [lam[b] for lam in init[1]]))
            # the batched program sums in another order: float32 differences, which may flip
            # a step's acceptance test in a pixel
            np.testing.assert_allclose(both.amplitude[b], alone.amplitude, rtol=5e-3, atol=1e-2)
            for c in range(2):
                np.testing.assert_allclose(both.latent[c][b], alone.latent[c], atol=5e-3)
            np.testing.assert_allclose(both.objective[b][: alone.n_iter + 1], alone.objective, rtol=1e-4)


def test_parameter_maps(models, truth, faint):
    """A labelled 'family' whose parameters are known functions of the weights: the fitted
    map is exact on it, SUSHI's parameter maps beat the per-pixel ones."""
    _, latent, _ = truth
    rng = np.random.default_rng(1)
    maps = []
    for c, mdl in enumerate(models):
        d = mdl.n_anchors
        lam = rng.uniform(-0.3, 1.3, (60, d))
        lam[:, -1] = 1 - lam[:, :-1].sum(1)
        t = (lam - 1.0 / d) @ np.asarray(sum_to_one_basis(d))
        if c == 0:
            params = np.stack([np.exp(0.5 + 0.8 * t[:, 0] - 0.3 * t[:, 1] ** 2), 0.01 * t[:, 1]], 1)
            pm = ParameterMap.fit(mdl, None, params, ("kT", "z"), latent=lam, degree=2, log=("kT",))
        else:
            params = 2.5 + t[:, :1] - 0.2 * t[:, :1] ** 3
            pm = ParameterMap.fit(mdl, None, params, ("photon_index",), latent=lam)
        assert max(pm.residual.values()) < 1e-6 and max(pm.loo_residual.values()) < 1e-6
        np.testing.assert_allclose(np.stack(list(pm(lam, axis=1).values()), 1), params, rtol=1e-6, atol=1e-9)
        maps.append(pm)
    true_params = {**maps[0](latent[0]), **maps[1](latent[1])}
    cube, pixels, reg = faint
    init = (reg.amplitude, reg.latent)
    with_params = sushi(cube, models, param_maps=maps, init=init, max_iter=1)
    assert set(with_params.params) == {"kT", "z", "photon_index"}
    np.testing.assert_allclose(with_params.params["kT"], maps[0](with_params.latent[0])["kT"], rtol=1e-6)
    pix_params, reg_params = {**maps[0](pixels.latent[0]), **maps[1](pixels.latent[1])}, with_params.params
    for name in ("kT", "z", "photon_index"):
        assert rms(reg_params[name], true_params[name]) < rms(pix_params[name], true_params[name])
    # predictions stay within the labelled range; a name shared by two components is prefixed
    assert np.all(pix_params["kT"] <= maps[0].upper[0] + 1e-6)
    other = ParameterMap.fit(models[1], None, 1.0 + lam[:, :1], ("kT",), latent=lam)
    shared = fit_pixels(cube, models, param_maps=[maps[0], other], max_iter=1, init=init)
    assert set(shared.params) == {"component0:kT", "z", "component1:kT"}


# --------------------------------------------------------------------------- masks, empty pixels


def test_empty_and_masked_pixels(models, truth):
    cube = truth[2].copy()
    cube[:, 2:5, 3:6] = 0.0  # no counts
    mask = np.ones((H, W), bool)
    mask[:, -2:] = False  # outside the source
    for fn in (fit_pixels, sushi):
        res = fn(cube, models, mask=mask, max_iter=5)
        for arr in (res.amplitude, res.components, res.model, *res.latent):
            assert np.all(np.isfinite(arr))
        assert np.all(res.amplitude[:, 2:5, 3:6] == 0) and np.all(res.amplitude[:, :, -2:] == 0)
        assert np.all(res.components[:, :, :, -2:] == 0)
        for c, lam in enumerate(res.latent):
            d = lam.shape[0]
            np.testing.assert_allclose(lam[:, :, -2:], 1.0 / d, atol=1e-6)  # the default weights
        assert np.all(np.isfinite(res.objective))


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise(models, truth):
    cube = truth[2]
    with pytest.raises(ValueError, match="channels last"):
        sushi(np.moveaxis(cube, 0, -1), models)
    with pytest.raises(ValueError, match="cube has 39 channels"):
        sushi(cube[:-1], models)
    with pytest.raises(ValueError, match="models\\[1\\] describes 30 channels"):
        fit_pixels(cube, [models[0], random_iae(2, np.ones(30), 2, n_channels=30)])
    bad = cube.copy()
    bad[0, 0, 0] = -1
    with pytest.raises(ValueError, match="cube must be non-negative"):
        sushi(bad, models)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="cube contains 1 non-finite"):
        fit_pixels(bad, models)
    with pytest.raises(ValueError, match="cube must have 3 or 4 dimension"):
        sushi(cube[0], models)
    with pytest.raises(ValueError, match="background must have shape"):
        sushi(cube, models, background=np.ones((H, W, E)))
    with pytest.raises(ValueError, match="background must be non-negative"):
        sushi(cube, models, background=-np.ones(E))
    with pytest.raises(ValueError, match="mask must have shape"):
        sushi(cube, models, mask=np.ones((W + 1, H), bool))
    with pytest.raises(ValueError, match="loss must be one of"):
        sushi(cube, models, loss="cash")
    with pytest.raises(ValueError, match="k_mad must be >= 0"):
        sushi(cube, models, k_mad=-1)
    with pytest.raises(ValueError, match="init.amplitude must have shape"):
        sushi(cube, models, init=(np.ones((3, H, W)), truth[1]))
    with pytest.raises(ValueError, match="param_maps must have one entry"):
        fit_pixels(cube, models, param_maps=[None])
    with pytest.raises(TypeError, match="models\\[0\\] must be an IAEModel"):
        sushi(cube, ["thermal"])
    with pytest.raises(ValueError, match="names must have one entry"):
        sushi(cube, models, names=("thermal",))
    with pytest.raises(ValueError, match="outer must be one of 'joint', 'gauss-seidel', 'ipalm'"):
        sushi(cube, models, outer="palm")
    with pytest.raises(ValueError, match="amp_step must be one of 'newton', 'multiplicative'"):
        fit_pixels(cube, models, amp_step="em")
    with pytest.raises(ValueError, match="amp_steps must be >= 1"):
        fit_pixels(cube, models, outer="gauss-seidel", amp_steps=0)
    with pytest.raises(ValueError, match="gtol must be >= 0"):
        fit_pixels(cube, models, gtol=-1.0)
    with pytest.raises(ValueError, match="outer sets the pieces of the default solver; .* carries its own"):
        sushi(cube, models, solver=PALM(), outer="joint")
    with pytest.raises(TypeError, match="solver must be None or a PALM"):
        fit_pixels(cube, models, solver="ipalm")
    with pytest.raises(TypeError, match="PALM.outer must be an instance of Sweep"):
        PALM(outer="ipalm")
    with pytest.raises(ValueError, match="amp_steps must be >= 1"):
        PALM(outer=GaussSeidelSweep(), amp_steps=0)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        InertialSweep(beta=1.0)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        sushi(cube, models, chunk_size=0)
    with pytest.raises(ValueError, match="devices must be"):
        fit_pixels(cube, models, devices="gpu")


def test_solver_values_and_their_shorthands_are_one_value():
    from frugal.xray.solver.variants import as_palm

    assert as_palm() == PALM() == PALM(InertialSweep(), NewtonAmplitudes(), 1)
    assert as_palm(outer="joint", amp_step="multiplicative", amp_steps=2) == \
        PALM(outer=JointSweep(), amplitude=EMAmplitudes(), amp_steps=2)
    assert as_palm(outer="gauss-seidel").outer == GaussSeidelSweep()
    assert len({PALM(), as_palm(), PALM(outer=InertialSweep(beta=0.5))}) == 2


def test_parameter_map_checks(models):
    lam = np.random.default_rng(0).dirichlet(np.ones(3), 30)
    with pytest.raises(ValueError, match="names must have one entry"):
        ParameterMap.fit(models[0], None, np.ones((30, 2)), ("kT",), latent=lam)
    with pytest.raises(ValueError, match="latent has 30 rows but params has 20"):
        ParameterMap.fit(models[0], None, np.ones((20, 1)), latent=lam)
    with pytest.raises(ValueError, match="must be positive"):
        ParameterMap.fit(models[0], None, -np.ones((30, 1)), ("kT",), latent=lam, log=("kT",))
    with pytest.raises(ValueError, match="more than the 30 labelled"):
        ParameterMap.fit(models[0], None, np.ones((30, 1)), latent=lam, degree=7)
    pm = ParameterMap.fit(models[0], None, lam[:, :1], ("a",), latent=lam, degree=1)
    with pytest.raises(ValueError, match="latent must hold the 3 weights on axis 0"):
        pm(np.ones((2, 5, 5)))


# --------------------------------------------------------------------------- command line


def test_cli_unmix_writes_fits_maps_and_a_panel(models, faint, tmp_path, capsys):
    pytest.importorskip("astropy")
    pytest.importorskip("matplotlib")
    import dataclasses
    import json

    import frugal.iae as iae
    from frugal.xray import read_maps, write_cube
    from frugal.cli import main

    energies = xs.energies(E)
    rng = np.random.default_rng(3)
    paths = []
    for name, mdl in zip(("thermal", "synchrotron"), models):
        lam = rng.dirichlet(np.ones(mdl.n_anchors), 40)
        pm = ParameterMap.fit(mdl, None, 2.0 + lam[:, :1], ("kT" if name == "thermal" else "photon_index",),
                              latent=lam, degree=1)
        info = {"xray": {"name": name, "energies": energies.tolist(), "param_map": pm.to_dict()}}
        paths.append(str(tmp_path / f"{name}.frugal"))
        iae.save(dataclasses.replace(mdl, info=info), paths[-1])
    write_cube(tmp_path / "cube.fits", faint[0].astype(np.int32), energies)
    argv = ["xray", "unmix", str(tmp_path / "cube.fits"), "-m", paths[0], "-m", paths[1], "--max-iter", "3"]
    assert main(argv + ["-o", str(tmp_path / "out")]) == 0
    # the stop reason and the goodness of fit are printed and saved (the hand-built models'
    # anchor codes are re-encoded by save / load: other models than the cube's, a poor fit)
    out = capsys.readouterr().out
    assert "status: " in out and "goodness of fit: deviance" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] in ("converged", "max_iter", "stalled") and 0 <= summary["gof_pvalue"] <= 1
    assert summary["converged"] == (summary["status"] == "converged")
    maps = read_maps(tmp_path / "out" / "maps.fits")
    assert {"thermal_amplitude", "synchrotron_amplitude", "kT", "photon_index"} <= set(maps)
    assert maps["kT"].shape == (H, W) and (tmp_path / "out" / "maps.png").exists()
    # a cube on another energy grid than the models': a clear error, exit status 2
    write_cube(tmp_path / "shifted.fits", faint[0].astype(np.int32), 1.1 * energies)
    argv[2] = str(tmp_path / "shifted.fits")
    assert main(argv + ["-o", str(tmp_path / "out2"), "--no-plot"]) == 2
    assert "another energy grid" in capsys.readouterr().err


# --------------------------------------------------------------------------- honest answers


def _independent_amplitude_residual(models, cube, res, ii, jj):
    """|g| / sqrt(F) of each amplitude (the scaled projected gradient on s >= 0), with
    jax.grad of an independent Poisson NLL and the Fisher information sum S^2 / mu."""
    def spectrum(c, lam):
        x = jnp.maximum(M.decode(models[c].config, models[c].state, lam)[0], 0.0)
        return x / jnp.sum(x)

    out = []
    for i, j in zip(ii, jj):
        y = jnp.asarray(cube[:, i, j])
        spectra = [spectrum(c, jnp.asarray(res.latent[c][:, i, j])) for c in range(len(models))]

        def nll(s):
            mu = sum(s[c] * spectra[c] for c in range(len(models)))
            return jnp.sum(mu - jnp.where(y > 0, y * jnp.log(mu), 0.0))

        s = jnp.asarray(res.amplitude[:, i, j])
        g = jax.grad(nll)(s)
        mu = sum(s[c] * spectra[c] for c in range(len(models)))
        fisher = jnp.asarray([jnp.sum(sp**2 / mu) for sp in spectra])
        trial = jnp.maximum(s - g / fisher, 0.0)
        out.append(np.asarray(jnp.sqrt(fisher) * jnp.abs(s - trial)))
    return np.array(out)


def test_status_converged_means_the_optimality_test_passed(models, exposed, faint, noiseless):
    cube, pixels = exposed
    for res in (pixels, faint[1], *noiseless):
        assert res.status == Status.CONVERGED and res.converged
        assert res.residual <= 0.1
        np.testing.assert_allclose(res.residual, res.pixel_residual.max(), rtol=1e-6)
        assert np.all(res.pixel_status == Status.CONVERGED)
    # the amplitudes' part of the test, written independently, at a few pixels
    ii, jj = np.array([0, 3, 6, 11, 9]), np.array([0, 7, 6, 2, 10])
    r = _independent_amplitude_residual(models, cube, pixels, ii, jj)
    assert np.all(r <= 0.1), r
    assert np.all(r <= pixels.pixel_residual[ii, jj][:, None] + 1e-3)


def test_max_iter_is_not_convergence(models, exposed, faint):
    cube, pixels = exposed
    start = (1.3 * pixels.amplitude, pixels.latent)
    one = fit_pixels(cube, models, init=start, max_iter=1)
    assert one.n_iter == 1 and one.status == Status.MAX_ITER and not one.converged
    assert one.residual > 0.1 and np.any(one.pixel_status == Status.MAX_ITER)
    faint_cube, faint_pixels, _ = faint
    reg = sushi(faint_cube, models, init=faint_pixels, max_iter=1)
    assert reg.n_iter == 1 and reg.status == Status.MAX_ITER and not reg.converged


def test_a_hot_pixel_is_fitted_or_flagged_never_silently_wrong(models, exposed):
    """One channel of one pixel holds 1e9 counts: the amplitude must be the pixel's best fit
    (the Poisson fit of a free amplitude puts the model's total at the data's) and the fit
    flagged (no spectrum of the models is a spike): formerly total ~1e-6 of it, converged."""
    cube, _ = exposed
    hot = cube.copy()
    hot[20, 5, 5] = 1e9
    res = fit_pixels(hot, models)
    total, model_total = hot[:, 5, 5].sum(), res.model[:, 5, 5].sum()
    assert abs(model_total - total) <= 1e-3 * total, (model_total, total)
    assert res.pixel_gof_pvalue[5, 5] < 1e-3 and res.gof_pvalue < 1e-3
    assert not (res.converged and res.gof_pvalue >= 1e-3)
    # the other pixels are not harmed: right and well fitted
    others = np.ones((H, W), bool)
    others[5, 5] = False
    assert np.median(res.pixel_gof_pvalue[others]) > 0.1
    np.testing.assert_allclose(res.model[:, others].sum(0), hot[:, others].sum(0), rtol=1e-3)


def test_non_finite_is_never_converged(models, faint):
    cube, pixels, _ = faint
    broken = random_iae(3, np.ones(E), 0)
    kernel = broken.state.params["decoder"]["params"]["output"]["kernel"]
    broken.state.params["decoder"]["params"]["output"]["kernel"] = kernel.at[0, 0].set(jnp.nan)
    init = (pixels.amplitude, pixels.latent)
    for fn in (fit_pixels, sushi):
        res = fn(cube, [broken, models[1]], init=init, max_iter=3)
        assert res.status == Status.NON_FINITE and not res.converged
        assert not np.any(res.pixel_status == Status.CONVERGED)


def test_goodness_of_fit(models, truth, exposed, faint):
    """p-values are not small on cubes drawn from the models, tiny with a component the
    models lack (an emission line)."""
    cube, pixels = exposed
    _, faint_pixels, reg = faint
    for res in (pixels, faint_pixels, reg):
        assert res.gof_pvalue > 1e-2, res.gof_pvalue
        assert np.median(res.pixel_gof_pvalue) > 0.2
        assert np.mean(res.pixel_gof_pvalue < 1e-3) < 0.03
        assert np.isfinite(res.deviance) and res.deviance > 0
        np.testing.assert_allclose(res.pixel_deviance.sum(), res.deviance, rtol=1e-4)
    line = np.zeros((E, 1, 1), np.float32)
    line[[12, 13], 0, 0] = 0.04
    lined = np.random.default_rng(2).poisson(truth[2] + line * truth[2].sum(0)).astype(np.float32)
    bad = fit_pixels(lined, models, init=(pixels.amplitude, pixels.latent))
    assert bad.gof_pvalue < 1e-6 and np.mean(bad.pixel_gof_pvalue < 1e-3) > 0.5
    bad_reg = sushi(lined, models, init=bad)
    assert bad_reg.gof_pvalue < 1e-6


def test_optimum_on_a_bound_is_reached_and_flagged_converged(models, truth):
    """Where the synchrotron component is absent (amplitude 0: the bound s >= 0 binds), the
    per-pixel fit of a noiseless cube reaches the optimum and passes the optimality test
    (the test's projected gradient on the bound, not a gradient that is not zero there)."""
    amplitude, latent, _ = truth
    amp = amplitude.copy()
    amp[1, :, :4] = 0.0  # no synchrotron in the left third
    cube = sum(amp[c] * unit_spectra(m, latent[c]) for c, m in enumerate(models)).astype(np.float32)
    res = fit_pixels(cube, models)
    assert res.status == Status.CONVERGED and np.all(res.pixel_status == Status.CONVERGED), res.residual
    left = np.s_[:, :4]
    assert np.all(res.amplitude[1][left] <= 1e-3 * amp[0][left]), res.amplitude[1][left].max()
    np.testing.assert_allclose(res.amplitude[0][left], amp[0][left], rtol=2e-3)
    np.testing.assert_allclose(res.latent[0][(slice(None),) + left], latent[0][(slice(None),) + left], atol=5e-3)
    np.testing.assert_allclose(res.amplitude[:, :, 4:], amp[:, :, 4:], rtol=2e-3)
    # the amplitudes' part of the test, written independently, on and off the bound
    ii, jj = np.array([0, 5, 11, 3, 8]), np.array([0, 2, 3, 8, 11])
    r = _independent_amplitude_residual(models, cube, res, ii, jj)
    assert np.all(r <= 0.1), r
