"""Property-based adversarial tests: every result is right or flagged, never silently wrong.

Hypothesis draws whole batches of adversarial inputs (all-zero spectra, one hot channel
of 1e9 counts, noiseless mixtures at 1e12 counts, draws of 1 to 5 counts, noiseless
mixtures at random weights within the training range and random counts, spectra that
match no signature: flat, or one line in a single channel). For every item of a batch:

* it is **right** (noiseless mixtures: counts / amplitudes within 1 % and weights within
  1e-2 of the truth; an all-zero spectrum: zero counts; a draw of a few counts: the
  Poisson fit's sum rule, fitted total = observed total, which any first-order optimal
  Poisson fit satisfies) or **flagged** (``status != CONVERGED`` or ``gof_pvalue < 1e-3``);
  a spectrum matching no signature has no right answer and must be flagged;
* it is never NaN or infinite while flagged converged;
* ``converged == (status == Status.CONVERGED)``.

Each batch has one fixed shape, so one compiled program serves every example of a test.
Examples are derandomized (the same ones on every run) and not shrunk (each costs a solve):
a failure lists every offending item of the batch with what it was.
"""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import frugal.iae as iae
from frugal.gamma import unmix
from frugal.solvers.status import Status
from frugal.xray import fit_pixels
from toys import GAMMA_CHANNELS, XRAY_CHANNELS

# The toy problems of tests/toys.py and the shapes of tests/test_semsun.py and
# tests/test_sushi.py: the compiled programs of unmix and fit_pixels are shared with those
# files (the run's compilation cache, tests/conftest.py) instead of compiled once more.
M = GAMMA_CHANNELS  # channels of the gamma toy problem
B = 16  # spectra per SEMSUN / projection batch (one CPU chunk)
E, H, W = XRAY_CHANNELS, 12, 12  # the X-ray toy cube: 144 pixels
PVALUE = 1e-3  # gof_pvalue below this flags a fit
CONVERGED = int(Status.CONVERGED)

SETTINGS = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large),
)


# --------------------------------------------------------------------------- fixtures


class Quiet(tuple):
    """A fixture value with a short repr (Hypothesis prints the arguments of a failure)."""

    def __repr__(self):
        return f"<{len(self)} fixture objects>"


@pytest.fixture(scope="module")
def sources(gamma_toy):
    """Joint IAE of two toy radionuclides and a background (tests/toys.py)."""
    return Quiet((gamma_toy.model, gamma_toy.background))


@pytest.fixture(scope="module")
def xray_models(xray_toy_models):
    """The two small hand-built IAEs of tests/toys.py (random smooth decoders)."""
    return Quiet(xray_toy_models)


# --------------------------------------------------------------------------- strategies

unit = st.floats(0.0, 1.0, allow_nan=False)
log_counts = st.floats(3.0, 6.0, allow_nan=False).map(lambda e: 10.0**e)  # 1e3 .. 1e6
fraction = st.floats(0.1, 1.0, allow_nan=False)
seed = st.integers(0, 2**31 - 1)


def cases(n_channels, n_sources, low=3.0, high=6.0):
    """One adversarial item: a tuple whose first entry names its kind."""
    counts = st.lists(st.floats(low, high, allow_nan=False).map(lambda e: 10.0**e),
                      min_size=n_sources, max_size=n_sources)
    fractions = st.lists(fraction, min_size=n_sources, max_size=n_sources)
    channel = st.integers(0, n_channels - 1)
    return st.one_of(
        st.tuples(st.just("zero")),
        st.tuples(st.just("hot"), channel),
        st.tuples(st.just("mix"), unit, counts),
        st.tuples(st.just("huge"), unit, fractions),
        st.tuples(st.just("tiny"), unit, fractions, st.integers(1, 5), seed),
        st.tuples(st.just("flat"), st.floats(20.0, 1e5, allow_nan=False)),
        st.tuples(st.just("line"), channel, st.floats(20.0, 1e6, allow_nan=False)),
    )


