"""The ``frugal`` command line.

``frugal demo iae``      simulate a small spectral family, train an IAE, report and plot.
``frugal demo gamma``    simulated gamma-ray mixtures end to end: IAE training, SEMSUN, baselines.
``frugal demo xray``     a toy supernova-remnant cube end to end: SUSHI against per-pixel fits.
``frugal gamma train``   a family of spectra (Geant4 layout or manifest) -> IAE checkpoint.
``frugal gamma unmix``   measured spectra + IAE checkpoints -> counts +- sigma (CSV, JSON, figure).
``frugal xray train``    labelled spectra -> IAE checkpoint.
``frugal xray unmix``    FITS cube + IAE checkpoints -> FITS maps and a figure.
``frugal bench``         every solver variant on the same built-in data: convergence, time, accuracy.

All argparse code lives in this package (``iae``, ``gamma``, ``xray``, ``bench``: one module
per command, each with its parsers and handlers); the work is done by the library modules
they call.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from frugal.cli import bench, gamma, iae, xray

    parser = argparse.ArgumentParser(
        prog="frugal", description="Learn spectral models (IAE) from a few simulations and unmix gamma-ray "
        "spectra (SEMSUN) and X-ray cubes (SUSHI).")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="end-to-end demonstrations on built-in data")
    demo_sub = demo.add_subparsers(dest="demo", required=True)
    iae.add_demo_parser(demo_sub)
    gamma.add_demo_parser(demo_sub)
    xray.add_demo_parser(demo_sub)
    gamma.register(sub)
    xray.register(sub)
    bench.register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"frugal: error: {err}", file=sys.stderr)
        return 2
