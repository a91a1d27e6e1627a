"""Chunked and sharded batches give the results of one unsharded batch."""

import os
import subprocess
import sys
import textwrap
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frugal.solvers.batching import bucket_size, resolve_devices, run_batched


@jax.jit
def _affine(scale, x, y):
    return (scale * x + y, jnp.sum(x, -1))


def test_chunks_and_padding_equal_one_batch():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(11, 3)), rng.normal(size=(11, 3))
    whole = run_batched(_affine, (x, y), (2.0,), chunk_size=100)
    chunked = run_batched(_affine, (x, y), (2.0,), chunk_size=4)
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(whole[0], 2 * x + y, rtol=1e-6)


class _In(NamedTuple):
    x: np.ndarray
    pair: tuple


class _Out(NamedTuple):
    total: np.ndarray
    parts: tuple


@jax.jit
def _tree_fn(scale, offsets, inp, extra):
    """Shared (scale, a dict of offsets), batched (a NamedTuple with a nested tuple, an array)."""
    return _Out(scale * jnp.sum(inp.x, -1) + offsets["b"], (inp.pair[0] * extra, inp.pair[1] + offsets["a"]))


def test_pytrees_in_and_out_chunked_equal_whole():
    rng = np.random.default_rng(1)
    inp = _In(rng.normal(size=(7, 3)), (rng.normal(size=(7, 2, 2)), np.arange(7, dtype=np.int32)))
    extra = rng.normal(size=(7, 1, 1))
    shared = (3.0, {"a": np.int32(5), "b": np.float32(-1.0)})
    whole = run_batched(_tree_fn, (inp, extra), shared, chunk_size=100)
    chunked = run_batched(_tree_fn, (inp, extra), shared, chunk_size=3)  # 3 + 3 + 1 (padded) rows
    for out in (whole, chunked):
        assert isinstance(out, _Out) and isinstance(out.total, np.ndarray)
        assert out.total.shape == (7,) and out.parts[0].shape == (7, 2, 2) and out.parts[1].dtype == np.int32
    for a, b in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(chunked)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(whole.total, 3.0 * inp.x.sum(-1) - 1.0, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(whole.parts[1], np.arange(7) + 5)
    with pytest.raises(ValueError, match="same leading batch axis"):
        run_batched(_tree_fn, (inp, extra[:5]), shared)


def test_buckets_share_one_program_and_drop_the_padding():
    @jax.jit
    def double(x):
        return 2.0 * x

    rng = np.random.default_rng(2)
    for b in (5, 6, 8):  # one bucket of 8 rows: one compilation
        x = rng.normal(size=(b, 3))
        out = run_batched(double, (x,), chunk_size=100, buckets=True)
        np.testing.assert_allclose(out, 2.0 * x, rtol=1e-6)
    assert double._cache_size() == 1
    run_batched(double, (rng.normal(size=(9, 3)),), chunk_size=100, buckets=True)
    run_batched(double, (rng.normal(size=(40, 3)),), chunk_size=100, buckets=True)
    assert double._cache_size() == 3  # 16 and 48 rows
    assert [bucket_size(b) for b in (1, 2, 3, 9, 16, 17, 1000)] == [1, 2, 4, 16, 16, 32, 1008]
    run_batched(double, (rng.normal(size=(5, 3)),), chunk_size=6, buckets=True)  # capped at the chunk
    assert double._cache_size() == 4


def test_bad_devices_argument():
    with pytest.raises(ValueError, match="devices must be between 1"):
        resolve_devices(len(jax.local_devices()) + 1)
    with pytest.raises(ValueError, match="devices must be None"):
        resolve_devices("gpu")


SCRIPT = textwrap.dedent(
    """
    import numpy as np, jax
    import frugal.iae as iae
    from frugal.solvers.batching import resolve_devices
    from frugal.data import line_family, split
    from frugal.gamma import unmix
    assert len(jax.devices()) == 4, jax.devices()
    fam = line_family(20, 48, seed=0); s = split(fam)
    model = iae.train(fam.spectra[s.train], fam.spectra[s.anchors], epochs=60, progress=False)
    sig = model.decode(np.array([[0.3, 0.7]], np.float32))[0]
    bkg = np.linspace(2, 1, 48); bkg /= bkg.sum()
    y = np.random.default_rng(0).poisson(1e4 * bkg + 2e4 * sig / sig.sum(), size=(10, 48))
    assert resolve_devices() == jax.devices()[:1]              # host devices only when asked for
    # Two programs: 10 spectra sharded over 4 devices (padded to 12: 3 per device) against
    # one device in chunks of 4 (4 + 4 + 2 padded).
    sharded = unmix(y, model, background=bkg, devices=4)
    chunked = unmix(y, model, background=bkg, devices=1, chunk_size=4)
    np.testing.assert_allclose(sharded.counts, chunked.counts, rtol=1e-4)
    np.testing.assert_allclose(sharded.latent[0], chunked.latent[0], atol=1e-5)
    np.testing.assert_allclose(sharded.stderr, chunked.stderr, rtol=1e-3)
    print("SHARDED-OK")
    """
)


def _run_on_four_host_devices(script: str) -> subprocess.CompletedProcess:
    """``script`` in a fresh interpreter whose CPU is split into 4 host devices."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)


def test_sharded_unmix_equals_unsharded_on_four_host_devices():
    res = _run_on_four_host_devices(SCRIPT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "SHARDED-OK" in res.stdout


SUSHI_SCRIPT = textwrap.dedent(
    """
    import numpy as np, jax, jax.numpy as jnp
    from frugal.iae import model as M
    from frugal.xray import sushi
    assert len(jax.devices()) == 4, jax.devices()
    # A tiny random decoder (no training: only the batching is tested), one component,
    # 4 cubes of 8 x 8 pixels and 12 channels, started near the truth (no grid search:
    # two programs per device layout, not three), on two layouts.
    E, H, W = 12, 8, 8
    cfg = M.IAEConfig(n_channels=E, n_anchors=2, latent_dim=3, width=8, depth=1, activation="tanh")
    enc, dec = cfg.networks()
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    ref = jnp.full((1, E), 1.0 / E)
    omega = jax.random.normal(k3, (2, 3))
    state = M.IAEState({"encoder": enc.init(k1, ref[None]), "decoder": dec.init(k2, (omega,))}, ref,
                       jnp.repeat(ref[None], 2, 0), (omega,), jnp.full(2, -0.5), jnp.full(2, 1.5))
    model = M.IAEModel(cfg, state, {})
    rng = np.random.default_rng(0)
    w = rng.uniform(0.2, 0.8, (4, 1, H, W))
    lam = np.concatenate([1 - w, w], 1).astype(np.float32)
    x = np.maximum(np.asarray(model.decode(lam.transpose(0, 2, 3, 1).reshape(-1, 2))), 0)
    amp = rng.uniform(100, 400, (4, 1, H, W)).astype(np.float32)
    cubes = rng.poisson(amp * (x / x.sum(-1, keepdims=True)).reshape(4, H, W, E).transpose(0, 3, 1, 2))
    kw = dict(init=(amp, [np.clip(lam + 0.05, 0, 1)]), max_iter=5, tol=0.0)
    sharded = sushi(cubes, model, devices=4, **kw)            # one cube per device
    chunked = sushi(cubes, model, devices=1, chunk_size=2, **kw)  # one device, two chunks
    assert sharded.amplitude.shape == (4, 1, H, W) and np.all(sharded.n_iter >= 1)
    np.testing.assert_allclose(sharded.amplitude, chunked.amplitude, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(sharded.latent[0], chunked.latent[0], atol=1e-5)
    np.testing.assert_allclose(sharded.objective, chunked.objective, rtol=1e-5)
    np.testing.assert_array_equal(sharded.n_iter, chunked.n_iter)
    np.testing.assert_allclose(sharded.thresholds[0], chunked.thresholds[0], rtol=1e-5)
    print("SUSHI-SHARDED-OK")
    """
)


def test_sharded_sushi_equals_unsharded_on_four_host_devices():
    res = _run_on_four_host_devices(SUSHI_SCRIPT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "SUSHI-SHARDED-OK" in res.stdout


def test_unmix_default_chunk_follows_the_platform(monkeypatch):
    """Small chunks on a CPU (a vmapped loop waits for its slowest spectrum), large ones on
    accelerators; unmix passes the platform's default to run_batched."""
    import frugal.gamma.semsun as semsun
    from frugal.solvers.batching import CHUNK_SIZE, default_chunk_size

    platform = jax.local_devices()[0].platform
    assert default_chunk_size() == CHUNK_SIZE["cpu" if platform == "cpu" else "accelerator"]
    assert CHUNK_SIZE["cpu"] < CHUNK_SIZE["accelerator"]
    seen = []

    class Stop(Exception):
        pass

    def spy(fn, batched, shared, *, chunk_size, devices, **_):
        seen.append(chunk_size)
        raise Stop

    monkeypatch.setattr(semsun, "run_batched", spy)
    import frugal.iae as iae
    from frugal.data import line_family, split

    fam = line_family(10, 16, seed=0)
    s = split(fam)
    model = iae.train(fam.spectra[s.train], fam.spectra[s.anchors], epochs=1, progress=False)
    with pytest.raises(Stop):
        semsun.unmix(np.ones((3, model.config.n_channels)), model)
    with pytest.raises(Stop):
        semsun.unmix(np.ones((3, model.config.n_channels)), model, chunk_size=7)
    assert seen == [default_chunk_size(), 7]