def batches(n_channels, n_sources, size, **kw):
    """Whole batches of ``size`` items (shapes fixed: one compiled program)."""
    return st.lists(cases(n_channels, n_sources, **kw), min_size=size, max_size=size)


def scaled(total, fractions):
    f = np.asarray(fractions, float)
    return total * f / f.sum()


def draw_counts(total, probabilities, seed_):
    """Integer counts, ``total`` of them, spread over the cells with these probabilities."""
    p = np.clip(np.asarray(probabilities, float).ravel(), 0.0, None)
    return np.random.default_rng(seed_).multinomial(total, p / p.sum()).reshape(np.shape(probabilities))


def training_weights(model, t):
    """Barycentric weights (d = 2) at position ``t`` in [0, 1] of the training range."""
    lo, hi = (np.asarray(b, float) for b in model.latent_bounds)
    w0_lo, w0_hi = max(lo[0], 1.0 - hi[1]), min(hi[0], 1.0 - lo[1])
    w0 = w0_lo + t * (w0_hi - w0_lo)
    return np.array([w0, 1.0 - w0])


# --------------------------------------------------------------------------- checks


def field(result, name, missing):
    """``result.<name>`` as an array; a missing (or None) field is recorded in ``missing``."""
    value = getattr(result, name, None)
    if value is None:
        missing.append(f"{type(result).__name__}.{name} is missing or None: the status / goodness-of-fit "
                       "fields must be filled in for this property")
        return None
    return np.asarray(value)


def judge(items, right, finite, status, converged, pvalue):
    """The violations of the properties, one line per offending item.

    right: per item, True or why not; finite: per item, '' or the non-finite fields;
    status: per item (required); converged: per item or None (not reported per item);
    pvalue: per item or None (then only ``status`` can flag)."""
    bad = []
    for i, item in enumerate(items):
        st_i = int(status[i])
        conv_i = st_i == CONVERGED if converged is None else bool(converged[i])
        p_i = float("nan") if pvalue is None else float(pvalue[i])
        flagged = st_i != CONVERGED or p_i < PVALUE
        where = f"item {i} {item!r}: status={st_i} converged={conv_i} gof_pvalue={p_i:.3g}"
        if conv_i != (st_i == CONVERGED):
            bad.append(f"{where}: converged != (status == CONVERGED)")
        if st_i not in {int(s) for s in Status}:
            bad.append(f"{where}: unknown status code")
        if (conv_i or st_i == CONVERGED) and finite[i]:
            bad.append(f"{where}: NaN/inf in a result flagged converged ({finite[i]})")
        if not (right[i] is True or flagged):
            bad.append(f"{where}: neither right nor flagged ({right[i]})")
    return bad


def report(what, missing, bad):
    assert not missing and not bad, f"{what}:\n" + "\n".join(missing + bad)


def non_finite(**arrays):
    """The names of the arrays holding NaN or inf, with their values ('' if none)."""
    out = []
    for name, a in arrays.items():
        a = np.asarray(a, float)
        if not np.all(np.isfinite(a)):
            out.append(f"{name}={np.array2string(a, precision=4, threshold=8)}")
    return ", ".join(out)


# --------------------------------------------------------------------------- SEMSUN


def semsun_batch(model, background, items):
    """Counts ``(B, M)`` and, per item, the truth ``(counts, weights)`` or None."""
    sig_cache = {}

    def rows_at(lam):
        key = tuple(np.round(lam, 12))
        if key not in sig_cache:
            sig = np.maximum(model.decode(np.asarray(lam, np.float32)), 0).astype(float)
            sig = sig / sig.sum(-1, keepdims=True)
            sig_cache[key] = np.concatenate([background[None], sig], 0)
        return sig_cache[key]

    y, truth = np.zeros((len(items), M)), []
    for i, item in enumerate(items):
        kind, t = item[0], None
        if kind == "hot":
            y[i, item[1]] = 1e9
        elif kind in ("mix", "huge", "tiny"):
            lam = training_weights(model, item[1])
            rows = rows_at(lam)
            if kind == "mix":
                a = np.asarray(item[2], float)
            elif kind == "huge":
                a = scaled(1e12, item[2])
            else:
                a = None
                y[i] = draw_counts(item[3], scaled(1.0, item[2]) @ rows, item[4])
            if a is not None:
                y[i] = a @ rows
                t = (a, lam)
        elif kind == "flat":
            y[i] = np.round(item[1])
        elif kind == "line":
            y[i, item[1]] = np.round(item[2])
        truth.append(t)
    return y, truth


