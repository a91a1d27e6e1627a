"""Encoder and decoder networks of the IAE, as Flax modules.

The modules see spectra already divided by the model's reference spectrum (so inputs are
O(1) whatever the number of channels or the normalisation of the data) and return *levels*
of codes: a tuple of arrays, one per encoder level that takes part in the interpolation.
The decoder takes the interpolated codes of the same levels and returns the relative
deviation ``r`` from the reference, so that the spectrum is ``reference * (1 + r)``.

Two families, after the published IAE models:

* ``dense``: fully connected, equal widths, residual layers
  ``h_{l+1} = act(h_l W_l + b_l) + r_l h_l`` with a learnt scalar ``r_l`` (Bobin et al.,
  Digital Signal Processing 2023, reference code jbobin/IAE).
* ``conv``: 1-D strided convolutions with ELU in the encoder, transposed convolutions back
  in the decoder (as sub-pixel convolutions), optional *lateral* codes (every encoder level is a code and is
  interpolated with the same barycentric weights, then added back in the decoder at the
  same resolution), as in the CNN model of SEMSUN (Phan et al., NIM A 1060 (2024) 169028).
  Defaults: filters 12,12,12,16,16,16; kernels 4,4,6,6,6,8; strides 1,1,2,2,4,4.

Spectra have shape ``(..., c, n)``: ``c`` channels of input (``c > 1`` for a *joint*
model where several radionuclides share one set of weights) of ``n`` energy bins.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

ACTIVATIONS = {
    "leaky_relu": lambda x: nn.leaky_relu(x, negative_slope=0.1),
    "elu": nn.elu,
    "gelu": nn.gelu,
    "tanh": jnp.tanh,
    "softplus": nn.softplus,
}


def conv_lengths(n: int, strides: Sequence[int]) -> tuple:
    """Lengths of the feature maps at each conv level ('SAME' padding: ``ceil(L / s)``)."""
    lengths = [n]
    for s in strides:
        lengths.append(-(-lengths[-1] // s))
    return tuple(lengths)


def _residual_stack(module: nn.Module, x, width: int, depth: int, activation: str):
    """``h_0 = act(x W + b)``, then ``h_{l+1} = act(h_l W_l + b_l) + r_l h_l`` (inside ``module``'s scope)."""
    act = ACTIVATIONS[activation]
    h = act(nn.Dense(width, name="input", parent=module)(x))
    for layer in range(depth - 1):
        r = module.param(f"residual_{layer}", nn.initializers.ones, ())
        h = act(nn.Dense(width, name=f"hidden_{layer}", parent=module)(h)) + r * h
    return h


class DenseEncoder(nn.Module):
    latent_dim: int
    width: int
    depth: int
    activation: str = "leaky_relu"

    @nn.compact
    def __call__(self, x):
        h = _residual_stack(self, x.reshape(x.shape[:-2] + (-1,)), self.width, self.depth, self.activation)
        return (nn.Dense(self.latent_dim, name="code")(h),)


class DenseDecoder(nn.Module):
    signal_shape: tuple
    width: int
    depth: int
    activation: str = "leaky_relu"

    @nn.compact
    def __call__(self, codes):
        (b,) = codes
        h = _residual_stack(self, b, self.width, self.depth, self.activation)
        size = math.prod(self.signal_shape)
        # Zero-initialised output: the untrained model returns the reference spectrum.
        out = nn.Dense(size, kernel_init=nn.initializers.zeros, name="output")(h)
        return out.reshape(out.shape[:-1] + tuple(self.signal_shape))


class ConvEncoder(nn.Module):
    filters: tuple
    kernels: tuple
    strides: tuple
    lateral: bool = True
    activation: str = "elu"

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        h = jnp.swapaxes(x, -1, -2)  # (..., n, c): Flax convolutions are channels-last
        levels = []
        for i, (f, k, s) in enumerate(zip(self.filters, self.kernels, self.strides)):
            h = act(nn.Conv(f, (k,), strides=(s,), padding="SAME", name=f"conv_{i}")(h))
            levels.append(h)
        return tuple(levels) if self.lateral else (levels[-1],)


class SubPixelConvTranspose(nn.Module):
    """Transposed 1-D convolution of stride ``s`` written as a sub-pixel convolution.

    A transposed convolution of stride ``s`` equals a stride-1 convolution producing
    ``s * features`` channels whose outputs are interleaved along the length (the
    polyphase decomposition; Shi et al., CVPR 2016). XLA runs the latter several times
    faster on CPUs than the dilated-input form of ``nn.ConvTranspose``.
    """

    features: int
    kernel: int
    stride: int
    kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init

    @nn.compact
    def __call__(self, h):
        s = self.stride
        k = max(1, -(-self.kernel // s))
        y = nn.Conv(self.features * s, (k,), padding="SAME", kernel_init=self.kernel_init, name="phases")(h)
        return y.reshape(y.shape[:-2] + (y.shape[-2] * s, self.features))


class ConvDecoder(nn.Module):
    signal_shape: tuple
    filters: tuple
    kernels: tuple
    strides: tuple
    lateral: bool = True
    activation: str = "elu"

    @nn.compact
    def __call__(self, codes):
        act = ACTIVATIONS[self.activation]
        c, n = self.signal_shape
        lengths = conv_lengths(n, self.strides)
        depth = len(self.filters)
        h = codes[-1]
        for i in range(depth - 1, 0, -1):
            h = SubPixelConvTranspose(self.filters[i - 1], self.kernels[i], self.strides[i], name=f"deconv_{i}")(h)
            h = act(h[..., : lengths[i], :])
            if self.lateral:
                h = h + codes[i - 1]
        out = SubPixelConvTranspose(c, self.kernels[0], self.strides[0], kernel_init=nn.initializers.zeros,
                                    name="output")(h)
        return jnp.swapaxes(out[..., :n, :], -1, -2)
