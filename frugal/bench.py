r"""Fair comparison of solver variants: every variant on the same data, the same way.

For each variant of SEMSUN (``unmix(solver=..., a_step=..., latent_step=..., outer=...)``)
or of SUSHI (``sushi(outer=..., amp_step=...)``) the harness records

* the objective after every iteration, from the solvers' own traces (the Poisson
  deviance per spectrum for SEMSUN, the SUSHI objective per cube), run with the stopping
  rules switched off (``tol`` tiny) so that the whole convergence curve is seen;
* the wall time of that compiled run (median of ``repeats``; compilation excluded), and
  from it the time per iteration;
* the iterations and time to reach a relative objective gap

  .. math:: \frac{f_k - f^\star}{\max(|f^\star|, 1)} \le \epsilon \quad (\epsilon = 10^{-4}, 10^{-6})

  where :math:`f^\star` is, per problem, the final objective of a long reference run of the
  default solver. The problems are not convex: a variant may settle in another local
  minimum, lower (a negative gap: reached) or higher (never reached: counted as a
  failure). Reported per variant: the fraction of problems that reach the gap, the median
  and the largest number of iterations they needed, and the corresponding times (time per
  iteration of the batch times those iterations; a vmapped batch runs until its last
  problem stops);
* the final accuracy against the truth (counting errors, map errors);
* failures: non-finite objectives (divergence, NaN) and problems that never reach the gap.

Gamma runs are in float64 (``jax.enable_x64``): a relative gap of 1e-6 on a sum of hundreds
of ``y log(y / mu)`` terms is below float32 rounding. ``frugal bench`` (:mod:`frugal.cli.bench`)
runs it on the built-in simulated problems; ``benchmarks/solvers.py`` on the Geant4 data of the paper.
"""

from __future__ import annotations

import inspect
import time
from typing import Callable, NamedTuple

import numpy as np

#: Relative objective gaps reported.
GAPS = (1e-4, 1e-6)

#: SEMSUN variants by name: keyword arguments of :func:`frugal.gamma.unmix`.
GAMMA_VARIANTS = {
    "newton": dict(solver="newton"),
    "bcd mult+newton gs": dict(solver="bcd"),
    "bcd newton+newton gs": dict(solver="bcd", a_step="newton"),
    "bcd fista+newton gs": dict(solver="bcd", a_step="fista"),
    "bcd mult+pg gs": dict(solver="bcd", latent_step="pg"),
    "bcd mult+lbfgsb gs": dict(solver="bcd", latent_step="lbfgsb"),
    "bcd mult+adam gs": dict(solver="bcd", latent_step="adam"),
    "bcd mult+newton jacobi": dict(solver="bcd", outer="jacobi"),
    "bcd mult+newton ipalm": dict(solver="bcd", outer="ipalm"),
}

#: SUSHI variants by name: keyword arguments of :func:`frugal.xray.sushi`.
XRAY_VARIANTS = {
    "joint newton": dict(outer="joint", amp_step="newton"),
    "joint mult": dict(outer="joint", amp_step="multiplicative"),
    "gauss-seidel newton": dict(outer="gauss-seidel", amp_step="newton"),
    "gauss-seidel mult": dict(outer="gauss-seidel", amp_step="multiplicative"),
    "ipalm newton": dict(outer="ipalm", amp_step="newton"),
    "ipalm mult": dict(outer="ipalm", amp_step="multiplicative"),
}


class VariantRun(NamedTuple):
    """One variant on the benchmark data.

    trace: ``(P, T)`` objective per problem at the start and after each iteration (NaN after
      the stop); n_iter: ``(P,)``; seconds: wall times of the timed repeats; accuracy: a
      dict of error figures against the truth; options: the keyword arguments used.
    """

    name: str
    options: dict
    trace: np.ndarray
    n_iter: np.ndarray
    seconds: list
    accuracy: dict


# ---------------------------------------------------------------------------------------
# Convergence figures


def relative_gap(trace, best):
    """``(f_k - f*) / max(|f*|, 1)`` per problem (rows) and iteration (columns)."""
    trace = np.asarray(trace, np.float64)
    best = np.asarray(best, np.float64)[:, None]
    return (trace - best) / np.maximum(np.abs(best), 1.0)


