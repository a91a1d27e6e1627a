"""Baselines with the call shape of :func:`frugal.gamma.unmix`.

* :func:`fixed` (and its alias :func:`oracle`): counts only, with given signatures — what
  standard full-spectrum analysis does with library signatures at an assumed shielding;
  with the true signatures it is the *Oracle* of the SEMSUN paper.
* :func:`nmf`: KL-NMF multiplicative updates on counts and signatures, the background
  column held fixed (each spectrum gets its own signatures).

Both fill ``status`` (``converged`` only when the first-order test of their problem passed:
:func:`frugal.solvers.multiplicative.poisson_count_residual` for the counts,
:func:`frugal.solvers.multiplicative.nmf_residual` for NMF, at most a hundredth of a
standard error) and ``gof_pvalue`` (:func:`frugal.ops.gof.gof_pvalue` of the deviance, with
one fitted parameter per count).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from frugal._precision import full_precision
from frugal._validation import check_float, check_int
from frugal.gamma.semsun import UnmixResult
from frugal.gamma.solver.inputs import check_counts, fixed_signature_rows
from frugal.solvers.batching import first_of_batch
from frugal.solvers.status import Status
from frugal.solvers.multiplicative import kl_nmf_unchecked, nnpu_init, nnpu_unchecked, poisson_stderr
from frugal.ops.gof import gof_pvalue
from frugal.ops.losses import poisson_deviance


def _signature_rows(signatures, background, m):
    if signatures is None:
        raise ValueError("signatures must be given: (K, m) array or dict name -> (m,)")
    if not isinstance(signatures, dict):
        arr = np.asarray(signatures, dtype=float)
        if arr.ndim != 2:
            raise ValueError(f"signatures must be (K, m) or a dict of (m,) arrays, got shape {arr.shape}")
        signatures = {f"source{i}": s for i, s in enumerate(arr)}
    rows, names = fixed_signature_rows(background, signatures, m)
    return jnp.asarray(rows), tuple(names)


@partial(jax.jit, static_argnames=("max_iter",))
def _fixed_batch(rows, y, max_iter, tol):
    def one(yi):
        res = nnpu_unchecked(rows.T, yi, nnpu_init(rows.T, yi), jnp.ones(rows.shape[0], bool), max_iter, tol, True)
        a = res.counts
        mu = a @ rows
        dev = poisson_deviance(yi, mu)
        return (a, poisson_stderr(a, rows.T), dev, res.n_iter, res.status,
                gof_pvalue(dev, mu, rows.shape[0]))

    return jax.vmap(one)(y)


def _finish(out, rows_or_sig, names, batched):
    a, err, loss, n_iter, status, pvalue = (np.asarray(o) for o in out[:6])
    sig = np.asarray(rows_or_sig)
    if not batched:
        a, err, loss, n_iter, status, pvalue = first_of_batch((a, err, loss, n_iter, status, pvalue))
        sig = sig[0] if sig.ndim == 3 else sig
    return UnmixResult(a, err, (), (), sig, loss, n_iter, status == int(Status.CONVERGED), names,
                       status=status, gof_pvalue=pvalue)


@full_precision
def fixed(counts, signatures, *, background=None, max_iter: int = 5000, tol: float = 1e-7) -> UnmixResult:
    """Counts per source with fixed signatures (Poisson maximum likelihood, multiplicative updates).

    counts: ``(m,)`` or ``(B, m)``; signatures: ``(K, m)`` or dict name -> ``(m,)`` (each
    normalised to unit sum); background: optional ``(m,)``, listed first.
    ``status``: ``converged`` when the counts pass the KKT test (a hundredth of a standard
    error); ``gof_pvalue`` with one fitted parameter per count (background included).
    """
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    tol = check_float(tol, "tol", minimum=0.0, strict=True)
    y, batched = check_counts(counts)
    rows, names = _signature_rows(signatures, background, y.shape[1])
    out = _fixed_batch(rows, jnp.asarray(y), max_iter, tol)
    return _finish(out, rows.T, names, batched)


#: The Oracle of the SEMSUN paper is :func:`fixed` given the true signatures.
oracle = fixed


@partial(jax.jit, static_argnames=("max_iter",))
def _nmf_batch(rows, y, fixed_mask, max_iter, tol):
    def one(yi):
        a0 = nnpu_init(rows.T, yi)
        res = kl_nmf_unchecked(yi, rows.T, a0, fixed_mask, max_iter, tol)
        mu = res.signatures @ res.counts
        dev = poisson_deviance(yi, mu)
        # Only the counts are counted as fitted parameters: the free signature entries
        # (nearly one per channel) would make the reference distribution meaningless.
        return (res.counts, poisson_stderr(res.counts, res.signatures), dev, res.n_iter, res.status,
                gof_pvalue(dev, mu, rows.shape[0]), res.signatures)

    return jax.vmap(one)(y)


@full_precision
def nmf(counts, signatures, *, background=None, max_iter: int = 2000, tol: float = 1e-7) -> UnmixResult:
    """KL-NMF baseline: counts and signatures estimated per spectrum, background shape fixed.

    ``signatures`` are the starting signatures (e.g. at an assumed shielding); the
    returned ``signatures`` are the fitted ones ``(m, K)``, columns of unit sum.
    ``status``: ``converged`` only when the KKT test of counts *and* free signature entries
    passes (:func:`frugal.solvers.multiplicative.nmf_residual`; slow to reach for this
    baseline: raise ``max_iter`` if it reports ``max_iter``).
    ``gof_pvalue`` counts only the ``K`` counts as fitted parameters, not the free signature
    entries: with those a single-spectrum NMF fits nearly exactly and the p-value of a
    model that fitted nearly every channel says nothing, so read it as optimistic (close to
    1 for a near-exact fit).
    """
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    tol = check_float(tol, "tol", minimum=0.0, strict=True)
    y, batched = check_counts(counts)
    rows, names = _signature_rows(signatures, background, y.shape[1])
    fixed_mask = jnp.asarray([n == "background" for n in names])
    out = _nmf_batch(rows, jnp.asarray(y), fixed_mask, max_iter, tol)
    return _finish(out, out[6], names, batched)
