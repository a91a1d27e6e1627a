"""The toy problems that several test modules share (built by session fixtures in conftest.py).

One definition each, so that the modules that use them solve the same problems with the
same shapes and reuse each other's compiled programs (see the compilation cache in
conftest.py).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import frugal.iae as iae
from frugal.data import line_family, split
from frugal.iae import model as M
from frugal.xray import simulate as xs

#: Channels of the gamma toy problem; channels of the X-ray toy models.
GAMMA_CHANNELS = 96
XRAY_CHANNELS = 40


class GammaToy(NamedTuple):
    """Joint IAE of two toy radionuclides sharing one shielding-like parameter, a background.

    model: the joint IAE (2 anchors); background: unit-sum ``(96,)``; joint: the training
    family ``(30, 2, 96)``; split: its train / anchor / test split.
    """

    model: object
    background: np.ndarray
    joint: np.ndarray
    split: object


def gamma_toy() -> GammaToy:
    m = GAMMA_CHANNELS
    fam = line_family(30, m, seed=5)
    s = split(fam, test_fraction=0.2, seed=0)
    joint = np.stack([fam.spectra, fam.spectra[:, ::-1] * np.linspace(1.5, 0.5, m)], axis=1)
    joint /= joint.sum(-1, keepdims=True)
    model = iae.train(joint[s.train], joint[s.anchors], epochs=400, progress=False)
    background = np.exp(-3 * np.linspace(0, 1, m)) + 0.2
    return GammaToy(model, background / background.sum(), joint, s)


def random_iae(d, reference, seed, n_channels=XRAY_CHANNELS):
    """A small IAE with a random smooth (tanh) decoder and well separated anchor codes
    (no training: the model is exact, so a test of a solver tests nothing else)."""
    cfg = M.IAEConfig(n_channels=n_channels, n_anchors=d, latent_dim=4, width=16, depth=2, activation="tanh")
    enc, dec = cfg.networks()
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
    ref = jnp.asarray(reference / reference.sum(), jnp.float32)[None]
    omega = jax.random.normal(k3, (d, cfg.latent_dim))
    params_dec = dec.init(k2, (omega,))
    kernel = params_dec["params"]["output"]["kernel"]
    params_dec["params"]["output"]["kernel"] = 0.5 * jax.random.normal(k4, kernel.shape) / np.sqrt(kernel.shape[0])
    state = M.IAEState({"encoder": enc.init(k1, ref[None]), "decoder": params_dec}, ref,
                       jnp.repeat(ref[None], d, 0), (omega,), jnp.full(d, -0.5), jnp.full(d, 1.5))
    return M.IAEModel(cfg, state, {})


def xray_toy_models() -> list:
    """A thermal model (3 anchors) and a synchrotron model (2 anchors) on 40 channels."""
    en = xs.energies(XRAY_CHANNELS)
    return [random_iae(3, xs.thermal_spectrum(2.0, 0.0, energies=en), 0),
            random_iae(2, xs.synchrotron_spectrum(2.5, energies=en), 1)]