def semsun_right(item, truth, counts, latent, observed):
    kind = item[0]
    if kind == "zero":
        return True if np.all(np.abs(counts) <= 1e-3) else f"zero spectrum, counts {counts}"
    if kind == "tiny":
        total = float(np.sum(counts))
        ok = abs(total - observed) <= max(1e-2 * observed, 1e-3)
        return True if ok else f"fitted total {total:.6g} != observed {observed:g} (Poisson sum rule)"
    if truth is None:
        return "matches no signature"
    a, lam = truth
    msgs = []
    if np.any(np.abs(counts - a) > 1e-2 * a):
        msgs.append(f"counts {counts} vs truth {a} (rel. err. {np.max(np.abs(counts - a) / a):.3g})")
    if np.max(np.abs(latent - lam)) > 1e-2:
        msgs.append(f"latent {latent} vs truth {lam}")
    return True if not msgs else "; ".join(msgs)


@SETTINGS
@given(items=batches(M, 3, B))
def test_semsun_is_right_or_flagged(sources, items):
    model, background = sources
    y, truth = semsun_batch(model, background, items)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # expected counts are not integers; status summaries
        res = unmix(y, model, background=background)
    missing = []
    status, pvalue = field(res, "status", missing), field(res, "gof_pvalue", missing)
    converged = field(res, "converged", missing)
    if status is None:
        report("SEMSUN", missing, [])
    assert status.shape == (B,) and converged.shape == (B,), (status.shape, converged.shape)
    assert pvalue is None or pvalue.shape == (B,), pvalue.shape
    counts, latent = np.asarray(res.counts), np.asarray(res.latent[0])
    right = [semsun_right(item, truth[i], counts[i], latent[i], float(y[i].sum())) for i, item in enumerate(items)]
    finite = [non_finite(counts=counts[i], stderr=res.stderr[i], latent=latent[i],
                         latent_stderr=res.latent_stderr[0][i], loss=res.loss[i],
                         gof_pvalue=0.0 if pvalue is None else pvalue[i]) for i in range(B)]
    report("SEMSUN", missing, judge(items, right, finite, status, converged, pvalue))


# --------------------------------------------------------------------------- IAE projection


def projection_batch(model, items, loss):
    """Data ``(B, 2, M)`` and, per item, the truth ``(amplitude, weights)`` or None."""
    y, truth = np.zeros((len(items), 2, M)), []
    for i, item in enumerate(items):
        kind, t = item[0], None
        if kind == "hot":
            y[i].flat[item[1]] = 1e9
        elif kind in ("mix", "huge", "tiny"):
            lam = training_weights(model, item[1])
            s = model.decode(np.asarray(lam, np.float32)).astype(float)
            if loss == "poisson":
                s = np.maximum(s, 0.0)
            if kind == "tiny":
                y[i] = draw_counts(item[3], np.maximum(s, 0.0), item[4])
            else:
                total = float(np.sum(item[2])) if kind == "mix" else 1e12
                alpha = total / np.sum(np.maximum(s, 0.0))
                y[i] = alpha * s
                t = (alpha, lam)
        elif kind == "flat":
            y[i] = np.round(item[1])
        elif kind == "line":
            y[i].flat[item[1]] = np.round(item[2])
        truth.append(t)
    return y, truth


