"""IAE: barycentric weights, training quality, BSP, gradients, checkpoints, bad input."""

import io
import os
import stat
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import frugal.iae as iae
from frugal.data import line_family, split
from frugal.iae import checkpoint as ckpt
from frugal.iae import model as M
from frugal.iae import training


@pytest.fixture(scope="module")
def family():
    fam = line_family(48, 75, seed=1)
    return fam, split(fam, test_fraction=0.25, seed=0)


@pytest.fixture(scope="module")
def model(family):
    fam, s = family
    return iae.train(fam.spectra[s.train], fam.spectra[s.anchors], epochs=800, seed=0, progress=False)


# --- barycentric weights ---------------------------------------------------------------


def kkt_weights(z, omega, rel_eps=1e-6):
    """Direct solve of the KKT system of min ||z - lam Omega||^2 + eps ||lam||^2, sum(lam) = 1."""
    d = omega.shape[0]
    gram = omega @ omega.T
    eps = rel_eps * np.linalg.norm(gram, 2)
    kkt = np.block([[2 * (gram + eps * np.eye(d)), np.ones((d, 1))], [np.ones((1, d)), np.zeros((1, 1))]])
    return np.linalg.solve(kkt, np.r_[2 * omega @ z, 1.0])[:d]


@pytest.mark.parametrize("d,k", [(2, 5), (3, 8), (4, 16)])
def test_barycentric_weights_equal_kkt_solve(d, k):
    rng = np.random.default_rng(d)
    omega = rng.normal(size=(d, k))
    z = rng.normal(size=(6, k))
    with jax.enable_x64(True):
        lam = np.asarray(iae.barycentric_weights(jnp.asarray(z), jnp.asarray(omega)))
    expected = np.array([kkt_weights(zi, omega) for zi in z])
    np.testing.assert_allclose(lam, expected, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(lam.sum(-1), 1.0, atol=1e-12)


def test_weights_of_a_point_in_the_affine_hull_are_exact():
    rng = np.random.default_rng(0)
    omega = rng.normal(size=(3, 10))
    lam_true = np.array([0.2, -0.3, 1.1])
    lam = np.asarray(iae.barycentric_weights(jnp.asarray(lam_true @ omega, jnp.float32), jnp.asarray(omega, jnp.float32)))
    np.testing.assert_allclose(lam, lam_true, atol=1e-4)


def test_simplex_and_box_constraints():
    lam = jnp.array([[1.4, -0.4], [0.3, 0.7], [-0.2, 1.2]])
    simplex = np.asarray(iae.constrain_weights(lam, "simplex"))
    np.testing.assert_allclose(simplex, [[1.0, 0.0], [0.3, 0.7], [0.0, 1.0]], atol=1e-6)
    box = np.asarray(iae.constrain_weights(lam, "box", jnp.array([0.1, 0.2]), jnp.array([0.9, 0.8])))
    np.testing.assert_allclose(box, [[0.8, 0.2], [0.3, 0.7], [0.2, 0.8]], atol=1e-6)


# --- training -----------------------------------------------------------------------------


def test_held_out_reconstruction_above_30_db(family, model):
    fam, s = family
    test = fam.spectra[s.test]
    nmse = iae.nmse_db(model.reconstruct(test), test)
    assert np.median(nmse) >= 30.0, f"median held-out NMSE {np.median(nmse):.1f} dB"
    # The latent follows the generating parameter monotonically.
    lam = model.interpolate(test)[:, 1]
    t = fam.params[s.test, 0]
    assert np.corrcoef(np.argsort(np.argsort(lam)), np.argsort(np.argsort(t)))[0, 1] > 0.95


def test_anchors_reconstruct_themselves_and_bounds_are_recorded(family, model):
    fam, s = family
    lam = model.interpolate(fam.spectra[s.anchors])
    np.testing.assert_allclose(lam, np.eye(2), atol=1e-3)
    lo, hi = model.latent_bounds
    all_lam = model.interpolate(np.concatenate([fam.spectra[s.anchors], fam.spectra[s.train]]))
    np.testing.assert_allclose(lo, all_lam.min(0), atol=1e-5)
    np.testing.assert_allclose(hi, all_lam.max(0), atol=1e-5)


def test_single_and_batch_calls_agree(family, model):
    fam, s = family
    x = fam.spectra[s.test[:3]]
    np.testing.assert_allclose(model.interpolate(x[1]), model.interpolate(x)[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.reconstruct(x[1]), model.reconstruct(x)[1], rtol=1e-5, atol=1e-9)
    assert model.decode(np.array([0.5, 0.5])).shape == (75,)


def test_training_is_reproducible_and_seeded(family):
    fam, s = family
    args = (fam.spectra[s.train], fam.spectra[s.anchors])
    a = iae.train(*args, epochs=10, seed=3, progress=False)
    b = iae.train(*args, epochs=10, seed=3, progress=False)
    c = iae.train(*args, epochs=10, seed=4, progress=False)
    x = fam.spectra[s.test]
    np.testing.assert_array_equal(a.reconstruct(x), b.reconstruct(x))
    assert not np.array_equal(a.reconstruct(x), c.reconstruct(x))


def test_validation_early_stopping_restores_best(family):
    fam, s = family
    m = iae.train(fam.spectra[s.train], fam.spectra[s.anchors], valid=fam.spectra[s.test], epochs=60,
                  eval_every=5, patience=10, learning_rate=0.05, progress=False)
    hist = m.info["history"]
    best = int(np.argmin(hist["valid_loss"]))
    assert m.info["best_epoch"] == hist["epoch"][best]
    assert m.info["best_loss"] == pytest.approx(hist["valid_loss"][best])
    if m.info["stopped_early"]:
        assert m.info["epochs_run"] - m.info["best_epoch"] >= 10


def test_noise_training_and_joint_conv_model():
    fam = line_family(24, 64, seed=2)
    s = split(fam)
    # Joint model: two "radionuclides" sharing one latent (second input = a reversed copy).
    joint = np.stack([fam.spectra, fam.spectra[:, ::-1]], axis=1)
    m = iae.train(joint[s.train], joint[s.anchors], arch="conv", epochs=30, noise_snr=(20, 40),
                  progress=False, filters=(4, 4, 8), kernels=(3, 3, 3), strides=(1, 2, 2))
    out = m.reconstruct(joint[s.test])
    assert out.shape == joint[s.test].shape and np.all(out >= 0) and np.all(np.isfinite(out))
    hist = m.info["history"]["train_reconstruction"]
    assert hist[-1] < hist[0]


def test_training_gradient_matches_finite_differences(family):
    fam, s = family
    with jax.enable_x64(True):
        x = jnp.asarray(fam.spectra[s.train[:6]], jnp.float64)[:, None, :]
        anchors = jnp.asarray(fam.spectra[s.anchors], jnp.float64)[:, None, :]
        for arch, kw in (("dense", {"width": 16, "depth": 2, "latent_dim": 4}),
                         ("conv", {"filters": (3, 4), "kernels": (3, 3), "strides": (1, 2)})):
            config = M.IAEConfig(n_channels=75, n_anchors=2, arch=arch, **kw)
            enc, dec = config.networks()
            reference = jnp.mean(x, 0)
            pe = enc.init(jax.random.PRNGKey(0), x / reference)
            pd = dec.init(jax.random.PRNGKey(1), enc.apply(pe, x / reference))
            params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), {"encoder": pe, "decoder": pd})
            # A non-trivial decoder: the output layer starts at zero.
            params = jax.tree.map(lambda a: a + 0.05 * jnp.sin(jnp.arange(a.size).reshape(a.shape) + 1.0), params)
            power = jnp.mean(jnp.sum(x**2, -1), 0)
            w = jnp.ones((1, 75))

            @jax.jit
            def f(p):
                return training.training_objective(config, "squared", 1e-3, p, reference, anchors, x, x, w, power)[0]

            g = jax.grad(f)(params)
            direction = jax.tree.map(lambda a: jnp.cos(3.0 * jnp.arange(a.size).reshape(a.shape)), params)
            h = 1e-5
            fd = (f(jax.tree.map(lambda p, v: p + h * v, params, direction))
                  - f(jax.tree.map(lambda p, v: p - h * v, params, direction))) / (2 * h)
            ad = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(direction)))
            np.testing.assert_allclose(float(ad), float(fd), rtol=1e-6, err_msg=arch)


