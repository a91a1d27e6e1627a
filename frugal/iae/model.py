"""The IAE as pure functions of a parameter pytree, and the user-facing ``IAEModel``.

Notation (DESIGN.md section 2): spectra ``x`` of shape ``(c, n)`` (``c = 1`` except for a
joint model), anchors ``E`` (``d`` spectra), encoder ``Phi``, decoder ``Psi``, anchor codes
``Omega = Phi(E)`` (one array per code level), barycentric weights ``lambda`` (the
*latent*, ``d`` numbers summing to one) and interpolated codes ``B = lambda Omega``.

Every function here is pure and takes the static :class:`IAEConfig` first, so it can be
jit-compiled once per architecture and vmapped or differentiated freely. ``IAEModel`` only
bundles a config, an :class:`IAEState` and training information, and checks arguments.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from frugal._validation import check_array, check_choice, check_float, check_int
from frugal.iae import networks
from frugal.iae.barycenter import (
    barycentric_weights,
    constrain_weights,
    flatten_levels,
    interpolate_codes,
)
from frugal.ops.losses import TINY
from frugal.unmix.manifold import BarycentricManifold, SignatureModel, pad_channels

#: Largest log-ratio to the reference spectrum the ``exp`` output can take (e^12 ~ 1.6e5):
#: keeps an untrained or extrapolating decoder from overflowing.
MAX_LOG_RATIO = 12.0


@dataclasses.dataclass(frozen=True)
class IAEConfig:
    """Static description of an IAE (hashable: it is a ``jit`` static argument).

    n_inputs, n_channels: spectra are ``(n_inputs, n_channels)`` inside the model; a model
      with ``joint=False`` has ``n_inputs = 1`` and takes ``(n_channels,)`` spectra.
    output: how the decoder's output ``r`` becomes a spectrum ``x = reference * g(r)``:
      ``"exp"`` (``g = exp``: non-negative, and attenuation-like deformations are linear
      in ``r``), ``"softplus"`` (non-negative) or ``"linear"`` (``g(r) = 1 + r``).
    constraint: what ``interpolate`` does with the weights: ``None`` (affine),
      ``"simplex"`` or ``"box"`` (the range seen on the training set).
    """

    n_channels: int
    n_anchors: int
    n_inputs: int = 1
    joint: bool = False
    arch: str = "dense"
    latent_dim: int = 16
    width: int = 128
    depth: int = 3
    filters: tuple = (12, 12, 12, 16, 16, 16)
    kernels: tuple = (4, 4, 6, 6, 6, 8)
    strides: tuple = (1, 1, 2, 2, 4, 4)
    lateral: bool = True
    activation: str | None = None
    output: str = "exp"
    rel_eps: float = 1e-6
    constraint: str | None = None

    def __post_init__(self):
        # Checked when the configuration is made, so that a bad value fails at once with its
        # name rather than as NaN weights after minutes of training (a negative rel_eps, for
        # one, makes the regularised Gram matrix of the anchors indefinite).
        for name in ("n_channels", "n_anchors", "n_inputs", "latent_dim", "width", "depth"):
            check_int(getattr(self, name), name, minimum=1)
        check_float(self.rel_eps, "rel_eps", minimum=0.0, strict=True)
        check_choice(self.arch, "arch", ("dense", "conv"))
        check_choice(self.output, "output", ("exp", "softplus", "linear"))
        check_choice(self.constraint, "constraint", (None, "simplex", "box"))

    @property
    def signal_shape(self) -> tuple:
        """Shape of one spectrum as the user gives it."""
        return (self.n_inputs, self.n_channels) if self.joint else (self.n_channels,)

    def networks(self):
        """The ``(encoder, decoder)`` Flax modules."""
        shape = (self.n_inputs, self.n_channels)
        if self.arch == "dense":
            act = self.activation or "leaky_relu"
            return (
                networks.DenseEncoder(self.latent_dim, self.width, self.depth, act),
                networks.DenseDecoder(shape, self.width, self.depth, act),
            )
        if self.arch == "conv":
            act = self.activation or "elu"
            return (
                networks.ConvEncoder(self.filters, self.kernels, self.strides, self.lateral, act),
                networks.ConvDecoder(shape, self.filters, self.kernels, self.strides, self.lateral, act),
            )
        raise ValueError(f"arch must be 'dense' or 'conv', got {self.arch!r}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "IAEConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown IAE configuration field(s): {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class IAEState(NamedTuple):
    """Arrays of a trained IAE (a pytree).

    params: ``{"encoder": ..., "decoder": ...}`` Flax parameters.
    reference: ``(c, n)`` reference spectrum: inputs are divided by it, outputs multiplied.
    anchors: ``(d, c, n)`` anchor spectra.
    anchor_codes: per code level, ``(d, ...)`` encoded anchors (derived, cached).
    latent_lower, latent_upper: ``(d,)`` range of the weights over the training set.
    """

    params: Any
    reference: jax.Array
    anchors: jax.Array
    anchor_codes: tuple
    latent_lower: jax.Array
    latent_upper: jax.Array


# ---------------------------------------------------------------------------------------
# Pure functions (config static)


def encode(config: IAEConfig, params, reference, x):
    """Codes (a tuple of levels) of spectra ``x`` ``(..., c, n)``."""
    encoder, _ = config.networks()
    return encoder.apply(params["encoder"], x / reference)


def latent_from_codes(config: IAEConfig, codes, anchor_codes, lower=None, upper=None):
    """Barycentric weights ``(..., d)`` of codes with respect to the anchor codes."""
    batch_ndim = codes[-1].ndim - anchor_codes[-1].ndim + 1
    z = flatten_levels(codes, batch_ndim)
    omega = flatten_levels(anchor_codes, 1)
    lam = barycentric_weights(z, omega, rel_eps=config.rel_eps)
    return constrain_weights(lam, config.constraint, lower, upper)


def output_map(config: IAEConfig, r):
    """``g(r)`` of the decoder's output (see ``IAEConfig.output``)."""
    if config.output == "exp":
        return jnp.exp(jnp.minimum(r, MAX_LOG_RATIO))
    if config.output == "softplus":
        return jax.nn.softplus(20.0 * (1.0 + r)) / 20.0
    if config.output == "linear":
        return 1.0 + r
    raise ValueError(f"output must be 'exp', 'softplus' or 'linear', got {config.output!r}")


