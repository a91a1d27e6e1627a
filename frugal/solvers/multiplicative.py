r"""Multiplicative (EM) updates for Poisson mixtures, their Fisher information, and KL-NMF.

Model: counts :math:`y \in \mathbb{N}^m` with :math:`y \sim \mathrm{Poisson}(S a)`, where
the columns of :math:`S \in \mathbb{R}_+^{m \times K}` are source signatures (usually of unit
sum, so that :math:`a_k` is the expected number of counts of source :math:`k`) and
:math:`a \in \mathbb{R}_+^K`. The negative log-likelihood

.. math:: \ell(a) = \sum_j (S a)_j - y_j \log (S a)_j

is convex in :math:`a`; the EM / NNPU (non-negative Poisson unmixing) update

.. math:: a \leftarrow a \odot \frac{S^\top (y \oslash S a)}{S^\top \mathbf 1}

keeps :math:`a \ge 0`, never increases :math:`\ell`, and converges to its minimiser from any
positive start. Every division is guarded so that zero counts, a zero model or a zero
column never produce NaN.

Stop reasons (:class:`frugal.solvers.status.Status`): the loops stop on a relative change
of the iterates (cheap, but "nothing changed" is not "optimal": a source that reached 0
cannot come back under multiplicative updates, and a slow geometric decay also stops on a
small change), then report ``CONVERGED`` only when the first-order (KKT) test of the
problem passes: the scaled projected-gradient residual with the Fisher information's
diagonal (:func:`poisson_count_residual`), i.e. the distance to the optimum in standard
errors, is at most ``gtol`` (default ``1e-2``: a hundredth of a standard error), floored by
what the dtype resolves (:func:`residual_floor`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from frugal._validation import check_float, check_int
from frugal.ops.losses import TINY, poisson_deviance, poisson_nll, poisson_weights
from frugal.solvers._utils import checked, float_dtype
from frugal.solvers.block import block_solve
from frugal.solvers.status import Status, all_finite, decide, scaled_residual


def _safe_div(num, den, default=0.0):
    """``num / den`` where ``den > 0``, ``default`` elsewhere, without a NaN in either branch."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), default)


def _ratio(counts, model):
    """``y / (S a)`` per channel; 0 where the model vanishes (no source there can move)."""
    ok = model > TINY
    return jnp.where(ok, counts / jnp.where(ok, model, 1.0), 0.0)


def poisson_multiplicative_step(a, signatures, counts, *, free=None):
    r"""One EM / NNPU update of the amplitudes of a Poisson mixture.

    .. math:: a_k \leftarrow a_k \, \frac{\sum_j S_{jk}\, y_j / (S a)_j}{\sum_j S_{jk}}

    Guards: channels where :math:`(Sa)_j = 0` are skipped (every source with
    :math:`S_{jk} > 0` there already has :math:`a_k = 0` and stays there); a zero column
    (a source with no signature) gets amplitude 0, its value has no effect on the model.
    Entries where ``free`` is False keep their current value (the update of the others is
    still a monotone majorisation-minimisation step).

    Args:
      a: ``(K,)`` non-negative amplitudes.
      signatures: ``(m, K)`` non-negative signatures :math:`S`.
      counts: ``(m,)`` observed counts :math:`y`.
      free: optional ``(K,)`` boolean mask of the amplitudes to update.

    Returns:
      The updated ``(K,)`` amplitudes. Pure and jit/vmap-friendly (no argument checks).
    """
    model = signatures @ a
    num = signatures.T @ _ratio(counts, model)
    den = jnp.sum(signatures, axis=0)
    new = a * _safe_div(num, den, 0.0)
    if free is not None:
        new = jnp.where(free, new, a)
    return new


