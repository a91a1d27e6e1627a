"""The built-in simulated gamma-ray problem of ``frugal demo gamma`` and ``frugal bench``.

Co-60, Cs-137 and Ba-133 signatures behind 0.001-30 mm of steel from the built-in simulator
(:mod:`frugal.gamma.simulate`), their joint IAE, the natural background and Poisson
mixtures at a thickness the model never saw.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

__all__ = ["BuiltinProblem", "DEMO_SOURCES", "builtin_problem"]

#: Radionuclides of the demo and their share of the expected counts (background first).
DEMO_SOURCES = {"background": 0.4, "Co60": 0.25, "Cs137": 0.2, "Ba133": 0.15}


class BuiltinProblem(NamedTuple):
    """The built-in simulated gamma problem of ``demo gamma`` and ``bench``."""

    model: object  # the joint IAEModel
    nuclides: list
    joint: np.ndarray  # (T, K, 800) unit-sum signatures over the thickness grid
    thickness: np.ndarray  # (T,) mm
    split: object  # anchors / train / test indices into the grid
    background: np.ndarray  # (800,)
    energies: np.ndarray  # (800,) keV
    edges: np.ndarray
    train_time_s: float

    def mixtures(self, thickness_mm: float, counts: float, draws: int, seed: int):
        """Poisson draws of the demo mixture at a steel thickness: ``(y, a_true, true signatures)``."""
        from frugal.gamma import simulate

        true_sig = np.stack([simulate.signature(n, thickness_mm, edges=self.edges) for n in self.nuclides])
        a_true = counts * np.array(list(DEMO_SOURCES.values()))
        rows = np.concatenate([self.background[None], true_sig])
        return simulate.mixture(rows, a_true, seed=seed, n_draws=draws), a_true, true_sig


def builtin_problem(*, epochs: int = 600, seed: int = 0, progress: bool = True) -> BuiltinProblem:
    """Simulate the demo's radionuclides behind 0.001-30 mm of steel and train their joint IAE."""
    import frugal.iae as iae
    from frugal.data import Family, split
    from frugal.gamma import simulate

    t_start = time.perf_counter()
    nuclides = [n for n in DEMO_SOURCES if n != "background"]

    # A thin anchor, a thick anchor and a regular grid between them: what a handful of Monte
    # Carlo runs would give; the mixtures' thickness is in none of them.
    thickness = np.concatenate([[0.001], np.linspace(0.75, 30.0, 40)])
    edges = simulate.bin_edges(800)
    joint = np.stack([simulate.signature(n, thickness, edges=edges) for n in nuclides], axis=1).astype(np.float32)
    bkg = simulate.background(edges)
    energies = simulate.bin_centres(edges)
    s = split(Family(None, thickness[:, None], ("thickness_mm",), None), test_fraction=0.25, seed=seed)
    print(f"simulated {len(nuclides)} radionuclides x {thickness.size} steel thicknesses (0.001-30 mm), "
          f"800 bins 18-1618 keV in {time.perf_counter() - t_start:.1f} s")
    t0 = time.perf_counter()
    model = iae.train(joint[s.train], joint[s.anchors], epochs=epochs, loss="log", seed=seed, progress=progress,
                      energy_edges=edges)
    return BuiltinProblem(model, nuclides, joint, thickness, s, bkg, energies, edges, time.perf_counter() - t0)