# --- barycentric span projection ----------------------------------------------------------


@pytest.mark.parametrize("loss", ["gaussian", "poisson"])
def test_bsp_recovers_latent_and_amplitude(model, loss):
    lam_true = np.array([[0.8, 0.2], [0.35, 0.65], [0.1, 0.9]], np.float32)
    amplitude = 5e4 if loss == "poisson" else 2.5
    y = amplitude * model.decode(lam_true)
    res = iae.project(model, y, loss=loss)
    np.testing.assert_allclose(res.latent, lam_true, atol=2e-3)
    np.testing.assert_allclose(res.amplitude, amplitude, rtol=2e-3)
    np.testing.assert_allclose(res.spectrum, y, rtol=1e-2, atol=1e-3 * y.max())
    single = iae.project(model, y[1], loss=loss)
    np.testing.assert_allclose(single.latent, res.latent[1], atol=1e-5)


def test_bsp_poisson_counts_and_bounds(model):
    rng = np.random.default_rng(0)
    truth = model.decode(np.array([0.4, 0.6], np.float32))
    counts = rng.poisson(2e4 * truth, size=(20, truth.size)).astype(np.float32)
    res = iae.project(model, counts, loss="poisson", bounds="simplex")
    assert np.all(res.latent >= -1e-6)
    np.testing.assert_allclose(res.latent.sum(-1), 1.0, atol=1e-5)
    # Unbiased within a few standard errors of the mean over 20 draws.
    assert abs(res.latent[:, 1].mean() - 0.6) < 0.02
    assert abs(res.amplitude.mean() / 2e4 - 1) < 0.01
    # BSP never fits worse than fast interpolation followed by the best amplitude.
    fast = model.decode(model.interpolate(counts / counts.sum(1, keepdims=True)))
    alpha = counts.sum(1, keepdims=True) / fast.sum(1, keepdims=True)
    m = alpha * fast
    dev_fast = 2 * np.sum(np.where(counts > 0, counts * np.log(np.maximum(counts, 1e-30) / m), 0) - (counts - m), 1)
    assert np.all(res.loss <= dev_fast + 1e-3 * np.abs(dev_fast))


