"""SUSHI's solver pieces as values: the sweep order (``outer``), the amplitude update
(``amp_step``) and the :class:`PALM` solver they compose (``sushi(..., solver=PALM(...))``).

Frozen dataclasses, like SEMSUN's (:mod:`frugal.solvers.variants`): hashable (the solver is
part of the static description of a run, one compiled program per distinct value), checked
when built, and each holding what is its own (the inertia of :class:`InertialSweep`). The
string options of :func:`frugal.xray.sushi` are shorthands: the keys of
:data:`OUTER_LOOPS` and :data:`AMPLITUDE_STEPS`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar

from frugal._validation import check_choice, check_float, check_int
from frugal.solvers.block import IPALM_BETA
from frugal.xray.solver.amplitudes import multiplicative_amplitude, newton_amplitude

__all__ = [
    "AMPLITUDE_STEPS", "OUTER_LOOPS", "PALM", "AmplitudeUpdate", "EMAmplitudes", "GaussSeidelSweep",
    "InertialSweep", "JointSweep", "NewtonAmplitudes", "Sweep", "as_palm",
]

piece = dataclasses.dataclass(frozen=True)


@piece
class Sweep:
    """The order of the blocks in a sweep (module doc of :mod:`frugal.xray.sushi`, "Variants")."""

    #: The data step moves the latent coordinates only (the amplitudes in the amplitude sweeps).
    latent_only: ClassVar[bool] = False
    #: Each sweep's data step starts from an extrapolated point (:func:`frugal.xray.solver.loop.extrapolate`).
    inertial: ClassVar[bool] = False


@piece
class JointSweep(Sweep):
    """One Levenberg-Marquardt step on each pixel's amplitudes and weights together."""


@piece
class GaussSeidelSweep(Sweep):
    """The published PALM order: the data step moves the weights only, the amplitude sweeps
    the amplitudes (so a :class:`PALM` with this sweep needs ``amp_steps >= 1``)."""

    latent_only: ClassVar[bool] = True


@piece
class InertialSweep(Sweep):
    """Inertial PALM (Pock & Sabach 2016): the joint step of each sweep starts from
    :math:`P(x_k + \\beta (x_k - x_{k-1}))`, kept only where it does not increase the objective."""

    beta: float = IPALM_BETA
    inertial: ClassVar[bool] = True

    def __post_init__(self):
        beta = check_float(self.beta, "beta", minimum=0.0)
        if beta >= 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")


@piece
class AmplitudeUpdate(abc.ABC):
    """One update of every amplitude map, the spectra fixed: ``trial(spec, data, spectra, s, mu)``
    gives the trial amplitudes of one component, which the sweep keeps where the data term
    does not increase (:func:`frugal.xray.solver.amplitudes.amplitude_sweep`)."""

    #: Also try the EM update where an amplitude is far from its optimum (Poisson loss only).
    rescues_far: ClassVar[bool] = False

    @abc.abstractmethod
    def trial(self, spec, data, spectra, s, mu):
        """Trial amplitudes ``(A,)`` of one component, its spectra ``(A, E)`` and amplitudes ``s``."""


@piece
class NewtonAmplitudes(AmplitudeUpdate):
    """Damped projected Newton steps with the diagonal Hessian (the default)."""

    rescues_far: ClassVar[bool] = True

    def trial(self, spec, data, spectra, s, mu):
        return newton_amplitude(spec, data, spectra, s, mu)


@piece
class EMAmplitudes(AmplitudeUpdate):
    """The multiplicative (EM; weighted least squares for the Gaussian loss) update."""

    def trial(self, spec, data, spectra, s, mu):
        return multiplicative_amplitude(spec, data, spectra, s, mu)


#: Sweep orders by the name ``outer=`` takes.
OUTER_LOOPS: dict[str, type[Sweep]] = {
    "joint": JointSweep,
    "gauss-seidel": GaussSeidelSweep,
    "ipalm": InertialSweep,
}

#: Amplitude updates by the name ``amp_step=`` takes.
AMPLITUDE_STEPS: dict[str, type[AmplitudeUpdate]] = {
    "newton": NewtonAmplitudes,
    "multiplicative": EMAmplitudes,
}


@piece
class PALM:
    """SUSHI's solver: per sweep the data step in the order of ``outer``, the starlet prox
    under the monotone safeguard, then ``amp_steps`` updates of every amplitude map."""

    outer: Sweep = InertialSweep()
    amplitude: AmplitudeUpdate = NewtonAmplitudes()
    amp_steps: int = 1

    def __post_init__(self):
        for field, kind, registry in (("outer", Sweep, OUTER_LOOPS), ("amplitude", AmplitudeUpdate, AMPLITUDE_STEPS)):
            value = getattr(self, field)
            if not isinstance(value, kind) or type(value) is kind:  # the bare base is no sweep
                known = ", ".join(f"{cls.__name__}()" for cls in registry.values())
                raise TypeError(f"PALM.{field} must be an instance of {kind.__name__} such as {known}; got {value!r}")
        check_int(self.amp_steps, "amp_steps", minimum=0)
        if self.outer.latent_only and self.amp_steps == 0:
            raise ValueError("outer='gauss-seidel' moves the amplitudes in the amplitude sweeps only: "
                             "amp_steps must be >= 1")


def as_palm(solver=None, *, outer=None, amp_step=None, amp_steps=None) -> PALM:
    """The :class:`PALM` value of :func:`frugal.xray.sushi`'s options: ``solver`` itself, or
    built from ``outer`` (default ``"ipalm"``), ``amp_step`` (default ``"newton"``) and
    ``amp_steps`` (default 1). Those set the pieces only when ``solver`` is None: with a
    solver value they are an error, not options silently ignored."""
    given = [n for n, v in (("outer", outer), ("amp_step", amp_step), ("amp_steps", amp_steps)) if v is not None]
    if solver is not None:
        if not isinstance(solver, PALM):
            raise TypeError(f"solver must be None or a PALM(...) value, got {solver!r}")
        if given:
            raise ValueError(f"{' and '.join(given)} set{'s' if len(given) == 1 else ''} the pieces of the default "
                             f"solver; solver={solver!r} carries its own")
        return solver
    outer = check_choice("ipalm" if outer is None else outer, "outer", OUTER_LOOPS)
    amp_step = check_choice("newton" if amp_step is None else amp_step, "amp_step", AMPLITUDE_STEPS)
    amp_steps = 1 if amp_steps is None else check_int(amp_steps, "amp_steps", minimum=0)
    return PALM(outer=OUTER_LOOPS[outer](), amplitude=AMPLITUDE_STEPS[amp_step](), amp_steps=amp_steps)
