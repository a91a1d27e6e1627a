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

   (Levenberg-Marquardt with Marquardt's scaling; :math:`\nu` per pixel, 1e-3 at first,
   x10 after a step that does not lower the pixel's data term, which is then refused, and
   after one that does, by the gain ratio :math:`\rho` (actual over predicted decrease):
   x0.3 if :math:`\rho > 3/4`, x2 if :math:`\rho < 1/4`, else kept). The constraints are in
   the subproblem (``_bounded_step``, an active-set method of a few passes): an amplitude
   whose step crosses 0 is held there (and its component's latent coordinates, which no
   longer act), a weight on a face of the training box that the step would leave gets
   the face as an equality; projecting the unconstrained step instead (in a non-diagonal
   metric) stalls short of the optimum in every pixel where a bound binds. The latent
   part is clipped to :math:`\|\delta_t\|_\infty \le 0.25` (one factor for the whole
   step, except for a component whose latent step is far larger than the others', e.g.
   one with almost no counts in the pixel: it is clipped alone), then amplitudes are
   projected on :math:`s \ge 0` and weights on the training box. The curvature of the model, per pixel, is what makes tens of sweeps enough where a fixed
   gradient step needs thousands (pixels differ in counts by orders of magnitude), and
   the *joint* step is what copes with the near-degeneracy of thermal and synchrotron
   continua (alternating between them zig-zags).
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
   whose data term would increase. More than ``AMP_FAR`` standard errors from its
   optimum the damped step moves an amplitude by about one standard error per sweep (a
   hot pixel with 1e9 counts would need millions); there the EM update is tried too and
   the better kept.

Stop reasons (``status``, :class:`frugal.solvers.Status`)
--------------------------------------------------------
``CONVERGED`` means that a first-order optimality test passed at the result: the residual

.. math:: r = \max_{p, i} \sqrt{L_{p,i}}\ \big|z_{p,i} - z^+_{p,i}\big| \le
          \mathrm{gtol}\ (0.1),

with ``z+`` the forward-backward (prox-gradient) point in the diagonal metric ``L`` of the
undamped Fisher information (``_fb_start``): :math:`s^+ = \max(s - g_s / L_s, 0)` for the
amplitudes (the scaled projected gradient) and, per component,
:math:`t^+ = P(\mathrm{prox}_{w/L_c}(t - g_t / L_c))` for the latent maps (the starlet prox
of step 2 for SUSHI, the identity for :func:`fit_pixels`; ``P`` the projection on the
training box; one ``L_c`` per component and pixel, the largest of its coordinates', so the
Euclidean projection is the metric one and a fixed point is a KKT point). For a Poisson
likelihood ``r`` is in standard errors: no pixel's unknown is more than ``gtol`` standard
errors (along its axis) from the optimum. Coordinates without curvature count as optimal.

Each sweep begins with that test at its starting point (its gradient and curvature are
the data step's: the test costs no decoding). The loop ends with a test-only sweep (not
counted in ``n_iter``), at the iteration limit (``MAX_ITER`` unless the test passes), when
``F`` stopped decreasing (``STALL_SWEEPS`` sweeps without a relative decrease above
``STALL_RTOL``: ``STALLED`` unless it passes), or once the relative decrease of ``F``
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

Variants (``outer=``, ``amp_step=``; one compiled program per combination)
--------------------------------------------------------------------------
``outer="joint"`` is the loop above. ``outer="gauss-seidel"`` is the order
of the published PALM: the data step moves only the latent coordinates, with the amplitudes
held fixed (the Levenberg-Marquardt step in the latent block of ``M``, the amplitude /
latent coupling blocks zeroed), then the prox and the safeguard, then the ``amp_steps``
amplitude sweeps (at least one: they alone move the amplitudes). ``outer="ipalm"`` is
inertial PALM (Pock & Sabach, SIAM J. Imaging Sci. 9 (2016) 1756): each sweep's joint
data step starts from :math:`y = P(x_k + \beta (x_k - x_{k-1}))` on ``(s, t)`` (``P`` the
projection on the feasible set, :math:`\beta` = ``IPALM_BETA``); a pixel whose data term
would increase at ``y`` keeps :math:`x_k`, and ``y`` is dropped altogether if it
increases ``F``, so the trace stays non-increasing (one more decoding per sweep).
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

import itertools
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from frugal._precision import full_precision
from frugal._validation import check_array, check_choice, check_float, check_int
from frugal.iae import model as M
from frugal.ops.gof import pvalue_from_moments, tabulated_deviance_moments
from frugal.ops.losses import TINY
from frugal.ops.proxes import project_box_section
from frugal.ops.starlet import starlet_inverse, starlet_l1_prox, starlet_transform
from frugal.solvers.batching import first_of_batch, resolve_devices, run_batched
from frugal.solvers.block import block_solve, repeat
from frugal.solvers.gradient import projected_newton_diag
from frugal.solvers.newton import sum_to_one_basis
from frugal.solvers.status import Status, decide
from frugal.xray.params import ParameterMap

__all__ = ["SushiResult", "fit_pixels", "sushi"]

#: Initial Levenberg-Marquardt damping, relative to the curvature (Marquardt scaling).
DAMPING = 1e-3
#: Per-pixel damping factors after a successful / refused step, and its range.
NU_DOWN, NU_UP, NU_MIN, NU_MAX = 0.3, 10.0, 1e-6, 1e8
#: Damping factor after an accepted step that the model predicted badly (gain ratio < 1/4).
NU_POOR = 2.0
#: Trust region of the latent step in free coordinates (max norm): the anchors are ~1 apart.
MAX_STEP = 0.25
#: Relative increase of a pixel's data term still taken for rounding (float32 sums of ~E
#: terms): at the optimum every step is ~0, and rounding alone must not inflate the damping.
ACCEPT_RTOL = 1e-6
#: Floor of the model (counts) where a derivative divides by it: keeps y / mu^2 finite.
MU_FLOOR = 1e-10
#: Smallest amplitude curvature: a pixel whose counts vanish where a component lies has
#: H = 0, and its Newton step must still take the amplitude to its optimum, 0.
HESS_FLOOR = 1e-20
#: Halvings of the regularised move before it is dropped (the monotone safeguard).
MAX_BACKTRACK = 6
#: Cold-start grid: step 1/resolution on the anchors' simplex, by number of anchors.
GRID_RESOLUTION = {2: 8, 3: 5, 4: 4, 5: 3}
#: Active pixels are padded to a multiple of this: cubes of one size share one program.
PIXEL_BUCKET = 256
#: Outer loops (``outer=``; module doc, "Variants").
OUTER_LOOPS = ("joint", "gauss-seidel", "ipalm")
#: Amplitude sweeps (``amp_step=``; module doc, "Variants").
AMPLITUDE_STEPS = ("newton", "multiplicative")
#: Inertia of ``outer="ipalm"``: each sweep starts from ``x_k + beta (x_k - x_{k-1})``
#: (inertial PALM, Pock & Sabach, SIAM J. Imaging Sci. 9 (2016) 1756; a constant in [0, 1)).
IPALM_BETA = 0.3
#: Start of a multiplicative amplitude update from a zero amplitude, relative to the pixel's
#: counts (the multiplicative update cannot leave 0; the safeguard refuses the restart where
#: 0 is the better value).
MULT_RESTART = 1e-3
#: Default ``gtol``: the optimality residual, in standard errors, below which a result is
#: ``Status.CONVERGED`` (module doc, "Stop reasons").
GTOL = 0.1
#: The loop has stalled after ``STALL_SWEEPS`` sweeps in a row whose relative decrease of
#: ``F`` is at most ``STALL_RTOL`` (float32 resolution; one sweep is not enough: a sweep
#: whose steps were all refused raises the damping and the next one may succeed).
STALL_RTOL = 1e-7
STALL_SWEEPS = 4
#: Once the relative decrease is below ``tol``, the loop goes on while the optimality residual
#: still improves (by this factor within ``RESIDUAL_PATIENCE`` sweeps) and has not passed.
RESIDUAL_PROGRESS = 0.9
RESIDUAL_PATIENCE = 5
#: An amplitude more than this many standard errors from its Newton optimum also tries the
#: EM update (the Newton decrement damps the step to about one standard error per sweep).
AMP_FAR = 3.0
#: A latent block whose trust-region factor is this many times smaller than the others' is
#: clipped alone (``_trust_region``).
BLOCK_CLIP = 20.0
#: Regularisation of the multipliers in the active-set system (scaled units).
KKT_EPS = 1e-6
#: Passes of the active-set step (each adds the violated bounds, releases the wrong ones).
ACTIVE_SET_PASSES = 3