def test_weight_bounds_name_the_box_the_solvers_use(model):
    lo, hi = model.latent_bounds
    for got, want in zip(model.weight_bounds("training"), (lo, hi)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(model.weight_bounds("simplex")[0], [0.0, 0.0])
    assert np.all(np.isinf(model.weight_bounds("simplex")[1]))
    assert all(np.all(np.isinf(b)) for b in model.weight_bounds(None))
    lower, upper = model.weight_bounds(([0.1, 0.2], 0.9))
    np.testing.assert_array_equal(lower, [0.1, 0.2])
    np.testing.assert_array_equal(upper, [0.9, 0.9])
    with pytest.raises(ValueError, match="bounds must be one of 'training', 'simplex'"):
        model.weight_bounds("box")
    with pytest.raises(ValueError, match=r"sum\(lower\) <= 1"):
        model.weight_bounds(([0.6, 0.6], 1.0))
    with pytest.raises(ValueError, match=r"of shape \(2,\)"):
        model.weight_bounds(([0.0, 0.0, 0.0], 1.0))


def test_bsp_zero_counts_are_finite(model):
    res = iae.project(model, np.zeros(75), loss="poisson")
    assert np.all(np.isfinite(res.latent)) and res.amplitude == 0 and np.all(res.spectrum == 0)


# --- checkpoints --------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path, family, model):
    fam, s = family
    path = tmp_path / "model.frugal"
    iae.save(model, path)
    loaded = iae.load(path)
    x = fam.spectra[s.test]
    np.testing.assert_array_equal(loaded.reconstruct(x), model.reconstruct(x))
    np.testing.assert_array_equal(loaded.latent_bounds[0], model.latent_bounds[0])
    assert loaded.config == model.config
    assert loaded.info["best_epoch"] == model.info["best_epoch"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_corrupt_truncated_and_wrong_version_raise(tmp_path, model):
    good = tmp_path / "good.frugal"
    iae.save(model, good)
    raw = good.read_bytes()

    truncated = tmp_path / "truncated.frugal"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(iae.CheckpointError, match="corrupt or truncated"):
        iae.load(truncated)

    # Flip bytes inside one stored array (stored uncompressed so the flip reaches the data).
    corrupt = tmp_path / "corrupt.frugal"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(corrupt, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "reference.npy":
                data = data[:-8] + bytes(b ^ 0xFF for b in data[-8:])
            zout.writestr(item.filename, data)
    with pytest.raises(iae.CheckpointError, match="checksum"):
        iae.load(corrupt)

    wrong = tmp_path / "wrong.frugal"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(wrong, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "header.json":
                data = data.replace(f'"version": {ckpt.VERSION}'.encode(), b'"version": 99')
            zout.writestr(item.filename, data)
    with pytest.raises(iae.CheckpointError, match="version 99"):
        iae.load(wrong)

    with pytest.raises(iae.CheckpointError, match="does not exist"):
        iae.load(tmp_path / "missing.frugal")
    text = tmp_path / "text.frugal"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError):
        iae.load(text)


@pytest.fixture(scope="module")
def tiny_model():
    """An untrained but non-trivial IAE (random weights, every output layer non-zero): its
    checkpoint is ~4.5 kB, small enough to damage at every byte."""
    config = M.IAEConfig(n_channels=16, n_anchors=2, width=4, depth=1, latent_dim=2)
    enc, dec = config.networks()
    anchors = np.random.default_rng(0).uniform(0.5, 1.5, (2, 1, 16)).astype(np.float32)
    pe = enc.init(jax.random.PRNGKey(0), anchors)
    pd = dec.init(jax.random.PRNGKey(1), enc.apply(pe, anchors))
    params = jax.tree.map(lambda a: a + 0.1 * jnp.sin(jnp.arange(a.size).reshape(a.shape) + 1.0),
                          {"encoder": pe, "decoder": pd})
    state = M.make_state(config, params, jnp.asarray(anchors.mean(0)), jnp.asarray(anchors),
                         -np.ones(2, np.float32), 2 * np.ones(2, np.float32))
    return M.IAEModel(config, state, {"best_epoch": 3, "history": {"epoch": [1, 2]}})


def same_arrays(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and np.array_equal(a[k], b[k]) for k in a
    )


def same_model(a, b) -> bool:
    la, lb = jax.tree.leaves(a.state), jax.tree.leaves(b.state)
    return a.config == b.config and a.info == b.info and len(la) == len(lb) and all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y) for x, y in zip(la, lb)
    )


def test_every_single_byte_flip_is_caught_or_harmless(tmp_path, tiny_model):
    good = tmp_path / "good.frugal"
    iae.save(tiny_model, good)
    raw = good.read_bytes()
    header, arrays = ckpt.read_parts(good)
    reference = iae.load(good)
    flipped = tmp_path / "flipped.frugal"

    def flip(i):
        return raw[:i] + bytes([raw[i] ^ 0xFF]) + raw[i + 1:]

    harmless = []
    for i in range(len(raw)):
        try:
            # In memory: what load() does after opening the file, thousands of times faster.
            got_header, got_arrays = ckpt.read_archive(io.BytesIO(flip(i)), "flipped")
        except iae.CheckpointError:
            continue
        # Anything else escaping (zlib.error, NotImplementedError, ...) fails the test.
        assert got_header == header and same_arrays(got_arrays, arrays), f"byte {i} changed what is read"
        harmless.append(i)
    # Flips in zip fields nobody reads (times, attributes) are harmless; most bytes matter.
    assert 0 < len(harmless) < len(raw) // 2
    # load() is a function of what it reads; build the model from files for a spread of the
    # harmless flips (all of them would take a minute), and for a few harmful ones.
    for i in harmless[:: max(1, len(harmless) // 12)]:
        flipped.write_bytes(flip(i))
        assert same_model(iae.load(flipped), reference), f"byte {i}"
    for i in sorted(set(range(len(raw))) - set(harmless))[::400]:
        flipped.write_bytes(flip(i))
        with pytest.raises(iae.CheckpointError):
            iae.load(flipped)


def edit_header(src, dst, old: bytes, new: bytes):
    """Rewrite a checkpoint with ``old`` replaced by ``new`` in header.json (zip CRCs redone)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "header.json":
                assert old in data
                data = data.replace(old, new)
            zout.writestr(item.filename, data)


@pytest.mark.parametrize("old,new", [
    (b'"output": "exp"', b'"output": "linear"'),  # same arrays, a different model
    (b'"rel_eps": 1e-06', b'"rel_eps": 0.1'),
    (b'"best_epoch": 3', b'"best_epoch": 4'),
])
def test_header_edits_are_detected(tmp_path, tiny_model, old, new):
    good = tmp_path / "good.frugal"
    iae.save(tiny_model, good)
    edit_header(good, tmp_path / "same.frugal", old, old)  # rewriting alone changes nothing
    assert same_model(iae.load(tmp_path / "same.frugal"), iae.load(good))
    edit_header(good, tmp_path / "edited.frugal", old, new)
    with pytest.raises(iae.CheckpointError, match="header fails its checksum"):
        iae.load(tmp_path / "edited.frugal")


@pytest.mark.skipif(os.name != "posix", reason="file modes and umask are POSIX")
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002, 0o077])
def test_saved_file_mode_follows_the_umask(tmp_path, tiny_model, umask):
    old = os.umask(umask)
    try:
        iae.save(tiny_model, tmp_path / "model.frugal")
        (tmp_path / "plain.txt").write_text("an ordinary new file")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "model.frugal").st_mode)
    assert mode == 0o666 & ~umask
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode)


def test_failed_write_leaves_old_file_intact(tmp_path, model, monkeypatch):
    path = tmp_path / "model.frugal"
    iae.save(model, path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        iae.save(model, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.frugal"]


def test_interrupted_training_resumes_to_the_same_model(tmp_path, family, monkeypatch):
    fam, s = family
    args = (fam.spectra[s.train], fam.spectra[s.anchors])
    kw = dict(epochs=30, eval_every=5, seed=1, progress=False)
    straight = iae.train(*args, **kw)

    path = tmp_path / "run.frugal"
    real = training.run_epochs
    calls = {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(training, "run_epochs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        iae.train(*args, checkpoint=path, checkpoint_every=5, **kw)
    monkeypatch.setattr(training, "run_epochs", real)
    resumed = iae.train(*args, checkpoint=path, checkpoint_every=5, resume=True, **kw)
    x = fam.spectra[s.test]
    np.testing.assert_allclose(resumed.reconstruct(x), straight.reconstruct(x), rtol=1e-6, atol=1e-12)
    assert resumed.info["history"]["epoch"] == straight.info["history"]["epoch"]
    with pytest.raises(ValueError, match="other data or settings"):
        iae.train(args[0][:-1], args[1], checkpoint=path, resume=True, **kw)


# --- optimiser ----------------------------------------------------------------------------

#: Small, quickly compiled settings for the optimiser tests.
TINY = dict(epochs=4, eval_every=2, seed=5, progress=False, width=16, depth=1, latent_dim=3)


def state_leaves(m):
    return [np.asarray(a) for a in jax.tree.leaves(m.state)]


def test_default_optimizer_is_the_documented_chain(family):
    fam, s = family
    x, e = fam.spectra[s.train], fam.spectra[s.anchors]
    default = iae.train(x, e, **TINY)
    assert default.info["optimizer"] == "default" and default.info["learning_rate"] == 2e-3
    # Written out from the docstring: clipping at global norm 1, then Adam on a warm-up +
    # cosine schedule from 10 % up to the peak and down to 1 % of it.
    lr, total = 2e-3, TINY["epochs"] * -(-(len(s.train) + len(s.anchors)) // 16)
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.1 * lr, peak_value=lr, warmup_steps=max(1, min(200, total // 20)),
        decay_steps=max(2, total), end_value=0.01 * lr)
    by_hand = iae.train(x, e, optimizer=optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule)), **TINY)
    assert by_hand.info["optimizer"] == "custom" and by_hand.info["learning_rate"] is None
    for a, b in zip(state_leaves(default), state_leaves(by_hand), strict=True):
        np.testing.assert_array_equal(a, b)
    # An explicit learning_rate equal to the default changes nothing either.
    explicit = iae.train(x, e, learning_rate=2e-3, **TINY)
    for a, b in zip(state_leaves(default), state_leaves(explicit), strict=True):
        np.testing.assert_array_equal(a, b)


def test_custom_optimizer_is_used(family):
    fam, s = family
    x, e = fam.spectra[s.train], fam.spectra[s.anchors]
    frozen = optax.sgd(0.0)  # one object: the epoch loop compiles once for both calls
    short = iae.train(x, e, optimizer=frozen, **TINY)
    longer = iae.train(x, e, optimizer=frozen, **{**TINY, "epochs": 8})
    # A zero learning rate leaves the initial parameters: the same whatever the epochs, and
    # exactly the same loss at every evaluation.
    for a, b in zip(state_leaves(short), state_leaves(longer), strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(set(longer.info["history"]["train_loss"])) == 1
    default = iae.train(x, e, **TINY)  # same seed, same initial parameters: these move
    assert default.info["history"]["train_loss"][-1] < short.info["history"]["train_loss"][0]
    assert not all(np.array_equal(a, b) for a, b in zip(state_leaves(default), state_leaves(short)))


def test_bad_optimizer_names_the_argument(family):
    fam, s = family
    x, e = fam.spectra[s.train], fam.spectra[s.anchors]
    adam = optax.adam(1e-3)
    for bad in ("adam", 1e-3, tuple(adam), {"init": adam.init, "update": adam.update}):
        with pytest.raises(TypeError, match="optimizer must be None .* or an optax.GradientTransformation"):
            iae.train(x, e, optimizer=bad, epochs=1, progress=False)
    with pytest.raises(TypeError, match=r"got function \(a function: call it"):
        iae.train(x, e, optimizer=optax.adam, epochs=1, progress=False)
    with pytest.raises(ValueError, match="give either optimizer or learning_rate, not both"):
        iae.train(x, e, optimizer=adam, learning_rate=1e-3, epochs=1, progress=False)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        iae.train(x, e, learning_rate=0.0, epochs=1, progress=False)


def test_resume_with_another_optimizer_raises(tmp_path, family):
    fam, s = family
    x, e = fam.spectra[s.train], fam.spectra[s.anchors]
    default_path, adam_path = tmp_path / "default.frugal", tmp_path / "adam.frugal"
    iae.train(x, e, checkpoint=default_path, **TINY)
    adam = optax.adam(1e-3)
    with_adam = iae.train(x, e, optimizer=adam, checkpoint=adam_path, **TINY)
    with pytest.raises(ValueError, match="written with the default optimizer, not a custom one: resume with the same"):
        iae.train(x, e, optimizer=adam, checkpoint=default_path, resume=True, **TINY)
    with pytest.raises(ValueError, match="written with a custom optimizer, not the default one"):
        iae.train(x, e, checkpoint=adam_path, resume=True, **TINY)
    with pytest.raises(ValueError, match=r"holds the state of another optimizer: its optimizer state is \d+ arrays "
                                         r"\(\[0\]\.count, .*\), that of this optimizer argument is empty"):
        iae.train(x, e, optimizer=optax.sgd(1e-3), checkpoint=adam_path, resume=True, **TINY)
    # The same optimiser (even a new but equal object) resumes: here from the end, at once.
    again = iae.train(x, e, optimizer=optax.adam(1e-3), checkpoint=adam_path, resume=True, **TINY)
    for a, b in zip(state_leaves(with_adam), state_leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)


# --- bad input ----------------------------------------------------------------------------


def test_bad_training_input_names_the_argument(family):
    fam, s = family
    x, e = fam.spectra[s.train], fam.spectra[s.anchors]
    with pytest.raises(ValueError, match="anchors must have the same spectrum shape"):
        iae.train(x, e[:, :70], epochs=1, progress=False)
    bad = x.copy()
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="spectra contains 1 non-finite"):
        iae.train(bad, e, epochs=1, progress=False)
    with pytest.raises(ValueError, match="spectra must be non-negative"):
        iae.train(-x, e, epochs=1, progress=False)
    with pytest.raises(ValueError, match="spectra must have 2 or 3 dimension"):
        iae.train(x[0], e, epochs=1, progress=False)
    with pytest.raises(ValueError, match="anchors must hold at least 2"):
        iae.train(x, e[:1], epochs=1, progress=False)
    with pytest.raises(ValueError, match="arch must be one of"):
        iae.train(x, e, arch="transformer", epochs=1, progress=False)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        iae.train(x, e, epochs=0, progress=False)


def test_training_does_not_depend_on_the_scale_of_the_spectra(family):
    fam, s = family
    x, e, test = fam.spectra[s.train], fam.spectra[s.anchors], fam.spectra[s.test]
    kw = dict(epochs=150, seed=0, progress=False, width=32, depth=2, latent_dim=4)
    nmse, loss = {}, {}
    for scale in (1.0, 1e-20, 1e20):
        m = iae.train(scale * x, scale * e, **kw)
        out = m.reconstruct(scale * test)  # the model works in the spectra's own units
        nmse[scale] = np.median(iae.nmse_db(out, scale * test))
        loss[scale] = m.info["best_loss"]
        np.testing.assert_allclose(m.anchors, (scale * e).astype(np.float32), rtol=1e-6)
    assert nmse[1.0] > 20.0, nmse  # trained at all (an untrained model gives ~2.5 dB)
    for scale in (1e-20, 1e20):
        assert abs(nmse[scale] - nmse[1.0]) < 1.0, nmse
        assert loss[scale] == pytest.approx(loss[1.0], rel=0.25), loss
    # Beyond what a float32 model holds: a clear error rather than an untrained model.
    for scale in (1e-40, 1e36):
        with pytest.raises(ValueError, match="beyond what a float32 model can represent; rescale"):
            iae.train(scale * x, scale * e, **kw)


def test_duplicate_anchors_and_bad_rel_eps_have_their_own_errors(family):
    fam, s = family
    x, e = fam.spectra[s.train], fam.spectra[s.anchors]
    with pytest.raises(ValueError, match="anchors must be distinct spectra: anchors 0 and 2 are identical"):
        iae.train(x, np.stack([e[0], e[1], e[0]]), epochs=1, progress=False)
    nearly = np.stack([e[0], e[1], e[1] * (1 + 1e-9), e[0] + 1e-9 * e[1]])
    with pytest.raises(ValueError, match="anchors 0 and 3, 1 and 2 are identical"):
        iae.train(x, nearly, epochs=1, progress=False)
    joint = np.stack([x, x[:, ::-1]], axis=1)
    ej = np.stack([e, e[:, ::-1]], axis=1)
    with pytest.raises(ValueError, match="anchors 1 and 2 are identical"):
        iae.train(joint, ej[[0, 1, 1]], epochs=1, progress=False)
    # Close but distinct anchors are fine.
    training.check_distinct_anchors(np.stack([e[0], e[0] * (1 + 1e-4), e[1]]))
    for bad, msg in ((-1.0, "rel_eps must be > 0"), (0.0, "rel_eps must be > 0"),
                     (float("nan"), "rel_eps must be finite")):
        with pytest.raises(ValueError, match=msg):
            iae.train(x, e, epochs=1, rel_eps=bad, progress=False)
        with pytest.raises(ValueError, match=msg):
            M.IAEConfig(n_channels=75, n_anchors=2, rel_eps=bad)
    with pytest.raises(ValueError, match="rel_eps must be a finite number > 0"):
        iae.barycentric_weights(jnp.ones((1, 3)), jnp.eye(2, 3), rel_eps=-1.0)
    with pytest.raises(ValueError, match="latent_dim must be >= 1"):
        iae.train(x, e, epochs=1, latent_dim=0, progress=False)
    with pytest.raises(ValueError, match="constraint must be one of"):
        M.IAEConfig(n_channels=75, n_anchors=2, constraint="cube")


def test_bad_inference_input_names_the_argument(model):
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 75\)"):
        model.interpolate(np.ones(74))
    with pytest.raises(ValueError, match="x must have 1 or 2 dimension"):
        model.reconstruct(np.ones((2, 3, 75)))
    with pytest.raises(ValueError, match="latent must have shape"):
        model.decode(np.ones(3) / 3)
    with pytest.raises(ValueError, match="y must be non-negative"):
        iae.project(model, -np.ones(75), loss="poisson")
    with pytest.raises(ValueError, match="y contains 1 non-finite"):
        iae.project(model, np.r_[np.inf, np.ones(74)])
    with pytest.raises(ValueError, match="loss must be one of"):
        iae.project(model, np.ones(75), loss="cauchy")


def test_two_parameter_family_with_four_anchors():
    fam = line_family(64, 64, n_params=2, seed=3)
    s = split(fam, test_fraction=0.2, seed=0)
    assert len(s.anchors) == 4
    m = iae.train(fam.spectra[s.train], fam.spectra[s.anchors], epochs=600, progress=False)
    test = fam.spectra[s.test]
    assert np.median(iae.nmse_db(m.reconstruct(test), test)) > 25.0
    lam = m.interpolate(test)
    assert lam.shape == (len(s.test), 4)
    np.testing.assert_allclose(lam.sum(-1), 1.0, atol=1e-5)


def test_unknown_architecture_argument_is_named(family):
    fam, s = family
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['widht'\]"):
        iae.train(fam.spectra[s.train], fam.spectra[s.anchors], epochs=1, widht=64, progress=False)
    with pytest.raises(ValueError, match="output must be"):
        iae.train(fam.spectra[s.train], fam.spectra[s.anchors], epochs=1, output="relu", progress=False)
