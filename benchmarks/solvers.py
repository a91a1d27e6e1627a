"""Benchmark: every solver variant of SEMSUN and SUSHI on the same data (``frugal.bench``).

* gamma: SEMSUN-j on the paper's steel-sphere mixture (Phan et al., NIM A 1060 (2024)
  169028; the Geant4 joint IAE of ``gamma_semsun.py``, cached in ``results/models``, or
  the built-in simulator when the Geant4 data are absent), ``--spectra`` Poisson draws at
  ``--counts`` expected counts, every variant started at the first anchor (0.001 mm), in
  float64;
* X-ray: the toy remnant cube (``--size`` pixels a side, low exposure) of
  ``xray_sushi.py``, every SUSHI variant from the same per-pixel fit.

For each variant: objective against iteration and wall time (figures
``results/solvers_gamma.png``, ``results/solvers_xray.png``), iterations and time to a
relative objective gap of 1e-4 and 1e-6 against a long reference run, final accuracy and
failures; medians of ``--repeats`` compiled runs (one for variants slower than two
minutes). Writes ``results/solvers.json``. Run ``python benchmarks/solvers.py``
(``--quick`` for a smoke run); ``frugal bench`` runs the same harness on the built-in data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from _common import RESULTS, gamma_data_dir, machine, write_results

HERE = Path(__file__).resolve().parent


def gamma_report(args):
    sys.path.insert(0, str(HERE))
    import gamma_semsun as gs

    from frugal import bench
    from frugal.gamma import io
    from frugal.gamma.simulate import mixture

    problem = gs.load_problem(gamma_data_dir(args.data))
    models = gs.train_models(problem, io.published_split(), epochs=1500, cache=RESULTS / "models", retrain=False,
                             quiet=True)["models"]
    rows = np.concatenate([problem["background"][None], problem["full"][gs.TRUE_INDEX]])
    a_true = args.counts * gs.FRACTIONS
    y = mixture(rows, a_true, seed=11, n_draws=args.spectra)
    variants = bench.GAMMA_VARIANTS if not args.variants else {
        k: v for k, v in bench.GAMMA_VARIANTS.items() if k in args.variants.split(",")}
    print(f"gamma: {args.spectra} spectra of {args.counts:g} counts ({problem['source']}), SEMSUN-j")
    rep = bench.run_gamma(y, models["joint"], background=problem["background"], true_counts=a_true,
                          names=list(gs.NUCLIDES), latent0=[np.array([1.0, 0.0], np.float32)], variants=variants,
                          max_iter=args.max_iter, repeats=args.repeats)
    rep["data"] = {"source": problem["source"], "counts": args.counts, "spectra": args.spectra,
                   "true_thickness_mm": float(problem["thickness_mm"][gs.TRUE_INDEX])}
    bench.plot_convergence(rep, RESULTS / "solvers_gamma.png",
                           f"SEMSUN-j variants: {args.spectra} spectra, {args.counts:g} counts ({problem['source']})")
    return rep


def xray_report(args):
    from frugal import bench
    from frugal.xray import simulate_cube
    from frugal.xray.commands import builtin_models

    cube = simulate_cube((args.size, args.size), exposure="low", seed=0)
    models, pmaps = builtin_models(epochs=500, seed=0, progress=False)
    print(f"xray: {args.size} x {args.size} pixels x {len(cube.energies)} channels, low exposure")
    rep = bench.run_xray(cube.counts, models, mask=cube.mask, param_maps=pmaps, names=cube.component_names,
                         truth=cube, max_iter=args.sweeps, repeats=args.repeats)
    rep["data"] = {"size": args.size, "exposure": "low"}
    bench.plot_convergence(rep, RESULTS / "solvers_xray.png", f"SUSHI variants: {args.size} x {args.size} cube")
    return rep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--problem", choices=("gamma", "xray", "all"), default="all")
    p.add_argument("--data", default=None, help="Geant4 data directory (default: found as in gamma_semsun.py)")
    p.add_argument("--spectra", type=int, default=32)
    p.add_argument("--counts", type=float, default=2500)
    p.add_argument("--max-iter", type=int, default=60)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--sweeps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", default=None, help="comma-separated gamma variant names")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.spectra, args.max_iter, args.size, args.sweeps, args.repeats = 4, 10, 16, 10, 1
    from frugal import bench

    reports = {}
    if args.problem in ("gamma", "all"):
        reports["gamma"] = gamma_report(args)
    if args.problem in ("xray", "all"):
        reports["xray"] = xray_report(args)
    for key, rep in reports.items():
        print(f"\n{key}: {rep['n_problems']} problem(s), {rep['precision']}, medians of up to {rep['repeats']} runs")
        print(bench.table(rep))
    path = write_results("solvers", {"machine": machine(), **{k: bench.public(r) for k, r in reports.items()}})
    print(f"wrote {path} and the figures results/solvers_*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