class SushiResult(NamedTuple):
    """Result of :func:`sushi` and :func:`fit_pixels` (a leading batch axis on every array
    when a batch of cubes was given).

    amplitude: ``(C, H, W)`` expected counts of each component per pixel (all channels).
    latent: one ``(d_c, H, W)`` map of barycentric weights per component.
    components: ``(C, E, H, W)`` fitted cube of each component.
    model: ``(E, H, W)`` fitted expected counts (background included).
    params: dict name -> ``(H, W)`` physical-parameter maps (from ``param_maps``; empty
      without them; a name shared by two components is prefixed ``"<component>:"``).
    objective: ``F`` at the start and after each sweep (non-increasing; NaN-padded for a
      batch).
    n_iter: sweeps of the loop; converged: ``status == Status.CONVERGED`` (the first-order
      optimality test passed; module doc, "Stop reasons").
    thresholds: per component, ``(n_scales, d_c - 1)`` l1 weights ``w`` (zeros for
      :func:`fit_pixels`).
    n_iter_init: sweeps of the per-pixel fit SUSHI started from (0 with ``init``).
    names: the component names.
    status: why the loop stopped (:class:`frugal.solvers.Status`, ``int32``): ``CONVERGED``
      when ``residual <= gtol``, else ``MAX_ITER`` (the iteration limit), ``STALLED`` (``F``
      stopped decreasing short of the test) or ``NON_FINITE``.
    residual: the optimality residual of the result, in standard errors: the largest over
      the pixels of ``pixel_residual``.
    deviance: the Poisson deviance of the fitted model over the pixels inside the mask
      (whatever ``loss``: the data are counts).
    gof_pvalue: its goodness-of-fit p-value (:func:`frugal.ops.gof.gof_pvalue`, valid at low
      counts), with ``C + sum(d_c - 1)`` fitted parameters per pixel with counts for
      :func:`fit_pixels`. For :func:`sushi` the number of effective parameters is an
      approximation: ``C`` amplitudes per pixel (not regularised) plus, of the latent maps,
      the unpenalised coarse starlet plane only, ``sum(d_c - 1) / 4^n_scales`` per pixel (the
      surviving detail coefficients are not counted, so the p-value errs on the large side;
      counting all ``C + sum(d_c - 1)`` would make it tiny on cubes drawn from the models
      themselves, the regularised fit's deviance being that of about ``C`` parameters per
      pixel). Below 1e-3 the models do not describe the cube (a missing component, a wrong
      background or calibration, a hot pixel).
    pixel_status: ``(H, W)`` the status of each pixel: ``CONVERGED`` where its own residual
      passes the test, else the cube's reason (``MAX_ITER``, ``STALLED``), ``NON_FINITE``
      where its values are not finite. Pixels without counts or outside the mask have nothing
      to fit: ``CONVERGED``, residual 0.
    pixel_residual: ``(H, W)`` each pixel's optimality residual (standard errors).
    pixel_deviance: ``(H, W)`` each pixel's Poisson deviance (NaN outside the mask; inf
      where it has counts in a channel the model gives none).
    pixel_gof_pvalue: ``(H, W)`` its p-value, ``C + sum(d_c - 1)`` parameters per pixel:
      the per-pixel test of :func:`fit_pixels` (for :func:`sushi` the parameters per pixel
      of ``gof_pvalue``); NaN outside the mask.
    """

    amplitude: np.ndarray
    latent: tuple
    components: np.ndarray
    model: np.ndarray
    params: dict
    objective: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    thresholds: tuple
    n_iter_init: np.ndarray
    names: tuple
    status: np.ndarray | None = None
    residual: np.ndarray | None = None
    deviance: np.ndarray | None = None
    gof_pvalue: np.ndarray | None = None
    pixel_status: np.ndarray | None = None
    pixel_residual: np.ndarray | None = None
    pixel_deviance: np.ndarray | None = None
    pixel_gof_pvalue: np.ndarray | None = None


class _Spec(NamedTuple):
    """Static description of a run (a jit static argument; the iteration limit and whether
    the prox is on are traced, so one compiled program serves every stage)."""

    configs: tuple
    shape: tuple  # (H, W)
    loss: str
    n_scales: int
    trace_len: int  # static length of the objective trace, >= any iteration limit
    tol: float
    amp_steps: int
    outer: str = "joint"
    amp_step: str = "newton"


class _Control(NamedTuple):
    """Traced scalars shared by all cubes of a batch (not vmapped: ``lax.cond`` stays a branch)."""

    use_prox: jax.Array  # bool: regularised sweeps, or per-pixel ones
    limit: jax.Array  # int: maximum number of sweeps
    gtol: jax.Array  # float: the optimality residual (standard errors) of CONVERGED


class _Models(NamedTuple):
    states: tuple  # IAEState per component
    reference: tuple  # lambda_ref (d_c,)
    basis: tuple  # V (d_c, d_c - 1)
    lower: tuple  # (d_c,) box of the weights
    upper: tuple


class _Data(NamedTuple):
    """Data of the ``A`` active pixels (inside the mask, with counts; padded with weight 0)."""

    y: jax.Array  # (A, E) counts
    bkg: jax.Array  # (A, E) background
    inv_var: jax.Array  # (A, E) 1 / variance (Gaussian loss)
    weight: jax.Array  # (A,) 1 for an active pixel, 0 for padding
    index: jax.Array  # (A,) flat pixel index of each entry


class _State(NamedTuple):
    t: tuple  # per component (d_c - 1, P) free coordinates, every pixel (maps)
    s: jax.Array  # (C, A) amplitudes of the active pixels
    spectra: jax.Array  # (C, A, E) unit-sum spectra at t (cached: the objective needs no decoding)
    nu: jax.Array  # (A,) Levenberg-Marquardt damping
    it: jax.Array  # sweeps done
    prev: tuple = ()  # outer="ipalm": (t, s) of the previous sweep; () otherwise
    # The stopping test (``_solve``): per active pixel, the optimality residual of the last
    # sweep's start; F after the last sweep; whether that sweep decreased F by less than
    # tol; how many sweeps in a row decreased it by nothing; whether the loop is done (the
    # last sweep only tested).
    res: jax.Array | float = np.inf
    f: jax.Array | float = np.inf
    terms: tuple = ()  # (data term per active pixel (A,), regulariser): F's changes, exactly
    small: jax.Array | bool = False
    flat: jax.Array | int = 0
    done: jax.Array | bool = False
    best: jax.Array | float = np.inf  # the smallest residual (max over pixels) met so far
    since: jax.Array | int = 0  # sweeps since it last improved by RESIDUAL_PROGRESS


# ---------------------------------------------------------------------------------------
# Pure core


def _spectra_at(config, models: _Models, c: int, t_rows):
    """Unit-sum spectra ``(A, E)`` of component ``c`` at free coordinates ``t_rows`` ``(A, k)``."""
    lam = models.reference[c] + t_rows @ models.basis[c].T
    x = jnp.maximum(M.decode(config, models.states[c], lam)[..., 0, :], 0.0)
    return x / jnp.maximum(jnp.sum(x, axis=-1, keepdims=True), TINY)


def _all_spectra(spec: _Spec, models: _Models, data: _Data, ts):
    return jnp.stack([_spectra_at(cfg, models, c, t[:, data.index].T) for c, (cfg, t) in
                      enumerate(zip(spec.configs, ts))])


def _project_rows(models: _Models, c: int, t_rows):
    """Free coordinates of the weights projected onto the training box (within the plane)."""
    ref, basis = models.reference[c], models.basis[c]
    lam = project_box_section(ref + t_rows @ basis.T, models.lower[c], models.upper[c], 1.0)
    return (lam - ref) @ basis


def _project_maps(models: _Models, ts):
    return tuple(_project_rows(models, c, t.T).T for c, t in enumerate(ts))


def _mixture(data: _Data, s, spectra):
    return data.bkg + jnp.einsum("ca,cae->ae", s, spectra)


def _pixel_loss(loss: str, data: _Data, mu):
    """Data term per active pixel ``(A,)``: half the Poisson deviance, summed as
    ``y log(y / mu) - y + mu`` (terms that vanish at a perfect fit, unlike
    ``mu - y log mu + const``, whose cancellation costs float32 its last four digits),
    or half the chi-square; 0 for padding."""
    if loss == "poisson":
        pos = data.y > 0
        ratio = jnp.where(pos, data.y / jnp.maximum(mu, TINY), 1.0)
        val = jnp.sum(jnp.where(pos, data.y * jnp.log(ratio), 0.0) - data.y + mu, axis=-1)
    else:
        val = 0.5 * jnp.sum(data.inv_var * jnp.square(data.y - mu), axis=-1)
    return data.weight * val


def _mu_derivatives(loss: str, data: _Data, mu):
    """``d loss / d mu``, the Fisher weight (Gauss-Newton) and the observed curvature, ``(A, E)``."""
    w = data.weight[:, None]
    if loss == "poisson":
        m = jnp.maximum(mu, MU_FLOOR)
        ratio = data.y / m
        return w * (1.0 - ratio), w / m, w * ratio / m
    c = w * data.inv_var
    return c * (mu - data.y), c, c


def _regulariser(spec: _Spec, ts, thresholds):
    h, w = spec.shape
    total = jnp.zeros((), ts[0].dtype)
    for t, wt in zip(ts, thresholds):
        detail = starlet_transform(t.reshape(t.shape[0], h, w), spec.n_scales)[:-1]  # (J, k, H, W)
        total = total + jnp.sum(wt * jnp.sum(jnp.abs(detail), axis=(-2, -1)))
    return total


def _objective(spec: _Spec, data: _Data, state: _State, thresholds):
    """``F``: data term + weighted l1 norm of the starlet details of the free coordinates."""
    val = jnp.sum(_pixel_loss(spec.loss, data, _mixture(data, state.s, state.spectra)))
    return val + _regulariser(spec, state.t, thresholds)


def _spectra_jacobian(config, models: _Models, c: int, t_rows):
    r"""``d S_c / d t`` ``(A, E, k)``: forward mode through the decoder, one JVP per free
    coordinate (pixels are independent, so a tangent equal to ``e_a`` in every pixel gives
    each pixel's column ``a``; ``k`` is 1-3), then the normalisation by hand,
    :math:`dS = (dx - S \sum dx) / \sum x`. Differentiating ``x / sum(x)`` with ``jvp``
    gives the same numbers but XLA on CPU fuses the sum into its broadcast consumer and
    recomputes it for every channel: three times slower."""
    state, basis = models.states[c], models.basis[c]
    lam = models.reference[c] + t_rows @ basis.T

    def decode(q):
        return M.decode(config, state, q)[..., 0, :]

    tangents = [jax.jvp(decode, (lam,), (jnp.broadcast_to(basis[:, a], lam.shape),))
                for a in range(basis.shape[1])]
    x = tangents[0][0]
    pos = x > 0
    x = jnp.where(pos, x, 0.0)
    total = jax.lax.optimization_barrier(jnp.maximum(jnp.sum(x, axis=-1, keepdims=True), TINY))
    spectra = x / total
    cols = []
    for _, dx in tangents:
        dx = jnp.where(pos, dx, 0.0)
        d_total = jax.lax.optimization_barrier(jnp.sum(dx, axis=-1, keepdims=True))
        cols.append((dx - spectra * d_total) / total)
    return jnp.stack(cols, axis=-1)


def _jacobian(spec: _Spec, models: _Models, data: _Data, state: _State):
    """``d mu / d z`` ``(A, E, n)`` in ``z = (s_1..s_C, t_1..t_C)`` (columns ``S_c`` and
    ``s_c dS_c / dt_c``)."""
    cols = [jnp.transpose(state.spectra, (1, 2, 0))]  # d mu / d s_c = S_c
    for c, config in enumerate(spec.configs):
        d_spec = _spectra_jacobian(config, models, c, state.t[c][:, data.index].T)
        cols.append(state.s[c][:, None, None] * d_spec)
    return jnp.concatenate(cols, axis=-1)


