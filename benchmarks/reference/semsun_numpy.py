"""Reference SEMSUN in NumPy/SciPy: the published algorithm, one spectrum at a time.

An independent reimplementation of the unmixing method of D.-T. Phan, J. Bobin, C. Thiam,
C. Bobin, "A hybrid Machine Learning unmixing method for automatic analysis of gamma-spectra
with spectral variability", Nucl. Instrum. Methods A 1060 (2024) 169028 (SEMSUN), written
from the paper (and DESIGN.md section 3) to check and time :func:`frugal.gamma.unmix`. It
shares no code with frugal: only the trained parameters of the IAEs are read (once, as
NumPy arrays), and everything after that is NumPy and SciPy.

Model: counts ``y ~ Poisson(S(lambda)^T a)`` with unit-sum signature rows
``S = [b, s_1(lambda_1), ..., s_K(lambda_K)]`` (``b`` a fixed background), each ``s_k`` decoded
by an IAE at barycentric weights ``lambda_k``: one IAE per radionuclide (SEMSUN-i) or one
*joint* IAE whose inputs are the radionuclides and which share one ``lambda`` (SEMSUN-j).

Algorithm (block coordinate descent, as published), from the starting weights:

1. ``a``-step: multiplicative (NNPU / EM) Poisson updates with the signatures fixed,
   ``a <- a * S (y / S^T a) / S 1``, warm-started from the previous ``a``, until the mean
   relative change of ``a`` is at most ``a_tol`` (``1e-6``) or ``a_iter`` (1000) updates;
2. ``lambda``-step: for each IAE in turn (Gauss-Seidel; the only one for SEMSUN-j), the
   Poisson deviance over its weights with the counts and the other signatures fixed, by
   ``scipy.optimize.minimize(method="SLSQP")`` with finite-difference gradients (no ``jac``:
   SciPy's two-point differences), the equality constraint ``sum(lambda) = 1`` and the box
   of weights seen in training (``model.latent_bounds``) as bounds, warm-started from the
   previous weights. As in the published code, an IAE whose counts all fell to ``<= 1e-10``
   is not updated after the first iteration;
3. stop when the relative changes ``||a' - a|| / ||a||`` and ``||S' - S||_F / ||S||_F`` both
   fall below ``tol`` (``1e-4``, the published default), or after ``max_iter`` (100) outer
   iterations.

Signatures are decoded like frugal's: the decoder's spectrum at the weights, clipped at 0,
padded with zeros to the ``m`` channels of the counts (an individual IAE may describe only
the first ``n_k`` channels), and normalised to unit sum per input.

Choices where the paper (or its code) leaves room, all documented in ``README.md``:

* the objective is the Poisson deviance ``2 sum y log(y / mu) - (y - mu)`` (``y log y = 0``
  at ``y = 0``; the published code minimised the negative log-likelihood with ``mu + 1e-6``,
  which has the same minimiser up to that offset, and a deviance scale makes ``ftol``
  meaningful);
* finite-difference steps are SciPy's default (``sqrt(eps)``, float64 decoder) unless
  ``fd_step`` is given (the published code used ``1e-3`` on a float32 PyTorch decoder);
* the weights start at ``latent0`` (default: the middle of the training range, frugal's
  default), not at the fast interpolation of a first NMF estimate; counts start at
  ``sum(y) / K`` for every source (the published ``NNPU`` default up to the scale, which
  its first update sets anyway).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import NamedTuple, Sequence

import numpy as np
from scipy.optimize import minimize

#: Floor of the expected counts inside ``log`` (a channel with counts but no model).
TINY = 1e-30

#: Largest log-ratio to the reference spectrum of an ``exp`` output (as in the IAE).
MAX_LOG_RATIO = 12.0


# ---------------------------------------------------------------------------------------
# Dense IAE forward pass in NumPy


def _gelu(x):
    # tanh approximation (the default of flax.linen.gelu)
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


ACTIVATIONS = {
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.1 * x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "gelu": _gelu,
    "tanh": np.tanh,
    "softplus": lambda x: np.logaddexp(x, 0.0),
}


def _to_numpy(tree, dtype):
    """Nested mappings of arrays (a Flax parameter pytree) as plain dicts of NumPy arrays."""
    if isinstance(tree, Mapping):
        return {k: _to_numpy(v, dtype) for k, v in tree.items()}
    return np.asarray(tree, dtype=dtype)


def _residual_stack(p, x, act):
    """``h = act(x W + b)``, then ``h <- act(h W_l + b_l) + r_l h`` for each hidden layer."""
    h = act(x @ p["input"]["kernel"] + p["input"]["bias"])
    layer = 0
    while f"hidden_{layer}" in p:
        d = p[f"hidden_{layer}"]
        h = act(h @ d["kernel"] + d["bias"]) + p[f"residual_{layer}"] * h
        layer += 1
    return h


class NumpyIAE:
    """The dense IAE of a :class:`frugal.iae.IAEModel`, evaluated with NumPy (float64 by default).

    Reads the trained parameters, reference spectrum, anchors and training range of the
    weights once; encodes the anchors itself. ``decode(lam)`` returns the ``(c, n)`` spectra
    at barycentric weights ``lam`` (``c = n_inputs``), ``rows(lam, m)`` the unit-sum
    signatures padded to ``m`` channels. ``n_decode`` counts decoder evaluations.
    """

    def __init__(self, model, dtype=np.float64):
        config = model.config
        if config.arch != "dense":
            raise NotImplementedError(f"only the dense IAE is reimplemented, got arch={config.arch!r}")
        self.dtype = dtype
        self.n_inputs = int(config.n_inputs)
        self.n_channels = int(config.n_channels)
        self.n_anchors = int(config.n_anchors)
        self.joint = bool(config.joint)
        self.output = config.output
        self.act = ACTIVATIONS[config.activation or "leaky_relu"]
        params = _to_numpy(model.state.params, dtype)
        self.encoder = params["encoder"]["params"]
        self.decoder = params["decoder"]["params"]
        for name, p in (("encoder", self.encoder), ("decoder", self.decoder)):
            depth = 1 + sum(k.startswith("hidden_") for k in p)
            if depth != config.depth:
                raise ValueError(f"{name} has {depth} layers, the configuration says {config.depth}")
        state = model.state
        self.reference = np.asarray(state.reference, dtype).reshape(self.n_inputs, self.n_channels)
        self.anchors = np.asarray(state.anchors, dtype).reshape(self.n_anchors, self.n_inputs, self.n_channels)
        self.lower = np.asarray(state.latent_lower, dtype)
        self.upper = np.asarray(state.latent_upper, dtype)
        self.anchor_codes = self.encode(self.anchors)  # (d, k)
        self.n_decode = 0

    def encode(self, x):
        """Codes ``(..., k)`` of spectra ``x`` ``(..., c, n)``."""
        x = np.asarray(x, self.dtype) / self.reference
        h = _residual_stack(self.encoder, x.reshape(x.shape[:-2] + (-1,)), self.act)
        return h @ self.encoder["code"]["kernel"] + self.encoder["code"]["bias"]

    def _output_map(self, r):
        if self.output == "exp":
            return np.exp(np.minimum(r, MAX_LOG_RATIO))
        if self.output == "softplus":
            return np.logaddexp(20.0 * (1.0 + r), 0.0) / 20.0
        if self.output == "linear":
            return 1.0 + r
        raise ValueError(f"unknown output map {self.output!r}")

    def decode(self, lam):
        """Spectra ``(..., c, n)`` at weights ``lam`` ``(..., d)``: ``reference * g(Psi(lam Omega))``."""
        lam = np.asarray(lam, self.dtype)
        self.n_decode += int(np.prod(lam.shape[:-1], dtype=int))
        code = lam @ self.anchor_codes
        h = _residual_stack(self.decoder, code, self.act)
        r = h @ self.decoder["output"]["kernel"] + self.decoder["output"]["bias"]
        r = r.reshape(r.shape[:-1] + (self.n_inputs, self.n_channels))
        return self.reference * self._output_map(r)

    def rows(self, lam, m: int | None = None):
        """Unit-sum signatures ``(c, m)``: decoded, clipped at 0, zero-padded to ``m`` channels."""
        s = np.maximum(self.decode(lam), 0.0)
        m = self.n_channels if m is None else m
        if m > self.n_channels:
            s = np.concatenate([s, np.zeros(s.shape[:-1] + (m - self.n_channels,), s.dtype)], axis=-1)
        return s / np.maximum(s.sum(-1, keepdims=True), TINY)


# ---------------------------------------------------------------------------------------
# Poisson pieces


class _Deviance:
    """``D(mu) = 2 sum_j y_j log(y_j / mu_j) - (y_j - mu_j)`` for one spectrum, ``y log y = 0`` at 0."""

    def __init__(self, y):
        self.pos = y > 0
        self.yp = y[self.pos]
        self.const = float(np.sum(self.yp * np.log(self.yp)) - np.sum(y))

    def __call__(self, mu):
        mp = np.maximum(mu[self.pos], TINY)
        return 2.0 * (self.const - float(np.sum(self.yp * np.log(mp))) + float(np.sum(mu)))


def poisson_deviance(y, mu) -> float:
    """Poisson deviance of expected counts ``mu`` for counts ``y`` (both ``(m,)``)."""
    return _Deviance(np.asarray(y, np.float64))(np.asarray(mu, np.float64))


def nnpu(rows, y, a, max_iter: int = 1000, tol: float = 1e-6):
    """Multiplicative Poisson (EM) updates of the counts ``a`` ``(K,)`` for signature rows ``(K, m)``.

    ``a <- a * S (y / S^T a) / S 1`` until the mean relative change
    ``mean(|a' - a| / (a + 1e-10))`` is at most ``tol`` or ``max_iter`` updates (the
    published NNPU). Returns ``(a, n_updates)``.
    """
    norm = rows.sum(1)
    norm = np.where(norm > 0, norm, 1.0)
    for i in range(1, max_iter + 1):
        mu = a @ rows
        ratio = np.divide(y, mu, out=np.zeros_like(mu), where=mu > 0)
        new = a * (rows @ ratio) / norm
        err = np.mean(np.abs(new - a) / (a + 1e-10))
        a = new
        if err <= tol:
            break
    return a, i


# ---------------------------------------------------------------------------------------
# SEMSUN


class ReferenceResult(NamedTuple):
    """One spectrum unmixed by :func:`unmix`.

    counts: ``(K,)`` background first, then the IAE sources in model / input order.
    latent: one ``(d_k,)`` array of weights per IAE.
    signatures: ``(m, K)`` unit-sum signatures at the estimate.
    deviance: Poisson deviance at the estimate.
    n_iter, converged: outer iterations and whether the stopping rule fired.
    n_decode: decoder evaluations (one per spectrum decoded, finite differences included).
    n_slsqp: SLSQP solves; time_s: wall time of the call.
    """

    counts: np.ndarray
    latent: tuple
    signatures: np.ndarray
    deviance: float
    n_iter: int
    converged: bool
    n_decode: int
    n_slsqp: int
    time_s: float


def as_numpy_models(models) -> list:
    """A list of :class:`NumpyIAE` from one model or a list (IAEModels are converted once)."""
    if not isinstance(models, (list, tuple)):
        models = [models]
    return [m if isinstance(m, NumpyIAE) else NumpyIAE(m) for m in models]


def _bounds(net: NumpyIAE, bounds):
    d = net.n_anchors
    if bounds == "training":
        return net.lower, net.upper
    if bounds == "simplex":
        return np.zeros(d), np.full(d, np.inf)
    if bounds is None:
        return np.full(d, -np.inf), np.full(d, np.inf)
    raise ValueError(f"bounds must be 'training', 'simplex' or None, got {bounds!r}")


def _fixed_rows(background, m):
    if background is None:
        return np.zeros((0, m))
    b = np.asarray(background, np.float64).reshape(-1)
    if b.shape[0] != m or np.any(b < 0) or b.sum() <= 0:
        raise ValueError(f"background must be ({m},), non-negative and not all zero")
    return (b / b.sum())[None]


def _signature_rows(nets, lams, fixed, m):
    return np.concatenate([fixed] + [net.rows(lam, m) for net, lam in zip(nets, lams)], axis=0)


def model_deviance(counts, models, a, latents, *, background=None) -> float:
    """Poisson deviance of the estimate ``(a, latents)`` under the NumPy models.

    Evaluates any solver's answer (e.g. frugal's) with the same float64 forward model.
    """
    y = np.asarray(counts, np.float64)
    nets = as_numpy_models(models)
    rows = _signature_rows(nets, [np.asarray(l, np.float64) for l in latents], _fixed_rows(background, y.size),
                           y.size)
    return _Deviance(y)(np.asarray(a, np.float64) @ rows)


def _latent_step(net, y, dev, rest, a_blk, lam0, lo, hi, m, *, ftol, maxiter, fd_step):
    """SLSQP on one IAE's weights: deviance of ``rest + a_blk @ rows(lam)``, sum(lam) = 1, box."""

    def objective(lam):
        return dev(rest + a_blk @ net.rows(lam, m))

    bnds = [(None if not np.isfinite(l) else float(l), None if not np.isfinite(h) else float(h))
            for l, h in zip(lo, hi)]
    options = {"maxiter": maxiter}
    if fd_step is not None:
        options["eps"] = fd_step
    sol = minimize(objective, np.clip(lam0, lo, hi), method="SLSQP", bounds=bnds,
                   constraints=[{"type": "eq", "fun": lambda lam: np.sum(lam) - 1.0}],
                   tol=ftol, options=options)
    lam = np.asarray(sol.x, np.float64)
    return lam, net.rows(lam, m)


