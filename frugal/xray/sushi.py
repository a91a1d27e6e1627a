r"""SUSHI: spatially regularised unmixing of X-ray hyperspectral cubes on IAE manifolds.

Lascar, Bobin & Acero, "Semi-blind unmixing of X-ray hyperspectral cubes with
physics-informed learnt models" (SUSHI), A&A 686, A259 (2024); DESIGN.md section 4.

Model
-----
A cube ``Y`` of ``E`` channels over ``P = H W`` pixels mixes ``C`` components, each
described by an IAE (decoder :math:`\Psi_c`, ``d_c`` anchors); per pixel ``p`` a component
has an amplitude :math:`s_c[p] \ge 0` (its expected counts over the band) and barycentric
weights :math:`\lambda_c[p]` (``d_c`` numbers summing to one):

.. math:: Y[e, p] \sim \mathrm{Poisson}\Big(b[e, p] + \sum_c s_c[p]\, S_c(\lambda_c[p])[e]\Big),
          \qquad S_c(\lambda) = \frac{\Psi_c(\lambda)}{\sum_e \Psi_c(\lambda)[e]}

(``b`` a known background). The weights are parametrised by their free coordinates
:math:`\lambda = \lambda_{\rm ref} + V t` (``V`` an orthonormal ``d x (d-1)`` basis of the
sum-to-one plane, :math:`\lambda_{\rm ref}` the anchors' barycentre), so the sum-to-one
constraint holds by construction and the spatial regularisation acts on the ``d_c - 1``
maps ``t``; the weights are also kept in the box of the training range
(:math:`\lambda_{\min} \le \lambda \le \lambda_{\max}`, where the decoder was trained).

Objective
---------
.. math:: F(s, t) = \sum_p \ell\big(Y[:, p], \mu[:, p]\big)
          + \sum_c \iota_{\ge 0}(s_c)
          + \sum_{c, a, j} w_{c,a,j}\, \| W_j\, t_{c,a} \|_1

with :math:`\ell` the Poisson negative log-likelihood written as half the deviance (the
same up to a constant; about ``E / 2`` per pixel for a correct model) or the Gaussian
:math:`\tfrac12 \sum_e (Y - \mu)^2 / \max(Y, 1)` (chi-square with the data variance),
:math:`W_j` the ``j``-th detail plane of the 2-D starlet transform (the coarse plane is not
penalised) and weights

.. math:: w_{c,a,j} = k\, \sigma_{c,a,j}\, \bar m_{c,a}.

:math:`\sigma_{c,a,j}` is the MAD noise level of the detail plane ``j`` of the map
:math:`t_{c,a}` of the **first, unregularised estimate** (the per-pixel fit SUSHI starts
from, or the ``init`` given), over the pixels where the component has signal: it measures
the noise of per-pixel estimates, which is what the regularisation removes; computing it
once keeps the objective fixed, so its decrease can be monitored and enforced.
:math:`\bar m_{c,a}` is the median over those pixels of the curvature ``M_aa`` of the data
term along the coordinate (below): in a pixel of median curvature the prox thresholds at
:math:`k \sigma_j` (SUSHI's "k sigma" denoising); better measured pixels are thresholded
less, poorly measured ones (a faint component, no counts, outside the mask) more.

Algorithm (PALM-type; each stage one jitted ``lax.while_loop`` of ``block_solve``)
-----------------------------------------------------------------------------------
Each sweep:

1. **Data step**, per pixel, on all unknowns of the pixel
   :math:`z = (s_1..s_C, t_1..t_C)` (``C + sum(d_c - 1)`` numbers, 6 for thermal +
   synchrotron). With :math:`J = \partial\mu/\partial z` (columns :math:`S_c` and
   :math:`s_c\, \partial S_c/\partial t_c` by forward-mode autodiff),
   :math:`g = J^\top \partial\ell/\partial\mu` and the Fisher / Gauss-Newton curvature
   :math:`F = J^\top \mathrm{diag}(1/\mu) J` (``1/max(Y, 1)`` for the Gaussian loss),

   .. math:: \delta = -M^{-1} g, \qquad M = F + \nu\, \mathrm{diag}(F)

   (Levenberg-Marquardt with Marquardt's scaling; :math:`\nu` per pixel, 1e-3 at first, x10
   after a step that does not lower the pixel's data term, which is then refused, and after
   one that does, by the gain ratio :math:`\rho` (actual over predicted decrease): x0.3 if
   :math:`\rho > 3/4`, x2 if :math:`\rho < 1/4`, else kept). The constraints are in the
   subproblem (:func:`frugal.xray.solver.data_step.bounded_step`, an active-set method of a
   few passes): an amplitude whose step crosses 0 is held there (and its component's latent
   coordinates, which no longer act), a weight on a face of the training box that the step
   would leave gets the face as an equality; projecting the unconstrained step instead (in a
   non-diagonal metric) stalls short of the optimum in every pixel where a bound binds. The
   latent part is clipped to :math:`\|\delta_t\|_\infty \le 0.25` (one factor for the whole
   step, except for a component whose latent step is far larger than the others', e.g. one
   with almost no counts in the pixel: it is clipped alone), then amplitudes are projected
   on :math:`s \ge 0` and weights on the training box. The curvature of the model, per
   pixel, is what makes tens of sweeps enough where a fixed gradient step needs thousands
   (pixels differ in counts by orders of magnitude), and the *joint* step is what copes with
   the near-degeneracy of thermal and synchrotron continua (alternating between them
   zig-zags).
2. **Starlet prox** of each component's maps: soft-threshold the detail coefficients at
   :math:`w_{c,a,j} / M_{aa}` (the l1 prox in the metric of step 1, coordinate by
   coordinate, evaluated at the pixel of the coefficient; the synthesis approximation of
   the prox of the redundant starlet, as in SUSHI) and reconstruct.
3. **Monotone safeguard**: the move of steps 1-2 is accepted if ``F`` does not increase,
   else halved (up to 6 times) or dropped; the objective trace is non-increasing.
4. ``amp_steps`` **projected Newton steps on each amplitude map** (Gauss-Seidel over
   components) with the diagonal Hessian :math:`H = \sum_e S_c^2\, Y / \mu^2`
   (``projected_newton_diag``), damped by the Newton decrement (the Poisson NLL is
   self-concordant in ``s``, so the damped step cannot increase it), refused in a pixel
   whose data term would increase. More than ``AMP_FAR`` standard errors
   (:mod:`frugal.xray.solver.amplitudes`) from its optimum the damped step moves an
   amplitude by about one standard error per sweep (a hot pixel with 1e9 counts would need
   millions); there the EM update is tried too and the better kept.

Stop reasons (``status``, :class:`frugal.solvers.Status`)
--------------------------------------------------------
``CONVERGED`` means that a first-order optimality test passed at the result: the residual

.. math:: r = \max_{p, i} \sqrt{L_{p,i}}\ \big|z_{p,i} - z^+_{p,i}\big| \le
          \mathrm{gtol}\ (0.1),

with ``z+`` the forward-backward (prox-gradient) point in the diagonal metric ``L`` of the
undamped Fisher information (:func:`frugal.xray.solver.prox_step.fb_start`):
:math:`s^+ = \max(s - g_s / L_s, 0)` for the amplitudes (the scaled projected gradient) and, per
component, :math:`t^+ = P(\mathrm{prox}_{w/L_c}(t - g_t / L_c))` for the latent maps (the
starlet prox of step 2 for SUSHI, the identity for :func:`fit_pixels`; ``P`` the projection
on the training box; one ``L_c`` per component and pixel, the largest of its coordinates',
so the Euclidean projection is the metric one and a fixed point is a KKT point). For a
Poisson likelihood ``r`` is in standard errors: no pixel's unknown is more than ``gtol``
standard errors (along its axis) from the optimum. Coordinates without curvature count as
optimal.

Each sweep begins with that test at its starting point (its gradient and curvature are
the data step's: the test costs no decoding). The loop ends with a test-only sweep (not
counted in ``n_iter``), at the iteration limit (``MAX_ITER`` unless the test passes), when
``F`` stopped decreasing (``STALL_SWEEPS`` sweeps without a relative decrease above
``STALL_RTOL``, :mod:`frugal.xray.solver.loop`: ``STALLED`` unless it passes), or once the relative decrease of ``F``
fell below ``tol`` if the test passes or the residual no longer improves
(``RESIDUAL_PATIENCE``; ``STALLED``). A NaN or inf anywhere gives ``NON_FINITE``. Each
pixel also gets its own status (``pixel_status``: ``CONVERGED`` where its own residual
passes: the per-pixel answer of :func:`fit_pixels`, whose pixels are independent).

The relative decrease alone is no test: on the toy cubes of ``tests/test_sushi.py`` the
former rule (stop at a relative decrease of 1e-5, reported as converged) left pixels up
to 0.9 standard errors from their optimum, and fitted a pixel holding 1e9 counts in one
channel with a total of under 1e-5 of them, both "converged". SUSHI's regularised loop
typically ends ``STALLED``: the PALM move (a Gauss-Newton step followed by a prox in the
diagonal metric, under the monotone safeguard on ``F``) stops short of a prox-gradient
fixed point (about 0.4 standard errors in the median pixel of the toy cubes, 2 in the
worst; forward-backward steps would still lower ``F``, but, on those cubes, worsen the
latent maps).

Goodness of fit: ``deviance`` and ``gof_pvalue`` (:func:`frugal.ops.gof.gof_pvalue`, valid
at low counts) for the cube and per pixel (``pixel_deviance``, ``pixel_gof_pvalue``); see
:class:`SushiResult` for the number of parameters they assume.

Variants (``solver=PALM(...)``, or ``outer=``, ``amp_step=``; one compiled program per combination)
--------------------------------------------------------------------------------------------------
The pieces are values of :mod:`frugal.xray.solver.variants`: ``PALM(outer=InertialSweep(),
amplitude=NewtonAmplitudes(), amp_steps=1)`` is the default, and the string options are
shorthands (``outer="joint"`` is ``JointSweep()``, ``amp_step="multiplicative"``
``EMAmplitudes()``).

``outer="joint"`` is the loop above. ``outer="gauss-seidel"`` is the order
of the published PALM: the data step moves only the latent coordinates, with the amplitudes
held fixed (the Levenberg-Marquardt step in the latent block of ``M``, the amplitude /
latent coupling blocks zeroed), then the prox and the safeguard, then the ``amp_steps``
amplitude sweeps (at least one: they alone move the amplitudes). ``outer="ipalm"`` is
inertial PALM (Pock & Sabach, SIAM J. Imaging Sci. 9 (2016) 1756): each sweep's joint
data step starts from :math:`y = P(x_k + \beta (x_k - x_{k-1}))` on ``(s, t)`` (``P`` the
projection on the feasible set, :math:`\beta` = :data:`frugal.solvers.block.IPALM_BETA`);
a pixel whose data term would increase at ``y`` keeps :math:`x_k`, and ``y`` is dropped
altogether if it increases ``F``, so the trace stays non-increasing (one more decoding per
sweep).
``outer="ipalm"`` is the default: on three noise draws of the 94 x 94 toy remnant it ended
lowest of the six variants on every draw and came within 1e-4 of the best objective found
in 32 sweeps (median) against 41 for ``"joint"``, at 1.07 times the cost per sweep, with the
same map errors (``benchmarks/results/solvers_xray_draws.json``).

``amp_step="newton"`` (the default) is step 4 above; ``amp_step="multiplicative"``
replaces it by the EM (Richardson-Lucy) update of each amplitude with the spectra fixed,
:math:`s_c \leftarrow s_c \sum_e S_c[e]\, y[e] / \mu[e]` (``S_c`` has unit sum; the
other components and the background act as known counts), or, for the Gaussian loss, the
multiplicative update of weighted least squares
:math:`s_c \leftarrow s_c \sum_e S_c y / v \,/\, \sum_e S_c \mu / v`. Both cannot
increase the data term (majorisation); the per-pixel safeguard stays, and a zero
amplitude restarts from a small value (``MULT_RESTART``) which the safeguard refuses where
0 is better. They converge more slowly than the Newton steps (more sweeps to the same
``tol``) but need no curvature.

All variants minimise the same ``F``: from the same start and thresholds they reach the
same objective up to the stopping rule and the local minima of the non-convex problem.

Batches of cubes (``devices=``, ``chunk_size=``)
------------------------------------------------
A batch ``(B, E, H, W)`` is solved by vmapped programs, run through
:func:`frugal.solvers.batching.run_batched`: chunks of ``chunk_size`` cubes, each chunk split
over the local devices (a 1-D mesh over the cubes, each device running its own loops, no
communication). A single cube runs on one device. With several hosts, call
``jax.distributed.initialize()`` and give each host its own cubes with
``devices=jax.local_devices()``.

Initialisation (:func:`fit_pixels`, and SUSHI without ``init``): a grid search per pixel
over a few candidate weights of each component (the anchors' simplex at step 1/4 to 1/8)
with amplitudes by weighted non-negative least squares, then the loop above without
the prox (the objective is then a sum over pixels, each step safeguarded per pixel). One
fixed start for every pixel lands in the wrong valley of the thermal / synchrotron
degeneracy in many pixels; the grid makes the local method a refinement.

Masks and empty pixels: only pixels inside ``mask`` with at least one count carry a data
term (and are decoded: pixels outside the remnant cost nothing). The others get amplitude
0 (the Poisson estimate without counts) and, in SUSHI, weights filled in from their
neighbours by the regularisation (their curvature is zero, so their thresholds are huge);
pixels outside ``mask`` are reported with the default weights :math:`\lambda_{\rm ref}`.
No NaN arises.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax.numpy as jnp
import numpy as np

from frugal._precision import full_precision
from frugal._validation import check_choice, check_float, check_int
from frugal.solvers.batching import resolve_devices, run_batched
from frugal.unmix import as_models
from frugal.xray.solver.cube import Control, Spec
from frugal.xray.solver.inputs import (
    active_data, check_background, check_cube, check_init, check_mask, check_param_maps, cold_start_grids,
    model_geometry, static_trace_len,
)
from frugal.xray.solver.loop import grid_start_batch, solve_batch, thresholds_batch
from frugal.xray.solver.results import SushiResult, assemble_result
from frugal.xray.solver.variants import PALM, JointSweep, NewtonAmplitudes, as_palm

__all__ = ["SushiResult", "fit_pixels", "sushi"]

#: Default ``gtol``: the optimality residual, in standard errors, below which a result is
#: ``Status.CONVERGED`` (module doc, "Stop reasons").
GTOL = 0.1














# ---------------------------------------------------------------------------------------
# Pure core


































































# The batched programs take the arguments shared by the cubes first, then the batched ones
# (``run_batched``'s order).












# ---------------------------------------------------------------------------------------
# Argument handling


def _as_models(models) -> list:
    models = as_models(models)
    for i, mdl in enumerate(models):
        if mdl.joint or mdl.manifold.n_inputs != 1:
            raise ValueError(f"models[{i}] is a joint model; SUSHI takes one single-input IAE per component")
        if mdl.manifold.n_channels != models[0].manifold.n_channels:
            raise ValueError(
                f"models[{i}] describes {mdl.manifold.n_channels} channels but models[0] describes "
                f"{models[0].manifold.n_channels}: all components must share the cube's channels"
            )
    return models


def _run(cube, models, *, background, loss, n_scales, k_mad, max_iter, tol, init, mask, param_maps, names,
         solver, regularise, init_iter, devices, chunk_size, gtol):
    models = _as_models(models)
    y, batched = check_cube(cube, models[0].manifold.n_channels)
    b, e, h, w = y.shape
    check_choice(loss, "loss", ("poisson", "gaussian"))
    devs = resolve_devices(devices)
    if not batched:  # one cube: one device
        devs = devs[:1]
    chunk_size = b if chunk_size is None else check_int(chunk_size, "chunk_size", minimum=1)
    n_scales = check_int(n_scales, "n_scales", minimum=1)
    k_mad = check_float(k_mad, "k_mad", minimum=0.0)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    tol = check_float(tol, "tol", minimum=0.0)
    gtol = check_float(gtol, "gtol", minimum=0.0)
    init_iter = check_int(init_iter, "init_iter", minimum=1)
    bkg = check_background(background, y.shape)
    mask = check_mask(mask, y.shape)
    param_maps = check_param_maps(param_maps, models)
    n_comp = len(models)
    if names is None:
        names = tuple(f"component{i}" for i in range(n_comp))
    else:
        names = (names,) if isinstance(names, str) else tuple(str(n) for n in names)
        if len(names) != n_comp:
            raise ValueError(f"names must have one entry per model ({n_comp}), got {len(names)}")

    geometry = model_geometry(models)
    data, index, weight = active_data(y, bkg, mask)
    spec = Spec(manifolds=tuple(m.manifold for m in models), shape=(h, w), loss=loss, n_scales=n_scales,
                trace_len=static_trace_len(max_iter + 1, init_iter + 1), tol=tol, solver=solver)
    # The grid search and the thresholds do not depend on the variant: one program for all.
    base = spec._replace(solver=PALM(outer=JointSweep(), amplitude=NewtonAmplitudes(), amp_steps=solver.amp_steps))
    zero_thr = tuple(np.zeros((b, n_scales, m.manifold.n_free), np.float32) for m in models)

    def control(use_prox, limit):
        return Control(jnp.asarray(use_prox), jnp.int32(limit), jnp.float32(gtol))

    def run(fn, batched_args, shared_args):
        # Over the cubes: chunks of chunk_size cubes, each split over the devices.
        return run_batched(fn, batched_args, shared_args, chunk_size=chunk_size, devices=devs)

    def solve(t0, s0, thr, use_prox, limit):
        return run(partial(solve_batch, spec), (data, t0, s0, thr), (geometry, control(use_prox, limit)))

    n_init = np.zeros(b, np.int32)
    if init is None:
        t0, s0 = run(partial(grid_start_batch, base), (data,), (geometry, cold_start_grids(models, geometry)))
        # Stage 1, the per-pixel fit: the whole of fit_pixels, the start of SUSHI.
        state, f0, trace, n_iter, outcome = solve(t0, s0, zero_thr, False, init_iter if regularise else max_iter)
        t0, s0, n_init = state.t, state.s, np.asarray(n_iter)
    else:
        t0, s_maps = check_init(init, models, geometry, b, h, w, batched)
        s0 = np.take_along_axis(s_maps, index[:, None, :], axis=2) * weight[:, None, :]
        if not regularise:
            state, f0, trace, n_iter, outcome = solve(t0, s0, zero_thr, False, max_iter)
    if regularise:
        thr = run(partial(thresholds_batch, base), (data, t0, s0), (geometry, jnp.float32(k_mad)))
        state, f0, trace, n_iter, outcome = solve(t0, s0, thr, True, max_iter)
    else:
        thr, n_init = zero_thr, np.zeros(b, np.int32)
    n_latent = sum(m.manifold.n_free for m in models)
    # Fitted parameters per pixel with counts, for the goodness of fit: all of them for the
    # per-pixel fit; for SUSHI the amplitudes (not regularised) and, of the latent maps, the
    # coarse starlet plane only (about one value per 4^J pixels), an approximation (see
    # SushiResult.gof_pvalue).
    n_free = n_comp + (n_latent / 4.0**n_scales if regularise and k_mad > 0 else n_latent)
    return assemble_result(state, f0, trace, n_iter, outcome, thr, n_init, geometry, models, param_maps, names, y, bkg,
                     mask, index, weight, batched, n_free)




# ---------------------------------------------------------------------------------------
# Public entry points


@full_precision
def sushi(
    cube,
    models,
    *,
    background=None,
    loss: str = "poisson",
    n_scales: int = 2,
    k_mad: float = 1.0,
    max_iter: int = 100,
    tol: float = 1e-5,
    init: SushiResult | tuple | None = None,
    mask=None,
    param_maps=None,
    names: Sequence[str] | None = None,
    amp_steps: int | None = None,
    init_iter: int = 100,
    outer: str | None = None,
    amp_step: str | None = None,
    devices=None,
    chunk_size: int | None = None,
    gtol: float = GTOL,
    solver: PALM | None = None,
) -> SushiResult:
    """Unmix an X-ray cube with spatially regularised IAE components (SUSHI; module doc).

    cube: ``(E, H, W)`` counts (energy first), or a batch ``(B, E, H, W)`` solved at once
      (vmapped; the loop runs until the last cube stops).
    models: one single-input ``IAEModel`` per component, all over the cube's ``E`` channels.
    background: known expected background counts, ``(E,)`` (same in every pixel) or
      ``(E, H, W)`` (or ``(B, E, H, W)`` for a batch); default none.
    loss: ``"poisson"`` (default) or ``"gaussian"`` (chi-square with variance ``max(Y, 1)``).
    n_scales: starlet detail planes regularised (the coarse plane is not).
    k_mad: threshold in MAD noise units (``0``: no spatial regularisation).
    max_iter, tol: sweeps of the regularised loop and its stopping rule: the loop stops when
      the relative decrease of ``F`` falls below ``tol`` at a point that passes the
      optimality test (``gtol``), when ``F`` no longer decreases at all, or after
      ``max_iter`` sweeps (module doc, "Stop reasons").
    init: where to start: a ``SushiResult`` (e.g. :func:`fit_pixels`'s) or a pair
      ``(amplitude (C, H, W), latent (one (d_c, H, W) map per model))``; the thresholds
      come from its latent maps. Default: :func:`fit_pixels` (``max_iter=init_iter``, same
      ``tol``), run first.
    mask: ``(H, W)`` booleans, True where the data are used (default: everywhere).
    param_maps: optional ``ParameterMap`` (or None) per component: ``params`` maps.
    names: component names (default ``component0``, ...).
    solver: the sweeps as a value, ``PALM(outer=..., amplitude=..., amp_steps=...)`` of
      :mod:`frugal.xray.solver.variants` (e.g. ``PALM(outer=InertialSweep(beta=0.5))``);
      default from ``outer``, ``amp_step`` and ``amp_steps``, its shorthands, which set the
      pieces only without ``solver`` (with it they are an error).
    amp_steps: updates of every amplitude map per sweep (default 1; cheap: no decoding; 0
      for none).
    init_iter: sweeps of the per-pixel fit run first when ``init`` is None.
    outer: the order of the blocks in a sweep (module doc, "Variants"): ``"ipalm"``
      (default: inertial PALM, each sweep's joint step starts from an extrapolated point,
      ``IPALM_BETA``), ``"joint"`` (one Levenberg-Marquardt step on each pixel's
      amplitudes and weights together, from the current point) or ``"gauss-seidel"`` (the
      published PALM order: the data step moves the weights only, the amplitudes move in
      the ``amp_steps`` sweeps, which must be >= 1). Used by the per-pixel fit run first too.
    amp_step: the amplitude sweeps: ``"newton"`` (default: damped projected Newton steps)
      or ``"multiplicative"`` (EM updates; the weighted least-squares multiplicative
      update for ``loss="gaussian"``).
    devices: where a batch of cubes runs: None (all local devices), a number ``n`` (the
      first ``n`` local devices) or a list of devices. The batch is split over them (one
      mesh axis over the cubes, each device running its own loops); a single cube runs on
      one device. For several hosts, call ``jax.distributed.initialize()`` and pass each
      host its own cubes with ``devices=jax.local_devices()``.
    chunk_size: cubes per compiled batch (default: the whole batch); a last, smaller
      chunk is padded (one program for every chunk). Bounds the memory of large batches.
    gtol: the optimality residual, in standard errors (module doc, "Stop reasons"), at or
      below which the result is ``Status.CONVERGED``.

    Returns a :class:`SushiResult` (``status``, ``residual``: why the loop stopped;
    ``deviance``, ``gof_pvalue``: the goodness of fit). The three stages (grid search, per-pixel sweeps,
    regularised sweeps) are each one jitted program with no host round trip per sweep;
    the programs depend on the shapes (and the variant) only, so cubes of one size share
    them.
    """
    return _run(cube, models, background=background, loss=loss, n_scales=n_scales, k_mad=k_mad,
                max_iter=max_iter, tol=tol, init=init, mask=mask, param_maps=param_maps, names=names,
                solver=as_palm(solver, outer=outer, amp_step=amp_step, amp_steps=amp_steps), regularise=True,
                init_iter=init_iter, devices=devices, chunk_size=chunk_size, gtol=gtol)


@full_precision
def fit_pixels(
    cube,
    models,
    *,
    background=None,
    loss: str = "poisson",
    max_iter: int = 100,
    tol: float = 1e-5,
    init: SushiResult | tuple | None = None,
    mask=None,
    param_maps=None,
    names: Sequence[str] | None = None,
    amp_steps: int | None = None,
    outer: str | None = None,
    amp_step: str | None = None,
    devices=None,
    chunk_size: int | None = None,
    gtol: float = GTOL,
    solver: PALM | None = None,
) -> SushiResult:
    """Fit the same models pixel by pixel, without spatial regularisation (the usual practice).

    A grid search per pixel, then SUSHI's sweeps without the prox: per-pixel
    Levenberg-Marquardt steps on all of a pixel's unknowns and Newton steps on the
    amplitudes, every pixel independent (the objective is a sum over pixels and every step
    is safeguarded per pixel), all pixels vmapped in one jitted loop. Arguments as
    :func:`sushi` (``solver``, or ``outer``, ``amp_step``: the variant of the sweeps; ``devices``,
    ``chunk_size``: how a batch of cubes is spread); ``init`` skips the grid search. Every
    variant solves the same per-pixel problems, hence reaches the same optimum from the same
    start (up to the local minima of the thermal / synchrotron degeneracy). Returns a
    :class:`SushiResult` with zero ``thresholds``; its ``pixel_status`` and
    ``pixel_gof_pvalue`` say which pixels are optimal and which the models describe.
    """
    # n_scales as SUSHI's default: one compiled program serves both.
    return _run(cube, models, background=background, loss=loss, n_scales=2, k_mad=0.0, max_iter=max_iter,
                tol=tol, init=init, mask=mask, param_maps=param_maps, names=names,
                solver=as_palm(solver, outer=outer, amp_step=amp_step, amp_steps=amp_steps), regularise=False,
                init_iter=max_iter, devices=devices, chunk_size=chunk_size, gtol=gtol)