class _Metric(NamedTuple):
    """What :func:`_joint_metric` computes at a state (per active pixel)."""

    mu: jax.Array  # (A, E) model
    g: jax.Array  # (A, n) gradient of the data term in z = (s, t)
    m_inv: jax.Array  # (A, n, n) inverse of the damped curvature M
    m_diag: jax.Array  # (A, n) diagonal of M
    fisher_diag: jax.Array  # (A, n) diagonal of F (undamped): the metric of the optimality test
    m_scaled: jax.Array  # (A, n, n) M in the Jacobi-scaled coordinates
    scale: jax.Array  # (A, n) the Jacobi scaling


def _joint_metric(spec: _Spec, models: _Models, data: _Data, state: _State, latent_only: bool = False):
    """Per active pixel, in ``z = (s_1..s_C, t_1..t_C)``: model ``mu`` ``(A, E)``, gradient
    ``g`` ``(A, n)``, the inverse ``(A, n, n)`` and the diagonal ``(A, n)`` of the damped
    Gauss-Newton curvature ``M = F + nu diag(F)``, ``F = J^T diag(w) J`` (a :class:`_Metric`).
    ``latent_only``: the amplitude / latent coupling blocks of ``M`` are zeroed (the metric of
    a step on ``t`` with ``s`` fixed, ``outer="gauss-seidel"``); the diagonal is the same."""
    jac = _jacobian(spec, models, data, state)  # (A, E, n)
    mu = _mixture(data, state.s, state.spectra)
    r, fisher, _ = _mu_derivatives(spec.loss, data, mu)
    g = jnp.einsum("ae,aen->an", r, jac)
    f = jnp.einsum("aen,aem->anm", jac * fisher[..., None], jac)
    # Jacobi scaling first: amplitudes (~1e3 counts) and weights (~1) have curvatures ~1e6
    # apart, and float32 cannot invert such a matrix unscaled. A column without signal
    # (a component absent from the pixel) gets a tiny scale: it takes no step (g = 0 there)
    # and its tiny curvature lets the regularisation fill it in.
    diag = jnp.diagonal(f, axis1=1, axis2=2)
    scale = jnp.sqrt(jnp.maximum(diag, 1e-12 * jnp.max(diag, axis=-1, keepdims=True)) + TINY)
    n = f.shape[-1]
    m_scaled = f / (scale[:, :, None] * scale[:, None, :]) + state.nu[:, None, None] * jnp.eye(n, dtype=f.dtype)
    if latent_only:
        n_comp = len(spec.configs)
        same_block = (np.arange(n)[:, None] < n_comp) == (np.arange(n)[None, :] < n_comp)
        m_scaled = jnp.where(same_block, m_scaled, 0.0)
    m_inv = jnp.linalg.inv(m_scaled) / (scale[:, :, None] * scale[:, None, :])
    return _Metric(mu, g, m_inv, jnp.diagonal(m_scaled, axis1=1, axis2=2) * scale**2, diag, m_scaled, scale)


def _latent_slices(spec: _Spec):
    n_comp = len(spec.configs)
    out, i = [], n_comp
    for config in spec.configs:
        out.append(slice(i, i + config.n_anchors - 1))
        i += config.n_anchors - 1
    return out


def _scatter_rows(t, data: _Data, delta_rows):
    """Add per-entry changes ``(A, k)`` to the maps ``(k, P)`` (padding adds 0)."""
    return t.at[:, data.index].add((delta_rows * data.weight[:, None]).T)


def _data_step(spec: _Spec, models: _Models, data: _Data, state: _State):
    """Joint per-pixel Levenberg-Marquardt step on ``(s, t)`` (module doc, step 1); with
    ``outer="gauss-seidel"`` on ``t`` only (``s`` fixed, the latent block of the metric).

    A pixel keeps its step if its data term does not increase (and its damping shrinks),
    else keeps its values (and its damping grows): one decoding per sweep whatever the
    number of pixels that fail. Returns the new state and the :class:`_Metric` at ``state``
    (its damped diagonal is the metric of the prox, its gradient and undamped diagonal those
    of the optimality test).

    The bounds (``s >= 0``, the training box) are in the subproblem (:func:`_bounded_step`),
    the trust region is :func:`_trust_region`, and the damping follows the gain ratio
    (module doc, step 1).
    """
    n_comp = len(spec.configs)
    latent_only = spec.outer == "gauss-seidel"
    metric = _joint_metric(spec, models, data, state, latent_only)
    mu, g, m_inv = metric.mu, metric.g, metric.m_inv
    step = -jnp.einsum("anm,am->an", m_inv, g)
    rows = [t[:, data.index].T for t in state.t]
    step = _bounded_step(models, metric, state.s, rows, step, tuple(c.n_anchors - 1 for c in spec.configs),
                         latent_only)
    step = _trust_region(spec, step)
    s = state.s if latent_only else jnp.maximum(state.s + step[:, :n_comp].T, 0.0)
    new_rows = [_project_rows(models, c, r + step[:, sl]) for c, (r, sl) in enumerate(zip(rows, _latent_slices(spec)))]
    spectra = jnp.stack([_spectra_at(cfg, models, c, r) for c, (cfg, r) in enumerate(zip(spec.configs, new_rows))])
    ell0 = _pixel_loss(spec.loss, data, mu)
    ell1 = _pixel_loss(spec.loss, data, _mixture(data, s, spectra))
    ok = ell1 <= ell0 + ACCEPT_RTOL * (1.0 + ell0)
    # Gain ratio: the decrease over the one the Gauss-Newton model predicts for the step
    # taken. A step the model predicts badly (a zig-zag across a curved valley, a flat
    # direction) is accepted but does not shrink the damping (rho < 1/4: it grows).
    taken = jnp.concatenate([(s - state.s).T] + [rn - r for r, rn in zip(rows, new_rows)], axis=-1)
    zeta = taken * metric.scale
    fisher_scaled = metric.m_scaled - state.nu[:, None, None] * jnp.eye(zeta.shape[-1], dtype=zeta.dtype)
    predicted = -(jnp.sum(metric.g / metric.scale * zeta, -1)
                  + 0.5 * jnp.einsum("an,anm,am->a", zeta, fisher_scaled, zeta))
    meaningful = predicted > ACCEPT_RTOL * (1.0 + ell0)
    rho = jnp.where(meaningful, (ell0 - ell1) / jnp.where(meaningful, predicted, 1.0), 1.0)
    factor = jnp.where(~ok, NU_UP, jnp.where(rho > 0.75, NU_DOWN, jnp.where(rho < 0.25, NU_POOR, 1.0)))
    new = state._replace(
        t=tuple(_scatter_rows(t, data, jnp.where(ok[:, None], rn - r, 0.0))
                for t, r, rn in zip(state.t, rows, new_rows)),
        s=jnp.where(ok, s, state.s),
        spectra=jnp.where(ok[None, :, None], spectra, state.spectra),
        nu=jnp.clip(state.nu * factor, NU_MIN, NU_MAX),
    )
    return new, metric


def _lu_solve(a, b):
    """``a^{-1} b`` for batches of small systems ``(..., N, N)``, ``(..., N)`` by LU with
    partial pivoting (``jnp.linalg.solve`` without its differentiation wrappers: half the
    compilation time)."""
    lu, _, perm = jax.lax.linalg.lu(a)
    x = jnp.take_along_axis(b, perm, axis=-1)[..., None]
    x = jax.lax.linalg.triangular_solve(lu, x, left_side=True, lower=True, unit_diagonal=True)
    return jax.lax.linalg.triangular_solve(lu, x, left_side=True, lower=False)[..., 0]


def _trust_region(spec: _Spec, step):
    """The step scaled to ``||delta_t||_inf <= MAX_STEP`` (the decoder is only locally linear).

    The whole step is scaled by the largest latent block's factor, except in the blocks that
    would shrink by more than ``BLOCK_CLIP`` times the others: a component with almost no
    counts in the pixel has a huge, meaningless latent step (its curvature vanishes with its
    amplitude) that would otherwise freeze the whole pixel; such a block is clipped alone."""
    n_comp = len(spec.configs)
    sizes = jnp.stack([jnp.max(jnp.abs(step[:, sl]), axis=-1) for sl in _latent_slices(spec)], axis=-1)  # (A, C)
    factors = jnp.minimum(1.0, MAX_STEP / jnp.maximum(sizes, TINY))
    size = jnp.max(jnp.abs(step[:, n_comp:]), axis=-1, keepdims=True)
    scaled = step * jnp.minimum(1.0, MAX_STEP / jnp.maximum(size, TINY))  # the global scaling
    # the factor of the others (1 for a lone component)
    rest = jnp.stack([jnp.min(jnp.where(np.arange(n_comp) == c, 1.0, factors), axis=-1) for c in range(n_comp)],
                     axis=-1)
    outlier = factors * BLOCK_CLIP < rest  # (A, C)
    if n_comp < 2:
        return scaled
    common = jnp.min(jnp.where(outlier, 1.0, factors), axis=-1, keepdims=True)  # (A, 1)
    per_coord = [jnp.broadcast_to(common, (step.shape[0], n_comp))]
    for c, sl in enumerate(_latent_slices(spec)):
        f_c = jnp.where(outlier[:, c], factors[:, c], common[:, 0])
        per_coord.append(jnp.broadcast_to(f_c[:, None], (step.shape[0], sl.stop - sl.start)))
    split = step * jnp.concatenate(per_coord, axis=-1)
    return jnp.where(jnp.any(outlier, axis=-1, keepdims=True), split, scaled)