def unmix(
    counts,
    models,
    *,
    background=None,
    latent0=None,
    bounds="training",
    max_iter: int = 100,
    tol: float = 1e-4,
    a_iter: int = 1000,
    a_tol: float = 1e-6,
    ftol: float = 1e-8,
    slsqp_maxiter: int = 1000,
    fd_step: float | None = None,
) -> ReferenceResult:
    """SEMSUN block coordinate descent on one spectrum (see the module docstring).

    counts: ``(m,)`` counts of one spectrum.
    models: one IAEModel / :class:`NumpyIAE` (a joint model: SEMSUN-j) or a list of them
      (one per radionuclide: SEMSUN-i); convert them once with :func:`as_numpy_models`
      when unmixing many spectra.
    background: optional ``(m,)`` fixed background shape (normalised here).
    latent0: starting weights, one ``(d_k,)`` per model (default: the middle of the
      training range, normalised to sum to one).
    bounds: ``"training"`` (the range seen in training), ``"simplex"`` or ``None``.
    max_iter, tol: outer iterations and the relative-change tolerance on ``a`` and ``S``.
    a_iter, a_tol: NNPU updates per ``a``-step and their tolerance.
    ftol, slsqp_maxiter, fd_step: SLSQP's tolerance, iterations, finite-difference step
      (``None``: SciPy's default).
    """
    t0 = time.perf_counter()
    y = np.asarray(counts, np.float64)
    if y.ndim != 1 or not np.all(np.isfinite(y)) or np.any(y < 0):
        raise ValueError("counts must be one spectrum (m,) of finite non-negative numbers")
    m = y.size
    nets = as_numpy_models(models)
    for net in nets:
        if net.n_channels > m or (net.joint and net.n_channels != m):
            raise ValueError(f"a model has {net.n_channels} channels, counts have {m}")
    fixed = _fixed_rows(background, m)
    boxes = [_bounds(net, bounds) for net in nets]
    if latent0 is None:
        lams = []
        for net in nets:
            mid = 0.5 * (net.lower + net.upper)
            lams.append(mid / mid.sum())
    else:
        lams = [np.asarray(l, np.float64).reshape(net.n_anchors) for net, l in zip(nets, latent0)]
    starts = np.cumsum([len(fixed)] + [net.n_inputs for net in nets])
    blocks = [slice(int(s), int(s) + net.n_inputs) for s, net in zip(starts[:-1], nets)]
    decode0 = sum(net.n_decode for net in nets)
    dev = _Deviance(y)

    rows = _signature_rows(nets, lams, fixed, m)  # (K, m)
    k = rows.shape[0]
    a = np.full(k, y.sum() / k)
    converged, n_slsqp, it = False, 0, 0
    for it in range(1, max_iter + 1):
        a_new, _ = nnpu(rows, y, a, a_iter, a_tol)
        rows_new = rows.copy()
        for i, (net, blk, (lo, hi)) in enumerate(zip(nets, blocks, boxes)):
            if it > 1 and np.all(a_new[blk] <= 1e-10):
                continue
            rest = a_new @ rows_new - a_new[blk] @ rows_new[blk]
            lams[i], rows_new[blk] = _latent_step(net, y, dev, rest, a_new[blk], lams[i], lo, hi, m, ftol=ftol,
                                                  maxiter=slsqp_maxiter, fd_step=fd_step)
            n_slsqp += 1
        da = np.linalg.norm(a_new - a) / max(np.linalg.norm(a), TINY)
        ds = np.linalg.norm(rows_new - rows) / max(np.linalg.norm(rows), TINY)
        a, rows = a_new, rows_new
        if da < tol and ds < tol:
            converged = True
            break
    return ReferenceResult(
        counts=a,
        latent=tuple(lams),
        signatures=rows.T.copy(),
        deviance=dev(a @ rows),
        n_iter=it,
        converged=converged,
        n_decode=sum(net.n_decode for net in nets) - decode0,
        n_slsqp=n_slsqp,
        time_s=time.perf_counter() - t0,
    )


def unmix_many(counts, models, *, latent0=None, **kw) -> list:
    """:func:`unmix` on each row of ``counts`` ``(B, m)`` in turn (models converted once)."""
    nets = as_numpy_models(models)
    return [unmix(y, nets, latent0=latent0, **kw) for y in np.asarray(counts)]


__all__: Sequence[str] = ("NumpyIAE", "ReferenceResult", "as_numpy_models", "model_deviance", "nnpu",
                          "poisson_deviance", "unmix", "unmix_many")
