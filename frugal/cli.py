"""The ``frugal`` command line.

``frugal demo iae``      simulate a small spectral family, train an IAE, report and plot.
``frugal demo gamma``    simulated gamma-ray mixtures end to end: IAE training, SEMSUN, baselines.
``frugal demo xray``     a toy supernova-remnant cube end to end: SUSHI against per-pixel fits.
``frugal gamma train``   a family of spectra (Geant4 layout or manifest) -> IAE checkpoint.
``frugal gamma unmix``   measured spectra + IAE checkpoints -> counts +- sigma (CSV, JSON, figure).
``frugal xray train``    labelled spectra -> IAE checkpoint.
``frugal xray unmix``    FITS cube + IAE checkpoints -> FITS maps and a figure.
``frugal bench``         every solver variant on the same built-in data: convergence, time, accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _demo_iae(args) -> int:
    import frugal.iae as iae
    from frugal.data import line_family, split
    from frugal.iae.plots import plot_overview

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    family = line_family(args.spectra, args.channels, seed=args.seed)
    s = split(family, test_fraction=0.25, seed=args.seed)
    print(f"family: {len(family.spectra)} spectra x {args.channels} channels "
          f"(2 anchors, {len(s.train)} training, {len(s.test)} test)")
    t0 = time.perf_counter()
    model = iae.train(family.spectra[s.train], family.spectra[s.anchors], arch=args.arch,
                      epochs=args.epochs, seed=args.seed, progress=not args.quiet)
    elapsed = time.perf_counter() - t0
    test = family.spectra[s.test]
    nmse = iae.nmse_db(model.reconstruct(test), test)
    q25, q50, q75 = np.percentile(nmse, [25, 50, 75])
    print(f"trained {model.info['epochs_run']} epochs in {elapsed:.1f} s")
    print(f"test NMSE: median {q50:.1f} dB [q25 {q25:.1f}, q75 {q75:.1f}]")
    iae.save(model, out / "model.frugal")
    plot_overview(model, test, family.params[s.test], energies=family.energies, param_name="t",
                  path=out / "iae.png")
    summary = {"nmse_db": {"median": q50, "q25": q25, "q75": q75}, "train_time_s": elapsed,
               "epochs": model.info["epochs_run"], "arch": args.arch}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'iae.png'}, {out / 'model.frugal'}, {out / 'summary.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="frugal", description="Learn spectral models (IAE) from a few simulations and unmix gamma-ray "
        "spectra (SEMSUN) and X-ray cubes (SUSHI).")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="end-to-end demonstrations on built-in data")
    demo_sub = demo.add_subparsers(dest="demo", required=True)
    d_iae = demo_sub.add_parser("iae", help="train an IAE on a built-in spectral family")
    d_iae.add_argument("--out", default="frugal-demo-iae", help="output folder (default: %(default)s)")
    d_iae.add_argument("--arch", choices=("dense", "conv"), default="dense")
    d_iae.add_argument("--epochs", type=int, default=None, help="default: about a minute of CPU")
    d_iae.add_argument("--spectra", type=int, default=100)
    d_iae.add_argument("--channels", type=int, default=1000)
    d_iae.add_argument("--seed", type=int, default=0)
    d_iae.add_argument("--quiet", action="store_true", help="no progress bar")
    d_iae.set_defaults(func=_demo_iae)

    from frugal.gamma import commands as gamma_commands
    from frugal.xray import commands as xray_commands

    gamma_commands.add_demo_parser(demo_sub)
    xray_commands.add_demo_parser(demo_sub)
    gamma_commands.register(sub)
    xray_commands.register(sub)
    from frugal import bench

    bench.register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"frugal: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