def _bounded_step(models: _Models, metric: _Metric, s, rows, step, n_latent: tuple, latent_only: bool):
    r"""The Levenberg-Marquardt step with the constraints in the subproblem (an active-set
    method, a few passes): the bounds ``s >= 0`` and the training box of the weights,
    :math:`l \le \lambda_{\rm ref} + V t \le u`.

    A bound that the step violates becomes an equality (a Lagrange multiplier in the
    system): an amplitude whose step crosses 0 stops at 0 (and its component's latent
    coordinates do not move: their columns vanish with the amplitude, and their huge steps
    would shrink the whole step through the trust region), a weight leaving the box stops
    on its face. A bound whose multiplier has the wrong sign is released. Projecting the
    unconstrained step instead stalls the pixels whose optimum lies on a bound, short of
    it (the projection of a step in a non-diagonal metric is no step of that metric).
    Pixels where no bound is hit keep the unconstrained step (bit for bit). ``rows``: the
    free coordinates ``(A, k_c)`` per component; ``latent_only``: the amplitudes do not move
    (``outer="gauss-seidel"``). Works in the Jacobi-scaled coordinates of ``metric``."""
    m_scaled, scale = metric.m_scaled, metric.scale
    dtype = m_scaled.dtype
    n_comp = len(n_latent)
    n = m_scaled.shape[-1]
    n_pix = step.shape[0]
    g_scaled = metric.g / scale
    # Slots, one row r (unit norm, scaled coordinates) each: the amplitudes (r zeta >= b),
    # the weights of each component (b_lo <= r zeta <= b_hi), and the latent coordinates
    # held with an amplitude at 0 (r zeta = 0).
    eye_n = jnp.eye(n, dtype=dtype)
    slot_rows = [jnp.broadcast_to(eye_n[:n_comp], (n_pix, n_comp, n))]
    b_lo = [-s.T * scale[:, :n_comp]]
    b_hi = [jnp.full((n_pix, n_comp), jnp.inf, dtype)]
    owner = [np.arange(n_comp)]
    is_hold = [np.zeros(n_comp, bool)]
    offset = n_comp
    for c, k in enumerate(n_latent):
        basis = models.basis[c]  # (d, k)
        d = basis.shape[0]
        a = jnp.zeros((d, n), dtype).at[:, offset:offset + k].set(basis)[None] / scale[:, None, :]
        norm = jnp.sqrt(jnp.sum(jnp.square(a), axis=-1))
        norm = jnp.where(norm > 0, norm, 1.0)
        lam = models.reference[c] + rows[c] @ basis.T  # (A, d)
        slot_rows.append(a / norm[..., None])
        b_lo.append((models.lower[c] - lam) / norm)
        b_hi.append((models.upper[c] - lam) / norm)
        owner.append(np.full(d, c))
        is_hold.append(np.zeros(d, bool))
        slot_rows.append(jnp.broadcast_to(eye_n[offset:offset + k], (n_pix, k, n)))
        b_lo.append(jnp.zeros((n_pix, k), dtype))
        b_hi.append(jnp.zeros((n_pix, k), dtype))
        owner.append(np.full(k, c))
        is_hold.append(np.ones(k, bool))
        offset += k
    slot_rows = jnp.concatenate(slot_rows, axis=1)  # (A, m, n)
    b_lo, b_hi = jnp.concatenate(b_lo, axis=-1), jnp.concatenate(b_hi, axis=-1)  # (A, m)
    owner, is_hold = np.concatenate(owner), np.concatenate(is_hold)
    is_amp = np.arange(len(owner)) < n_comp
    of_comp = owner[None, :] == np.arange(n_comp)[:, None]  # (C, m)
    m = len(owner)
    eye_m = jnp.eye(m, dtype=dtype)
    base = jnp.broadcast_to(is_amp & latent_only, (n_pix, m))  # always on (s fixed)

    def sets(active, lower, zeta, released):
        # add the bounds the step violates; hold the latent slots of the amplitudes at 0
        move = jnp.einsum("amn,an->am", slot_rows, zeta)
        below, above = move < b_lo, move > b_hi
        new = (below | above) & ~released & ~active & ~is_hold
        lower = jnp.where(new, below, lower)
        active = active | new | base
        amp_on = jnp.any((active & ~base)[:, None, :] & is_amp & of_comp[None], axis=-1)  # (A, C): at 0
        held = jnp.any(amp_on[:, :, None] & of_comp[None], axis=1)  # (A, m): slots of those components
        active = jnp.where(is_hold, held, active & ~(held & ~is_amp))
        return active, lower

    def one_pass(_, carry):
        # solve with the current sets, release the bounds whose multipliers have the wrong
        # sign (the objective decreases into the feasible side), then add those the new
        # step violates. The last pass's sets are not used: its solve is the answer.
        _, active, lower, released = carry
        coupling = jnp.where(active[:, :, None], slot_rows, 0.0)
        # -eps on the active multipliers: two faces may be one (the two weights of a
        # two-anchor model), a singular system without it
        corner = jnp.where(active[:, :, None], -KKT_EPS * eye_m, eye_m)
        system = jnp.concatenate([jnp.concatenate([m_scaled, jnp.swapaxes(coupling, 1, 2)], axis=-1),
                                  jnp.concatenate([coupling, corner], axis=-1)], axis=1)
        bound = jnp.where(base, 0.0, jnp.where(lower, b_lo, b_hi))  # base: the amplitudes stay
        rhs = jnp.concatenate([-g_scaled, jnp.where(active, bound, 0.0)], axis=-1)
        sol = _lu_solve(system, rhs)
        zeta, mult = sol[:, :n], sol[:, n:]
        changed = jnp.any(active & ~base, axis=-1, keepdims=True)
        out = jnp.where(changed, zeta / scale, step)
        wrong = active & ~base & ~is_hold & jnp.where(lower, mult > 0, mult < 0)
        released = released | wrong
        active, lower = sets(active & ~wrong, lower, zeta, released)
        return out, active, lower, released

    none = jnp.zeros((n_pix, m), bool)
    active, lower = sets(none, none, step * scale, none)
    # one compiled copy of the solve (a loop, not unrolled)
    return jax.lax.fori_loop(0, ACTIVE_SET_PASSES + 1, one_pass, (step, active, lower, none))[0]


class _FB(NamedTuple):
    """The forward-backward point of a state before its prox (``_fb_start``)."""

    s: jax.Array  # (C, A) s+ (projected)
    x: tuple  # per component (k, P): the maps after the gradient step t - g_t / L_c
    thr: tuple  # per component (J, k, H, W): the prox's thresholds w / L_c per pixel
    metric: jax.Array  # (A, n) L


def _fb_start(spec: _Spec, data: _Data, state: _State, g, fisher_diag, thresholds) -> _FB:
    r"""The forward-backward (prox-gradient) point of ``state`` in a diagonal metric ``L``,
    :math:`s^+ = \max(s - g_s / L_s, 0)` per amplitude and, per component,
    :math:`t^+ = P\big(\mathrm{prox}_{w / L_c}(t - g_t / L_c)\big)` (the starlet prox of
    the prox step with thresholds ``w / L_c`` per pixel; ``P`` the projection on the
    training box), ``L`` the undamped Fisher diagonal with one value per component's latent
    coordinates (their largest: the Euclidean projection is then the one of the metric, and
    a fixed point a KKT point). Up to the prox, applied by the caller (:func:`_prox_maps`,
    together with the prox step's); entries without curvature do not move."""
    h, w = spec.shape
    n_comp = len(spec.configs)
    metric = [fisher_diag[:, :n_comp]]
    for sl in _latent_slices(spec):
        d_c = fisher_diag[:, sl]
        metric.append(jnp.broadcast_to(jnp.max(d_c, axis=-1, keepdims=True), d_c.shape))
    metric = jnp.concatenate(metric, axis=-1)
    ok = metric > 0
    safe = jnp.where(ok, metric, 1.0)
    move = jnp.where(ok, -g / safe, 0.0)
    s_fb = jnp.maximum(state.s + move[:, :n_comp].T, 0.0) * data.weight
    xs, thrs = [], []
    for c, sl in enumerate(_latent_slices(spec)):
        t = state.t[c]
        k = t.shape[0]
        xs.append(_scatter_rows(t, data, move[:, sl]))
        # pixels without data (or curvature): huge thresholds, filled in by the prox
        var_rows = jnp.where((data.weight[:, None] > 0) & ok[:, sl], 1.0 / safe[:, sl], 1e30)
        variance = jnp.full((k, h * w), 1e30, t.dtype).at[:, data.index].min(var_rows.T)
        thrs.append(thresholds[c][:, :, None, None] * variance.reshape(k, h, w)[None])
    return _FB(s_fb, tuple(xs), tuple(thrs), metric)


def _prox_maps(spec: _Spec, maps, thrs):
    """The starlet prox (transform, soft-threshold the details, reconstruct) of several
    ``(k, P)`` maps with their thresholds ``(J, k, H, W)``, in one call (one compiled copy)."""
    h, w = spec.shape
    sizes = [m.shape[0] for m in maps]
    stacked = jnp.concatenate(maps, axis=0).reshape(-1, h, w)
    out = starlet_inverse(starlet_l1_prox(starlet_transform(stacked, spec.n_scales), jnp.concatenate(thrs, axis=1)))
    out = out.reshape(-1, h * w)
    return tuple(out[a:b] for a, b in zip(np.cumsum([0] + sizes[:-1]), np.cumsum(sizes)))


def _residual_from(spec: _Spec, models: _Models, data: _Data, state: _State, fb: _FB, x_prox):
    r"""Optimality residual per active pixel ``(A,)`` (module doc, "Stop reasons"):
    :math:`\max_i \sqrt{L_i}\,|z_i - z^+_i|` with ``z+`` the forward-backward point
    (:func:`_fb_start`; ``x_prox`` its maps after the prox), in standard errors."""
    moved = [jnp.abs(state.s - fb.s).T]
    for c, (t, x) in enumerate(zip(state.t, x_prox)):
        moved.append(jnp.abs(t[:, data.index].T - _project_rows(models, c, x[:, data.index].T)))
    moved = jnp.concatenate(moved, axis=-1)  # (A, n)
    res = jnp.max(jnp.sqrt(jnp.maximum(fb.metric, 0.0)) * moved, axis=-1)
    return jnp.where(data.weight > 0, res, 0.0)


