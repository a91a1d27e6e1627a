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

``--problem xray --draws K`` (K > 1) runs the X-ray report on the cubes of seeds 0..K-1
(the same models) and writes ``results/solvers_xray_draws.json`` instead (no figure): per
draw the report and every variant's gaps against the best objective that any run (the
reference or a variant, at any sweep) found on that draw, and per variant the medians and
maxima over the draws.
"""

from __future__ import annotations

import argparse
import sys
import time
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


def xray_report(args, seed=0, models=None, plot=True):
    from frugal import bench
    from frugal.xray import simulate_cube
    from frugal.xray.builtin import builtin_models

    cube = simulate_cube((args.size, args.size), exposure="low", seed=seed)
    models, pmaps = models or builtin_models(epochs=500, seed=0, progress=False)
    print(f"xray: {args.size} x {args.size} pixels x {len(cube.energies)} channels, low exposure, seed {seed}")
    rep = bench.run_xray(cube.counts, models, mask=cube.mask, param_maps=pmaps, names=cube.component_names,
                         truth=cube, max_iter=args.sweeps, repeats=args.repeats)
    rep["data"] = {"size": args.size, "exposure": "low"} | ({"seed": seed} if seed else {})
    if plot:
        bench.plot_convergence(rep, RESULTS / "solvers_xray.png", f"SUSHI variants: {args.size} x {args.size} cube")
    return rep


def xray_draws(args):
    """The X-ray report on ``args.draws`` cubes, gaps against the best objective found per draw."""
    from frugal import bench
    from frugal.xray.builtin import builtin_models

    models = builtin_models(epochs=500, seed=0, progress=False)
    draws, gap_keys = [], [f"{g:.0e}" for g in bench.GAPS]
    for seed in range(args.draws):
        t0 = time.perf_counter()
        rep = xray_report(args, seed=seed, models=models, plot=False)
        runs = rep["_runs"]
        best = min(float(np.nanmin(t)) for t in [rep["_reference_trace"], *(r.trace for r in runs)])
        vs_best = {r.name: bench.summarise(r, np.array([best])) for r in runs}
        draws.append({
            "seed": seed, "seconds": time.perf_counter() - t0, "best_objective": best,
            "reference_objective": float(bench.reference_objective(rep["_reference_trace"],
                                                                   [rep["reference"]["iterations_max"]])[0]),
            "vs_best": {n: {k: v[k] for k in ("final_gap_median", "seconds_per_iteration", "iterations_max",
                                              *(f"iterations_to_{g}_median" for g in gap_keys))}
                        for n, v in vs_best.items()},
            "report": bench.public(rep)})
        print(f"draw {seed}: {draws[-1]['seconds']:.0f} s; final gap to the best found: "
              + ", ".join(f"{n} {v['final_gap_median']:.1e}" for n, v in vs_best.items()), flush=True)
    aggregate = {}
    for name in draws[0]["vs_best"]:
        per = [d["vs_best"][name] for d in draws]
        gaps = [p["final_gap_median"] for p in per]
        row = {"final_gap_median": float(np.median(gaps)), "final_gap_max": float(np.max(gaps)),
               "lowest_final_on_draws": sum(min(d["vs_best"], key=lambda n: d["vs_best"][n]["final_gap_median"])
                                            == name for d in draws),
               "seconds_per_sweep_median": float(np.median([p["seconds_per_iteration"] for p in per]))}
        for g in gap_keys:
            ks = [p[f"iterations_to_{g}_median"] for p in per]
            hit = [k for k in ks if k is not None]
            row[f"sweeps_to_{g}"] = ks
            row[f"sweeps_to_{g}_reached"] = len(hit)
            row[f"sweeps_to_{g}_median"] = float(np.median(hit)) if hit else None
            row[f"sweeps_to_{g}_max"] = float(np.max(hit)) if hit else None
        accs = [d["report"]["variants"][name]["accuracy"] for d in draws]
        row["map_errors_median"] = {k: float(np.median([a[k] for a in accs])) for k in accs[0]}
        aggregate[name] = row
    return {"draws": draws, "aggregate": aggregate, "n_draws": args.draws, "size": args.size, "sweeps": args.sweeps,
            "gap": "(f_final - f_best) / max(|f_best|, 1), f_best: the lowest objective of any run on the draw"}


def draws_table(agg: dict, n: int) -> str:
    """The aggregate of :func:`xray_draws` as text: convergence, then the median map errors."""
    def fmt(v, f):
        return "-" if v is None else f"{v:{f}}"

    ref = agg.get("joint newton", next(iter(agg.values())))["seconds_per_sweep_median"]
    head = (f"{'variant':24s}{'gap med':>9s}{'gap max':>9s}{'->1e-4 med/max (n)':>20s}"
            f"{'->1e-6 med/max (n)':>20s}{'s/sweep':>9s}{'ratio':>7s}{'lowest':>8s}")
    lines = [head, "-" * len(head)]
    for name, r in agg.items():
        cols = "".join(f"{fmt(r[f'sweeps_to_{g}_median'], '.0f') + '/' + fmt(r[f'sweeps_to_{g}_max'], '.0f')}"
                       f" ({r[f'sweeps_to_{g}_reached']}/{n})".rjust(20) for g in ("1e-04", "1e-06"))
        lines.append(f"{name:24s}{r['final_gap_median']:9.1e}{r['final_gap_max']:9.1e}{cols}"
                     f"{r['seconds_per_sweep_median']:9.3f}{r['seconds_per_sweep_median'] / ref:7.2f}"
                     f"{r['lowest_final_on_draws']:>6d}/{n}")
    keys = list(next(iter(agg.values()))["map_errors_median"])
    short = [k.replace("_amplitude_nmse_db", " amp dB").replace("_cube_nmse_db", " cube dB").replace("_mae", " mae")
             .replace("synchrotron", "sync").replace("thermal", "th").replace("photon_index", "gamma") for k in keys]
    lines += ["", f"{'median map errors':24s}" + "".join(f"{s:>13s}" for s in short)]
    lines += [f"{name:24s}" + "".join(f"{r['map_errors_median'][k]:13.4g}" for k in keys) for name, r in agg.items()]
    lines.append(f"(medians / maxima over {n} draws; gap: final objective against the best any run found on the draw; "
                 "->gap: sweeps, (n): draws reaching it; ratio: s/sweep over joint newton's; lowest: draws where "
                 "the variant ends lowest; NMSE dB: higher is better, mae: lower is better)")
    return "\n".join(lines)


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
    p.add_argument("--draws", type=int, default=1, help="X-ray cubes (seeds 0..K-1); K > 1 needs --problem xray "
                   "and writes results/solvers_xray_draws.json")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.spectra, args.max_iter, args.size, args.sweeps, args.repeats = 4, 10, 16, 10, 1
    from frugal import bench

    if args.draws > 1:
        if args.problem != "xray":
            p.error("--draws > 1 needs --problem xray")
        t0 = time.perf_counter()
        out = xray_draws(args)
        print(f"\nxray: {args.draws} draws of {args.size} x {args.size}, {args.sweeps} sweeps, "
              f"{time.perf_counter() - t0:.0f} s in all\n" + draws_table(out["aggregate"], args.draws))
        print(f"wrote {write_results('solvers_xray_draws', {'machine': machine(), 'xray_draws': out})}")
        return 0

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