def nnpu_init(signatures, counts):
    r"""Default starting amplitudes of ``nnpu``: per-source matched filter, rescaled to the total.

    Each source alone would be fitted (least squares) by :math:`w_k = (S^\top y)_k /
    \|S_k\|^2`; these are clipped at 0 and rescaled so that the model holds the observed
    total, :math:`\sum_j (S a_0)_j = \sum_j y_j`. Sources that overlap the data start
    positive (needed by multiplicative updates), a source with no overlap at all starts
    (and rightly stays) at 0, and an empty spectrum gives :math:`a_0 = 0`.
    """
    w = _safe_div(jnp.maximum(signatures.T @ counts, 0.0), jnp.sum(signatures**2, axis=0), 0.0)
    scale = _safe_div(jnp.sum(counts), jnp.sum(w * jnp.sum(signatures, axis=0)), 0.0)
    return w * scale


class NNPUResult(NamedTuple):
    """Outcome of ``nnpu``.

    Attributes:
      counts: estimated amplitudes :math:`\\hat a` (expected counts per source), ``(..., K)``.
      n_iter: number of multiplicative updates performed.
      converged: ``status == Status.CONVERGED``: the KKT test passed at the estimate.
      loss: Poisson NLL :math:`\\sum_j (S\\hat a)_j - y_j \\log (S\\hat a)_j` at the estimate.
      status: why the loop stopped (:class:`frugal.solvers.status.Status`): ``CONVERGED``
        when :func:`poisson_count_residual` is at most ``gtol`` (whatever rule ended the
        loop), ``STALLED`` when the relative-change rule fired without that, ``MAX_ITER``,
        ``NON_FINITE``.
      residual: :func:`poisson_count_residual` at the estimate (standard errors).
    """

    counts: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    loss: jax.Array
    status: jax.Array | None = None
    residual: jax.Array | None = None


def poisson_count_residual(a, signatures, counts, free=None):
    r"""First-order (KKT) residual of :math:`\min_{a \ge 0} \sum_j (Sa)_j - y_j \log(Sa)_j`,
    in standard errors.

    :func:`frugal.solvers.status.scaled_residual` with the gradient
    :math:`g_k = \sum_j S_{jk} (1 - y_j / \mu_j)` and the diagonal of the expected Fisher
    information :math:`h_k = \sum_j S_{jk}^2 / \mu_j` (:math:`\mu = Sa`), bound 0: for an
    interior source :math:`|g_k| / \sqrt{h_k}`, the Newton distance to its optimum in units of
    its (conditional) standard error; for a source at 0 whose gradient is negative (it
    should be positive), the same; a source at 0 with :math:`g_k \ge 0` is optimal.
    Entries where ``free`` is False are not tested. One problem: ``a`` ``(K,)``,
    ``signatures`` ``(m, K)``, ``counts`` ``(m,)``; vmap for batches.
    """
    ratio, weight = poisson_weights(counts, signatures @ a)
    grad = jnp.sum(signatures, axis=0) - signatures.T @ ratio
    curv = (signatures * signatures).T @ weight
    if free is not None:
        curv = jnp.where(free, curv, 0.0)
    return scaled_residual(a, grad, curv, lower=0.0)


def residual_floor(counts, model, dtype):
    r"""The smallest residual (standard errors) the dtype resolves for a Poisson fit.

    A gradient :math:`g_k = \sum_j S_{jk}(1 - y_j/\mu_j)` is computed with an absolute error of
    a few ulps of :math:`\sum_j S_{jk}`, and the iterate itself is known to one ulp; both,
    in standard errors (:math:`1/\sqrt{h_k} \le \sqrt{N}/\sum_j S_{jk}` by Cauchy-Schwarz,
    :math:`N = \sum_j \mu_j`), are at most a few :math:`\epsilon\sqrt{N}`. Returns
    :math:`30\,\epsilon\sqrt{\max(N, \sum_j y_j, 1)}`: 1e-3 standard errors at
    :math:`10^5` counts in float32, negligible in float64.
    """
    total = jnp.maximum(jnp.maximum(jnp.sum(model), jnp.sum(counts)), 1.0)
    return 30 * jnp.finfo(dtype).eps * jnp.sqrt(total)


