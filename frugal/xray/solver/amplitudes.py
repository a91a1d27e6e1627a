"""Amplitude sweeps of the SUSHI solver (module doc of :mod:`frugal.xray.sushi`, step 4 and
"Variants"): damped projected Newton steps or the EM (multiplicative) update on each amplitude map,
the spectra fixed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from frugal.solvers.gradient import projected_newton_diag
from frugal.xray.solver.cube import Data, MU_FLOOR, Spec, State, mixture, mu_derivatives, pixel_loss

__all__ = ["amplitude_sweep", "multiplicative_amplitude", "newton_amplitude"]

#: Smallest amplitude curvature: a pixel whose counts vanish where a component lies has
#: H = 0, and its Newton step must still take the amplitude to its optimum, 0.
HESS_FLOOR = 1e-20
#: Start of a multiplicative amplitude update from a zero amplitude, relative to the pixel's
#: counts (the multiplicative update cannot leave 0; the safeguard refuses the restart where
#: 0 is the better value).
MULT_RESTART = 1e-3
#: An amplitude more than this many standard errors from its Newton optimum also tries the
#: EM update (the Newton decrement damps the step to about one standard error per sweep).
AMP_FAR = 3.0


def newton_amplitude(spec: Spec, data: Data, spectra, s, mu, with_far: bool = False):
    """Trial amplitudes ``(A,)`` of one component: damped projected Newton step (and, with
    ``with_far``, where the amplitude is more than ``AMP_FAR`` standard errors from the
    Newton optimum, ``|g| / sqrt(H)``, and the EM trial)."""
    r, _, observed = mu_derivatives(spec.loss, data, mu)
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


def multiplicative_amplitude(spec: Spec, data: Data, spectra, s, mu):
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


def amplitude_sweep(spec: Spec):
    r"""One step on each ``s_c`` in turn (Gauss-Seidel over components), the spectra fixed.

    ``spec.solver.amplitude`` (:mod:`frugal.xray.solver.variants`) is the update:
    ``NewtonAmplitudes`` (``amp_step="newton"``), a projected Newton step with the diagonal Hessian
    ``H = sum_e S^2 Y / mu^2``, damped by the Newton decrement
    :math:`g / (H (1 + |g| / \sqrt{H}))` (Nesterov): the Poisson NLL is self-concordant in
    ``s_c`` for integer counts, so this step cannot increase it where the full one can
    (from above the minimum); ``EMAmplitudes`` (``"multiplicative"``), the EM update
    (:func:`multiplicative_amplitude`). A pixel whose trial still increases its data term
    (non-integer counts, rounding) keeps its amplitude. No decoding: the spectra are fixed.

    Far from its optimum (more than ``AMP_FAR`` standard errors, the damped Newton step
    growing it) an amplitude moves by about one standard error per sweep: a pixel whose
    counts are orders of magnitude above its start (a hot pixel) would take millions of
    sweeps, each a relative change small enough to pass for convergence. There the EM update
    (which jumps to the counts the spectrum explains) is tried too and the better kept."""
    update = spec.solver.amplitude
    rescue = update.rescues_far and spec.loss == "poisson"

    def sweep(state: State, data: Data) -> State:
        mu = mixture(data, state.s, state.spectra)
        ell = pixel_loss(spec.loss, data, mu)
        s_all = state.s
        for c in range(len(spec.manifolds)):
            spectra, s = state.spectra[c], s_all[c]
            if rescue:
                trial, far, em = newton_amplitude(spec, data, spectra, s, mu, with_far=True)
            else:
                trial = update.trial(spec, data, spectra, s, mu)
            mu_trial = mu + (trial - s)[:, None] * spectra
            ell_trial = pixel_loss(spec.loss, data, mu_trial)
            if rescue:
                mu_em = mu + (em - s)[:, None] * spectra
                ell_em = pixel_loss(spec.loss, data, mu_em)
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