def decode_codes(config: IAEConfig, params, reference, codes):
    """Spectra ``(..., c, n)`` decoded from (interpolated) codes."""
    _, decoder = config.networks()
    return reference * output_map(config, decoder.apply(params["decoder"], codes))


def decode(config: IAEConfig, state: IAEState, latent):
    """``Psi(lambda Omega)``: spectra ``(..., c, n)`` for weights ``latent`` ``(..., d)``."""
    codes = interpolate_codes(latent, state.anchor_codes)
    return decode_codes(config, state.params, state.reference, codes)


def unit_signatures(config: IAEConfig, state: IAEState, latent, n_channels: int | None = None):
    """The signatures a solver mixes: the spectra decoded at ``latent`` ``(..., d)``, clipped at
    zero and normalised to unit sum over their channels, ``(..., c, n)`` (zero-padded to
    ``n_channels`` when given: a model of the first ``n`` channels, zero beyond)."""
    x = pad_channels(jnp.maximum(decode(config, state, latent), 0.0), n_channels)
    return x / jnp.maximum(jnp.sum(x, axis=-1, keepdims=True), TINY)


@dataclasses.dataclass(frozen=True)
class IAEManifold(BarycentricManifold):
    """The IAE as a :class:`frugal.unmix.Manifold`: coordinates are the barycentric weights
    (the latent), ``params`` the :class:`IAEState`, signatures :func:`unit_signatures`."""

    config: IAEConfig

    @property
    def n_inputs(self) -> int:
        return self.config.n_inputs

    @property
    def n_channels(self) -> int:
        return self.config.n_channels

    @property
    def n_coords(self) -> int:
        return self.config.n_anchors

    def signatures(self, params, coords, n_channels=None):
        return unit_signatures(self.config, params, coords, n_channels)

    def signature_jvps(self, params, coords, directions):
        r"""Forward mode through the decoder, one JVP per direction (a tangent equal to the
        direction at every point of the batch gives each point's derivative; ``k`` is small),
        then the clip and the normalisation by hand, :math:`dS = (dx - S \sum dx) / \sum x`.
        Differentiating ``x / sum(x)`` with ``jvp`` gives the same numbers but XLA on CPU
        fuses the sum into its broadcast consumer and recomputes it for every channel:
        three times slower."""
        def raw(q):
            return decode(self.config, params, q)

        tangents = [jax.jvp(raw, (coords,), (jnp.broadcast_to(directions[:, i], coords.shape),))
                    for i in range(directions.shape[1])]
        x = tangents[0][0]
        pos = x > 0
        x = jnp.where(pos, x, 0.0)
        total = jax.lax.optimization_barrier(jnp.maximum(jnp.sum(x, axis=-1, keepdims=True), TINY))
        spectra = x / total
        derivs = []
        for _, dx in tangents:
            dx = jnp.where(pos, dx, 0.0)
            d_total = jax.lax.optimization_barrier(jnp.sum(dx, axis=-1, keepdims=True))
            derivs.append((dx - spectra * d_total) / total)
        return spectra, derivs


def interpolate(config: IAEConfig, state: IAEState, x):
    """Fast interpolation: the weights ``(..., d)`` of spectra ``x`` ``(..., c, n)`` (one encoder pass)."""
    codes = encode(config, state.params, state.reference, x)
    return latent_from_codes(config, codes, state.anchor_codes, state.latent_lower, state.latent_upper)