def _effective_tol(tol, dtype):
    # A relative change below the dtype's resolution cannot be observed reliably: the
    # iterates then jitter at a few ulps and the loop would always run to max_iter.
    return jnp.maximum(jnp.asarray(tol, dtype), 10 * jnp.finfo(dtype).eps)


def _relative_change(new, old):
    # Per-entry relative change; entries below a millionth of the largest are judged on that
    # absolute scale, so that sources decaying to zero do not hold the loop forever.
    floor = jnp.maximum(1e-6 * jnp.max(jnp.abs(new)), TINY)
    return jnp.max(jnp.abs(new - old) / jnp.maximum(jnp.abs(new), floor))


def _squarem_step(a, signatures, counts, free):
    """One SQUAREM (S3) cycle: two EM steps, extrapolation, one stabilising EM step.

    Varadhan & Roland (2008): with r = F(a) - a, v = F(F(a)) - 2 F(a) + a and
    alpha = -||r|| / ||v|| (at most -1), a' = a - 2 alpha r + alpha^2 v, then F(a').
    Safeguards: entries pushed below zero restart from a tenth of F(F(a)) (multiplicative
    updates cannot leave 0, and an overshoot means that source is decaying), and the
    result is kept only if its deviance is not above that of F(F(a)) (else F(F(a))).
    """

    def em(x):
        return poisson_multiplicative_step(x, signatures, counts, free=free)

    def dev(x):
        return poisson_deviance(counts, signatures @ x)

    a1 = em(a)
    a2 = em(a1)
    r = a1 - a
    v = a2 - 2 * a1 + a
    alpha = -jnp.sqrt(_safe_div(jnp.sum(r * r), jnp.sum(v * v), 1.0))
    alpha = jnp.minimum(alpha, -1.0)
    ext = a - 2 * alpha * r + alpha**2 * v
    ext = jnp.where(ext > 0, ext, 0.1 * a2)
    a3 = em(ext)
    d2 = dev(a2)
    slack = 10 * jnp.finfo(a.dtype).eps * jnp.maximum(jnp.abs(d2), 1.0)
    ok = jnp.all(jnp.isfinite(a3)) & (dev(a3) <= d2 + slack)
    return jnp.where(ok, a3, a2)


def nnpu_unchecked(signatures, counts, a0, free, max_iter, tol, accelerate=False, gtol=1e-2):
    """``nnpu`` for one spectrum without argument checks: pure, for use inside jitted solvers."""
    tol = _effective_tol(tol, signatures.dtype)

    def cond(carry):
        i, _, done = carry
        return (i < max_iter) & ~done

    def body(carry):
        i, a, _ = carry
        if accelerate:
            new = _squarem_step(a, signatures, counts, free)
        else:
            new = poisson_multiplicative_step(a, signatures, counts, free=free)
        return i + 1, new, _relative_change(new, a) <= tol

    n_iter, a, fired = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), a0, jnp.zeros((), bool)))
    model = signatures @ a
    loss = poisson_nll(counts, model)
    finite = all_finite(a, loss)
    r = jnp.where(finite, poisson_count_residual(a, signatures, counts, free), jnp.nan)
    gtol = jnp.maximum(jnp.asarray(gtol, r.dtype), residual_floor(counts, model, r.dtype))
    status = decide(finite, r <= gtol, ~fired)
    return NNPUResult(a, n_iter, status == Status.CONVERGED, loss, status, r)


@functools.partial(jax.jit, static_argnums=(6,))
def _nnpu_batched(signatures, counts, a0, free, max_iter, tol, accelerate, gtol):
    s_ax = 0 if signatures.ndim == 3 else None
    a_ax = 0 if a0.ndim == 2 else None
    f_ax = 0 if free.ndim == 2 else None
    if counts.ndim == 1:
        return nnpu_unchecked(signatures, counts, a0, free, max_iter, tol, accelerate, gtol)
    return jax.vmap(nnpu_unchecked, in_axes=(s_ax, 0, a_ax, f_ax, None, None, None, None))(
        signatures, counts, a0, free, max_iter, tol, accelerate, gtol
    )


