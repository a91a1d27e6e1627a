"""Benchmark: does SEMSUN-i's answer depend on its start? Paper A, one IAE per radionuclide.

The steel-sphere experiment of ``gamma_semsun.py`` (Phan, Bobin, Thiam, Bobin, NIM A 1060
(2024) 169028; true signatures at thickness index 32, ``N = 100 000``), unmixed with the four
per-radionuclide IAEs (cached in ``benchmarks/results/models/``, trained there the first time)
from several starts: one start with the grid (from the first anchor, from the default), one
start without it (from the IAE's weights of the true signatures, from the first anchor), and
``unmix``'s default for several models (every start: ``latent0``, the middle, each anchor),
from the first anchor, the default, and the truth's weights. Prints the median relative
error per source against the truth beside the Oracle's (true signatures), the median
deviance and the fraction converged, and, per draw, how far each run ends above the lowest
deviance any run found. Writes ``benchmarks/results/semsun_i_starts.json``.

Run ``python benchmarks/semsun_i_starts.py`` (``--draws 60`` by default: about 4 minutes on
2 CPU cores once the IAEs are cached).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

import gamma_semsun as G
from _common import machine, write_results

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=60)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--epochs", type=int, default=1500)
    p.add_argument("--models", default=str(HERE / "results" / "models"))
    p.add_argument("--data", default=None, help="Geant4 data directory (default: as gamma_semsun.py)")
    args = p.parse_args(argv)
    if args.draws < 1:
        p.error("--draws must be >= 1")

    import frugal.iae as iae
    from frugal.gamma import io, oracle, unmix
    from frugal.gamma.simulate import mixture

    data_dir = G.find_data(args.data)
    problem = G.load_problem(data_dir)
    trained = G.train_models(problem, io.published_split(), epochs=args.epochs, cache=Path(args.models),
                             retrain=False, quiet=True)
    models = [trained["models"][n] for n in G.NUCLIDES]
    background, true = problem["background"], problem["full"][G.TRUE_INDEX]
    a_true = 1e5 * G.FRACTIONS
    y = mixture(np.concatenate([background[None], true], 0), a_true, seed=args.seed, n_draws=args.draws)
    truth_weights = [np.asarray(iae.project(m, problem["individual"][n][G.TRUE_INDEX]).latent).reshape(-1)
                     for m, n in zip(models, G.NUCLIDES)]
    first = [np.array([1.0, 0.0], np.float32)] * len(models)
    runs = {
        "one start, grid, from the first anchor": dict(latent0=first, n_starts=1),
        "one start, grid, from the default": dict(n_starts=1),
        "one start, no grid, from the truth's weights": dict(latent0=truth_weights, n_starts=1, grid_start=False),
        "one start, no grid, from the first anchor": dict(latent0=first, n_starts=1, grid_start=False),
        "default (every start), from the first anchor": dict(latent0=first),
        "default (every start), from the default": dict(),
        "default (every start), from the truth's weights": dict(latent0=truth_weights),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        results = {name: unmix(y, models, background=background, **kw) for name, kw in runs.items()}
        orc = oracle(y, dict(zip(G.NUCLIDES, true)), background=background)

    def median_error(res):
        return np.median(100.0 * (np.asarray(res.counts, float) - a_true) / a_true, axis=0)

    loss = np.stack([np.asarray(r.loss, float) for r in results.values()])
    lowest = loss.min(0)
    best_counts = np.stack([r.counts for r in results.values()])[loss.argmin(0), np.arange(args.draws)]
    report = {"experiment": "SEMSUN-i starts, paper A steel sphere, N = 100 000 (DESIGN.md 3.1)",
              "data": problem["source"], "draws": args.draws, "seed": args.seed, "epochs": args.epochs,
              "machine": machine(), "sources": list(G.SOURCES), "runs": {}}
    header = f"{'run':48s}" + "".join(f"{s:>8s}" for s in G.SOURCES) + f"{'dev':>8s}{'conv':>6s}{'above':>14s}"
    print(f"data: {problem['source']}, {args.draws} draws; median error (%), median deviance, "
          "converged, deviance above the lowest found (median, max)")
    print(header)
    rows = [("Oracle", median_error(orc), float(np.median(orc.loss)), None, None)]
    for (name, res), dev in zip(results.items(), loss):
        rows.append((name, median_error(res), float(np.median(dev)), float(np.mean(res.converged)), dev - lowest))
    rows.append(("lowest deviance of the runs above, per draw",
                 np.median(100.0 * (best_counts - a_true) / a_true, axis=0), float(np.median(lowest)), None, None))
    for name, err, dev, conv, above in rows:
        line = f"{name:48s}" + "".join(f"{v:8.2f}" for v in err) + f"{dev:8.1f}"
        line += f"{conv:6.2f}{np.median(above):7.2f}{np.max(above):7.2f}" if conv is not None else ""
        print(line)
        report["runs"][name] = {"median_error_pct": [float(v) for v in err], "median_deviance": dev,
                                "converged": conv,
                                "above_lowest_median_max": None if above is None else
                                [float(np.median(above)), float(np.max(above))]}
    print(f"wrote {write_results('semsun_i_starts', report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
