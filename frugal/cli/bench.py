"""``frugal bench``: its parser and handler (the harness itself is :mod:`frugal.bench`).

``register(subparsers)`` adds ``bench`` to the sub-parsers of the ``frugal`` parser; the
handler takes the parsed namespace, returns an exit status and raises ``ValueError`` on
bad input, which the ``frugal`` entry point turns into a one-line error and exit status 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from frugal.bench import GAMMA_VARIANTS, XRAY_VARIANTS, plot_convergence, public, run_gamma, run_xray, table

__all__ = ["command", "register"]


def register(subparsers):
    """Add ``bench`` to the sub-parsers of the ``frugal`` parser."""
    b = subparsers.add_parser(
        "bench", help="compare the solver variants on the built-in problems",
        description="Run every SEMSUN and SUSHI solver variant on the same built-in simulated data and "
                    "report objective against iteration and wall time, iterations and time to a relative "
                    "objective gap of 1e-4 and 1e-6, final accuracy and failures (a table, a JSON file and "
                    "one figure per problem).",
    )
    b.add_argument("problem", nargs="?", choices=("gamma", "xray", "all"), default="all")
    b.add_argument("--out", default="frugal-bench", help="output folder (default %(default)s)")
    b.add_argument("--spectra", type=int, default=16, help="gamma spectra unmixed at once (default %(default)s)")
    b.add_argument("--counts", type=float, default=20000, help="expected counts per spectrum (default %(default)s)")
    b.add_argument("--size", type=int, default=32, help="X-ray cube side in pixels (default %(default)s)")
    b.add_argument("--max-iter", type=int, default=None, help="iterations per variant (default 40 / 60)")
    b.add_argument("--repeats", type=int, default=3, help="timed runs per variant (default %(default)s)")
    b.add_argument("--variants", default=None, metavar="NAME[,NAME...]", help="a subset of the variants")
    b.add_argument("--epochs", type=int, default=400, help="IAE training epochs (default %(default)s)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=command)
    return b


def _pick(table_: dict, names: str | None) -> dict:
    if names is None:
        return table_
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in GAMMA_VARIANTS and n not in XRAY_VARIANTS]
    if unknown:
        raise ValueError(f"--variants: unknown {unknown}; known: {', '.join(list(GAMMA_VARIANTS) + list(XRAY_VARIANTS))}")
    return {n: table_[n] for n in chosen if n in table_}


def _positive(value, name):
    if value is not None and value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def command(args) -> int:
    """``frugal bench``: the harness (:mod:`frugal.bench`) on the built-in problems."""
    for name in ("spectra", "size", "repeats", "epochs", "max_iter"):
        _positive(getattr(args, name), "--" + name.replace("_", "-"))
    if not args.counts > 0:
        raise ValueError(f"--counts must be positive, got {args.counts}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reports = {}
    if args.problem in ("gamma", "all"):
        from frugal.gamma.builtin import builtin_problem

        variants = _pick(GAMMA_VARIANTS, args.variants)
        problem = builtin_problem(epochs=args.epochs, seed=args.seed, progress=not args.quiet)
        y, a_true, _ = problem.mixtures(7.3, args.counts, args.spectra, args.seed + 1)
        print(f"\ngamma: {args.spectra} spectra, {args.counts:g} counts, joint IAE of {', '.join(problem.nuclides)}")
        rep = run_gamma(y, problem.model, background=problem.background, true_counts=a_true, names=problem.nuclides,
                        latent0=[np.array([1.0, 0.0], np.float32)], variants=variants,
                        max_iter=args.max_iter or 40, repeats=args.repeats)
        plot_convergence(rep, out / "gamma_convergence.png", f"SEMSUN variants, {args.spectra} spectra")
        reports["gamma"] = rep
    if args.problem in ("xray", "all"):
        from frugal.xray import simulate_cube
        from frugal.xray.builtin import builtin_models

        variants = _pick(XRAY_VARIANTS, args.variants)
        cube = simulate_cube((args.size, args.size), exposure="low", seed=args.seed)
        models, pmaps = builtin_models(epochs=args.epochs, seed=args.seed, progress=not args.quiet)
        print(f"\nxray: {args.size} x {args.size} pixels x {len(cube.energies)} channels")
        rep = run_xray(cube.counts, models, mask=cube.mask, param_maps=pmaps, names=cube.component_names,
                       truth=cube, variants=variants, max_iter=args.max_iter or 60, repeats=args.repeats)
        plot_convergence(rep, out / "xray_convergence.png", f"SUSHI variants, {args.size} x {args.size} cube")
        reports["xray"] = rep
    for key, rep in reports.items():
        print(f"\n{key}: {rep['n_problems']} problem(s), {rep['precision']}, medians of {rep['repeats']} runs")
        print(table(rep))
    (out / "solvers.json").write_text(json.dumps({k: public(r) for k, r in reports.items()}, indent=1, default=float))
    print(f"\nwrote {out / 'solvers.json'} and the convergence figures in {out}")
    return 0