def projection_right(item, truth, amplitude, latent, loss="poisson"):
    kind = item[0]
    if kind == "zero":
        return True if abs(amplitude) <= 1e-6 else f"zero spectrum, amplitude {amplitude}"
    if kind == "tiny":
        return True  # no truth to compare with (the Poisson sum rule holds by construction)
    if truth is None:
        # A least-squares projection of unknown noise level is the answer asked for, whatever
        # the data: only a Poisson fit can say that the family does not describe them.
        return True if loss == "gaussian" else "matches no signature"
    alpha, lam = truth
    msgs = []
    if abs(amplitude - alpha) > 1e-2 * alpha:
        msgs.append(f"amplitude {amplitude:.6g} vs truth {alpha:.6g}")
    if np.max(np.abs(latent - lam)) > 1e-2:
        msgs.append(f"latent {latent} vs truth {lam}")
    return True if not msgs else "; ".join(msgs)


@pytest.mark.parametrize("loss", ["poisson", "gaussian"])
@SETTINGS
@given(items=batches(2 * M, 1, B))
def test_projection_is_right_or_flagged(sources, loss, items):
    model, _ = sources
    y, truth = projection_batch(model, items, loss)
    res = iae.project(model, y, loss=loss, bounds="training")
    what = f"iae.project(loss={loss!r})"
    missing = []
    status = field(res, "status", missing)
    # A Gaussian loss of unknown noise level has no absolute goodness of fit: status alone flags.
    pvalue = field(res, "gof_pvalue", missing) if loss == "poisson" else None
    converged = field(res, "converged", missing)
    if status is None:
        report(what, missing, [])
    assert status.shape == (B,), status.shape
    assert converged is None or converged.shape == (B,), converged.shape
    assert pvalue is None or pvalue.shape == (B,), pvalue.shape
    amplitude, latent = np.asarray(res.amplitude), np.asarray(res.latent)
    right = [projection_right(item, truth[i], float(amplitude[i]), latent[i], loss) for i, item in enumerate(items)]
    finite = [non_finite(amplitude=amplitude[i], latent=latent[i], spectrum=res.spectrum[i], loss=res.loss[i],
                         gof_pvalue=0.0 if pvalue is None else pvalue[i]) for i in range(B)]
    report(what, missing, judge(items, right, finite, status, converged, pvalue))


# --------------------------------------------------------------------------- X-ray per-pixel fit


def pixel_cases():
    """One pixel: like ``cases`` but weights as offsets from the simplex centre, two amplitudes."""
    offsets = st.lists(st.floats(-0.4, 0.4, allow_nan=False), min_size=3, max_size=3)  # 2 + 1 free weights
    amps = st.lists(st.floats(2.0, 4.0, allow_nan=False).map(lambda e: 10.0**e), min_size=2, max_size=2)
    fractions = st.lists(fraction, min_size=2, max_size=2)
    channel = st.integers(0, E - 1)
    return st.one_of(
        st.tuples(st.just("zero")),
        st.tuples(st.just("hot"), channel),
        st.tuples(st.just("mix"), offsets, amps),
        st.tuples(st.just("huge"), offsets, fractions),
        st.tuples(st.just("tiny"), offsets, fractions, st.integers(1, 5), seed),
        st.tuples(st.just("flat"), st.floats(20.0, 1e5, allow_nan=False)),
        st.tuples(st.just("line"), channel, st.floats(20.0, 1e6, allow_nan=False)),
    )


def pixel_weights(models, offsets):
    from frugal.solvers import sum_to_one_basis

    out, i = [], 0
    for mdl in models:
        d = mdl.n_anchors
        out.append(1.0 / d + np.asarray(sum_to_one_basis(d)) @ np.asarray(offsets[i : i + d - 1]))
        i += d - 1
    return out