def _prox_step(spec: _Spec, models: _Models, data: _Data, state: _State, half: _State, metric: _Metric,
               thresholds, fb: _FB):
    """Starlet soft-thresholding of each component's maps after the data step, then the
    monotone safeguard (accept if ``F`` does not increase, else halve the move). Also
    returns the prox of the forward-backward point ``fb`` of the optimality test (one
    starlet call for both)."""
    h, w = spec.shape
    p = h * w
    m_diag = metric.m_diag
    thrs = []
    for c, sl in enumerate(_latent_slices(spec)):
        k = half.t[c].shape[0]
        # The prox moves each coordinate alone: its cost is the conditional curvature M_aa.
        # Pixels without data have none, hence huge thresholds: they are filled in.
        var_rows = jnp.where(data.weight[:, None] > 0, 1.0 / jnp.maximum(m_diag[:, sl], 1e-30), 1e30)
        variance = jnp.full((k, p), 1e30, m_diag.dtype).at[:, data.index].min(var_rows.T)
        thrs.append(thresholds[c][:, :, None, None] * jnp.minimum(variance, 1e30).reshape(k, h, w)[None])
    n_comp = len(spec.configs)
    both = _prox_maps(spec, list(half.t) + list(fb.x), thrs + list(fb.thr))
    t_prox = [_project_rows(models, c, t_c.T).T for c, t_c in enumerate(both[:n_comp])]
    fb_prox = both[n_comp:]
    f_old = _objective(spec, data, state, thresholds)

    def candidate(beta):
        # The feasible set is convex: every point between two feasible ones is feasible.
        ts = tuple(to + beta * (tp - to) for to, tp in zip(state.t, t_prox))
        new = half._replace(t=ts, s=state.s + beta * (half.s - state.s),
                            spectra=_all_spectra(spec, models, data, ts))
        return new, _objective(spec, data, new, thresholds)

    def cond(carry):
        i, _, f_new = carry
        return (i <= MAX_BACKTRACK) & ~(f_new <= f_old)

    def body(carry):
        i, _, _ = carry
        # beta = 1, 1/2, 1/4, ...; the first trial is in the body too (one copy of the
        # decoder in the program: faster compilation)
        return (i + 1,) + candidate(jnp.exp2(-i.astype(state.s.dtype)))

    inf = jnp.full((), jnp.inf, f_old.dtype)
    _, new, f_new = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), state, inf))
    accept = f_new <= f_old
    # A refused move keeps the damping update of the data step: its next step is shorter.
    return jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), new, state._replace(nu=half.nu)), fb_prox


def _newton_amplitude(spec: _Spec, data: _Data, spectra, s, mu, with_far: bool = False):
    """Trial amplitudes ``(A,)`` of one component: damped projected Newton step (and, with
    ``with_far``, where the amplitude is more than ``AMP_FAR`` standard errors from the
    Newton optimum, ``|g| / sqrt(H)``, and the EM trial)."""
    r, _, observed = _mu_derivatives(spec.loss, data, mu)
    # The barrier keeps XLA from fusing these sums into the broadcasts below (which
    # would recompute them for every channel).
    g, h = jax.lax.optimization_barrier((jnp.sum(spectra * r, -1), jnp.sum(spectra**2 * observed, -1)))
    ratio = jnp.abs(g) / jnp.sqrt(jnp.maximum(h, HESS_FLOOR))
    if spec.loss == "poisson":
        damp = 1.0 / (1.0 + ratio)
    else:  # a quadratic: the full Newton step is exact
        damp = 1.0
    trial = projected_newton_diag(g, h, s, lower=0.0, step=damp, hess_floor=HESS_FLOOR)
    if with_far:
        # the EM update from the same sums: sum_e S y / mu = sum_e S - g = 1 - g (unit sum)
        return trial, (ratio > AMP_FAR) & (trial > 0), s * jnp.maximum(1.0 - g, 0.0)
    return trial


def _multiplicative_amplitude(spec: _Spec, data: _Data, spectra, s, mu):
    r"""Trial amplitudes ``(A,)`` of one component: the multiplicative update
    :math:`s \leftarrow s\, \sum_e S\, y / \mu \,/\, \sum_e S` (Poisson EM / Richardson-Lucy,
    the other components and the background held as known counts) or, for the Gaussian
    loss, :math:`s \leftarrow s\, \sum_e S\, y / v \,/\, \sum_e S\, \mu / v` (the weighted
    least-squares multiplicative update: a gradient step of length
    :math:`s / \sum_e S \mu / v \le 1 / H`, so it cannot increase the quadratic). A zero
    amplitude restarts from ``MULT_RESTART`` times the pixel's counts (0 is a fixed point of
    the update)."""
    restart = MULT_RESTART * jnp.sum(data.y, -1)
    s0 = jnp.where(s > 0, s, restart)
    mu = mu + (s0 - s)[:, None] * spectra
    if spec.loss == "poisson":
        num = jnp.sum(spectra * data.y / jnp.maximum(mu, MU_FLOOR), -1)
        den = jnp.sum(spectra, -1)
    else:
        num = jnp.sum(spectra * data.inv_var * data.y, -1)
        den = jnp.sum(spectra * data.inv_var * mu, -1)
    num, den = jax.lax.optimization_barrier((num, den))
    ok = (den > 0) & (data.weight > 0)
    return jnp.where(ok, s0 * num / jnp.where(ok, den, 1.0), s)


def _amplitude_sweep(spec: _Spec):
    r"""One step on each ``s_c`` in turn (Gauss-Seidel over components), the spectra fixed.

    ``amp_step="newton"``: projected Newton step with the diagonal Hessian
    ``H = sum_e S^2 Y / mu^2``, damped by the Newton decrement
    :math:`g / (H (1 + |g| / \sqrt{H}))` (Nesterov): the Poisson NLL is self-concordant in
    ``s_c`` for integer counts, so this step cannot increase it where the full one can
    (from above the minimum). ``"multiplicative"``: the EM update
    (:func:`_multiplicative_amplitude`). A pixel whose trial still increases its data term
    (non-integer counts, rounding) keeps its amplitude. No decoding: the spectra are fixed.

    Far from its optimum (more than ``AMP_FAR`` standard errors, the damped Newton step
    growing it) an amplitude moves by about one standard error per sweep: a pixel whose
    counts are orders of magnitude above its start (a hot pixel) would take millions of
    sweeps, each a relative change small enough to pass for convergence. There the EM update
    (which jumps to the counts the spectrum explains) is tried too and the better kept."""
    trial_of = _newton_amplitude if spec.amp_step == "newton" else _multiplicative_amplitude
    rescue = spec.amp_step == "newton" and spec.loss == "poisson"

    def sweep(state: _State, data: _Data) -> _State:
        mu = _mixture(data, state.s, state.spectra)
        ell = _pixel_loss(spec.loss, data, mu)
        s_all = state.s
        for c in range(len(spec.configs)):
            spectra, s = state.spectra[c], s_all[c]
            if rescue:
                trial, far, em = _newton_amplitude(spec, data, spectra, s, mu, with_far=True)
            else:
                trial = trial_of(spec, data, spectra, s, mu)
            mu_trial = mu + (trial - s)[:, None] * spectra
            ell_trial = _pixel_loss(spec.loss, data, mu_trial)
            if rescue:
                mu_em = mu + (em - s)[:, None] * spectra
                ell_em = _pixel_loss(spec.loss, data, mu_em)
                use_em = far & (ell_em < ell_trial)
                trial = jnp.where(use_em, em, trial)
                mu_trial = jnp.where(use_em[:, None], mu_em, mu_trial)
                ell_trial = jnp.where(use_em, ell_em, ell_trial)
            ok = ell_trial <= ell
            s_all = s_all.at[c].set(jnp.where(ok, trial, s))
            mu = jnp.where(ok[:, None], mu_trial, mu)
            ell = jnp.where(ok, ell_trial, ell)
        return state._replace(s=s_all)

    return sweep


def _thresholds(spec: _Spec, models: _Models, data: _Data, state: _State, k_mad):
    """l1 weights ``(J, k)`` per component: ``k_mad * MAD sigma * median M_aa`` (module doc)."""
    h, w = spec.shape
    m_diag = _joint_metric(spec, models, data, state).m_diag  # (A, n)
    out = []
    for c, sl in enumerate(_latent_slices(spec)):
        valid = (data.weight > 0) & (state.s[c] > 0)
        t = state.t[c]
        k = t.shape[0]
        detail = starlet_transform(t.reshape(k, h, w), spec.n_scales)[:-1].reshape(spec.n_scales, k, -1)
        detail = jnp.where(valid, detail[:, :, data.index], jnp.nan)
        med = jnp.nanmedian(detail, axis=-1, keepdims=True)
        sigma = jnp.nanmedian(jnp.abs(detail - med), axis=-1) / 0.6745
        m_ref = jnp.nanmedian(jnp.where(valid[:, None], m_diag[:, sl], jnp.nan), axis=0)
        wt = k_mad * sigma * m_ref[None, :]
        out.append(jnp.where(jnp.isfinite(wt), wt, 0.0))
    return tuple(out)


def _start(spec: _Spec, models: _Models, data: _Data, t0, s0) -> _State:
    ts = _project_maps(models, t0)  # a user's start may lie outside the training box
    nu = jnp.full(s0.shape[1:], DAMPING, s0.dtype)
    s0 = s0 * data.weight
    prev = (ts, s0) if spec.outer == "ipalm" else ()
    inf = jnp.full((), jnp.inf, s0.dtype)
    # terms: filled by _solve before the loop (they need the objective's pieces)
    return _State(ts, s0, _all_spectra(spec, models, data, ts), nu, jnp.zeros((), jnp.int32), prev,
                  res=jnp.full(s0.shape[1:], jnp.inf, s0.dtype), f=inf, small=jnp.zeros((), bool),
                  flat=jnp.zeros((), jnp.int32), done=jnp.zeros((), bool), best=inf, since=jnp.zeros((), jnp.int32))


def _extrapolate(spec: _Spec, models: _Models, data: _Data, state: _State, thresholds) -> _State:
    r"""Start of an iPALM sweep: :math:`y = P(x_k + \beta (x_k - x_{k-1}))` on ``(s, t)``
    (``P`` the projection on the feasible set), kept in the pixels where it does not
    increase the data term (the others keep :math:`x_k`), then kept only if ``F`` does not
    increase (the regulariser couples the pixels): the trace stays monotone. One decoding.
    The returned state remembers :math:`x_k` as the previous iterate."""
    t_prev, s_prev = state.prev
    ty = _project_maps(models, tuple(t + IPALM_BETA * (t - tp) for t, tp in zip(state.t, t_prev)))
    sy = jnp.maximum(state.s + IPALM_BETA * (state.s - s_prev), 0.0) * data.weight
    spectra_y = _all_spectra(spec, models, data, ty)
    ell_x = _pixel_loss(spec.loss, data, _mixture(data, state.s, state.spectra))
    ell_y = _pixel_loss(spec.loss, data, _mixture(data, sy, spectra_y))
    ok = ell_y <= ell_x
    # Pixels (of the maps) that keep x_k; padding entries (weight 0) add False.
    refused = (~ok & (data.weight > 0)).astype(jnp.int32)
    keep = jnp.zeros(ty[0].shape[1], jnp.int32).at[data.index].max(refused) > 0
    y = state._replace(t=tuple(jnp.where(keep, tx, t_y) for tx, t_y in zip(state.t, ty)),
                       s=jnp.where(ok, sy, state.s),
                       spectra=jnp.where(ok[None, :, None], spectra_y, state.spectra))
    better = _objective(spec, data, y, thresholds) <= _objective(spec, data, state, thresholds)
    start = jax.tree_util.tree_map(lambda a, b: jnp.where(better, a, b), y, state)
    return start._replace(prev=(state.t, state.s))