def _prepare(signatures, counts, a0, free, kind):
    signatures = checked(signatures, "signatures", ndim=(2, 3), nonnegative=True)
    counts = checked(counts, "counts", ndim=(1, 2), nonnegative=True)
    dtype = float_dtype(signatures, counts)
    signatures, counts = signatures.astype(dtype), counts.astype(dtype)
    m, k = signatures.shape[-2:]
    if counts.shape[-1] != m:
        raise ValueError(
            f"counts has {counts.shape[-1]} channels but signatures has {m} rows (shape {signatures.shape})"
        )
    batch = counts.shape[:-1]
    if signatures.ndim == 3 and signatures.shape[0] != (batch[0] if batch else -1):
        raise ValueError(
            f"signatures of shape {signatures.shape} has a batch axis that does not match "
            f"counts of shape {counts.shape}"
        )
    if a0 is None:
        if batch:
            s_b = signatures if signatures.ndim == 3 else jnp.broadcast_to(signatures, batch + (m, k))
            a0 = jax.vmap(nnpu_init)(s_b, counts)
        else:
            a0 = nnpu_init(signatures, counts)
    else:
        a0 = checked(a0, "a0", ndim=(1, 2), nonnegative=True).astype(dtype)
        if a0.shape[-1] != k or (a0.ndim == 2 and a0.shape[0] != (batch[0] if batch else -1)):
            raise ValueError(f"a0 must have shape (K,) or (B, K) with K={k} matching the batch, got {a0.shape}")
    if free is None:
        free = jnp.ones((k,), bool)
    else:
        free = jnp.asarray(free, bool)
        if free.ndim not in (1, 2) or free.shape[-1] != k:
            raise ValueError(f"{kind} must have shape (K,) or (B, K) with K={k}, got {free.shape}")
    return signatures, counts, a0, free


def nnpu(
    signatures,
    counts,
    a0=None,
    *,
    free=None,
    max_iter: int = 1000,
    tol: float = 1e-8,
    accelerate: bool = False,
    gtol: float = 1e-2,
) -> NNPUResult:
    r"""Poisson maximum-likelihood amplitudes by multiplicative (EM) updates.

    Minimises :math:`\sum_j (Sa)_j - y_j \log (Sa)_j` over :math:`a \ge 0` by repeating
    ``poisson_multiplicative_step`` under ``lax.while_loop`` until the largest relative
    change :math:`\max_k |a_k^{t+1} - a_k^t| / \max(a_k^{t+1}, 10^{-6} \max_l a_l^{t+1})`
    is at most ``tol`` (floored at ``10 * eps`` of the dtype, the best a multiplicative
    update can resolve), or after ``max_iter`` iterations. Sources below a millionth of
    the largest are thus judged on that absolute scale (they may be decaying to zero, at a
    geometric rate that can be slow).

    The stop reason (``status``) is decided afterwards by the KKT test
    (:func:`poisson_count_residual` at most ``gtol`` standard errors, floored by
    :func:`residual_floor`): ``CONVERGED`` if it passes, else ``STALLED`` when the
    relative-change rule ended the loop (e.g. a source stuck at 0 that should be positive,
    or a slow decay mistaken for a fixed point), ``MAX_ITER`` or ``NON_FINITE``.

    ``accelerate=True`` replaces each update by a SQUAREM cycle (three multiplicative
    updates and an extrapolation, kept only if it does not increase the Poisson deviance
    compared with two plain updates): typically several times fewer updates on
    slowly-converging problems; ``n_iter`` then counts cycles.

    Batches: ``counts`` of shape ``(B, m)`` solves ``B`` spectra at once (vmap), with one
    shared ``signatures`` ``(m, K)`` or one per spectrum ``(B, m, K)``; ``a0`` / ``free``
    may be ``(K,)`` or ``(B, K)``. An all-zero spectrum returns zeros.

    Args:
      signatures: ``(m, K)`` or ``(B, m, K)`` non-negative signatures.
      counts: ``(m,)`` or ``(B, m)`` observed counts.
      a0: starting amplitudes; default ``nnpu_init`` (matched filter rescaled to the total
        counts). Must be positive where a source may be non-zero at the optimum.
      free: boolean mask of amplitudes to fit; the others stay at ``a0``.
      max_iter: maximum number of updates.
      tol: relative-change tolerance.
      accelerate: use SQUAREM cycles instead of single updates.
      gtol: optimality tolerance in standard errors (see ``status``).

    Returns:
      ``NNPUResult(counts, n_iter, converged, loss, status, residual)``.
    """
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    tol = check_float(tol, "tol", minimum=0.0)
    gtol = check_float(gtol, "gtol", minimum=0.0)
    signatures, counts, a0, free = _prepare(signatures, counts, a0, free, "free")
    return _nnpu_batched(signatures, counts, a0, free, max_iter, tol, bool(accelerate), gtol)


