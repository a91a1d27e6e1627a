"""Benchmark: frugal's SEMSUN against an independent NumPy/SciPy reimplementation, same spectra.

The reference (``benchmarks/reference/semsun_numpy.py``) is the published block coordinate
descent of Phan, Bobin, Thiam, Bobin, NIM A 1060 (2024) 169028, one spectrum at a time:
multiplicative Poisson updates of the counts, SLSQP with finite differences on the
barycentric weights, a NumPy forward pass of the same trained dense IAEs. frugal's
:func:`frugal.gamma.unmix` (Newton from one start, ``solver="bcd"`` and Newton with
``n_starts=3``) solves a batch of
spectra in one compiled, vmapped call.

Setting: the steel-sphere experiment of ``gamma_semsun.py`` (the Geant4 joint and individual
IAEs cached in ``benchmarks/results/models/``, true signatures at thickness index 32, start
at index 0, ``a = N * [0.5, 0.2, 0.12, 0.08, 0.1]``, N = 100 000 and 2 500) when the Geant4 data
are found; otherwise the same experiment on the built-in simulator's families
(:mod:`frugal.gamma.simulate`, steel sphere on the same 96 thicknesses); the JSON says which.

For each method (SEMSUN-j, SEMSUN-i) and statistic, one set of Poisson draws: the reference
unmixes the first ``--n-reference`` of them (wall time per spectrum, median), frugal the whole
batch of ``--batch`` (compiled first; median of ``--repeats`` calls, divided by the batch
size). Reported: the speed-up (reference time per spectrum / frugal time per spectrum) and
the agreement on the common spectra: ``|counts_ref - counts_frugal| / stderr`` (frugal's
Fisher standard errors) and the deviance difference ``D_frugal - D_ref`` (both evaluated
with the reference's float64 forward model).

Run ``python benchmarks/speedup.py`` (``--quick`` for a smoke run). Prints a table and writes
``benchmarks/results/speedup.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import gamma_semsun as G
from _common import write_results
from reference import semsun_numpy as R

HERE = Path(__file__).resolve().parent
METHODS = ("SEMSUN-j", "SEMSUN-i")
# frugal settings compared: Newton from one start (the default for one joint model; several
# models default to every start), the published block scheme, Newton from 3 starts.
SOLVERS = {"newton": {"n_starts": 1}, "bcd": {"solver": "bcd", "n_starts": 1}, "newton-3starts": {"n_starts": 3}}
FALLBACK = ("frugal.gamma.simulate steel-sphere signatures of Co60, Ba133, Co57, Cs137 and the simulated "
            "background on the 96 thicknesses of gamma_semsun.THICKNESSES_MM")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="Geant4 data directory (default: $FRUGAL_GAMMA_DATA or "
                   "../shared/data/gamma_steel_geant4; the built-in simulator if none is found)")
    p.add_argument("--simulate", action="store_true", help="use the built-in simulator even if data are found")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    p.add_argument("--solvers", default=",".join(SOLVERS), help="frugal solvers (default: %(default)s)")
    p.add_argument("--statistics", default=None,
                   help="total expected counts N, comma-separated (default: 100000,2500; quick: 100000)")
    p.add_argument("--n-reference", type=int, default=None,
                   help="spectra unmixed by the reference per method and N (default: 20; quick: 3)")
    p.add_argument("--batch", type=int, default=None, help="frugal batch size (default: 1000; quick: 20)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed frugal calls after the compiling one (default: 3; quick: 1; 0: the first call "
                        "less its compile time)")
    p.add_argument("--time-budget", type=float, default=300.0,
                   help="seconds of timed repeats per method, N and solver at most (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=None,
                   help="IAE training epochs (default: 1500, the cached models of gamma_semsun.py; quick: 1500 "
                        "if cached, else 200)")
    p.add_argument("--ref-tol", type=float, default=1e-4, help="outer tolerance of the reference (published: 1e-4)")
    p.add_argument("--tol", type=float, default=1e-5, help="tolerance of frugal's unmix (its default: 1e-5)")
    p.add_argument("--fd-step", type=float, default=None,
                   help="finite-difference step of the reference's SLSQP (default: SciPy's)")
    p.add_argument("--seed", type=int, default=7, help="seed of the Poisson draws (default: %(default)s)")
    p.add_argument("--models", default=str(HERE / "results" / "models"), help="IAE cache folder")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: N = 100000 only, 3 reference spectra, batch 20, 1 repeat")
    args = p.parse_args(argv)
    for name, full, quick in (("n_reference", 20, 3), ("batch", 1000, 20), ("repeats", 3, 1),
                              ("statistics", "100000,2500", "100000")):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        p.error(f"--methods: unknown {unknown}; choose among {', '.join(METHODS)}")
    args.solvers = [s.strip() for s in args.solvers.split(",") if s.strip()]
    if not args.solvers or set(args.solvers) - set(SOLVERS):
        p.error(f"--solvers: choose among {', '.join(SOLVERS)}")
    args.statistics = [int(float(s)) for s in args.statistics.split(",") if s.strip()]
    if args.n_reference < 1 or args.batch < args.n_reference or args.repeats < 0:
        p.error("need --n-reference >= 1, --batch >= --n-reference and --repeats >= 0")
    return args


def _summary(x) -> dict:
    x = np.asarray(x, float).ravel()
    return {"median": float(np.median(x)), "p90": float(np.percentile(x, 90)), "max": float(np.max(x))}


def print_table(report: dict, rows: list, args) -> None:
    load = report["machine"].get("load_average_1_5_15min")
    print(f"\ndata: {report['data']['source']}; reference on {args.n_reference} spectra, frugal on batches of "
          f"{args.batch}; ms per spectrum" + (f"; load average {load[0]:.1f} at start" if load else ""))
    head = f"{'method':9s}{'N':>8s}{'ref ms':>9s}{'dec/spec':>9s}"
    for sv in args.solvers:
        head += f"{sv + ' ms':>{max(11, len(sv) + 4)}s}{'speed-up':>9s}{'|da|/se':>9s}{'dD':>8s}{'worse':>7s}"
    print(head)
    for method, n_stat, e in rows:
        line = f"{method:9s}{n_stat:8d}{1e3 * e['reference']['per_spectrum_s']:9.1f}{e['reference']['n_decode']['median']:9.0f}"
        for sv in args.solvers:
            r = e[sv]
            line += (f"{1e3 * r['per_spectrum_s']:{max(11, len(sv) + 4)}.2f}{r['speedup']:9.1f}"
                     f"{r['abs_diff_over_stderr']['median']:9.3f}{r['deviance_minus_reference']['median']:8.3f}"
                     f"{r['share_worse_than_reference_by_0.1']:7.2f}")
        print(line)
    print("dec/spec: decoder evaluations per spectrum of the reference (median); |da|/se: median over the common "
          "spectra and sources of |counts_ref - counts_frugal| / frugal's stderr; dD: median of D_frugal - D_ref; "
          "worse: share of spectra with D_frugal > D_ref + 0.1")


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax

    from frugal.gamma import io, unmix
    from frugal.gamma.simulate import mixture

    jax.monitoring.register_event_duration_secs_listener(G.count_compile_time)  # compile time of first calls
    data_dir = None if args.simulate else G.find_data(args.data)
    problem = G.load_problem(data_dir)
    cache = Path(args.models)
    if args.epochs is None:
        cached = (cache / f"{problem['source']}_e1500_joint.frugal").exists()
        args.epochs = 1500 if (cached or not args.quick) else 200
    t0 = time.perf_counter()
    trained = G.train_models(problem, io.published_split(), epochs=args.epochs, cache=cache, retrain=False,
                             quiet=True)
    print(f"data: {problem['source']}; IAEs ({args.epochs} epochs) ready in {time.perf_counter() - t0:.1f} s",
          flush=True)
    models = trained["models"]
    setups = {
        "SEMSUN-j": ([models["joint"]], [np.array([1.0, 0.0])]),
        "SEMSUN-i": ([models[n] for n in G.NUCLIDES], [np.array([1.0, 0.0])] * len(G.NUCLIDES)),
    }
    background = problem["background"]
    true_rows = np.concatenate([background[None], problem["full"][G.TRUE_INDEX]], 0)
    ref_settings = {"tol": args.ref_tol, "fd_step": args.fd_step}

    report = {
        "benchmark": "frugal.gamma.unmix vs the NumPy/SciPy reference of the published SEMSUN (same spectra)",
        "paper": "Phan, Bobin, Thiam, Bobin, NIM A 1060 (2024) 169028",
        "data": {"source": problem["source"], "path": None if data_dir is None else str(data_dir),
                 "fallback_family": None if problem["source"] == "geant4" else FALLBACK},
        "machine": G.machine_info(),
        "quick": bool(args.quick),
        "settings": {
            "n_reference": args.n_reference, "batch": args.batch, "repeats": args.repeats,
            "time_budget_s": args.time_budget, "epochs": args.epochs,
            "seed": args.seed, "start_latent": [1.0, 0.0], "true_index": G.TRUE_INDEX,
            "fractions": G.FRACTIONS.tolist(),
            "reference": {"tol": args.ref_tol, "a_iter": 1000, "a_tol": 1e-6, "slsqp_ftol": 1e-8,
                          "slsqp_maxiter": 1000, "fd_step": args.fd_step or "scipy default (sqrt(eps))",
                          "dtype": "float64", "blas_threads_env": os.environ.get("OMP_NUM_THREADS")},
            "frugal": {"tol": args.tol, "solvers": args.solvers, "dtype": "float32"},
        },
        "results": {},
    }
    rows = []
    for method in args.methods:
        mods, latent0 = setups[method]
        nets = R.as_numpy_models(mods)
        report["results"][method] = {}
        for k, n_stat in enumerate(args.statistics):
            y = mixture(true_rows, n_stat * G.FRACTIONS, seed=args.seed + k, n_draws=args.batch)
            entry = {}
            # reference, one spectrum at a time
            refs, ref_cpu = [], []
            for yj in y[: args.n_reference]:
                c0 = time.process_time()
                refs.append(R.unmix(yj, nets, background=background, latent0=latent0, **ref_settings))
                ref_cpu.append(time.process_time() - c0)
            ref_times = [r.time_s for r in refs]
            t_ref = statistics.median(ref_times)
            entry["reference"] = {
                "per_spectrum_s": t_ref, "per_spectrum_runs_s": ref_times,
                "per_spectrum_cpu_s": statistics.median(ref_cpu),
                "n_iter": _summary([r.n_iter for r in refs]), "n_decode": _summary([r.n_decode for r in refs]),
                "converged": float(np.mean([r.converged for r in refs])),
            }
            ref_counts = np.stack([r.counts for r in refs])
            ref_dev = np.array([r.deviance for r in refs])
            for solver in args.solvers:
                def call(counts, solver=solver):
                    return unmix(counts, mods, background=background, latent0=latent0, tol=args.tol,
                                 **SOLVERS[solver])

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    res, first, compile_s, runs, cpu = G.timed(call, y, args.repeats, args.time_budget)
                # the first call's run time without its compilation when it was not repeated
                batch_s = statistics.median(runs) if runs else first - compile_s
                n = args.n_reference
                ratio = np.abs(ref_counts - res.counts[:n]) / res.stderr[:n]
                dev = np.array([R.model_deviance(y[j], nets, res.counts[j], [lam[j] for lam in res.latent],
                                                 background=background) for j in range(n)])
                per = batch_s / args.batch
                entry[solver] = {
                    "first_call_s": first, "compile_s": compile_s, "batch_s": batch_s, "batch_runs_s": runs,
                    "batch_cpu_s": cpu, "per_spectrum_s": per,
                    "speedup": t_ref / per,
                    "converged": float(np.mean(res.converged)), "n_iter": _summary(res.n_iter),
                    "abs_diff_over_stderr": _summary(ratio),
                    "deviance_minus_reference": _summary(dev - ref_dev) | {"min": float(np.min(dev - ref_dev))},
                    "share_worse_than_reference_by_0.1": float(np.mean(dev - ref_dev > 0.1)),
                    "share_better_than_reference_by_0.1": float(np.mean(dev - ref_dev < -0.1)),
                }
            report["results"][method][str(n_stat)] = entry
            rows.append((method, n_stat, entry))
            print(f"{method} N={n_stat}: reference {1e3 * t_ref:.1f} ms/spectrum; frugal "
                  + ", ".join(f"{sv} {1e3 * entry[sv]['per_spectrum_s']:.2f} (first call {entry[sv]['first_call_s']:.1f} s)"
                              for sv in args.solvers), flush=True)
    report["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    print_table(report, rows, args)
    path = write_results("speedup", report)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
