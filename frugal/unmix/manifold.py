r"""The manifold protocol: what an unmixing solver needs of a model of deforming signatures.

A spectral model whose signatures move (an IAE, a table of an IAE, a decoder of physical
parameters) is, for a solver, a *manifold*: a map from coordinates ``x`` (``(n_coords,)``)
to ``n_inputs`` unit-sum signatures of ``n_channels`` channels,

.. math:: S(x) \in \mathbb{R}_{\ge 0}^{c \times n}, \qquad \textstyle\sum_j S_{ij}(x) = 1,

with the coordinates kept in an admissible set: a box ``lower <= x <= upper``, within an
affine plane for barycentric weights (``sum(x) = 1``). A solver moves in the *free
coordinates* ``t`` of that plane, ``x = x_ref + V t`` with ``V`` an orthonormal basis of its
tangent (``(n_coords, n_free)``), and projects back onto the admissible set.

A manifold comes in two halves, the JAX way:

* the :class:`Manifold` itself, a frozen dataclass (hashable: a ``jit`` static argument, so
  one program is compiled per architecture), which holds the code;
* ``params``, a pytree of arrays (traced: the same program serves every trained model of
  that architecture, and ``jax.grad`` reaches them).

The solvers of :mod:`frugal.gamma` (SEMSUN) and :mod:`frugal.xray` (SUSHI) use nothing else
of a model: a new kind of model is a new subclass, with no change to them. Derivatives are
JAX's: :meth:`Manifold.signatures` must be differentiable in ``coords`` (a model with exact
derivatives of its own gives them with ``jax.custom_jvp``); :meth:`Manifold.signature_jvps`
is there for a model that computes directional derivatives faster than ``jax.jvp`` of its
signatures does (the IAE does, see :class:`frugal.iae.model.IAEManifold`).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from frugal._validation import check_choice
from frugal.ops.proxes import project_box_section
from frugal.solvers.newton import sum_to_one_basis

__all__ = ["BarycentricManifold", "BoxManifold", "Manifold", "ManifoldModel", "SignatureModel", "as_models",
           "check_weight_box", "pad_channels"]


class Manifold(abc.ABC):
    """The static half of a model of signatures (subclasses are frozen dataclasses).

    Subclasses define ``n_inputs`` (signatures per point, ``c``), ``n_channels`` (``n``),
    ``n_coords`` (the length of the coordinate vector) and ``n_free`` (the dimension of the
    admissible set, the columns of :meth:`tangent_basis`), :meth:`signatures`,
    :meth:`project` and :meth:`tangent_basis`.
    """

    n_inputs: int
    n_channels: int
    n_coords: int
    n_free: int

    @abc.abstractmethod
    def signatures(self, params, coords, n_channels: int | None = None):
        """Non-negative signatures ``(..., c, n)`` at ``coords`` ``(..., n_coords)``, each
        summing to one over the model's energy range (to less where the channels see only
        part of it: :class:`frugal.gamma.calibration.CalibratedManifold`), zero-padded to
        ``n_channels`` when given (a model of the first ``n`` channels of a longer spectrum)."""

    @abc.abstractmethod
    def project(self, coords, lower, upper):
        """Euclidean projection of ``coords`` ``(..., n_coords)`` onto the admissible set
        within the box ``[lower, upper]`` ``(n_coords,)``."""

    @abc.abstractmethod
    def tangent_basis(self, dtype):
        """Orthonormal ``(n_coords, n_free)`` basis ``V`` of the directions that keep
        ``coords`` in the admissible set's plane."""

    def signature_jvps(self, params, coords, directions):
        r"""``(S, [dS_1, ..., dS_k])``: the signatures ``(..., c, n)`` at ``coords``
        ``(..., n_coords)`` and their directional derivatives along each column of
        ``directions`` ``(n_coords, k)`` (the same direction at every point of a batch).

        By default ``jax.jvp`` of :meth:`signatures`, one per direction."""
        out = [jax.jvp(lambda x: self.signatures(params, x), (coords,),
                       (jnp.broadcast_to(directions[:, i], coords.shape),)) for i in range(directions.shape[1])]
        return out[0][0], [dx for _, dx in out]


class BarycentricManifold(Manifold):
    """Coordinates that are barycentric weights: ``sum(x) = 1`` within the box
    (``n_free = n_coords - 1``)."""

    @property
    def n_free(self) -> int:
        return self.n_coords - 1

    def project(self, coords, lower, upper):
        return project_box_section(coords, lower, upper, 1.0)

    def tangent_basis(self, dtype):
        return sum_to_one_basis(self.n_coords, dtype)


class BoxManifold(Manifold):
    """Coordinates in a box and nothing else (physical parameters): ``n_free = n_coords``."""

    @property
    def n_free(self) -> int:
        return self.n_coords

    def project(self, coords, lower, upper):
        return jnp.clip(coords, lower, upper)

    def tangent_basis(self, dtype):
        return jnp.eye(self.n_coords, dtype=dtype)