def _solve(spec: _Spec, models: _Models, data: _Data, t0, s0, thresholds, control: _Control):
    """The sweeps for one cube (module doc), per pixel or regularised as ``control`` says.

    Each sweep starts by the optimality test of its starting point (its gradient and Fisher
    diagonal are those of the data step: no extra Jacobian). The sweep does not move, and
    the loop ends, at the iteration limit, after ``STALL_SWEEPS`` sweeps without a decrease
    of ``F``, or, once the previous sweep decreased ``F`` by less than ``tol``, if the test
    passes or the residual has not improved (by ``RESIDUAL_PROGRESS``) for
    ``RESIDUAL_PATIENCE`` sweeps. That last, test-only sweep is not counted in ``n_iter``;
    the result is the point that was tested (for ``outer="ipalm"``, after a passing test:
    the extrapolated point, never worse in ``F``)."""
    state = _start(spec, models, data, t0, s0)

    def terms_of(st, d):
        return (_pixel_loss(spec.loss, d, _mixture(d, st.s, st.spectra)), _regulariser(spec, st.t, thresholds))

    ell, reg = terms_of(state, data)
    state = state._replace(f=jnp.sum(ell) + reg, terms=(ell, reg))

    def joint_step(st, d):
        checking = (st.flat >= STALL_SWEEPS) | (st.it >= control.limit)  # this sweep only tests
        x = st
        if spec.outer == "ipalm":
            y = _extrapolate(spec, models, d, st, thresholds)
            st = jax.tree_util.tree_map(lambda a, b: jnp.where(checking, a, b), x._replace(prev=y.prev), y)
        half, metric = _data_step(spec, models, d, st)
        fb = _fb_start(spec, d, st, metric.g, metric.fisher_diag, thresholds)
        new, fb_prox = jax.lax.cond(control.use_prox,
                                    lambda: _prox_step(spec, models, d, st, half, metric, thresholds, fb),
                                    lambda: (half, fb.x))
        res_pix = _residual_from(spec, models, d, st, fb, fb_prox)
        res = jnp.max(res_pix)
        improved = res < RESIDUAL_PROGRESS * st.best
        best = jnp.where(improved, res, st.best)
        since = jnp.where(improved, 0, st.since + 1).astype(st.since.dtype)
        # after the relative decrease fell below tol: stop if the test passes, or if the
        # residual no longer improves (the loop would not pass it: a stall)
        done = checking | (st.small & ((res <= control.gtol) | (since >= RESIDUAL_PATIENCE)))
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), st, new)
        return new._replace(res=res_pix, done=done, best=best, since=since)

    amplitudes = repeat(_amplitude_sweep(spec), spec.amp_steps)

    def amplitude_step(st, d):
        moved = amplitudes(st, d)
        return jax.tree_util.tree_map(lambda a, b: jnp.where(st.done, a, b), st, moved)

    def count(st, d):
        # the relative decrease of F over the sweep, for the next sweep's stopping test: the
        # sum of the pixels' changes (F itself, a float32 sum of ~1e6 on a large cube, cannot
        # resolve the last ones)
        ell, reg = terms_of(st, d)
        f = jnp.sum(ell) + reg
        change = jnp.abs(jnp.sum(st.terms[0] - ell) + (st.terms[1] - reg))
        scale = jnp.maximum(jnp.abs(f), 1.0)
        flat = jnp.where(change <= STALL_RTOL * scale, st.flat + 1, 0).astype(st.flat.dtype)
        return st._replace(it=st.it + jnp.where(st.done, 0, 1).astype(st.it.dtype), f=f, terms=(ell, reg),
                           small=change <= spec.tol * scale, flat=flat)

    def objective(st, _):
        return st.f  # computed by count (one evaluation per sweep)

    f0 = state.f
    res = block_solve((joint_step, amplitude_step, count), objective, state, data, max_iter=spec.trace_len,
                      tol=None, stop=lambda _, new, __: new.done)
    final = res.state
    n_iter = final.it
    # the check-only sweep is not counted: its entry (the objective of the result) is the last
    trace = jnp.where(jnp.arange(res.trace.shape[0]) == n_iter - 1, res.objective, res.trace)
    residual = final.res  # (A,): the test of the final point (its check-only sweep)
    finite_pix = (jnp.all(jnp.isfinite(final.s), axis=0) & jnp.all(jnp.isfinite(final.spectra), axis=(0, 2))
                  & jnp.isfinite(residual))
    finite_pix = finite_pix & jnp.all(jnp.stack([jnp.all(jnp.isfinite(t[:, data.index]), axis=0) for t in final.t]),
                                      axis=0)
    finite_pix = finite_pix | (data.weight == 0)
    # a loop that stopped on a non-finite objective did not test its point
    finite = jnp.all(finite_pix) & jnp.isfinite(res.objective) & final.done
    hit_limit = n_iter >= control.limit
    r_max = jnp.max(jnp.where(data.weight > 0, residual, 0.0))
    status = decide(finite, r_max <= control.gtol, hit_limit)
    pixel_status = decide(finite_pix & finite, residual <= control.gtol, hit_limit)
    return final, f0, trace, n_iter, _Outcome(status, r_max, pixel_status, residual)


class _Outcome(NamedTuple):
    """Stop reason and fit statistics of a solve (per cube; per active pixel)."""

    status: jax.Array
    residual: jax.Array
    pixel_status: jax.Array  # (A,)
    pixel_residual: jax.Array  # (A,)


# The batched programs take the arguments shared by the cubes first, then the batched ones
# (``run_batched``'s order).


@partial(jax.jit, static_argnums=0)
def _solve_batch(spec, models, control, data, t0, s0, thresholds):
    return jax.vmap(lambda d, t, s, w: _solve(spec, models, d, t, s, w, control))(data, t0, s0, thresholds)


@partial(jax.jit, static_argnums=0)
def _thresholds_batch(spec, models, k_mad, data, t, s):
    def one(d, t_, s_):
        return _thresholds(spec, models, d, _start(spec, models, d, t_, s_), k_mad)

    return jax.vmap(one)(data, t, s)


def _simplex_grid(d: int, resolution: int) -> np.ndarray:
    """Barycentric weights ``(n, d)`` on the grid of step ``1/resolution`` of the anchors'
    simplex (the anchors included)."""
    pts = [p for p in itertools.product(range(resolution + 1), repeat=d) if sum(p) == resolution]
    return np.array(pts, np.float64) / resolution


def _grid_start(spec: _Spec, models: _Models, data: _Data, grids):
    """Cold start by grid search (module doc): per pixel, the best combination of one
    candidate per component (``grids[c]``: free coordinates ``(n_c, k_c)``), amplitudes by
    non-negative weighted least squares with weights ``1 / mu_0`` (``mu_0``: the pixel's
    counts spread as the cube's mean spectrum, a variance that does not vanish where a
    channel happens to have no count, unlike ``1 / y``). Returns the maps ``t`` (``(k, P)``,
    0 where there is no data) and the amplitudes ``(C, A)``."""
    n_comp = len(spec.configs)
    h, w = spec.shape
    q = jnp.concatenate([_spectra_at(cfg, models, c, grids[c]) for c, cfg in enumerate(spec.configs)])  # (N, E)
    y = jnp.maximum(data.y - data.bkg, 0.0)
    mean = jnp.sum(data.y * data.weight[:, None], axis=0)
    mean = mean / jnp.maximum(jnp.sum(mean), TINY)
    weights = 1.0 / jnp.maximum(jnp.sum(data.y, axis=-1, keepdims=True) * mean[None, :], 0.1)
    gram = jnp.einsum("ie,ae,je->aij", q, weights, q)  # (A, N, N)
    rhs = jnp.einsum("ie,ae->ai", q, weights * y)  # (A, N)
    offsets = np.cumsum([0] + [len(gr) for gr in grids])[:-1]
    combos = np.array(list(itertools.product(*[range(len(gr)) for gr in grids])), np.int32)  # (K, C)
    cols = combos + offsets
    g_sub = gram[:, cols[:, :, None], cols[:, None, :]]  # (A, K, C, C)
    b_sub = rhs[:, cols]  # (A, K, C)
    ridge = 1e-6 * jnp.trace(g_sub, axis1=-2, axis2=-1)[..., None, None] / n_comp + TINY
    joint = jnp.linalg.solve(g_sub + ridge * jnp.eye(n_comp), b_sub[..., None])[..., 0]
    # One component alone (the others at 0): the non-negative solution where the joint one is not.
    single = jnp.maximum(b_sub / jnp.maximum(jnp.diagonal(g_sub, axis1=-2, axis2=-1), TINY), 0.0)
    options = jnp.concatenate([joint[:, :, None, :], single[:, :, :, None] * jnp.eye(n_comp)], axis=2)
    cost = -2.0 * jnp.einsum("akoc,akc->ako", options, b_sub) + jnp.einsum("akoc,akcd,akod->ako", options, g_sub,
                                                                             options)
    cost = jnp.where(jnp.all(options >= 0, axis=-1), cost, jnp.inf).reshape(cost.shape[0], -1)
    best = jnp.argmin(cost, axis=-1)
    k_best, o_best = best // (n_comp + 1), best % (n_comp + 1)
    s0 = jnp.maximum(options[jnp.arange(cost.shape[0]), k_best, o_best], 0.0).T * data.weight  # (C, A)
    choice = jnp.asarray(combos)[k_best]  # (A, C)
    t0 = tuple(_scatter_rows(jnp.zeros((grids[c].shape[1], h * w), s0.dtype), data, grids[c][choice[:, c]])
               for c in range(n_comp))
    return t0, s0