def reconstruct(config: IAEConfig, state: IAEState, x):
    """``Psi(P(Phi(x)))``: the closest member of the learnt family, by fast interpolation."""
    return decode(config, state, interpolate(config, state, x))


def make_state(config: IAEConfig, params, reference, anchors, latent_lower=None, latent_upper=None):
    """Build an :class:`IAEState`, encoding the anchors."""
    d = config.n_anchors
    lower = jnp.full((d,), -jnp.inf) if latent_lower is None else jnp.asarray(latent_lower)
    upper = jnp.full((d,), jnp.inf) if latent_upper is None else jnp.asarray(latent_upper)
    codes = encode(config, params, reference, anchors)
    return IAEState(params, reference, anchors, tuple(codes), lower, upper)


_interpolate = jax.jit(interpolate, static_argnums=0)
_decode = jax.jit(decode, static_argnums=0)
_reconstruct = jax.jit(reconstruct, static_argnums=0)


@partial(jax.jit, static_argnums=0)
def _encode_flat(config, state, x):
    return flatten_levels(encode(config, state.params, state.reference, x), x.ndim - 2)


# ---------------------------------------------------------------------------------------
# User-facing model


@dataclasses.dataclass(frozen=True)
class IAEModel(SignatureModel):
    """A trained Interpolatory AutoEncoder.

    ``config`` (static architecture), ``state`` (arrays, a pytree usable with the pure
    functions of :mod:`frugal.iae.model`) and ``info`` (training history and metadata).
    Every method accepts one spectrum or a batch (a leading axis).
    """

    config: IAEConfig
    state: IAEState
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def signal_shape(self) -> tuple:
        return self.config.signal_shape

    @property
    def n_anchors(self) -> int:
        return self.config.n_anchors

    @property
    def joint(self) -> bool:
        return self.config.joint

    @property
    def manifold(self) -> IAEManifold:
        """The model as the solvers see it (with :attr:`state` as its ``params``)."""
        return IAEManifold(self.config)

    @property
    def anchors(self) -> np.ndarray:
        return np.asarray(self.state.anchors).reshape((self.n_anchors,) + self.signal_shape)

    @property
    def latent_bounds(self) -> tuple:
        """``(lower, upper)`` weights seen on the training set."""
        return np.asarray(self.state.latent_lower), np.asarray(self.state.latent_upper)

    def _spectra(self, x, name="x", nonnegative=False):
        """Validate and reshape user spectra to ``(B, c, n)``; also says if a batch was given."""
        shape = self.signal_shape
        arr = check_array(x, name, ndim=(len(shape), len(shape) + 1), shape=shape, nonnegative=nonnegative)
        batched = arr.ndim == len(shape) + 1
        arr = arr.reshape((-1, self.config.n_inputs, self.config.n_channels))
        return jnp.asarray(arr), batched

    def _out(self, spectra, batched):
        spectra = np.asarray(spectra).reshape((-1,) + self.signal_shape)
        return spectra if batched else spectra[0]

    def _latent(self, latent):
        d = self.n_anchors
        arr = check_array(latent, "latent", ndim=(1, 2), shape=(d,))
        return jnp.asarray(arr.reshape(-1, d)), arr.ndim == 2

    def with_constraint(self, constraint: str | None) -> "IAEModel":
        """The same model, with ``interpolate`` projecting its weights as ``constraint`` says."""
        constrain_weights(jnp.ones(1), constraint, 0.0, 1.0)  # validates the name
        return dataclasses.replace(self, config=dataclasses.replace(self.config, constraint=constraint))

    def encode(self, x) -> np.ndarray:
        """Codes of ``x`` (all levels flattened and concatenated), ``(k,)`` or ``(B, k)``."""
        arr, batched = self._spectra(x)
        z = np.asarray(_encode_flat(self.config, self.state, arr))
        return z if batched else z[0]

    def interpolate(self, x) -> np.ndarray:
        """Barycentric weights (latent) ``(d,)`` or ``(B, d)`` of spectra ``x``."""
        arr, batched = self._spectra(x)
        lam = np.asarray(_interpolate(self.config, self.state, arr))
        return lam if batched else lam[0]

    def decode(self, latent) -> np.ndarray:
        """Spectra for weights ``latent`` ``(d,)`` or ``(B, d)`` (they should sum to one)."""
        lam, batched = self._latent(latent)
        return self._out(_decode(self.config, self.state, lam), batched)

    def reconstruct(self, x) -> np.ndarray:
        """Closest member of the family to ``x`` by fast interpolation, same shape as ``x``."""
        arr, batched = self._spectra(x)
        return self._out(_reconstruct(self.config, self.state, arr), batched)

    def __repr__(self) -> str:
        c = self.config
        arch = f"dense {c.depth}x{c.width}, latent {c.latent_dim}" if c.arch == "dense" else (
            f"conv filters {c.filters}, strides {c.strides}, lateral={c.lateral}")
        return f"IAEModel(signal_shape={c.signal_shape}, anchors={c.n_anchors}, {arch}, output={c.output!r})"