def iterations_to_gap(trace, best, gap: float) -> np.ndarray:
    """First iteration at which each problem's relative gap is at most ``gap`` (-1: never)."""
    ok = relative_gap(trace, best) <= gap
    first = np.argmax(ok, axis=1)
    return np.where(ok.any(axis=1), first, -1)


def reference_objective(trace, n_iter) -> np.ndarray:
    """Per problem, the final objective of the reference run (``f*`` of the module doc)."""
    return _last(trace, n_iter).astype(np.float64)


def summarise(run: VariantRun, best) -> dict:
    """Figures of one run against the reference objective ``best`` (see the module doc)."""
    seconds = float(np.median(run.seconds))
    iters = int(np.max(run.n_iter))
    per_iter = seconds / max(iters, 1)
    finite = np.isfinite(run.trace)
    diverged = int(np.sum(~np.all(finite | np.isnan(run.trace), axis=1)))
    nan_rows = int(np.sum([np.any(np.isnan(row[: n + 1])) for row, n in zip(run.trace, run.n_iter)]))
    out = {
        "options": run.options,
        "seconds_median": seconds,
        "seconds_all": [float(s) for s in run.seconds],
        "iterations_max": iters,
        "iterations_median": float(np.median(run.n_iter)),
        "seconds_per_iteration": per_iter,
        "final_gap_median": float(np.median(relative_gap(_last(run.trace, run.n_iter)[:, None], best))),
        "failures": {"non_finite": diverged + nan_rows},
        "accuracy": run.accuracy,
    }
    for gap in GAPS:
        k = iterations_to_gap(run.trace, best, gap)
        reached = k >= 0
        key = f"{gap:.0e}"
        out[f"reached_{key}"] = float(np.mean(reached))
        out[f"iterations_to_{key}_median"] = float(np.median(k[reached])) if reached.any() else None
        out[f"iterations_to_{key}_max"] = int(k[reached].max()) if reached.any() else None
        out[f"seconds_to_{key}_median"] = per_iter * float(np.median(k[reached])) if reached.any() else None
        out[f"seconds_to_{key}_max"] = per_iter * int(k[reached].max()) if reached.any() else None
        out["failures"][f"not_reaching_{key}"] = int(np.sum(~reached))
    held = _held(run.trace, run.n_iter)
    out["median_gap_per_iteration"] = np.median(relative_gap(held, best), axis=0).tolist()
    return out


def _last(trace, n_iter):
    return np.asarray(trace)[np.arange(len(n_iter)), np.asarray(n_iter)]


def _held(trace, n_iter):
    """The trace with each problem's final objective held after its stop (for curves of a
    batch: a problem that has stopped stays where it stopped)."""
    trace = np.array(trace, np.float64)
    cols = np.arange(trace.shape[1])[None, :]
    return np.where(cols > np.asarray(n_iter)[:, None], _last(trace, n_iter)[:, None], trace)


#: Seconds spent compiling, summed from JAX's own monitoring events.
_COMPILE = {"s": 0.0, "listening": False}


def _on_event(name, seconds, **_):
    if name.startswith("/jax/core/compile/"):
        _COMPILE["s"] += seconds


def _timed(fn: Callable, repeats: int, budget_s: float = 120.0):
    """Result and wall times of ``repeats`` compiled calls of ``fn()``. The first call
    compiles; when it runs longer than ``budget_s`` beyond its compilation, its time less
    the compilation is the only one taken (the slowest variants run once)."""
    import jax

    if not _COMPILE["listening"]:
        jax.monitoring.register_event_duration_secs_listener(_on_event)
        _COMPILE["listening"] = True
    c0, t0 = _COMPILE["s"], time.perf_counter()
    res = fn()
    first = time.perf_counter() - t0 - (_COMPILE["s"] - c0)
    if first > budget_s:
        return res, [first]
    times = []
    while len(times) < repeats and (not times or sum(times) + times[-1] <= budget_s):
        t0 = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t0)
    return res, times


# ---------------------------------------------------------------------------------------
# Gamma: SEMSUN variants


