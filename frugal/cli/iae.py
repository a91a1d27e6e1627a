"""``frugal demo iae``: its parser and handler.

``add_demo_parser(demo_subparsers)`` adds ``iae`` to the sub-parsers of ``frugal demo``;
the handler takes the parsed namespace and returns an exit status.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

__all__ = ["add_demo_parser", "demo_iae"]


def add_demo_parser(demo_subparsers) -> argparse.ArgumentParser:
    """Add ``iae`` to the sub-parsers of ``frugal demo``."""
    d_iae = demo_subparsers.add_parser("iae", help="train an IAE on a built-in spectral family")
    d_iae.add_argument("--out", default="frugal-demo-iae", help="output folder (default: %(default)s)")
    d_iae.add_argument("--arch", choices=("dense", "conv"), default="dense")
    d_iae.add_argument("--epochs", type=int, default=None, help="default: about a minute of CPU")
    d_iae.add_argument("--spectra", type=int, default=100)
    d_iae.add_argument("--channels", type=int, default=1000)
    d_iae.add_argument("--seed", type=int, default=0)
    d_iae.add_argument("--quiet", action="store_true", help="no progress bar")
    d_iae.set_defaults(func=demo_iae)
    return d_iae


def demo_iae(args) -> int:
    """``frugal demo iae``: simulate a small spectral family, train an IAE, report and plot."""
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
