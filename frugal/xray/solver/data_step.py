"""The data step of the SUSHI solver (module doc of :mod:`frugal.xray.sushi`, step 1): per pixel, a
Levenberg-Marquardt step on all its unknowns, with the bounds in the subproblem (an active-set
method), a trust region on the latent part and a damping that follows the gain ratio.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from frugal.ops.losses import TINY
from frugal.solvers.newton import jacobi_scale
from frugal.xray.solver.cube import (
    Data, Models, Spec, State, jacobian, latent_slices, mixture, mu_derivatives, pixel_loss, project_rows,
    scatter_rows, spectra_at,
)

__all__ = ["Metric", "bounded_step", "data_step", "joint_metric", "lu_solve", "trust_region"]

#: Per-pixel damping factors after a successful / refused step, and its range.
NU_DOWN, NU_UP, NU_MIN, NU_MAX = 0.3, 10.0, 1e-6, 1e8
#: Damping factor after an accepted step that the model predicted badly (gain ratio < 1/4).
NU_POOR = 2.0
#: Trust region of the latent step in free coordinates (max norm): the anchors are ~1 apart.
MAX_STEP = 0.25
#: Relative increase of a pixel's data term still taken for rounding (float32 sums of ~E
#: terms): at the optimum every step is ~0, and rounding alone must not inflate the damping.
ACCEPT_RTOL = 1e-6
#: A latent block whose trust-region factor is this many times smaller than the others' is
#: clipped alone (``trust_region``).
BLOCK_CLIP = 20.0
#: Regularisation of the multipliers in the active-set system (scaled units).
KKT_EPS = 1e-6
#: Passes of the active-set step (each adds the violated bounds, releases the wrong ones).
ACTIVE_SET_PASSES = 3


class Metric(NamedTuple):
    """What :func:`joint_metric` computes at a state (per active pixel)."""

    mu: jax.Array  # (A, E) model
    g: jax.Array  # (A, n) gradient of the data term in z = (s, t)
    m_inv: jax.Array  # (A, n, n) inverse of the damped curvature M
    m_diag: jax.Array  # (A, n) diagonal of M
    fisher_diag: jax.Array  # (A, n) diagonal of F (undamped): the metric of the optimality test
    m_scaled: jax.Array  # (A, n, n) M in the Jacobi-scaled coordinates
    scale: jax.Array  # (A, n) the Jacobi scaling


def joint_metric(spec: Spec, models: Models, data: Data, state: State, latent_only: bool = False):
    """Per active pixel, in ``z = (s_1..s_C, t_1..t_C)``: model ``mu`` ``(A, E)``, gradient
    ``g`` ``(A, n)``, the inverse ``(A, n, n)`` and the diagonal ``(A, n)`` of the damped
    Gauss-Newton curvature ``M = F + nu diag(F)``, ``F = J^T diag(w) J`` (a :class:`Metric`).
    ``latent_only``: the amplitude / latent coupling blocks of ``M`` are zeroed (the metric of
    a step on ``t`` with ``s`` fixed, ``outer="gauss-seidel"``); the diagonal is the same."""
    jac = jacobian(spec, models, data, state)  # (A, E, n)
    mu = mixture(data, state.s, state.spectra)
    r, fisher, _ = mu_derivatives(spec.loss, data, mu)
    g = jnp.einsum("ae,aen->an", r, jac)
    f = jnp.einsum("aen,aem->anm", jac * fisher[..., None], jac)
    # Jacobi scaling first: amplitudes (~1e3 counts) and weights (~1) have curvatures ~1e6
    # apart, and float32 cannot invert such a matrix unscaled. A column without signal
    # (a component absent from the pixel) gets a tiny scale: it takes no step (g = 0 there)
    # and its tiny curvature lets the regularisation fill it in.
    diag = jnp.diagonal(f, axis1=1, axis2=2)
    scale = jacobi_scale(diag)
    n = f.shape[-1]
    m_scaled = f / (scale[:, :, None] * scale[:, None, :]) + state.nu[:, None, None] * jnp.eye(n, dtype=f.dtype)
    if latent_only:
        n_comp = len(spec.manifolds)
        same_block = (np.arange(n)[:, None] < n_comp) == (np.arange(n)[None, :] < n_comp)
        m_scaled = jnp.where(same_block, m_scaled, 0.0)
    m_inv = jnp.linalg.inv(m_scaled) / (scale[:, :, None] * scale[:, None, :])
    return Metric(mu, g, m_inv, jnp.diagonal(m_scaled, axis1=1, axis2=2) * scale**2, diag, m_scaled, scale)


def data_step(spec: Spec, models: Models, data: Data, state: State):
    """Joint per-pixel Levenberg-Marquardt step on ``(s, t)`` (module doc, step 1); with
    ``outer="gauss-seidel"`` on ``t`` only (``s`` fixed, the latent block of the metric).

    A pixel keeps its step if its data term does not increase (and its damping shrinks),
    else keeps its values (and its damping grows): one decoding per sweep whatever the
    number of pixels that fail. Returns the new state and the :class:`Metric` at ``state``
    (its damped diagonal is the metric of the prox, its gradient and undamped diagonal those
    of the optimality test).

    The bounds (``s >= 0``, the training box) are in the subproblem (:func:`bounded_step`),
    the trust region is :func:`trust_region`, and the damping follows the gain ratio
    (module doc, step 1).
    """
    n_comp = len(spec.manifolds)
    latent_only = spec.solver.outer.latent_only
    metric = joint_metric(spec, models, data, state, latent_only)
    mu, g, m_inv = metric.mu, metric.g, metric.m_inv
    step = -jnp.einsum("anm,am->an", m_inv, g)
    rows = [t[:, data.index].T for t in state.t]
    step = bounded_step(models, metric, state.s, rows, step, tuple(man.n_free for man in spec.manifolds),
                        latent_only)
    step = trust_region(spec, step)
    s = state.s if latent_only else jnp.maximum(state.s + step[:, :n_comp].T, 0.0)
    new_rows = [project_rows(man, models, c, r + step[:, sl])
                for c, (man, r, sl) in enumerate(zip(spec.manifolds, rows, latent_slices(spec)))]
    spectra = jnp.stack([spectra_at(man, models, c, r) for c, (man, r) in enumerate(zip(spec.manifolds, new_rows))])
    ell0 = pixel_loss(spec.loss, data, mu)
    ell1 = pixel_loss(spec.loss, data, mixture(data, s, spectra))
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
        t=tuple(scatter_rows(t, data, jnp.where(ok[:, None], rn - r, 0.0))
                for t, r, rn in zip(state.t, rows, new_rows)),
        s=jnp.where(ok, s, state.s),
        spectra=jnp.where(ok[None, :, None], spectra, state.spectra),
        nu=jnp.clip(state.nu * factor, NU_MIN, NU_MAX),
    )
    return new, metric


def lu_solve(a, b):
    """``a^{-1} b`` for batches of small systems ``(..., N, N)``, ``(..., N)`` by LU with
    partial pivoting (``jnp.linalg.solve`` without its differentiation wrappers: half the
    compilation time)."""
    lu, _, perm = jax.lax.linalg.lu(a)
    x = jnp.take_along_axis(b, perm, axis=-1)[..., None]
    x = jax.lax.linalg.triangular_solve(lu, x, left_side=True, lower=True, unit_diagonal=True)
    return jax.lax.linalg.triangular_solve(lu, x, left_side=True, lower=False)[..., 0]


def trust_region(spec: Spec, step):
    """The step scaled to ``||delta_t||_inf <= MAX_STEP`` (the decoder is only locally linear).

    The whole step is scaled by the largest latent block's factor, except in the blocks that
    would shrink by more than ``BLOCK_CLIP`` times the others: a component with almost no
    counts in the pixel has a huge, meaningless latent step (its curvature vanishes with its
    amplitude) that would otherwise freeze the whole pixel; such a block is clipped alone."""
    n_comp = len(spec.manifolds)
    sizes = jnp.stack([jnp.max(jnp.abs(step[:, sl]), axis=-1) for sl in latent_slices(spec)], axis=-1)  # (A, C)
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
    for c, sl in enumerate(latent_slices(spec)):
        f_c = jnp.where(outlier[:, c], factors[:, c], common[:, 0])
        per_coord.append(jnp.broadcast_to(f_c[:, None], (step.shape[0], sl.stop - sl.start)))
    split = step * jnp.concatenate(per_coord, axis=-1)
    return jnp.where(jnp.any(outlier, axis=-1, keepdims=True), split, scaled)


def bounded_step(models: Models, metric: Metric, s, rows, step, n_latent: tuple, latent_only: bool):
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
        sol = lu_solve(system, rhs)
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