def cube_batch(models, items):
    """A cube ``(E, H, W)`` whose pixels are the items, and the truth per pixel."""
    cube, truth = np.zeros((E, H * W)), []
    for p, item in enumerate(items):
        kind, t = item[0], None
        if kind == "hot":
            cube[item[1], p] = 1e9
        elif kind in ("mix", "huge", "tiny"):
            lams = pixel_weights(models, item[1])
            spectra = []
            for mdl, lam in zip(models, lams):
                s = np.maximum(mdl.decode(np.asarray(lam, np.float32)).astype(float), 0.0)
                spectra.append(s / s.sum())
            spectra = np.stack(spectra)  # (2, E)
            if kind == "tiny":
                cube[:, p] = draw_counts(item[3], scaled(1.0, item[2]) @ spectra, item[4])
            else:
                amp = np.asarray(item[2], float) if kind == "mix" else scaled(1e12, item[2])
                cube[:, p] = amp @ spectra
                t = (amp, lams)
        elif kind == "flat":
            cube[:, p] = np.round(item[1])
        elif kind == "line":
            cube[item[1], p] = np.round(item[2])
        truth.append(t)
    return cube.reshape(E, H, W).astype(np.float32), truth


_STDERR_PROGRAMS = {}


def _stderr_program(models):
    """The jitted, vmapped Fisher standard errors at free coordinates ``z`` (amplitudes, then
    each component's weights on ``sum_to_one_basis``), built once per set of models."""
    key = tuple(id(m) for m in models)
    if key in _STDERR_PROGRAMS:
        return _STDERR_PROGRAMS[key]
    import jax
    import jax.numpy as jnp

    from frugal.iae import model as MM
    from frugal.solvers import sum_to_one_basis

    bases = [jnp.asarray(sum_to_one_basis(m.n_anchors)) for m in models]
    sizes = [m.n_anchors - 1 for m in models]

    def mu(z):
        out, i = 0.0, 2
        for c, mdl in enumerate(models):
            lam = 1.0 / mdl.n_anchors + bases[c] @ z[i : i + sizes[c]]
            x = jnp.maximum(MM.decode(mdl.config, mdl.state, lam)[0], 0.0)
            out = out + z[c] * x / jnp.sum(x)
            i += sizes[c]
        return out

    def stderr(z):
        jac = jax.jacfwd(mu)(z)
        m = mu(z)
        ok = m > 0
        info = jac.T @ (jac * jnp.where(ok, 1.0 / jnp.where(ok, m, 1.0), 0.0)[:, None])
        cov = jnp.linalg.pinv(info)
        out, i = [jnp.sqrt(jnp.maximum(jnp.diag(cov)[:2], 0.0))], 2
        for c in range(len(models)):
            block = bases[c] @ cov[i : i + sizes[c], i : i + sizes[c]] @ bases[c].T
            out.append(jnp.sqrt(jnp.maximum(jnp.diag(block), 0.0)))
            i += sizes[c]
        return out

    _STDERR_PROGRAMS[key] = (jax.jit(jax.vmap(stderr)), [np.asarray(b) for b in bases])
    return _STDERR_PROGRAMS[key]


def pixel_stderr(models, truth):
    """Per pixel with a known truth, the standard errors ``(2,)`` of the amplitudes and of
    each component's weights, from the Fisher information ``J^T diag(1/mu) J`` at the truth
    (free coordinates: the weights minus the simplex centre on ``sum_to_one_basis``), with
    ``jax.jacfwd`` of an independent decoding; ``None`` elsewhere. A faint component under a
    bright one has weights known to +-1 or worse: "right" is judged against these."""
    known = [p for p, t in enumerate(truth) if t is not None]
    if not known:
        return [None] * len(truth)
    program, bases = _stderr_program(models)
    zs = []
    for p in known:
        amp, lams = truth[p]
        free = [np.linalg.lstsq(b, lam - 1.0 / len(lam), rcond=None)[0] for b, lam in zip(bases, lams)]
        zs.append(np.concatenate([amp, *free]))
    # Padded to one row per pixel: one shape, one compilation for every example.
    zs = np.stack(zs + [zs[0]] * (len(truth) - len(zs))).astype(np.float32)
    se = program(zs)
    out = [None] * len(truth)
    for k, p in enumerate(known):
        out[p] = [np.asarray(x[k]) for x in se]
    return out