@partial(jax.jit, static_argnums=0)
def _grid_start_batch(spec, models, grids, data):
    return jax.vmap(lambda d: _grid_start(spec, models, d, grids))(data)


# ---------------------------------------------------------------------------------------
# Argument handling


def _as_models(models) -> list:
    models = M.as_models(models)
    for i, mdl in enumerate(models):
        if mdl.config.joint or mdl.config.n_inputs != 1:
            raise ValueError(f"models[{i}] is a joint model; SUSHI takes one single-input IAE per component")
        if mdl.config.n_channels != models[0].config.n_channels:
            raise ValueError(
                f"models[{i}] describes {mdl.config.n_channels} channels but models[0] describes "
                f"{models[0].config.n_channels}: all components must share the cube's channels"
            )
    return models


def _check_cube(cube, n_channels: int):
    arr = check_array(cube, "cube", ndim=(3, 4), nonnegative=True, dtype=None)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"cube must hold counts (numbers), got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if arr.shape[-3] != n_channels:
        if arr.shape[-1] == n_channels:
            raise ValueError(
                f"cube must be (E, H, W) with energy first, got shape {arr.shape} whose last axis has "
                f"the models' {n_channels} channels (channels last?): use np.moveaxis(cube, -1, -3)"
            )
        raise ValueError(
            f"cube has {arr.shape[-3]} channels on axis -3 (shape {arr.shape}) but the models "
            f"describe {n_channels}"
        )
    batched = arr.ndim == 4
    return (arr if batched else arr[None]), batched


def _check_background(background, cube_shape):
    b, e, h, w = cube_shape
    if background is None:
        return np.zeros(cube_shape, np.float32)
    arr = check_array(background, "background", nonnegative=True)
    allowed = [(e,), (e, h, w)] + ([(b, e, h, w)] if b > 1 else [])
    if arr.shape not in allowed:
        shown = " or ".join(str(s) for s in allowed)
        raise ValueError(f"background must have shape {shown} (channels first, like cube), got {arr.shape}")
    if arr.ndim == 1:
        arr = arr[:, None, None]
    return np.broadcast_to(arr, cube_shape).astype(np.float32)


def _check_mask(mask, cube_shape):
    b, _, h, w = cube_shape
    if mask is None:
        return np.ones((b, h, w), bool)
    arr = np.asarray(mask)
    if arr.dtype != bool:
        arr = check_array(mask, "mask")
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError("mask must be boolean (True where the data are used)")
        arr = arr.astype(bool)
    if arr.shape not in [(h, w), (b, h, w)]:
        raise ValueError(f"mask must have shape (H, W) = {(h, w)} like the cube's sky, got {arr.shape}")
    return np.broadcast_to(arr, (b, h, w))


def _model_geometry(models) -> _Models:
    refs, bases, lowers, uppers = [], [], [], []
    for mdl in models:
        d = mdl.n_anchors
        lo, hi = (jnp.asarray(v, jnp.float32) for v in mdl.latent_bounds)
        # The anchors' barycentre: the middle of the family, where the decoder is best trained.
        refs.append(project_box_section(jnp.full((d,), 1.0 / d, jnp.float32), lo, hi, 1.0))
        bases.append(sum_to_one_basis(d, jnp.float32))
        lowers.append(lo)
        uppers.append(hi)
    # Strong dtypes: a weakly typed array (e.g. from jnp.full) would make another compilation.
    states = tuple(jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=jnp.asarray(a).dtype), m.state)
                   for m in models)
    return _Models(states, tuple(refs), tuple(bases), tuple(lowers), tuple(uppers))


def _grids(models, geometry: _Models):
    """Free coordinates ``(n_c, k_c)`` of the cold-start candidates of each component."""
    grids = []
    for c, mdl in enumerate(models):
        d = mdl.n_anchors
        lam = _simplex_grid(d, GRID_RESOLUTION.get(d, 2))
        t = (lam - np.asarray(geometry.reference[c])) @ np.asarray(geometry.basis[c])
        grids.append(_project_rows(geometry, c, jnp.asarray(t, jnp.float32)))
    if int(np.prod([len(g) for g in grids])) > 4096:  # many components: the reference weights only
        grids = [jnp.zeros((1, mdl.n_anchors - 1), jnp.float32) for mdl in models]
    return tuple(grids)