def poisson_fisher(a, signatures, counts=None):
    r"""Fisher information of the amplitudes of a Poisson mixture.

    Expected information (default): :math:`F = S^\top \mathrm{diag}(1 / (Sa)) S`;
    observed information (``counts`` given): :math:`S^\top \mathrm{diag}(y / (Sa)^2) S`,
    the Hessian of the NLL; both agree at the maximum-likelihood estimate on average.
    Channels where the model vanishes are given no weight (guard: no inf, no NaN).
    One problem: ``a`` ``(K,)``, ``signatures`` ``(m, K)``; vmap for batches.
    """
    model = signatures @ a
    w = _safe_div(jnp.ones_like(model), model) if counts is None else _safe_div(counts, model * model)
    w = jnp.where(model > TINY, w, 0.0)
    return signatures.T @ (w[:, None] * signatures)


def poisson_covariance(a, signatures, counts=None, *, active=None, active_tol: float = 1e-6):
    r"""Covariance of the amplitude estimates from the Poisson Fisher information.

    Sources at the boundary (:math:`a_k \le` ``active_tol`` :math:`\max_j a_j`, or
    ``active=False``) are not free parameters of the constrained estimate, so the Fisher
    matrix is inverted on the **active set** only; such a source gets the conditional
    variance :math:`1 / F_{kk}` (the spread of its estimate if it alone were freed, others
    held: the scale of the amplitude that could hide in the noise) and zero covariance with
    the others.

    The inversion is done on the correlation form :math:`C = D^{-1/2} F D^{-1/2}` with
    eigenvalues floored at ``10 * eps`` (a regularised pseudo-inverse): near-collinear
    signatures give very large, never NaN, variances; a zero column gives ``inf``.
    """
    fisher = poisson_fisher(a, signatures, counts)
    if active is None:
        active = a > active_tol * jnp.maximum(jnp.max(a), TINY)
    return fisher_covariance(fisher, active)