def pixel_right(item, truth, amplitude, latents, observed, stderr=None):
    kind = item[0]
    if kind == "zero":
        return True if np.all(np.abs(amplitude) <= 1e-3) else f"zero pixel, amplitudes {amplitude}"
    if kind == "tiny":
        total = float(np.sum(amplitude))
        ok = abs(total - observed) <= max(1e-2 * observed, 1e-3)
        return True if ok else f"fitted total {total:.6g} != observed {observed:g} (Poisson sum rule)"
    if truth is None:
        return "matches no signature"
    amp, lams = truth
    # within 1 % (weights: 0.01), or half a standard error where the data say less
    # (converged means within gtol = 0.1 standard errors of the optimum, the truth here)
    se = stderr if stderr is not None else [np.zeros(2)] + [np.zeros_like(lam) for lam in lams]
    msgs = []
    if np.any(np.abs(amplitude - amp) > np.maximum(1e-2 * amp, 0.5 * se[0])):
        msgs.append(f"amplitudes {amplitude} vs truth {amp} (standard errors {se[0]})")
    for c, (lam_hat, lam) in enumerate(zip(latents, lams)):
        if np.any(np.abs(lam_hat - lam) > np.maximum(1e-2, 0.5 * se[c + 1])):
            msgs.append(f"latent[{c}] {lam_hat} vs truth {lam} (standard errors {se[c + 1]})")
    return True if not msgs else "; ".join(msgs)


@settings(SETTINGS, max_examples=8)  # 144 pixels per example
@given(items=st.lists(pixel_cases(), min_size=H * W, max_size=H * W))
def test_fit_pixels_is_right_or_flagged(xray_models, items):
    cube, truth = cube_batch(xray_models, items)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit_pixels(cube, xray_models)
    missing = []
    status, converged = field(res, "status", missing), field(res, "converged", missing)
    # Per pixel: pixel_status / pixel_gof_pvalue ((H, W)), else the cube's status and p-value.
    pixel_status = getattr(res, "pixel_status", None)
    pixel_status = status if pixel_status is None else np.asarray(pixel_status)
    pvalue = getattr(res, "pixel_gof_pvalue", None)
    pvalue = field(res, "gof_pvalue", missing) if pvalue is None else np.asarray(pvalue)
    if pixel_status is None:
        report("fit_pixels", missing, [])
    bad = []
    if status is not None and converged is not None and not np.array_equal(converged, status == CONVERGED):
        bad.append(f"cube: converged={converged} but status={status}")
    pixel_status = np.broadcast_to(pixel_status, (H, W)).reshape(-1)
    pvalue = None if pvalue is None else np.broadcast_to(pvalue, (H, W)).reshape(-1)
    amplitude = np.asarray(res.amplitude).reshape(2, -1)
    latents = [np.asarray(lam).reshape(lam.shape[0], -1) for lam in res.latent]
    model = np.asarray(res.model).reshape(E, -1)
    observed = cube.reshape(E, -1).sum(0)
    stderr = pixel_stderr(xray_models, truth)
    right = [pixel_right(item, truth[p], amplitude[:, p], [lam[:, p] for lam in latents], float(observed[p]),
                         stderr[p]) for p, item in enumerate(items)]
    finite = [non_finite(amplitude=amplitude[:, p], model=model[:, p],
                         gof_pvalue=0.0 if pvalue is None else pvalue[p],
                         **{f"latent{c}": lam[:, p] for c, lam in enumerate(latents)}) for p in range(H * W)]
    bad += judge(items, right, finite, pixel_status, None, pvalue)
    report("fit_pixels (pixel = item)", missing, bad)