def _active_data(y, bkg, mask):
    """``_Data`` of the pixels inside ``mask`` with counts, padded to a common bucket size."""
    b, e, h, w = y.shape
    y_pe = y.reshape(b, e, h * w).transpose(0, 2, 1)
    bkg_pe = bkg.reshape(b, e, h * w).transpose(0, 2, 1)
    active = mask.reshape(b, h * w) & (y_pe.sum(-1) > 0)
    n_max = int(active.sum(-1).max())
    size = min(h * w, max(1, -(-n_max // PIXEL_BUCKET) * PIXEL_BUCKET))
    index = np.zeros((b, size), np.int32)
    weight = np.zeros((b, size), np.float32)
    for i in range(b):  # over cubes, not pixels
        idx = np.flatnonzero(active[i])
        index[i, : len(idx)] = idx
        weight[i, : len(idx)] = 1.0
    rows = np.arange(b)[:, None]
    ya, ba = y_pe[rows, index] * weight[..., None], bkg_pe[rows, index]
    # NumPy arrays: run_batched cuts them into chunks and places them on the devices.
    data = _Data(ya.astype(np.float32), ba.astype(np.float32), (1.0 / np.maximum(ya, 1.0)).astype(np.float32),
                 weight, index)
    return data, index, weight


def _check_init(init, models, geometry: _Models, b: int, h: int, w: int, batched: bool):
    """Free-coordinate maps ``(B, k, P)`` per component and amplitude maps ``(B, C, P)``."""
    n_comp = len(models)
    if isinstance(init, SushiResult):
        amplitude, latent = init.amplitude, init.latent
    elif isinstance(init, (tuple, list)) and len(init) == 2:
        amplitude, latent = init
    else:
        raise TypeError(
            f"init must be None, a SushiResult (e.g. from fit_pixels) or a pair (amplitude, latent), "
            f"got {type(init).__name__}"
        )
    lead = (b,) if batched else ()
    amp = check_array(amplitude, "init.amplitude", nonnegative=True)
    if amp.shape != lead + (n_comp, h, w):
        raise ValueError(f"init.amplitude must have shape {lead + (n_comp, h, w)}, got {amp.shape}")
    if isinstance(latent, np.ndarray) or len(latent) != n_comp:
        raise ValueError(f"init.latent must be a sequence of {n_comp} maps (one per model)")
    ts = []
    for c, (mdl, lam) in enumerate(zip(models, latent)):
        d = mdl.n_anchors
        lam = check_array(lam, f"init.latent[{c}]")
        if lam.shape != lead + (d, h, w):
            raise ValueError(f"init.latent[{c}] must have shape {lead + (d, h, w)}, got {lam.shape}")
        lam = lam.reshape((b, d, h * w))
        t = np.einsum("bdp,dk->bkp", lam - np.asarray(geometry.reference[c])[None, :, None],
                      np.asarray(geometry.basis[c]))
        ts.append(jnp.asarray(t, jnp.float32))
    return tuple(ts), amp.reshape(b, n_comp, h * w).astype(np.float32)


def _check_param_maps(param_maps, models):
    if param_maps is None:
        return [None] * len(models)
    if isinstance(param_maps, ParameterMap):
        param_maps = [param_maps]
    param_maps = list(param_maps)
    if len(param_maps) != len(models):
        raise ValueError(f"param_maps must have one entry (or None) per model ({len(models)}), got {len(param_maps)}")
    for i, (pm, mdl) in enumerate(zip(param_maps, models)):
        if pm is None:
            continue
        if not isinstance(pm, ParameterMap):
            raise TypeError(f"param_maps[{i}] must be a ParameterMap or None, got {type(pm).__name__}")
        if pm.n_anchors != mdl.n_anchors:
            raise ValueError(f"param_maps[{i}] maps {pm.n_anchors} weights but models[{i}] has {mdl.n_anchors} anchors")
    return param_maps


def _trace_len(*limits: int) -> int:
    """Static trace length: one bucket (256) for every usual limit, so one compiled program
    serves the per-pixel fit and SUSHI whatever their ``max_iter``."""
    n = max(limits)
    return 256 if n <= 256 else 1 << (n - 1).bit_length()


def _goodness_of_fit(y, model, inside, active, n_free):
    """Per pixel ``(B, P)`` and per cube ``(B,)``: the Poisson deviance of the fitted model and
    its p-value (:func:`frugal.ops.gof.gof_pvalue`'s method): ``n_free`` fitted parameters per
    pixel with counts, none in a pixel without (its amplitudes are 0, the exact optimum);
    NaN outside the mask. ``y``, ``model``: ``(B, E, P)``."""
    b, e, p = y.shape
    y64, mu64 = y.astype(np.float64), model.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(y64 > 0, y64 * np.log(y64 / mu64), 0.0) - y64 + mu64
    deviance = np.where(inside, 2.0 * term.sum(1), np.nan)  # (B, P); inf: counts the model cannot explain
    mean, var = tabulated_deviance_moments(np.maximum(model, 0.0))
    mean, var = mean.sum(1, dtype=np.float64), var.sum(1, dtype=np.float64)  # (B, P)
    n_params = np.where(active, float(n_free), 0.0)
    pixel_p = np.where(inside, np.asarray(pvalue_from_moments(deviance, mean, var, n_params)), np.nan)
    total = np.where(inside, deviance, 0.0).sum(1)
    cube_p = np.asarray(pvalue_from_moments(total, np.where(inside, mean, 0.0).sum(1),
                                            np.where(inside, var, 0.0).sum(1), n_params.sum(1)))
    return deviance, pixel_p, total, cube_p


def _run(cube, models, *, background, loss, n_scales, k_mad, max_iter, tol, init, mask, param_maps, names,
         amp_steps, regularise, init_iter, outer, amp_step, devices, chunk_size, gtol):
    models = _as_models(models)
    y, batched = _check_cube(cube, models[0].config.n_channels)
    b, e, h, w = y.shape
    check_choice(loss, "loss", ("poisson", "gaussian"))
    check_choice(outer, "outer", OUTER_LOOPS)
    check_choice(amp_step, "amp_step", AMPLITUDE_STEPS)
    devs = resolve_devices(devices)
    if not batched:  # one cube: one device
        devs = devs[:1]
    chunk_size = b if chunk_size is None else check_int(chunk_size, "chunk_size", minimum=1)
    n_scales = check_int(n_scales, "n_scales", minimum=1)
    k_mad = check_float(k_mad, "k_mad", minimum=0.0)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    tol = check_float(tol, "tol", minimum=0.0)
    gtol = check_float(gtol, "gtol", minimum=0.0)
    amp_steps = check_int(amp_steps, "amp_steps", minimum=0)
    init_iter = check_int(init_iter, "init_iter", minimum=1)
    if outer == "gauss-seidel" and amp_steps == 0:
        raise ValueError("outer='gauss-seidel' moves the amplitudes in the amplitude sweeps only: "
                         "amp_steps must be >= 1")
    bkg = _check_background(background, y.shape)
    mask = _check_mask(mask, y.shape)
    param_maps = _check_param_maps(param_maps, models)
    n_comp = len(models)
    if names is None:
        names = tuple(f"component{i}" for i in range(n_comp))
    else:
        names = (names,) if isinstance(names, str) else tuple(str(n) for n in names)
        if len(names) != n_comp:
            raise ValueError(f"names must have one entry per model ({n_comp}), got {len(names)}")

    geometry = _model_geometry(models)
    data, index, weight = _active_data(y, bkg, mask)
    spec = _Spec(configs=tuple(m.config for m in models), shape=(h, w), loss=loss, n_scales=n_scales,
                 trace_len=_trace_len(max_iter + 1, init_iter + 1), tol=tol, amp_steps=amp_steps, outer=outer,
                 amp_step=amp_step)
    # The grid search and the thresholds do not depend on the variant: one program for all.
    base = spec._replace(outer="joint", amp_step="newton")
    zero_thr = tuple(np.zeros((b, n_scales, m.n_anchors - 1), np.float32) for m in models)

    def control(use_prox, limit):
        return _Control(jnp.asarray(use_prox), jnp.int32(limit), jnp.float32(gtol))

    def run(fn, batched_args, shared_args):
        # Over the cubes: chunks of chunk_size cubes, each split over the devices.
        return run_batched(fn, batched_args, shared_args, chunk_size=chunk_size, devices=devs)

    def solve(t0, s0, thr, use_prox, limit):
        return run(partial(_solve_batch, spec), (data, t0, s0, thr), (geometry, control(use_prox, limit)))

    n_init = np.zeros(b, np.int32)
    if init is None:
        t0, s0 = run(partial(_grid_start_batch, base), (data,), (geometry, _grids(models, geometry)))
        # Stage 1, the per-pixel fit: the whole of fit_pixels, the start of SUSHI.
        state, f0, trace, n_iter, outcome = solve(t0, s0, zero_thr, False, init_iter if regularise else max_iter)
        t0, s0, n_init = state.t, state.s, np.asarray(n_iter)
    else:
        t0, s_maps = _check_init(init, models, geometry, b, h, w, batched)
        s0 = np.take_along_axis(s_maps, index[:, None, :], axis=2) * weight[:, None, :]
        if not regularise:
            state, f0, trace, n_iter, outcome = solve(t0, s0, zero_thr, False, max_iter)
    if regularise:
        thr = run(partial(_thresholds_batch, base), (data, t0, s0), (geometry, jnp.float32(k_mad)))
        state, f0, trace, n_iter, outcome = solve(t0, s0, thr, True, max_iter)
    else:
        thr, n_init = zero_thr, np.zeros(b, np.int32)
    n_latent = sum(m.n_anchors - 1 for m in models)
    # Fitted parameters per pixel with counts, for the goodness of fit: all of them for the
    # per-pixel fit; for SUSHI the amplitudes (not regularised) and, of the latent maps, the
    # coarse starlet plane only (about one value per 4^J pixels), an approximation (see
    # SushiResult.gof_pvalue).
    n_free = n_comp + (n_latent / 4.0**n_scales if regularise and k_mad > 0 else n_latent)
    return _assemble(state, f0, trace, n_iter, outcome, thr, n_init, geometry, models, param_maps, names, y, bkg,
                     mask, index, weight, batched, n_free)


def _assemble(state, f0, trace, n_iter, outcome, thr, n_init, geometry, models, param_maps, names, y, bkg,
              mask, index, weight, batched, n_free):
    b, e, h, w = y.shape
    n_comp = len(models)
    amplitude = np.zeros((b, n_comp, h * w), np.float32)
    spectra = np.zeros((b, n_comp, h * w, e), np.float32)
    s_act, sp_act = np.asarray(state.s), np.asarray(state.spectra)
    for i in range(b):  # over cubes: scatter the active pixels back into the maps
        real = weight[i] > 0
        amplitude[i][:, index[i, real]] = s_act[i][:, real]
        spectra[i][:, index[i, real]] = sp_act[i][:, real]
    components = (amplitude[..., None] * spectra).transpose(0, 1, 3, 2).reshape(b, n_comp, e, h, w)
    model = bkg + components.sum(axis=1)
    inside = mask.reshape(b, h * w)

    # Stop reasons and goodness of fit. Pixels without a data term (no counts, or outside the
    # mask) have nothing to optimise: optimal (residual 0), as coordinates without curvature.
    pixel_status = np.full((b, h * w), int(Status.CONVERGED), np.int32)
    pixel_residual = np.zeros((b, h * w), np.float32)
    ps, pr = np.asarray(outcome.pixel_status), np.asarray(outcome.pixel_residual)
    active = np.zeros((b, h * w), bool)
    for i in range(b):
        real = weight[i] > 0
        pixel_status[i, index[i, real]] = ps[i, real]
        pixel_residual[i, index[i, real]] = pr[i, real]
        active[i, index[i, real]] = True
    pixel_dev, pixel_p, deviance, gof_p = _goodness_of_fit(y.reshape(b, e, h * w), model.reshape(b, e, h * w),
                                                           inside, active, n_free)
    status = np.asarray(outcome.status).astype(np.int32)
    residual = np.asarray(outcome.residual).astype(np.float32)
    converged = status == int(Status.CONVERGED)
    stats = [status, residual, deviance.astype(np.float32), gof_p.astype(np.float32),
             pixel_status.reshape(b, h, w), pixel_residual.reshape(b, h, w),
             pixel_dev.reshape(b, h, w).astype(np.float32), pixel_p.reshape(b, h, w).astype(np.float32)]
    latent = []
    for c in range(n_comp):
        ref = np.asarray(geometry.reference[c])
        lam = ref[None, :, None] + np.einsum("dk,bkp->bdp", np.asarray(geometry.basis[c]), np.asarray(state.t[c]))
        lam = np.where(inside[:, None, :], lam, ref[None, :, None])
        latent.append(lam.reshape(b, -1, h, w).astype(np.float32))
    params = {}
    all_names = [nm for pm in param_maps if pm is not None for nm in pm.names]
    for c, pm in enumerate(param_maps):
        if pm is None:
            continue
        for nm, values in pm(latent[c], axis=1).items():
            key = nm if all_names.count(nm) == 1 else f"{names[c]}:{nm}"
            params[key] = values.astype(np.float32)
    n_iter = np.asarray(n_iter)
    objective = np.concatenate([np.asarray(f0)[:, None], np.asarray(trace)], axis=1)
    objective[np.arange(objective.shape[1])[None, :] > n_iter[:, None]] = np.nan
    objective = objective[:, : int(n_iter.max()) + 1]
    thresholds = tuple(np.asarray(t) for t in thr)
    amplitude = amplitude.reshape(b, n_comp, h, w)
    n_init = np.asarray(n_init)
    if not batched:
        amplitude, components, model, latent, objective, n_iter, converged, n_init, thresholds, stats = \
            first_of_batch((amplitude, components, model, latent, objective, n_iter, converged, n_init, thresholds,
                            stats))
        params = {k: v[0] for k, v in params.items()}  # in their order (a pytree's dict keys are sorted)
    return SushiResult(amplitude, tuple(latent), components, model, params, objective, n_iter, converged,
                       thresholds, n_init, names, *stats)


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
    amp_steps: int = 1,
    init_iter: int = 100,
    outer: str = "ipalm",
    amp_step: str = "newton",
    devices=None,
    chunk_size: int | None = None,
    gtol: float = GTOL,
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
    amp_steps: projected Newton steps on every amplitude map per sweep (cheap: no
      decoding; 0 for none).
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
                amp_steps=amp_steps, regularise=True, init_iter=init_iter, outer=outer, amp_step=amp_step,
                devices=devices, chunk_size=chunk_size, gtol=gtol)


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
    amp_steps: int = 1,
    outer: str = "ipalm",
    amp_step: str = "newton",
    devices=None,
    chunk_size: int | None = None,
    gtol: float = GTOL,
) -> SushiResult:
    """Fit the same models pixel by pixel, without spatial regularisation (the usual practice).

    A grid search per pixel, then SUSHI's sweeps without the prox: per-pixel
    Levenberg-Marquardt steps on all of a pixel's unknowns and Newton steps on the
    amplitudes, every pixel independent (the objective is a sum over pixels and every step
    is safeguarded per pixel), all pixels vmapped in one jitted loop. Arguments as
    :func:`sushi` (``outer``, ``amp_step``: the variant of the sweeps; ``devices``,
    ``chunk_size``: how a batch of cubes is spread); ``init`` skips the grid search. Every
    variant solves the same per-pixel problems, hence reaches the same optimum from the same
    start (up to the local minima of the thermal / synchrotron degeneracy). Returns a
    :class:`SushiResult` with zero ``thresholds``; its ``pixel_status`` and
    ``pixel_gof_pvalue`` say which pixels are optimal and which the models describe.
    """
    # n_scales as SUSHI's default: one compiled program serves both.
    return _run(cube, models, background=background, loss=loss, n_scales=2, k_mad=0.0, max_iter=max_iter,
                tol=tol, init=init, mask=mask, param_maps=param_maps, names=names, amp_steps=amp_steps,
                regularise=False, init_iter=max_iter, outer=outer, amp_step=amp_step, devices=devices,
                chunk_size=chunk_size, gtol=gtol)