def fisher_covariance(fisher, active=None):
    r"""Covariance ``F^{-1}`` of estimates from a Fisher matrix, on the active set.

    Parameters with ``active=False`` (at a bound) are decoupled: they get the conditional
    variance :math:`1 / F_{kk}` and zero covariance with the others. The active block is
    inverted in correlation form :math:`C = D^{-1/2} F D^{-1/2}` with eigenvalues floored
    at ``10 * eps`` (a regularised pseudo-inverse): near-collinear parameters get very
    large, never NaN, variances; a parameter with :math:`F_{kk} = 0` gets ``inf``.
    ``fisher``: ``(k, k)``; ``active``: ``(k,)`` booleans (default: all).
    """
    k = fisher.shape[-1]
    active = jnp.ones((k,), bool) if active is None else jnp.asarray(active, bool)
    pair = active[:, None] & active[None, :]
    eye = jnp.eye(k, dtype=fisher.dtype)
    diag = jnp.diagonal(fisher)
    # Inactive parameters are decoupled: their rows and columns keep only the diagonal.
    masked = jnp.where(pair, fisher, eye * fisher)
    scale = jnp.sqrt(jnp.maximum(diag, 0.0))
    inv_scale = _safe_div(jnp.ones_like(scale), scale)
    corr = masked * inv_scale[:, None] * inv_scale[None, :]
    corr = jnp.where(eye > 0, 1.0, corr)
    evals, evecs = jnp.linalg.eigh(corr)
    evals = jnp.maximum(evals, 10 * jnp.finfo(fisher.dtype).eps)
    corr_inv = (evecs / evals) @ evecs.T
    cov = corr_inv * inv_scale[:, None] * inv_scale[None, :]
    unidentified = ~(diag > 0)
    bad = unidentified[:, None] | unidentified[None, :]
    return jnp.where(bad, jnp.where(eye > 0, jnp.inf, 0.0), cov)


def poisson_stderr(a, signatures, counts=None, *, active=None, active_tol: float = 1e-6):
    r"""Standard errors :math:`\sqrt{\mathrm{diag}(F^{-1})}` of the Poisson amplitudes.

    See ``poisson_covariance`` for the active-set / regularised-inverse treatment of sources
    at zero and of unidentifiable sources (``inf``). Expected information unless ``counts``
    is given (observed information).
    """
    cov = poisson_covariance(a, signatures, counts, active=active, active_tol=active_tol)
    return jnp.sqrt(jnp.maximum(jnp.diagonal(cov, axis1=-2, axis2=-1), 0.0))


class NMFResult(NamedTuple):
    """Outcome of ``kl_nmf``.

    Attributes:
      counts: amplitudes ``(..., K)`` (columns of ``signatures`` have unit sum where free).
      signatures: fitted signatures ``(..., m, K)``.
      n_iter: number of sweeps (one amplitude update then one signature update).
      converged: ``status == Status.CONVERGED``: the KKT test of the whole problem passed.
      loss: Poisson NLL at the estimate.
      trace: ``(..., max_iter)`` Poisson NLL after each sweep, NaN beyond ``n_iter``.
      status: why the loop stopped (:class:`frugal.solvers.status.Status`): ``CONVERGED``
        when :func:`nmf_residual` is at most ``gtol``; ``STALLED`` when the relative-change
        rule fired without that; ``MAX_ITER``; ``NON_FINITE``.
      residual: :func:`nmf_residual` at the estimate (standard errors).
    """

    counts: jax.Array
    signatures: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    loss: jax.Array
    trace: jax.Array
    status: jax.Array | None = None
    residual: jax.Array | None = None


def nmf_residual(a, signatures, counts, fixed):
    r"""First-order (KKT) residual of the KL-NMF problem of one spectrum, in standard errors.

    The problem is :math:`\min \sum_j \mu_j - y_j \log \mu_j`, :math:`\mu = S a`, over
    :math:`a \ge 0` and the free columns :math:`S_k` on the simplex (:math:`S_k \ge 0`,
    :math:`\sum_j S_{jk} = 1`), the ``fixed`` columns held. It is the same problem as the one
    in the free products :math:`B_k = a_k S_k \ge 0` (a box: :math:`a_k = \sum_j B_{jk}`,
    :math:`S_k = B_k / a_k`) and the counts of the fixed columns, so its exact first-order
    test is the box KKT test of those, with the diagonal of the expected Fisher information:

    * counts (every column, at fixed signatures): :func:`poisson_count_residual`;
    * free entries: gradient :math:`1 - y_j/\mu_j`, information :math:`1/\mu_j`, i.e. the
      residual :math:`|B_{jk} - \max(0, B_{jk} - \mu_j + y_j)| / \sqrt{\mu_j}`: the Pearson
      residual :math:`|y_j - \mu_j|/\sqrt{\mu_j}` of every channel a free column covers, and
      :math:`\max(0, y_j - \mu_j)/\sqrt{\mu_j}` where it does not (it could grow there).

    The largest of them is returned (the count test is implied by the entries' test at an
    exact KKT point; both are reported so that neither block hides behind the other).
    ``a`` ``(K,)``, ``signatures`` ``(m, K)``, ``counts`` ``(m,)``, ``fixed`` ``(K,)`` bool.
    """
    r_counts = poisson_count_residual(a, signatures, counts)
    ratio, weight = poisson_weights(counts, signatures @ a)
    free = ~jnp.asarray(fixed, bool)
    prod = signatures * a[None, :]
    grad = jnp.broadcast_to((1.0 - ratio)[:, None], prod.shape)
    curv = jnp.where(free[None, :], weight[:, None], 0.0)
    return jnp.maximum(r_counts, scaled_residual(prod, grad, curv, lower=0.0))