def run_gamma(counts, models, *, background, true_counts, names=None, latent0=None, variants=None,
              max_iter: int = 100, reference_iter: int = 400, repeats: int = 3, log=print) -> dict:
    """Every SEMSUN variant on the spectra ``counts`` ``(B, m)``; returns a report dict.

    true_counts: ``(K,)`` expected counts of the sources (background first) for the
    counting errors. Runs in float64 (module doc).
    """
    import jax

    from frugal.gamma import unmix

    variants = GAMMA_VARIANTS if variants is None else variants
    counts = np.asarray(counts)
    true_counts = np.asarray(true_counts, np.float64)
    common = dict(background=background, names=names, latent0=latent0, return_signatures=False,
                  return_trace=True)
    runs = []
    with jax.enable_x64(True):
        ref = unmix(counts, models, **common, solver="newton", max_iter=reference_iter, tol=1e-14)
        log(f"reference: newton, {reference_iter} iterations max, ran {int(ref.n_iter.max())}")
        for name, options in variants.items():
            res, seconds = _timed(lambda: unmix(counts, models, **common, **options, max_iter=max_iter, tol=1e-14),
                                  repeats)
            rel = 100.0 * (res.counts - true_counts) / true_counts
            accuracy = {"rel_err_pct_median": np.median(rel, 0).tolist(),
                        "rel_err_pct_iqr": np.subtract(*np.percentile(rel, [75, 25], 0)).tolist(),
                        "abs_rel_err_pct_median": float(np.median(np.abs(rel)))}
            runs.append(VariantRun(name, options, res.trace, res.n_iter, seconds, accuracy))
            log(f"{name:26s} {np.median(seconds):7.2f} s  {int(res.n_iter.max()):4d} it")
    best = reference_objective(ref.trace, ref.n_iter)
    return {
        "problem": "gamma", "n_problems": int(len(counts)), "precision": "float64",
        "objective": "Poisson deviance per spectrum", "max_iter": max_iter, "repeats": repeats,
        "reference": {"solver": "newton", "max_iter": reference_iter, "iterations_max": int(ref.n_iter.max())},
        "source_names": list(ref.names),
        "variants": {r.name: summarise(r, best) for r in runs},
    }


# ---------------------------------------------------------------------------------------
# X-ray: SUSHI variants


def _default_variant(fn, keys) -> str:
    """The default variant of ``fn`` in the harness's naming, e.g. ``"ipalm newton"``."""
    params = inspect.signature(inspect.unwrap(fn)).parameters
    return " ".join(str(params[k].default) for k in keys)


def run_xray(cube, models, *, mask=None, param_maps=None, names=None, truth=None, variants=None,
             max_iter: int = 60, reference_iter: int = 400, repeats: int = 3, log=print) -> dict:
    """Every SUSHI variant from the same per-pixel start on one cube; returns a report dict.

    truth: a simulated cube (:func:`frugal.xray.simulate_cube`) for the map errors, or None.
    SUSHI runs in float32: the 1e-6 gap may sit below its rounding (reported as not reached).
    """
    from frugal.xray import fit_pixels, sushi
    from frugal.xray.report import map_errors

    variants = XRAY_VARIANTS if variants is None else variants
    common = dict(mask=mask, param_maps=param_maps, names=names)
    start = fit_pixels(cube, models, **common)
    ref = sushi(cube, models, **common, init=start, max_iter=reference_iter, tol=0.0)
    log(f"reference: SUSHI default, {reference_iter} sweeps max, ran {int(ref.n_iter)}")
    runs = []
    for name, options in variants.items():
        res, seconds = _timed(lambda: sushi(cube, models, **common, **options, init=start, max_iter=max_iter, tol=0.0),
                              repeats)
        accuracy = map_errors(res, truth) if truth is not None else {}
        runs.append(VariantRun(name, options, np.asarray(res.objective)[None], np.atleast_1d(res.n_iter), seconds,
                               accuracy))
        log(f"{name:26s} {np.median(seconds):7.2f} s  {int(res.n_iter):4d} sweeps")
    best = reference_objective(np.asarray(ref.objective)[None], np.atleast_1d(ref.n_iter))
    return {
        "problem": "xray", "n_problems": 1, "precision": "float32", "objective": "SUSHI objective F",
        "max_iter": max_iter, "repeats": repeats,
        "reference": {"variant": _default_variant(sushi, ("outer", "amp_step")), "max_iter": reference_iter,
                      "iterations_max": int(ref.n_iter)},
        "variants": {r.name: summarise(r, best) for r in runs},
        # private (not in :func:`public`): the runs themselves, to re-summarise against
        # another objective (``benchmarks/solvers.py --draws``: the best any run found)
        "_runs": runs, "_reference_trace": np.asarray(ref.objective)[None],
    }


