"""Chunked and sharded batches give the results of one unsharded batch."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frugal.solvers.batching import resolve_devices, run_batched


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


def test_bad_devices_argument():
    with pytest.raises(ValueError, match="devices must be between 1"):
        resolve_devices(len(jax.local_devices()) + 1)
    with pytest.raises(ValueError, match="devices must be None"):
        resolve_devices("gpu")


SCRIPT = textwrap.dedent(
    """
    import numpy as np, jax
    import frugal.iae as iae
    from frugal.data import line_family, split
    from frugal.gamma import unmix
    assert len(jax.devices()) == 4, jax.devices()
    fam = line_family(20, 48, seed=0); s = split(fam)
    model = iae.train(fam.spectra[s.train], fam.spectra[s.anchors], epochs=60, progress=False)
    sig = model.decode(np.array([[0.3, 0.7]], np.float32))[0]
    bkg = np.linspace(2, 1, 48); bkg /= bkg.sum()
    y = np.random.default_rng(0).poisson(1e4 * bkg + 2e4 * sig / sig.sum(), size=(10, 48))
    sharded = unmix(y, model, background=bkg)                  # all 4 devices
    single = unmix(y, model, background=bkg, devices=1)
    chunked = unmix(y, model, background=bkg, devices=2, chunk_size=4)
    for other in (single, chunked):
        np.testing.assert_allclose(sharded.counts, other.counts, rtol=1e-4)
        np.testing.assert_allclose(sharded.latent[0], other.latent[0], atol=1e-5)
        np.testing.assert_allclose(sharded.stderr, other.stderr, rtol=1e-3)
    print("SHARDED-OK")
    """
)


def test_sharded_unmix_equals_unsharded_on_four_host_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "SHARDED-OK" in res.stdout