class _NMFState(NamedTuple):
    a: jax.Array
    S: jax.Array


def _nmf_a_step(state, data):
    y, _ = data
    return state._replace(a=poisson_multiplicative_step(state.a, state.S, y))


def _nmf_s_step(state, data):
    y, fixed = data
    a, S = state
    # Lee-Seung KL update of W in V ~ W H with one sample: S_jk <- S_jk (y_j / (S a)_j) a_k / a_k.
    ratio = _ratio(y, S @ a)
    new = jnp.where((a > 0)[None, :], S * ratio[:, None], S)
    new = jnp.where(fixed[None, :], S, new)
    # Unit-sum columns, amplitudes rescaled so that the model S a is unchanged.
    colsum = jnp.sum(new, axis=0)
    renorm = ~fixed & (colsum > 0)
    safe = jnp.where(renorm, colsum, 1.0)
    return _NMFState(jnp.where(renorm, a * safe, a), new / safe[None, :])


def kl_nmf_unchecked(y, S0, a0, fixed, max_iter, tol, gtol=1e-2):
    """``kl_nmf`` for one spectrum without argument checks: pure, for use inside jitted code."""
    tol = _effective_tol(tol, S0.dtype)

    def objective(state, data):
        return poisson_nll(data[0], state.S @ state.a)

    def stop(old, new, data):
        da = jnp.max(jnp.abs(new.a - old.a)) <= tol * jnp.maximum(jnp.max(new.a), TINY)
        ds = jnp.max(jnp.abs(new.S - old.S)) <= tol * jnp.maximum(jnp.max(new.S), TINY)
        return da & ds

    def tolerance(state, data):
        floor = residual_floor(data[0], state.S @ state.a, state.S.dtype)
        return jnp.maximum(jnp.asarray(gtol, state.S.dtype), floor)

    def optimality(state, data):
        # In units of the tolerance (floored by what the dtype resolves): optimal at <= 1.
        return nmf_residual(state.a, state.S, data[0], data[1]) / tolerance(state, data)

    updates = (_nmf_a_step, _nmf_s_step)
    res = block_solve(updates, objective, _NMFState(a0, S0), (y, fixed), max_iter=max_iter, tol=None, stop=stop,
                      optimality=optimality, gtol=1.0)
    r = jnp.where(res.status == Status.NON_FINITE, jnp.nan, res.residual * tolerance(res.state, (y, fixed)))
    return NMFResult(res.state.a, res.state.S, res.n_iter, res.converged, res.objective, res.trace, res.status, r)


