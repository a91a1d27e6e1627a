"""SEMSUN: Poisson unmixing of gamma-ray spectra with signatures that move on IAE manifolds.

Phan, Bobin, Thiam, Bobin, NIM A 1060 (2024) 169028; DESIGN.md section 3. A measured
spectrum ``y`` (``m`` channels of counts) is modelled as

.. math:: y \\sim \\mathrm{Poisson}(S(\\lambda)\\, a), \\qquad
          S = [\\,b,\\ f_1, \\dots,\\ s_1(\\lambda_1), \\dots, s_K(\\lambda_K)\\,]

with fixed unit-sum signatures (the measured natural background ``b`` and any extra fixed
ones ``f``), unit-sum signatures ``s_k`` decoded by an IAE at barycentric weights
``lambda_k`` (one IAE per radionuclide, SEMSUN-i, or one *joint* IAE whose inputs are the
radionuclides and which shares one ``lambda``, SEMSUN-j), and counts ``a >= 0`` (the
expected number of counts of each source in the ``m`` channels).

Estimation minimises the Poisson deviance over ``a >= 0`` and the ``lambda_k`` (sum to one,
within the range the IAE saw in training). Two solvers, both one jitted program vmapped
over the batch of spectra:

* ``"newton"`` (default): damped projected Newton on all unknowns at once with the Fisher
  scoring curvature ``J^T diag(1/mu) J`` (``J = d mu / d(a, lambda)`` by forward-mode
  autodiff), started from multiplicative updates at the initial ``lambda``.
* ``"bcd"``: the published block coordinate descent: an ``a``-step of multiplicative
  (NNPU) updates warm-started, then a ``lambda``-step (here damped Newton with exact
  derivatives instead of SLSQP with finite differences), until the relative changes of
  ``a`` and ``S`` fall below ``tol``.

Standard errors come from the Poisson Fisher information at the estimate, including the
uncertainty of the ``lambda`` (so the ``a`` errors are those of the full model, not of
known signatures).

This module holds the entry point (argument checks, chunks, restarts, the result); the pure
solver is :mod:`frugal.gamma.solver.core` and the argument handling
:mod:`frugal.gamma.solver.inputs` (their public names are exported here too).
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from frugal._precision import full_precision
from frugal._validation import check_float, check_int
from frugal.gamma.calibration import calibrated, channel_edges
from frugal.gamma.solver.core import (
    GRID_NODES,
    SCALED_TOTAL,
    ZERO_SOURCE_SCORE,
    SolverSpec,
    latent_basis,
    project_latent,
    signature_rows,
    unmix_batch,
    unmix_one,
)
from frugal.gamma.solver.inputs import (
    check_counts,
    count_scales,
    fixed_signature_rows,
    float_dtype,
    latent_grid,
    latent_setup,
    reject_tracers,
    spread_starts,
)
from frugal.solvers.batching import bucket_size, default_chunk_size, first_of_batch, run_batched
from frugal.solvers.status import Status, status_counts
from frugal.solvers.variants import BCD, as_solver
from frugal.unmix import as_models

__all__ = [
    "GRID_NODES", "SCALED_TOTAL", "ZERO_SOURCE_SCORE", "SolverSpec", "UnmixResult", "check_counts",
    "fixed_signature_rows", "float_dtype", "latent_basis", "latent_grid", "latent_setup", "project_latent",
    "signature_rows", "unmix", "unmix_one",
]


class UnmixResult(NamedTuple):
    """Result of :func:`unmix` and of the baselines (leading batch axis when a batch was given).

    counts: ``(K,)`` estimated expected counts per source, in the order of ``names``
      (background first, then fixed signatures, then the IAE sources).
    stderr: ``(K,)`` standard errors of ``counts`` from the Poisson Fisher information.
    latent: one ``(d_k,)`` array of barycentric weights per IAE (empty for baselines).
    latent_stderr: their standard errors (same shapes).
    signatures: ``(m, K)`` unit-sum signatures at the estimate (``None`` if not asked).
    loss: Poisson deviance at the estimate (about ``m`` for a correct model).
    n_iter: iterations of the solver; converged: ``status == Status.CONVERGED``.
    names: the source names.
    trace: with ``return_trace=True``, ``(max_iter + 1,)`` deviance at the start and after
      each iteration (Newton iterations, or outer sweeps of ``"bcd"``), NaN after the stop.
    status: why the solver stopped (:class:`frugal.solvers.Status` codes): ``converged``
      only when the first-order optimality test passed.
    Where the data carry no information on an unknown (an empty spectrum, a model at zero
    counts: the Fisher information is singular there), its Fisher error is replaced by the
    scale of the likelihood: ``sqrt(max(count, 1))`` for a count (the likelihood of a count
    with nothing observed falls as ``exp(-a)``), the standard deviation of a uniform law over
    the training range for a weight.
    gof_pvalue: goodness of fit, the p-value of ``loss`` under the fitted model
      (:func:`frugal.ops.gof.gof_pvalue`, valid at low counts); below 1e-3 the model does
      not describe the spectrum.
    """

    counts: np.ndarray
    stderr: np.ndarray
    latent: tuple
    latent_stderr: tuple
    signatures: np.ndarray | None
    loss: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    names: tuple
    trace: np.ndarray | None = None
    status: np.ndarray | None = None
    gof_pvalue: np.ndarray | None = None


class _Solved(NamedTuple):
    """What one batched solve returns (NumPy leaves, leading batch axis)."""

    counts: np.ndarray
    stderr: np.ndarray
    latent: np.ndarray
    latent_stderr: np.ndarray
    signatures: np.ndarray
    loss: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    trace: np.ndarray
    status: np.ndarray
    pvalue: np.ndarray
    residual: np.ndarray  # optimality residual over its tolerance (<= 1: optimal)
    score: np.ndarray  # largest zero-source score (see _zero_source_scores)
    restart: np.ndarray  # weights to restart from where that score is large


def _better(best, new):
    """Per spectrum, the solve with the lower deviance (a NaN never replaces a finite one)."""
    if best is None:
        return new
    take = ~(new.loss >= best.loss) & np.isfinite(new.loss)
    return jax.tree_util.tree_map(
        lambda n, o: np.where(take.reshape((-1,) + (1,) * (np.ndim(n) - 1)), n, o), new, best)


def _put(full, index, part):
    full = np.array(full, copy=True)
    full[index] = part
    return full


#: p-value of the deviance below which a fit is reported as not describing its spectrum.
GOF_WARN = 1e-3


def _warn_status(status, pvalue, scales, dtype):
    bad = status != Status.CONVERGED
    if np.any(bad):
        counts = status_counts(status[bad])
        warnings.warn(f"{int(bad.sum())} of {status.size} fit(s) did not pass the optimality test "
                      f"({', '.join(f'{n}: {c}' for n, c in counts.items())}); see UnmixResult.status",
                      UserWarning, stacklevel=3)
    poor = np.asarray(pvalue) < GOF_WARN
    if np.any(poor):
        warnings.warn(f"{int(poor.sum())} of {status.size} fit(s) have a goodness-of-fit p-value below "
                      f"{GOF_WARN:g}: the model does not describe those spectra (missing source, wrong "
                      "background or calibration?); see UnmixResult.gof_pvalue", UserWarning, stacklevel=3)
    if np.any(scales > 1) and np.dtype(dtype) == np.float32:
        worst = float(np.sqrt(scales.max()))
        warnings.warn(f"spectra with more than {SCALED_TOTAL[np.dtype(dtype)]:.0e} counts: float32 locates their "
                      f"optimum to about {0.05 * worst:.2g} standard errors; enable float64 "
                      "(jax.config.update('jax_enable_x64', True)) for more", UserWarning, stacklevel=3)


@full_precision
def unmix(
    counts,
    models,
    *,
    background=None,
    signatures=None,
    names: Sequence[str] | None = None,
    latent0=None,
    bounds="training",
    solver="newton",
    a_step: str | None = None,
    latent_step: str | None = None,
    outer: str | None = None,
    max_iter: int = 100,
    a_iter: int = 200,
    latent_iter: int | None = None,
    tol: float = 1e-5,
    chunk_size: int | None = None,
    devices=None,
    return_signatures: bool = True,
    return_trace: bool = False,
    n_starts: int | None = None,
    grid_start: bool = True,
    gtol: float = 5e-2,
    energies=None,
    edges=None,
) -> UnmixResult:
    """Unmix gamma-ray spectra into counts per source with signatures on IAE manifolds.

    counts: ``(m,)`` or ``(B, m)`` measured counts (non-negative, finite).
    models: one IAEModel per radionuclide (SEMSUN-i; a model with ``n < m`` channels
      describes the first ``n`` channels, zero beyond) or one joint IAEModel whose inputs
      are the radionuclides (SEMSUN-j).
    background: optional ``(m,)`` fixed background shape (normalised here).
    signatures: optional extra fixed signatures, ``(F, m)`` or a dict name -> ``(m,)``.
    names: names of the IAE sources (default ``source0``, ...).
    latent0: starting weights, one ``(d_k,)`` per model (default: the middle of the range
      seen in training); ``bounds``: ``"training"`` (that range), ``"simplex"`` or ``None``.
    solver: ``"newton"`` (joint Fisher-scoring Newton, default) or ``"bcd"`` (block
      coordinate descent as published, exact derivatives), or a value of
      :mod:`frugal.solvers.variants` (``Newton()``, ``BCD(amplitude=Fista(n_iter=50),
      outer=IPALM())``). By name the pieces of ``"bcd"`` are chosen by ``a_step`` in
      ``"multiplicative"`` (default), ``"newton"``, ``"fista"`` (``a_iter`` iterations);
      ``latent_step`` in ``"newton"`` (default), ``"pg"``, ``"lbfgsb"``, ``"adam"``
      (``latent_iter`` iterations, default that step's own); ``outer`` in
      ``"gauss-seidel"`` (default), ``"jacobi"``, ``"ipalm"``. They apply to
      ``solver="bcd"`` only: with ``"newton"`` or a solver value they are an error.
    a_iter: multiplicative updates of the counts at the start (and the iterations of the
      amplitude step of ``"bcd"`` given by name).
    chunk_size: spectra per compiled batch; larger batches run chunk by chunk in bounded
      memory. Default: 16 on a CPU, where small chunks are faster, and 4096 on GPUs/TPUs
      (:data:`frugal.solvers.batching.CHUNK_SIZE`); raise it on a GPU with memory to
      spare, lower it for very large models.
    devices: ``None`` (all local devices: the batch is sharded over them), a number of
      devices, or a list of ``jax.Device``; see :mod:`frugal.solvers.batching`.
    return_signatures: also return the ``(m, K)`` signatures at the estimate (leave off
      for very large batches: they are the bulk of the output).
    return_trace: also return the deviance after each iteration (``trace``), to study
      convergence; see ``benchmarks/solvers.py``.
    n_starts: solve from up to this many starting weights and keep, spectrum by spectrum,
      the lowest deviance: ``latent0`` (or the default), the middle of every model's
      training range, then every model at its anchor 0, 1, ... (projected on the bounds),
      each skipped where it repeats an earlier start (at most ``max(d_k) + 2`` starts);
      each start costs one more solve. Default (``None``): one start with one model, every
      start with several (SEMSUN-i). With one IAE per radionuclide the deviance has local
      minima that the grid start alone does not escape: on paper A (``N = 100 000``, 60
      draws, four two-anchor IAEs) one start from the first anchor gave median errors of
      +3.4 % (Co60) and -5.3 % (Cs137), four starts +0.7 % and -0.2 % from any
      ``latent0`` (the oracle: -0.2 % and -0.4 %; ``benchmarks/README.md``).
    grid_start: start each solve from the best node of a lattice of every model's training
      range (counts profiled by multiplicative updates; several models coordinate-wise),
      so that the answer does not depend on ``latent0``; and solve again, from the node
      where it would enter the fit, any spectrum whose model sources all ended at zero
      counts while their score there exceeds :data:`ZERO_SOURCE_SCORE` standard errors.
    gtol: optimality tolerance, in standard errors: ``status`` is ``converged`` only when
      the Fisher-scaled projected-gradient residual is below it (floored at the working
      precision's resolution: see the warning for spectra above :data:`SCALED_TOTAL`).
      The default, 0.05, is what float32 resolves reliably (decoder rounding moves the
      optimum by ~0.01-0.02 standard errors against float64); an estimate that close to the
      optimum changes no interval.

    energies, edges: the energy calibration of the counts' channels, as channel centres
      ``(m,)`` (e.g. ``Spectrum.energies`` from :func:`frugal.gamma.read_spectrum`) or bin
      edges ``(m + 1,)`` in keV (one calibration for the batch). Then every model must store
      its energy grid (``frugal.iae.train(..., energy_edges=...)``), and the likelihood is
      evaluated on the measured channels: each model's signatures are integrated over every
      measured channel's energy range (:mod:`frugal.gamma.calibration`; the counts are never
      rebinned), so any gain and offset that overlaps the model's range works, a partial
      overlap with a warning. The counts are those of each model's whole range; the
      background and fixed signatures are given on the measured channels. Without them the
      channels are taken as the models' own.

    Computations run in float32, or in float64 when ``jax.enable_x64`` is on.

    Spectra of any finite total are accepted: above :data:`SCALED_TOTAL` counts the solver
    works on the spectrum scaled down and scales the results back. Warns when a fit did not
    pass the optimality test or its goodness-of-fit p-value is below :data:`GOF_WARN`.

    Returns an :class:`UnmixResult`; counts are ordered background, fixed, IAE sources.
    """
    reject_tracers(counts=counts, background=background, signatures=signatures)
    models = as_models(models)
    a_iter = check_int(a_iter, "a_iter", minimum=1)
    method = as_solver(solver, a_step=a_step, latent_step=latent_step, outer=outer, a_iter=a_iter,
                       latent_iter=latent_iter)
    if isinstance(method, BCD) and method.latent.two_anchors_only and any(mdl.n_anchors != 2 for mdl in models):
        raise ValueError(f"latent step {method.latent!r} needs models with two anchors (one free weight each)")
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    tol = check_float(tol, "tol", minimum=0.0, strict=True)
    chunk_size = default_chunk_size(devices) if chunk_size is None else check_int(chunk_size, "chunk_size",
                                                                                   minimum=1)
    n_starts = (1 if len(models) == 1 else max(mdl.n_anchors for mdl in models) + 2) if n_starts is None \
        else check_int(n_starts, "n_starts", minimum=1)
    gtol = check_float(gtol, "gtol", minimum=0.0, strict=True)
    # Converted chunk by chunk on the device: a memory-mapped batch is never copied whole.
    y, batched = check_counts(counts, convert=False)
    b, m = y.shape
    fixed_rows, fixed_names = fixed_signature_rows(background, signatures, m)
    measured = channel_edges(m, energies=energies, edges=edges)
    if measured is not None:
        models = calibrated(models, measured)
    iae_names = []
    for i, mdl in enumerate(models):
        if mdl.manifold.n_channels > m:
            raise ValueError(
                f"models[{i}] describes {mdl.manifold.n_channels} channels but counts have only {m}"
            )
        if mdl.joint and mdl.manifold.n_channels != m:
            raise ValueError(f"the joint model models[{i}] has {mdl.manifold.n_channels} channels, counts have {m}")
        iae_names += [f"source{len(iae_names) + j}" for j in range(mdl.manifold.n_inputs)]
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(iae_names):
            raise ValueError(f"names must have {len(iae_names)} entries (one per IAE source), got {len(names)}")
        iae_names = names

    lower, upper, start = latent_setup(models, bounds, latent0)
    dtype = float_dtype()
    lam0 = np.concatenate([np.broadcast_to(s, (b, s.shape[-1])) for s in start], axis=-1).astype(dtype)
    starts = [lam0] + [np.broadcast_to(x, lam0.shape)
                       for x in spread_starts(models, lower, upper, lam0, n_starts - 1)]
    scales = count_scales(y, dtype)
    # Integers wider than 16 bits would be wrapped to 32 bits on the device, and scaled
    # spectra need float64 arithmetic: those are converted on the host, chunk by chunk.
    host_convert = bool(np.any(scales > 1)) or (np.issubdtype(y.dtype, np.integer) and y.dtype.itemsize > 2)

    def prepare(part):
        counts_part, lam_part, scale_part = part
        if host_convert:
            counts_part = (np.asarray(counts_part, np.float64) / scale_part[:, None]).astype(dtype)
        return counts_part, lam_part, scale_part

    # The grid start is compiled into every program (a traced flag turns it off), so that
    # grid_start=False and the restarts below run the program of the first solve.
    spec = SolverSpec(manifolds=tuple(mdl.manifold for mdl in models), n_channels=m, n_fixed=len(fixed_rows),
                      solver=method, max_iter=max_iter, a_iter=a_iter, tol=tol,
                      want_signatures=bool(return_signatures), trace=bool(return_trace), gtol=gtol, grid=True)
    grid_lams = tuple(jnp.asarray(g) for g in latent_grid(models, lower, upper))
    states = tuple(mdl.state for mdl in models)
    shared = (states, jnp.asarray(fixed_rows), jnp.asarray(lower), jnp.asarray(upper), grid_lams)
    first_chunk = min(chunk_size, bucket_size(b))

    def solve(use_grid, counts_, lam_, scale_):
        return _Solved(*run_batched(partial(unmix_batch, spec), (counts_, lam_, scale_.astype(dtype)),
                                    shared + (jnp.asarray(use_grid),), chunk_size=chunk_size, devices=devices,
                                    prepare=prepare, buckets=True, min_chunk=first_chunk))

    best = None
    for lam_start in starts:  # a few whole-batch solves, each vmapped over the spectra
        best = _better(best, solve(bool(grid_start), y, lam_start, scales))
    # A model left at zero counts where it would enter the fit elsewhere on its manifold:
    # solve those spectra again from that point, keep the lower deviance.
    again = np.flatnonzero(best.score > ZERO_SOURCE_SCORE)
    if again.size:
        redo = solve(False, y[again], best.restart[again], scales[again])
        merged = _better(jax.tree_util.tree_map(lambda x: x[again], best), redo)
        best = jax.tree_util.tree_map(lambda full, part: _put(full, again, part), best, merged)
    stuck = best.score > ZERO_SOURCE_SCORE
    status = np.where(stuck & (best.status == Status.CONVERGED), np.int32(Status.STALLED), best.status)
    _warn_status(status, best.pvalue, scales, dtype)
    a, err, lam, lam_err, sig, loss, n_iter, trace = (best.counts, best.stderr, best.latent, best.latent_stderr,
                                                      best.signatures, best.loss, best.n_iter, best.trace)
    conv = status == Status.CONVERGED
    pvalue = best.pvalue
    err = np.where(np.isfinite(err), err, np.sqrt(np.maximum(a, 1.0))).astype(err.dtype)
    prior_sd = np.concatenate([(mdl.latent_bounds[1] - mdl.latent_bounds[0]) / np.sqrt(12.0) for mdl in models])
    lam_err = np.where(np.isfinite(lam_err), lam_err, prior_sd).astype(lam_err.dtype)
    splits = np.cumsum([mdl.n_anchors for mdl in models])[:-1]
    latent = tuple(np.split(lam, splits, axis=-1))
    latent_err = tuple(np.split(lam_err, splits, axis=-1))
    signatures_out = sig if return_signatures else None
    trace = trace if return_trace else None
    if not batched:
        a, err, loss, n_iter, conv, status, pvalue, trace, latent, latent_err, signatures_out = first_of_batch(
            (a, err, loss, n_iter, conv, status, pvalue, trace, latent, latent_err, signatures_out))
    return UnmixResult(a, err, latent, latent_err, signatures_out, loss, n_iter, conv,
                       tuple(fixed_names + iae_names), trace, status, pvalue)
