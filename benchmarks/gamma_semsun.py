"""Benchmark: SEMSUN unmixing of gamma-ray spectra, the steel-sphere experiment of the paper.

Reproduces the experiment of Phan, Bobin, Thiam, Bobin, "A hybrid Machine Learning unmixing
method for automatic analysis of gamma-spectra with spectral variability", NIM A 1060 (2024)
169028, section 3.1 of DESIGN.md:

* 800 bins of 2 keV (18-1618 keV), the published preprocessing;
* true signatures at steel thickness index 32 (5.2 mm), solvers started at index 0 (0.001 mm);
* expected counts ``a = N * [Bkg 0.5, Co60 0.2, Ba133 0.12, Co57 0.08, Cs137 0.1]``,
  ``N = 100 000`` and ``2 500``, 1000 Poisson draws each (fixed seeds);
* methods: SEMSUN-i (one IAE per radionuclide, on its first 800/250/100/400 bins),
  SEMSUN-j (one joint IAE), Oracle (true signatures), fixed (signatures at index 0),
  NMF (KL-NMF started from index 0).

The IAEs are trained on the published split (anchors at index 0 and 95, 69 training
thicknesses, 25 held out) and cached in ``benchmarks/results/models/`` (``--retrain`` to
train again). Data: the Geant4 set of the paper when found (``--data DIR``, else
``$FRUGAL_GAMMA_DATA``, else ``../shared/data/gamma_steel_geant4`` beside the checkout),
otherwise the built-in simulator (:mod:`frugal.gamma.simulate`) on the same thickness grid.

Run ``python benchmarks/gamma_semsun.py`` (about 10 minutes on 2 CPU cores, 1-2 of them
training the five IAEs the first time; the slow baselines NMF and fixed and the timing
repeats take most of the rest; ``--quick`` for a smoke run). Prints the tables and writes
``benchmarks/results/gamma_semsun.json`` (``--markdown`` also prints them in Markdown,
``--from-json`` prints those of an earlier report).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from _common import gamma_data_dir, machine

HERE = Path(__file__).resolve().parent

NUCLIDES = ("Co60", "Ba133", "Co57", "Cs137")
SOURCES = ("Bkg",) + NUCLIDES
#: Bins kept by the per-radionuclide IAEs of the paper (18 keV + 2 keV per bin).
INDIVIDUAL_BINS = {"Co60": 800, "Ba133": 250, "Co57": 100, "Cs137": 400}
#: Mixing fractions of the paper: Bkg, Co60, Ba133, Co57, Cs137.
FRACTIONS = np.array([0.5, 0.2, 0.12, 0.08, 0.1])
TRUE_INDEX, START_INDEX = 32, 0
STATISTICS = (100_000, 2_500)
METHODS = ("SEMSUN-j", "SEMSUN-i", "Oracle", "fixed", "NMF")

#: Steel thicknesses (mm) of the 96 Geant4 spectra, sorted (index 32 = 5.2 mm); the
#: simulator runs on the same grid when the Geant4 data are absent.
THICKNESSES_MM = np.array(
    [0.001, 0.01, 0.02, 0.05, 0.07] + [round(0.1 * k, 1) for k in range(1, 20)]
    + [2.0, 2.4, 2.8, 3.2, 3.6, 4.0, 4.4, 4.8, 5.2, 5.5, 5.9, 6.3, 6.7, 7.1, 7.5, 7.9, 8.3, 8.7,
       9.1, 9.5, 9.9, 10.3, 10.7, 11.1, 11.5, 11.9, 12.3, 12.6, 13.0, 13.4, 13.8, 14.2, 14.6,
       15.0, 15.4, 15.8, 16.2, 16.6, 17.0, 17.4, 17.8, 18.2, 18.6, 19.0, 19.4, 19.7, 20.1,
       20.5, 20.9, 21.3, 21.7, 22.1, 22.5, 22.9, 23.3, 23.7, 24.1, 24.5, 24.9, 25.3, 25.7,
       26.1, 26.5, 26.8, 27.2, 27.6, 28.0, 28.4, 28.8, 29.2, 29.6, 30.0]
)

#: Relative counting errors (%) published in paper A (Table of section 3.1 of DESIGN.md):
#: (median, q25, q75) per source, Bkg, Co60, Ba133, Co57, Cs137.
PUBLISHED = {
    100_000: {
        "SEMSUN-j": [(0.0, -0.7, 0.8), (-0.6, -1.4, 0.4), (0.1, -1.3, 1.5), (0.3, -0.9, 1.9), (0.5, -0.8, 2.0)],
        "Oracle": [(0.0, -0.6, 0.6), (-0.0, -0.9, 0.8), (0.1, -1.3, 1.5), (-0.1, -1.3, 1.4), (-0.0, -1.4, 1.3)],
    },
    2_500: {
        "SEMSUN-j": [(-0.4, -4.5, 4.2), (-0.3, -6.3, 5.3), (0.5, -7.7, 8.7), (0.2, -8.6, 10.0), (0.3, -8.2, 9.3)],
        "Oracle": [(0.2, -3.5, 4.0), (-0.5, -5.3, 4.5), (-0.2, -8.1, 8.2), (-0.6, -9.1, 8.8), (-0.5, -8.4, 7.8)],
    },
}
#: Median signature NMSE (dB) of SEMSUN-j in paper A, Co60/Ba133/Co57/Cs137.
PUBLISHED_SIGNATURE_NMSE = {100_000: [34.5, 35.2, 38.3, 37.5], 2_500: [28.5, 23.9, 32.6, 27.6]}
#: Median test NMSE (dB) of the individual IAEs in paper A.
PUBLISHED_IAE_NMSE = [34.0, 36.2, 39.6, 36.6]
#: Approximate bias (%) of fixed signatures at 0.001 mm quoted in paper A.
PUBLISHED_FIXED_BIAS = [40.0, -24.0, -85.0, -38.0, -22.0]


# ---------------------------------------------------------------------------------------
# Data


def find_data(explicit: str | None) -> Path | None:
    """The Geant4 directory: ``explicit``, else ``$FRUGAL_GAMMA_DATA``, else the shared copy, else None."""
    if explicit and not Path(explicit).is_dir():
        raise SystemExit(f"--data {explicit!r} is not a directory")
    return gamma_data_dir(explicit)


def load_problem(data_dir: Path | None) -> dict:
    """Unit-sum signatures of the four radionuclides over the 96 thicknesses and the background.

    Returns a dict with ``full`` ``(96, 4, 800)`` (the mixture's bins), ``individual``
    (per nuclide ``(96, n_k)``, renormalised on its own bins as in the paper),
    ``background`` ``(800,)``, ``thickness_mm`` ``(96,)``, ``energies`` ``(800,)`` and
    ``source`` (``"geant4"`` or ``"simulator"``).
    """
    from frugal.gamma import io, simulate

    if data_dir is not None:
        full, individual = [], {}
        for nuc in NUCLIDES:
            fam = io.read_family(data_dir, nuc)
            full.append(io.preprocess(fam, keep=800).spectra)
            individual[nuc] = io.preprocess(fam, keep=INDIVIDUAL_BINS[nuc]).spectra
            thickness = fam.params[:, 0]
        bkg_files = sorted(data_dir.glob("background*.txt"))
        if not bkg_files:
            raise SystemExit(f"{data_dir}: no background*.txt (measured background) found")
        bkg = io.read_background(bkg_files[0])
        background, energies = io.preprocess(bkg.counts, energies=bkg.energies, keep=800)
        source = "geant4"
    else:
        edges = simulate.bin_edges(800)
        full = [simulate.signature(nuc, THICKNESSES_MM, edges=edges) for nuc in NUCLIDES]
        individual = {}
        for nuc, s in zip(NUCLIDES, full):
            n = INDIVIDUAL_BINS[nuc]
            # the published floor at 1e-6 of the maximum, then unit sum on the kept bins
            s = np.maximum(s, 1e-6 * s.max(-1, keepdims=True))
            individual[nuc] = s[:, :n] / s[:, :n].sum(-1, keepdims=True)
        full = [np.maximum(s, 1e-6 * s.max(-1, keepdims=True)) for s in full]
        full = [s / s.sum(-1, keepdims=True) for s in full]
        background = simulate.background(edges)
        energies = simulate.bin_centres(edges)
        thickness = THICKNESSES_MM
        source = "simulator"
    full = np.stack(full, axis=1).astype(np.float32)
    if full.shape[0] != 96:
        raise SystemExit(f"expected 96 thicknesses per radionuclide, found {full.shape[0]}")
    return {
        "full": full,
        "individual": {k: v.astype(np.float32) for k, v in individual.items()},
        "background": np.asarray(background, np.float32),
        "thickness_mm": np.asarray(thickness, float),
        "energies": np.asarray(energies, float),
        "source": source,
    }


# ---------------------------------------------------------------------------------------
# Models


def train_models(problem: dict, split, *, epochs: int, cache: Path, retrain: bool, quiet: bool) -> dict:
    """Joint and per-radionuclide IAEs (cached), and their test NMSE per radionuclide."""
    import frugal.iae as iae

    cache.mkdir(parents=True, exist_ok=True)
    tag = f"{problem['source']}_e{epochs}"
    train_idx, anchors, test = split.train, split.anchors, split.test

    def get(name, x):
        path = cache / f"{tag}_{name}.frugal"
        if path.exists() and not retrain:
            model = iae.load(path)
            return model, model.info.get("train_time_s", float("nan")), True
        t0 = time.perf_counter()
        model = iae.train(x[train_idx], x[anchors], epochs=epochs, loss="log", seed=0, progress=not quiet)
        elapsed = time.perf_counter() - t0
        iae.save(model, path)
        return model, elapsed, False

    out = {"models": {}, "nmse_db": {}, "train_time_s": {}, "cached": {}}
    joint, t, cached = get("joint", problem["full"])
    out["models"]["joint"], out["train_time_s"]["joint"], out["cached"]["joint"] = joint, t, cached
    x_test = problem["full"][test]
    out["nmse_db"]["joint"] = iae.nmse_db(joint.reconstruct(x_test), x_test)  # (25, 4)
    for nuc in NUCLIDES:
        x = problem["individual"][nuc]
        model, t, cached = get(nuc, x)
        out["models"][nuc], out["train_time_s"][nuc], out["cached"][nuc] = model, t, cached
        out["nmse_db"][nuc] = iae.nmse_db(model.reconstruct(x[test]), x[test])  # (25,)
    return out


# ---------------------------------------------------------------------------------------
# Methods


def method_calls(problem: dict, models: dict) -> dict:
    """One function ``counts (D, 800) -> UnmixResult`` per method."""
    from frugal.gamma import fixed, nmf, oracle, unmix

    b = problem["background"]
    true = problem["full"][TRUE_INDEX]
    start = problem["full"][START_INDEX]
    names = list(NUCLIDES)
    individual = [models[n] for n in NUCLIDES]
    # Start every latent at thickness index 0, i.e. at the first anchor.
    at_first_anchor = [np.array([1.0, 0.0], np.float32)]
    return {
        "SEMSUN-j": lambda y: unmix(y, models["joint"], background=b, names=names, latent0=at_first_anchor),
        "SEMSUN-i": lambda y: unmix(y, individual, background=b, names=names, latent0=at_first_anchor * 4),
        "Oracle": lambda y: oracle(y, dict(zip(names, true)), background=b),
        "fixed": lambda y: fixed(y, dict(zip(names, start)), background=b),
        "NMF": lambda y: nmf(y, dict(zip(names, start)), background=b),
    }


def quartiles(x, axis=0):
    """(median, q25, q75) along ``axis``."""
    q25, q50, q75 = np.percentile(x, [25, 50, 75], axis=axis)
    return q50, q25, q75


def evaluate(res, a_true, true_rows, method) -> dict:
    """Relative errors (%), coverage of +-1 sigma, signature NMSE (SEMSUN), convergence."""
    from frugal.iae import nmse_db

    a = np.asarray(res.counts, float)
    rel = 100.0 * (a - a_true) / a_true
    med, q25, q75 = quartiles(rel)
    out = {
        "rel_err_pct": {s: [float(med[i]), float(q25[i]), float(q75[i])] for i, s in enumerate(SOURCES)},
        "coverage_1sigma": {s: float(np.mean(np.abs(a[:, i] - a_true[i]) <= res.stderr[:, i]))
                            for i, s in enumerate(SOURCES)},
        "converged": float(np.mean(res.converged)),
        # a vmapped solver loop runs until its slowest draw stops: the maximum sets the time
        "n_iter_median_p90_max": [float(np.median(res.n_iter)), float(np.percentile(res.n_iter, 90)),
                                  float(np.max(res.n_iter))],
    }
    if method.startswith("SEMSUN") or method == "NMF":
        sig = np.asarray(res.signatures, float)  # (D, 800, 5)
        nm = [nmse_db(sig[:, :, i + 1], np.broadcast_to(true_rows[i + 1], sig[:, :, i + 1].shape))
              for i in range(len(NUCLIDES))]
        out["signature_nmse_db"] = {n: [float(v) for v in quartiles(x)] for n, x in zip(NUCLIDES, nm)}
    if method.startswith("SEMSUN"):
        out["latent_median"] = [float(np.median(lam[:, 1])) for lam in res.latent]
    return out


#: Seconds spent compiling (tracing, lowering, XLA compilation), summed from JAX's own events.
COMPILE_SECONDS = {"s": 0.0}


def count_compile_time(name, seconds, **_):
    if name.startswith("/jax/core/compile/"):
        COMPILE_SECONDS["s"] += seconds


def timed(fn, y, repeats: int, budget_s: float):
    """Result, first-call time, compile time in it, steady wall times and CPU times of ``fn(y)``.

    CPU time (all threads of this process, in core-seconds) grows much less than wall time
    when other processes share the cores: on an idle machine with ``n`` cores the batch
    would take between ``cpu / n`` (perfectly parallel) and ``cpu`` (serial).

    The call is repeated ``repeats`` times after the first, fewer when the repeats would
    exceed ``budget_s`` seconds (slow baselines).
    """
    c0 = COMPILE_SECONDS["s"]
    t0 = time.perf_counter()
    res = fn(y)
    first = time.perf_counter() - t0
    compile_s = COMPILE_SECONDS["s"] - c0
    steady, cpu = [], []
    while len(steady) < repeats and (not steady or sum(steady) + steady[-1] <= budget_s):
        c0, t0 = time.process_time(), time.perf_counter()
        fn(y)
        steady.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return res, first, compile_s, steady, cpu


# ---------------------------------------------------------------------------------------
# Report


def fmt(m, q25, q75):
    return f"{m:6.1f} [{q25:6.1f}, {q75:6.1f}]"


def print_tables(report: dict) -> None:
    print()
    print(f"data: {report['data']['source']} ({report['data'].get('path') or 'built-in simulator'})")
    print("\nIAE test NMSE (dB, median [q25, q75]) on the 25 held-out thicknesses")
    print(f"{'model':10s}" + "".join(f"{n:>24s}" for n in NUCLIDES))
    for kind in ("individual", "joint"):
        row = report["iae"]["test_nmse_db"][kind]
        print(f"{kind:10s}" + "".join(f"{fmt(*row[n]):>24s}" for n in NUCLIDES))
    print(f"{'published':10s}" + "".join(f"{v:24.1f}" for v in PUBLISHED_IAE_NMSE) + "   (individual, median)")
    for n_stat, block in report["results"].items():
        n_stat = int(n_stat)
        print(f"\nN = {n_stat}: relative counting error (%), median [q25, q75], {report['draws']} draws")
        print(f"{'method':18s}" + "".join(f"{s:>24s}" for s in SOURCES))
        for method, r in block.items():
            print(f"{method:18s}" + "".join(f"{fmt(*r['rel_err_pct'][s]):>24s}" for s in SOURCES))
            if method in PUBLISHED[n_stat]:
                pub = PUBLISHED[n_stat][method]
                print(f"{'  published':18s}" + "".join(f"{fmt(*p):>24s}" for p in pub))
        print(f"{'quartile width':18s}" + "".join(f"{s:>8s}" for s in SOURCES) + "   (SEMSUN / Oracle)")
        for method in ("SEMSUN-j", "SEMSUN-i"):
            if method in block:
                ratios = report["quartile_width_ratio"][str(n_stat)][method]
                print(f"{'  ' + method:18s}" + "".join(f"{ratios[s]:8.2f}" for s in SOURCES))
        print(f"{'coverage 1 sigma':18s}" + "".join(f"{s:>8s}" for s in SOURCES))
        for method, r in block.items():
            print(f"{'  ' + method:18s}" + "".join(f"{r['coverage_1sigma'][s]:8.2f}" for s in SOURCES))
        print(f"{'signature NMSE':18s}" + "".join(f"{n:>8s}" for n in NUCLIDES) + "   (dB, median)")
        for method in ("SEMSUN-j", "SEMSUN-i", "NMF"):
            if method in block:
                sn = block[method]["signature_nmse_db"]
                print(f"{'  ' + method:18s}" + "".join(f"{sn[n][0]:8.1f}" for n in NUCLIDES))
        print(f"{'  published -j':18s}" + "".join(f"{v:8.1f}" for v in PUBLISHED_SIGNATURE_NMSE[n_stat]))
    load = report["machine"].get("load_average_1_5_15min")
    print(f"\nwall time of the {report['draws']}-draw batch in s (compile excluded, median of repeats) and "
          f"process CPU time; load average {load[0]:.1f} on {report['machine']['cpu_count']} cores at start"
          if load else "")
    print(f"{'method':12s}{'compile s':>11s}" + "".join(f"{'wall N=' + str(n):>14s}{'CPU':>8s}" for n in STATISTICS)
          + f"{'ms/draw':>9s}")
    for method, t in report["timing"].items():
        batch = [t["batch_s"].get(str(n), float("nan")) for n in STATISTICS]
        cpu = [t["batch_cpu_s"].get(str(n)) for n in STATISTICS]
        cpu = [float("nan") if c is None else c for c in cpu]
        print(f"{method:12s}{t['compile_s']:11.1f}" + "".join(f"{w:14.2f}{c:8.1f}" for w, c in zip(batch, cpu))
              + f"{1e3 * max(batch) / report['draws']:9.2f}")


def markdown(report: dict) -> str:
    """The counting-error table (measured beside published), quartile-width ratios, coverage and timings in Markdown."""
    lines = ["| N | method | " + " | ".join(SOURCES) + " |", "|---|---|" + "---|" * len(SOURCES)]
    for n_stat, block in report["results"].items():
        n_stat = int(n_stat)
        label = f"{n_stat // 1000}k" if n_stat >= 10_000 else str(n_stat)
        for method, r in block.items():
            cells = [f"{m:.1f} [{lo:.1f}, {hi:.1f}]" for m, lo, hi in (r["rel_err_pct"][s] for s in SOURCES)]
            lines.append(f"| {label} | {method} | " + " | ".join(cells) + " |")
            if method in PUBLISHED[n_stat]:
                pub = [f"{m:.1f} [{lo:.1f}, {hi:.1f}]" for m, lo, hi in PUBLISHED[n_stat][method]]
                lines.append(f"| {label} | *{method}, published* | " + " | ".join(f"*{c}*" for c in pub) + " |")
    lines += ["", "| N | quantity | " + " | ".join(SOURCES) + " |", "|---|---|" + "---|" * len(SOURCES)]
    for n_stat, block in report["results"].items():
        n_stat = int(n_stat)
        label = f"{n_stat // 1000}k" if n_stat >= 10_000 else str(n_stat)
        for method, ratios in report["quartile_width_ratio"].get(str(n_stat), {}).items():
            lines.append(f"| {label} | IQR {method} / IQR Oracle | " + " | ".join(f"{ratios[s]:.2f}" for s in SOURCES) + " |")
        for method in ("SEMSUN-j", "SEMSUN-i", "Oracle"):
            if method in block:
                cov = block[method]["coverage_1sigma"]
                lines.append(f"| {label} | coverage ±1σ {method} | " + " | ".join(f"{cov[s]:.2f}" for s in SOURCES) + " |")
    lines += ["", "| N | signature NMSE (dB, median) | " + " | ".join(NUCLIDES) + " |", "|---|---|" + "---|" * len(NUCLIDES)]
    for n_stat, block in report["results"].items():
        n_stat = int(n_stat)
        label = f"{n_stat // 1000}k" if n_stat >= 10_000 else str(n_stat)
        for method in ("SEMSUN-j", "SEMSUN-i"):
            if method in block:
                sn = block[method]["signature_nmse_db"]
                lines.append(f"| {label} | {method} | " + " | ".join(f"{sn[n][0]:.1f}" for n in NUCLIDES) + " |")
        lines.append(f"| {label} | *SEMSUN-j, published* | " + " | ".join(f"*{v:.1f}*" for v in PUBLISHED_SIGNATURE_NMSE[n_stat]) + " |")
    lines += ["", "| method | compile (s) | " + " | ".join(f"batch N={n} wall (s) | CPU (s)" for n in STATISTICS)
              + " | ms per draw (slower N) |", "|---|---|" + "---|---|" * len(STATISTICS) + "---|"]
    for method, t in report["timing"].items():
        batch = [t["batch_s"].get(str(n), float("nan")) for n in STATISTICS]
        cpu = [t.get("batch_cpu_s", {}).get(str(n)) for n in STATISTICS]
        cells = [f"{w:.2f} | {'n/a' if c is None else f'{c:.1f}'}" for w, c in zip(batch, cpu)]
        lines.append(f"| {method} | {t['compile_s']:.1f} | " + " | ".join(cells) + f" | {1e3 * max(batch) / report['draws']:.2f} |")
    return "\n".join(lines)


def machine_info() -> dict:
    info = machine()
    info["affinity_cpus"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    # other work on a shared machine slows every timing: record how busy it was
    info["load_average_1_5_15min"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return info


# ---------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="Geant4 data directory (default: $FRUGAL_GAMMA_DATA or "
                   "../shared/data/gamma_steel_geant4; the built-in simulator if none is found)")
    p.add_argument("--simulate", action="store_true", help="use the built-in simulator even if data are found")
    p.add_argument("--draws", type=int, default=None, help="Poisson draws per statistic (default: 1000)")
    p.add_argument("--epochs", type=int, default=None, help="IAE training epochs (default: 1500)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per method (default: 3)")
    p.add_argument("--time-budget", type=float, default=60.0,
                   help="seconds of timed repeats per method and statistic at most (default: %(default)s)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    p.add_argument("--retrain", action="store_true", help="train the IAEs again instead of using the cache")
    p.add_argument("--quick", action="store_true", help="smoke run: defaults of 50 draws, 200 epochs, 1 repeat")
    p.add_argument("--seed", type=int, default=2024, help="seed of the Poisson draws (default: %(default)s)")
    p.add_argument("--out", default=str(HERE / "results" / "gamma_semsun.json"), help="JSON report path")
    p.add_argument("--models", default=str(HERE / "results" / "models"), help="IAE cache folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--markdown", action="store_true", help="also print the tables in Markdown")
    p.add_argument("--from-json", default=None, metavar="PATH",
                   help="only print the tables (and Markdown) of an earlier report")
    args = p.parse_args(argv)
    for name, full, quick in (("draws", 1000, 50), ("epochs", 1500, 200), ("repeats", 3, 1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        p.error(f"--methods: unknown {unknown}; choose among {', '.join(METHODS)}")
    args.methods = methods
    for name in ("draws", "epochs"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.repeats < 0:
        p.error("--repeats must be >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
        print_tables(report)
        print("\n" + markdown(report))
        return 0
    from frugal.gamma import io
    from frugal.gamma.simulate import mixture

    import jax

    jax.monitoring.register_event_duration_secs_listener(count_compile_time)
    data_dir = None if args.simulate else find_data(args.data)
    t0 = time.perf_counter()
    problem = load_problem(data_dir)
    print(f"loaded {problem['source']} signatures in {time.perf_counter() - t0:.1f} s; "
          f"true thickness {problem['thickness_mm'][TRUE_INDEX]:g} mm, start {problem['thickness_mm'][START_INDEX]:g} mm")
    split = io.published_split()
    trained = train_models(problem, split, epochs=args.epochs, cache=Path(args.models), retrain=args.retrain,
                           quiet=args.quiet)
    models = trained["models"]
    nmse = trained["nmse_db"]
    report = {
        "experiment": "Phan et al., NIM A 1060 (2024) 169028, steel sphere (DESIGN.md 3.1)",
        "data": {"source": problem["source"], "path": None if data_dir is None else str(data_dir)},
        "machine": machine_info(),
        "draws": args.draws,
        "seed": args.seed,
        "iae": {
            "epochs": args.epochs,
            "train_time_s": trained["train_time_s"],
            "from_cache": trained["cached"],
            "test_nmse_db": {
                "individual": {n: [float(v) for v in quartiles(nmse[n])] for n in NUCLIDES},
                "joint": {n: [float(v) for v in quartiles(nmse["joint"][:, i])] for i, n in enumerate(NUCLIDES)},
                "published_individual_median": dict(zip(NUCLIDES, PUBLISHED_IAE_NMSE)),
            },
        },
        "published": {str(k): v for k, v in PUBLISHED.items()},
        "results": {},
        "timing": {},
        "quartile_width_ratio": {},
    }
    calls = method_calls(problem, models)
    true_rows = np.concatenate([problem["background"][None], problem["full"][TRUE_INDEX]], 0)
    for k, n_stat in enumerate(STATISTICS):
        a_true = n_stat * FRACTIONS
        y = mixture(true_rows, a_true, seed=args.seed + k, n_draws=args.draws)
        block = {}
        for method in args.methods:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                res, first, compile_s, steady, cpu = timed(calls[method], y, args.repeats, args.time_budget)
            t = report["timing"].setdefault(
                method, {"compile_s": 0.0, "batch_s": {}, "batch_runs_s": {}, "batch_cpu_s": {}, "first_call_s": {}})
            t["batch_cpu_s"][str(n_stat)] = float(np.median(cpu)) if cpu else None
            # the first call's run time without its compilation when it was not repeated
            batch = float(np.median(steady)) if steady else first - compile_s
            t["batch_s"][str(n_stat)] = batch
            t["batch_runs_s"][str(n_stat)] = [float(v) for v in steady]
            t["first_call_s"][str(n_stat)] = first
            t["compile_s"] += compile_s  # Oracle and fixed share one compiled program
            block[method] = evaluate(res, a_true, true_rows, method)
            print(f"N={n_stat:>6d} {method:9s} first call {first:6.1f} s (compile {compile_s:.1f} s), batch "
                  f"{batch:6.2f} s ({1e3 * batch / args.draws:.2f} ms/draw; CPU {np.median(cpu) if cpu else np.nan:.1f} s)"
                  f", converged {block[method]['converged']:.3f}", flush=True)
        report["results"][str(n_stat)] = block
        if "Oracle" in block:
            oq = {s: block["Oracle"]["rel_err_pct"][s][2] - block["Oracle"]["rel_err_pct"][s][1] for s in SOURCES}
            report["quartile_width_ratio"][str(n_stat)] = {
                m: {s: (block[m]["rel_err_pct"][s][2] - block[m]["rel_err_pct"][s][1]) / oq[s] for s in SOURCES}
                for m in ("SEMSUN-j", "SEMSUN-i") if m in block
            }
    report["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    print_tables(report)
    if args.markdown:
        print("\n" + markdown(report))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