def pad_channels(x, n_channels: int | None):
    """``x`` ``(..., n)`` zero-padded to ``n_channels`` channels (unchanged when None)."""
    if n_channels is None:
        return x
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n_channels - x.shape[-1])])


def check_weight_box(lower, upper, name: str) -> tuple:
    """``(lower, upper)`` if the box meets the plane ``sum = 1`` (``lower <= upper``,
    ``sum(lower) <= 1 <= sum(upper)``), else a ``ValueError`` naming ``name``."""
    if np.any(lower > upper) or lower.sum() > 1 or upper.sum() < 1:
        raise ValueError(f"{name} must satisfy lower <= upper and sum(lower) <= 1 <= sum(upper)")
    return lower, upper


class SignatureModel:
    """What :func:`frugal.gamma.unmix` and :func:`frugal.xray.sushi` take of a model: its
    :attr:`manifold`, its ``state`` (the manifold's ``params``), ``latent_bounds`` (the
    ``(lower, upper)`` coordinates where the model is valid, e.g. the range an IAE saw in
    training) and, from these, :meth:`weight_bounds`. ``frugal.iae.IAEModel`` is the
    trained kind; :class:`ManifoldModel` wraps any :class:`Manifold` and its params.
    """

    manifold: Manifold

    @property
    def n_anchors(self) -> int:
        """Length of the coordinate vector (the anchors of an IAE)."""
        return self.manifold.n_coords

    @property
    def joint(self) -> bool:
        """Whether one spectrum holds all the model's inputs (then it must span the counts' channels)."""
        return self.manifold.n_inputs > 1

    def weight_bounds(self, bounds="training") -> tuple:
        """``(lower, upper)`` ``(d,)`` box of the weights (which also sum to one) that a solver
        keeps them in: ``"training"`` (the range seen on the training set, where the decoder is
        trained), ``"simplex"`` (``lambda >= 0``), ``None`` (no box) or a pair of ``(d,)``
        arrays ``(lower, upper)`` with ``lower <= upper`` and ``sum(lower) <= 1 <= sum(upper)``."""
        d = self.n_anchors
        if bounds is None:
            return np.full(d, -np.inf), np.full(d, np.inf)
        if isinstance(bounds, str):
            check_choice(bounds, "bounds", ("training", "simplex"))
            return self.latent_bounds if bounds == "training" else (np.zeros(d), np.full(d, np.inf))
        try:
            lower, upper = (np.broadcast_to(np.asarray(b, float), (d,)) for b in bounds)
        except (TypeError, ValueError) as err:
            raise ValueError(f"bounds must be None, 'training', 'simplex' or (lower, upper) of shape ({d},)") from err
        return check_weight_box(lower, upper, "bounds")


@dataclasses.dataclass(frozen=True)
class ManifoldModel(SignatureModel):
    """Any :class:`BarycentricManifold` with its ``params`` and the box ``lower``/``upper``
    (``(n_coords,)``, within ``sum = 1``) where it is valid, as a model that
    :func:`frugal.gamma.unmix` and :func:`frugal.xray.sushi` take like an ``IAEModel``."""

    manifold: Manifold
    params: Any
    lower: Any
    upper: Any

    def __post_init__(self):
        if not isinstance(self.manifold, Manifold):
            raise TypeError(f"manifold must be a frugal.unmix.Manifold, got {type(self.manifold).__name__}")
        d = self.manifold.n_coords
        for name in ("lower", "upper"):
            arr = np.asarray(getattr(self, name), float)
            if arr.shape != (d,):
                raise ValueError(f"{name} must have shape ({d},) (the manifold's n_coords), got {arr.shape}")
            object.__setattr__(self, name, arr)
        check_weight_box(self.lower, self.upper, "lower and upper")

    @property
    def state(self):
        return self.params

    @property
    def latent_bounds(self) -> tuple:
        return self.lower, self.upper


def as_models(models) -> list:
    """The models of an unmixing call as a non-empty list of :class:`SignatureModel`.

    models: one model (an ``IAEModel`` or a :class:`ManifoldModel`) or a sequence of them.
    Raises ``TypeError`` when ``models`` is not a sequence or names the first entry that is
    not a model or whose manifold's coordinates are not barycentric weights (the starts and
    the grid of the unmixing calls are set up on the weights' simplex), ``ValueError`` when
    it is empty.
    """
    if isinstance(models, SignatureModel):
        models = [models]
    try:
        models = list(models)
    except TypeError as err:
        raise TypeError(f"models must be an IAEModel or a sequence of them, got {type(models).__name__}") from err
    if not models:
        raise ValueError("models must hold at least one IAEModel")
    for i, mdl in enumerate(models):
        if not isinstance(mdl, SignatureModel):
            raise TypeError(f"models[{i}] must be an IAEModel or a frugal.unmix.ManifoldModel, "
                            f"got {type(mdl).__name__}")
        if not isinstance(mdl.manifold, BarycentricManifold):
            raise TypeError(f"models[{i}]: the unmixing calls need barycentric coordinates (a "
                            f"BarycentricManifold), got {type(mdl.manifold).__name__}")
    return models