def kl_nmf(
    counts, signatures0, a0=None, *, fixed_columns=None, max_iter: int = 500, tol: float = 1e-6, gtol: float = 1e-2
) -> NMFResult:
    r"""KL-NMF of each spectrum: multiplicative updates on amplitudes *and* signatures.

    The NMF baseline of gamma-ray unmixing: starting from ``signatures0``, alternate

    .. math::

        a \leftarrow a \odot \frac{S^\top (y \oslash Sa)}{S^\top \mathbf 1}, \qquad
        S_{jk} \leftarrow S_{jk} \frac{y_j}{(Sa)_j} \;(k \text{ free}), \qquad
        S_k \leftarrow S_k / \textstyle\sum_j S_{jk},\; a_k \leftarrow a_k \sum_j S_{jk},

    (Lee & Seung's KL updates with one sample, then a renormalisation that leaves
    :math:`Sa` unchanged). Columns marked in ``fixed_columns`` (the measured background)
    are never changed. Each sweep does not increase the Poisson NLL. With a single spectrum
    the problem is badly under-determined: this is a baseline, not a recommended method.
    Stops when the largest changes of :math:`a` and :math:`S`, relative to their largest
    entries, are both at most ``tol`` (``status`` ``STALLED`` unless the optimality test
    passes there), or as soon as the first-order test passes (``CONVERGED``): the exact
    KKT residual of the problem in standard errors (:func:`nmf_residual`: the counts and
    every free signature entry, the unit-sum constraint handled by the equivalent problem
    in the products :math:`a_k S_k`) at most ``gtol``. With free signatures that test asks
    every channel a free column covers to be fitted to ``gtol`` standard errors (the
    optimum of a single-spectrum NMF is nearly an exact fit), which the multiplicative
    updates reach slowly where the fixed columns dominate (the error of channel :math:`j`
    shrinks by about :math:`c_j / y_j` per sweep, :math:`c_j` the fixed columns' expected
    counts there): ``MAX_ITER`` then says so.

    Args:
      counts: ``(m,)`` or ``(B, m)`` observed counts (batches are vmapped, each spectrum
        gets its own signatures).
      signatures0: ``(m, K)`` shared start or ``(B, m, K)``.
      a0: ``(K,)`` / ``(B, K)`` starting amplitudes; default ``nnpu_init``.
      fixed_columns: ``(K,)`` boolean mask of columns kept fixed (default: none).
      max_iter: maximum number of sweeps (static: length of the trace).
      tol: relative-change tolerance (floored at ``10 * eps``).
      gtol: optimality tolerance in standard errors (floored by what the dtype resolves).

    Returns:
      ``NMFResult(counts, signatures, n_iter, converged, loss, trace, status, residual)``.
    """
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    tol = check_float(tol, "tol", minimum=0.0)
    gtol = check_float(gtol, "gtol", minimum=0.0)
    if fixed_columns is None:
        fixed_columns = jnp.zeros(jnp.shape(signatures0)[-1:], bool)
    signatures0, counts, a0, fixed = _prepare(signatures0, counts, a0, fixed_columns, "fixed_columns")
    if fixed.ndim != 1:
        raise ValueError(f"fixed_columns must have shape (K,), got {fixed.shape}")
    return _kl_nmf_jit(counts, signatures0, a0, fixed, max_iter, tol, gtol)


def _kl_nmf_impl(counts, signatures0, a0, fixed, max_iter, tol, gtol):
    if counts.ndim == 1:
        return kl_nmf_unchecked(counts, signatures0, a0, fixed, max_iter, tol, gtol)
    s_ax = 0 if signatures0.ndim == 3 else None
    a_ax = 0 if a0.ndim == 2 else None
    solve = jax.vmap(kl_nmf_unchecked, in_axes=(0, s_ax, a_ax, None, None, None, None))
    return solve(counts, signatures0, a0, fixed, max_iter, tol, gtol)


_kl_nmf_jit = jax.jit(_kl_nmf_impl, static_argnums=(4,))


__all__ = [
    "NMFResult",
    "NNPUResult",
    "kl_nmf",
    "nmf_residual",
    "nnpu",
    "nnpu_init",
    "poisson_count_residual",
    "poisson_covariance",
    "poisson_fisher",
    "poisson_multiplicative_step",
    "poisson_stderr",
    "residual_floor",
]
