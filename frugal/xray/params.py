r"""Physical parameters from IAE latent codes: a small regression learnt on the training family.

An IAE trained on labelled spectra (e.g. thermal plasma spectra at known ``kT`` and ``z``)
describes each spectrum by barycentric weights :math:`\lambda` (``d`` numbers summing to
one). SUSHI estimates :math:`\lambda` per pixel; the astronomer wants ``kT``, ``z`` or the
photon index. The reference SUSHI code obtained them by a separate spectral fit of each
pixel; here the map :math:`\lambda \mapsto \theta` is learnt once from the labelled
training spectra themselves.

With :math:`t = V^\top(\lambda - \lambda_{\rm ref})` the ``d - 1`` free coordinates of the
weights (``V`` an orthonormal basis of the sum-to-one plane, as in SUSHI), scaled to
:math:`u \in [-1, 1]^{d-1}` over the training set, each parameter (or its logarithm, for
scale parameters such as ``kT``) is a polynomial of total degree ``degree`` in ``u``,

.. math:: \theta_k(\lambda) \approx \sum_{|\alpha| \le D} c_{k\alpha}\, u^\alpha,

fitted by least squares on the training spectra's weights (found by BSP, the same kind of
fit SUSHI does, so the codes the regression sees are the codes it will be given). The
training residual and the leave-one-out residual (closed form
:math:`e_i / (1 - h_{ii})` from the hat matrix, no refit) are reported per parameter, so
the error this step adds to a parameter map is known. Predictions are clipped to the range
of the training parameters: outside it the model has seen no spectrum.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np

from frugal._validation import check_array, check_int

__all__ = ["ParameterMap"]


def _exponents(n_vars: int, degree: int) -> np.ndarray:
    """All monomial exponents of total degree ``<= degree`` in ``n_vars`` variables."""
    rows = [e for e in itertools.product(range(degree + 1), repeat=n_vars) if sum(e) <= degree]
    rows.sort(key=lambda e: (sum(e), tuple(-x for x in e)))
    return np.array(rows, dtype=np.int64).reshape(len(rows), n_vars)


def _design(u: np.ndarray, exponents: np.ndarray) -> np.ndarray:
    """Monomials ``(N, n_terms)`` of the scaled coordinates ``u`` ``(N, k)``."""
    return np.prod(u[:, None, :] ** exponents[None, :, :], axis=-1)


def _basis(d: int) -> np.ndarray:
    """The orthonormal sum-to-one basis SUSHI uses (same QR, in float64)."""
    q, _ = np.linalg.qr(np.eye(d) - 1.0 / d)
    return q[:, : d - 1]


@dataclasses.dataclass(frozen=True)
class ParameterMap:
    """A learnt map from barycentric weights to named physical parameters.

    Build it with :meth:`fit`; call it on weights with the ``d`` weights on ``axis`` (0 by
    default, the layout of ``SushiResult.latent``: ``(d, H, W)`` gives ``(H, W)`` maps).

    Attributes:
      names: parameter names, e.g. ``("kT", "z")``.
      log: per parameter, whether it is regressed in log (scale parameters).
      reference, basis: ``lambda_ref`` ``(d,)`` and ``V`` ``(d, d-1)`` defining ``t``.
      center, scale: ``(d-1,)`` affine map of ``t`` to ``u`` in [-1, 1] on the training set.
      exponents: ``(n_terms, d-1)`` monomials; coef: ``(n_terms, p)`` coefficients.
      lower, upper: ``(p,)`` range of the training parameters (predictions are clipped).
      residual: name -> RMS training residual (parameter units).
      loo_residual: name -> RMS leave-one-out residual (parameter units).
    """

    names: tuple
    log: tuple
    reference: np.ndarray
    basis: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    exponents: np.ndarray
    coef: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    residual: dict
    loo_residual: dict

    @property
    def n_anchors(self) -> int:
        return int(self.reference.shape[0])

    @classmethod
    def fit(
        cls,
        model,
        spectra,
        params,
        names: Sequence[str] | None = None,
        *,
        degree: int = 3,
        log: Sequence[str] = (),
        latent=None,
        reference=None,
    ) -> "ParameterMap":
        """Regress ``params`` ``(N, p)`` on the weights of ``spectra`` ``(N, n)`` under ``model``.

        model: the trained ``IAEModel`` of the component.
        spectra: the labelled spectra (the training family, anchors included or not).
        names: one name per column of ``params`` (default ``param0``, ``param1``, ...).
        degree: total degree of the polynomial (2-3 is plenty for 1-3 free weights).
        log: names of the parameters regressed in log (must be positive), e.g. ``("kT",)``.
        latent: ``(N, d)`` weights of ``spectra`` if already known; by default they are
          found by BSP (``frugal.iae.project`` with a Gaussian loss, weights within the
          training range, as SUSHI constrains them).
        reference: ``lambda_ref`` ``(d,)`` (default: the anchors' barycentre, uniform
          weights); only the affine scaling of ``t`` depends on it.
        """
        from frugal.iae import IAEModel, project

        if not isinstance(model, IAEModel):
            raise TypeError(f"model must be an IAEModel, got {type(model).__name__}")
        d = model.n_anchors
        theta = check_array(params, "params", ndim=(1, 2), dtype=np.float64)
        theta = theta[:, None] if theta.ndim == 1 else theta
        n, p = theta.shape
        if names is None:
            names = tuple(f"param{i}" for i in range(p))
        names = tuple(str(x) for x in ([names] if isinstance(names, str) else names))
        if len(names) != p:
            raise ValueError(f"names must have one entry per column of params ({p}), got {len(names)}")
        log = tuple(str(x) for x in ([log] if isinstance(log, str) else log))
        unknown = [x for x in log if x not in names]
        if unknown:
            raise ValueError(f"log names {unknown} are not in names {names}")
        degree = check_int(degree, "degree", minimum=1)
        is_log = np.array([nm in log for nm in names])
        if np.any(theta[:, is_log] <= 0):
            raise ValueError(f"parameters regressed in log ({list(log)}) must be positive")

        if latent is None:
            x = check_array(spectra, "spectra", ndim=2, shape=(model.config.n_channels,), nonnegative=True)
            if x.shape[0] != n:
                raise ValueError(f"spectra has {x.shape[0]} rows but params has {n}")
            latent = project(model, x, loss="gaussian", bounds="training").latent
        lam = check_array(latent, "latent", ndim=2, shape=(d,), dtype=np.float64)
        if lam.shape[0] != n:
            raise ValueError(f"latent has {lam.shape[0]} rows but params has {n}")
        if reference is None:
            reference = np.full(d, 1.0 / d)
        reference = check_array(reference, "reference", ndim=1, shape=(d,), dtype=np.float64)

        basis = _basis(d)
        t = (lam - reference) @ basis
        t_lo, t_hi = t.min(axis=0), t.max(axis=0)
        center = 0.5 * (t_lo + t_hi)
        scale = np.maximum(0.5 * (t_hi - t_lo), 1e-12)
        exponents = _exponents(d - 1, degree)
        if len(exponents) > n:
            raise ValueError(
                f"degree {degree} in {d - 1} variables has {len(exponents)} terms, more than the "
                f"{n} labelled spectra: lower degree or give more spectra"
            )
        a = _design((t - center) / scale, exponents)
        target = np.where(is_log, np.log(np.where(is_log, theta, 1.0)), theta)
        coef, *_ = np.linalg.lstsq(a, target, rcond=None)
        # Hat-matrix diagonal for the leave-one-out residuals, from the thin QR of the design.
        q, _ = np.linalg.qr(a)
        h = np.clip(np.sum(q**2, axis=1), 0.0, 1.0 - 1e-9)
        fitted = a @ coef
        loo_fit = target - (target - fitted) / (1.0 - h)[:, None]
        back = lambda v: np.where(is_log, np.exp(v), v)  # noqa: E731
        res = back(fitted) - theta
        loo = back(loo_fit) - theta
        return cls(
            names=names,
            log=tuple(bool(v) for v in is_log),
            reference=reference,
            basis=basis,
            center=center,
            scale=scale,
            exponents=exponents,
            coef=coef,
            lower=theta.min(axis=0),
            upper=theta.max(axis=0),
            residual={nm: float(np.sqrt(np.mean(res[:, i] ** 2))) for i, nm in enumerate(names)},
            loo_residual={nm: float(np.sqrt(np.mean(loo[:, i] ** 2))) for i, nm in enumerate(names)},
        )

    def __call__(self, latent, *, axis: int = 0) -> dict:
        """Parameters for weights ``latent`` (the ``d`` weights on ``axis``): dict name -> array."""
        lam = np.asarray(latent, dtype=np.float64)
        if lam.ndim == 0 or lam.shape[axis] != self.n_anchors:
            raise ValueError(
                f"latent must hold the {self.n_anchors} weights on axis {axis}, got shape {lam.shape}"
            )
        lam = np.moveaxis(lam, axis, -1)
        shape = lam.shape[:-1]
        t = (lam.reshape(-1, self.n_anchors) - self.reference) @ self.basis
        values = _design((t - self.center) / self.scale, self.exponents) @ self.coef
        is_log = np.array(self.log)
        values = np.where(is_log, np.exp(np.where(is_log, values, 0.0)), values)
        values = np.clip(values, self.lower, self.upper)
        return {nm: values[:, i].reshape(shape) for i, nm in enumerate(self.names)}

    def to_dict(self) -> dict:
        """A JSON-serialisable description (e.g. for an IAE checkpoint's ``info``)."""
        return {
            "names": list(self.names), "log": list(self.log), "reference": self.reference.tolist(),
            "basis": self.basis.tolist(), "center": self.center.tolist(), "scale": self.scale.tolist(),
            "exponents": self.exponents.tolist(), "coef": self.coef.tolist(), "lower": self.lower.tolist(),
            "upper": self.upper.tolist(), "residual": dict(self.residual), "loo_residual": dict(self.loo_residual),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ParameterMap":
        """Inverse of :meth:`to_dict`."""
        try:
            arrays = {k: np.asarray(d[k], dtype=np.float64) for k in
                      ("reference", "basis", "center", "scale", "coef", "lower", "upper")}
            pm = cls(names=tuple(d["names"]), log=tuple(bool(v) for v in d["log"]),
                     exponents=np.asarray(d["exponents"], dtype=np.int64).reshape(-1, len(d["center"])),
                     residual=dict(d["residual"]), loo_residual=dict(d["loo_residual"]), **arrays)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a ParameterMap description: {err}") from err
        pm = dataclasses.replace(pm, coef=pm.coef.reshape(len(pm.exponents), len(pm.names)),
                                 basis=pm.basis.reshape(len(pm.reference), -1))
        return pm

    def __repr__(self) -> str:
        res = ", ".join(f"{nm}: {r:.3g}" for nm, r in self.residual.items())
        return (f"ParameterMap(names={self.names}, degree={int(self.exponents.sum(1).max())}, "
                f"terms={len(self.exponents)}, training RMS residual {{{res}}})")