# ---------------------------------------------------------------------------------------
# Report


def table(report: dict) -> str:
    """The report as a plain-text table (one row per variant)."""
    head = (f"{'variant':26s}{'time s':>9s}{'it':>5s}{'gap end':>9s}{'it->1e-4':>10s}{'s->1e-4':>9s}"
            f"{'it->1e-6':>10s}{'s->1e-6':>9s}{'reach':>7s}{'nan':>5s}  accuracy")
    lines = [head, "-" * len(head)]

    def num(v, f):
        return f"{v:{f}}" if v is not None else "-"

    for name, v in report["variants"].items():
        acc = v["accuracy"]
        if "abs_rel_err_pct_median" in acc:
            acc_s = f"|err| {acc['abs_rel_err_pct_median']:.2f} %"
        else:
            acc_s = ", ".join(f"{k.replace('_mae', '')} {x:.3g}" for k, x in acc.items() if k.endswith("_mae"))
        lines.append(
            f"{name:26s}{v['seconds_median']:9.2f}{v['iterations_max']:5d}{v['final_gap_median']:9.1e}"
            f"{num(v['iterations_to_1e-04_median'], '10.0f'):>10s}{num(v['seconds_to_1e-04_median'], '9.2f'):>9s}"
            f"{num(v['iterations_to_1e-06_median'], '10.0f'):>10s}{num(v['seconds_to_1e-06_median'], '9.2f'):>9s}"
            f"{v['reached_1e-06']:7.2f}{v['failures']['non_finite']:5d}  {acc_s}"
        )
    lines.append("(medians over the problems; gap end: final relative gap to the reference; it/s->gap: "
                 "iterations / seconds to reach it; reach: fraction reaching 1e-6)")
    return "\n".join(lines)


def plot_convergence(report: dict, path, title: str = ""):
    """Median relative gap against iteration and against wall time, one line per variant."""
    from frugal.plotting import figure

    fig = figure(figsize=(11, 4.2))
    ax_it, ax_t = fig.subplots(1, 2)
    floor = 1e-12
    curves = {name: (np.asarray(v["median_gap_per_iteration"]), v["seconds_per_iteration"])
              for name, v in report["variants"].items()}
    for name, (gap, per_iter) in curves.items():
        med = np.maximum(gap, floor)
        k = np.arange(len(med))
        ax_it.semilogy(k, med, label=name)
        ax_t.semilogy(k * per_iter, med, label=name)
    for ax in (ax_it, ax_t):
        for g in GAPS:
            ax.axhline(g, color="0.6", lw=0.8, ls=":")
        ax.set_ylabel("relative objective gap (median)")
        ax.set_ylim(floor, None)
    ax_it.set_xlabel("iteration")
    # Variants differ in time per iteration by orders of magnitude.
    ax_t.set_xscale("symlog", linthresh=min(p for _, p in curves.values()) or 1e-3)
    ax_t.set_xlim(left=0.0)
    ax_t.set_xlabel("wall time (s, compiled; the batch)")
    ax_t.legend(fontsize=7, loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def public(report: dict) -> dict:
    """The report as it goes to JSON (everything but private keys)."""
    return {k: v for k, v in report.items() if not k.startswith("_")}


__all__ = [
    "GAMMA_VARIANTS",
    "GAPS",
    "VariantRun",
    "XRAY_VARIANTS",
    "reference_objective",
    "iterations_to_gap",
    "plot_convergence",
    "public",
    "relative_gap",
    "run_gamma",
    "run_xray",
    "summarise",
    "table",
]
