"""Benchmark: SUSHI vs the per-pixel fit on the toy supernova-remnant cube.

The toy model of Lascar, Bobin & Acero, A&A 686, A259 (2024) (DESIGN.md section 4), as
simulated by :func:`frugal.xray.simulate_cube`: 94 x 94 pixels, 375 channels (3-8.5 keV), a
thermal component (kT and z vary across the remnant) and a synchrotron one (photon index),
Poisson counts at two exposures, "high" (2000 counts per remnant pixel) and "low" (200).

Models: one small dense IAE per component (thermal: 4 anchors at the corners of the
(log kT, z) box, 120 labelled spectra, 2 layers of 64; synchrotron: 2 anchors, 40 spectra,
2 layers of 32), each with its latent -> parameter map (cubic least squares on the labelled
spectra); training is timed separately.

Methods, both on the pixels of the remnant mask:

* ``fit_pixels``: the same models fitted pixel by pixel (grid search, then per-pixel
  Levenberg-Marquardt), what astronomers do today;
* ``SUSHI``: spatially regularised (starlet l1 on the latent maps, k_mad = 1, 2 scales),
  started from the per-pixel fit; its time is its own loop, add the per-pixel fit's for
  the total.

Metrics: amplitude NMSE (dB) per component, component-cube NMSE (dB), median absolute
error of the kT, z and photon-index maps inside the remnant, wall time (compiled; the
compilation is timed once, separately), sweeps and time per sweep. ``--repeats N`` runs N
noise draws per exposure and reports medians.

Run ``python benchmarks/xray_sushi.py`` (about 2 minutes on 2 CPU cores). Prints the table
and writes ``benchmarks/results/xray_sushi.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


from _common import RESULTS, machine

METRICS = ("thermal_amplitude_nmse_db", "synchrotron_amplitude_nmse_db", "thermal_cube_nmse_db",
           "synchrotron_cube_nmse_db", "kT_mae", "z_mae", "photon_index_mae")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=94, help="cube side (default %(default)s)")
    p.add_argument("--exposures", default="high,low", help="comma-separated presets (default %(default)s)")
    p.add_argument("--repeats", type=int, default=1, help="noise draws per exposure (default %(default)s)")
    p.add_argument("--epochs", type=int, default=500, help="IAE training epochs (default %(default)s)")
    p.add_argument("--k-mad", type=float, default=1.0)
    p.add_argument("--n-scales", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="seed of the remnant model and of the training")
    p.add_argument("--out", default=str(RESULTS / "xray_sushi.json"))
    return p.parse_args(argv)


def train(args):
    from frugal.xray.builtin import BUILTIN, builtin_family, train_family

    models, pmaps, info = [], [], {}
    for name in ("thermal", "synchrotron"):
        family, sz = builtin_family(name, seed=args.seed), BUILTIN[name]
        t0 = time.perf_counter()
        model, pmap = train_family(family, name, epochs=args.epochs, width=sz["width"], depth=sz["depth"],
                                   latent_dim=sz["latent_dim"], log=sz["log"], seed=args.seed)
        info[name] = {"time_s": time.perf_counter() - t0, "spectra": len(family.spectra),
                      "anchors": model.n_anchors, "width": sz["width"], "depth": sz["depth"],
                      "latent_dim": sz["latent_dim"], "epochs": args.epochs,
                      "param_map_rms_residual": pmap.residual, "param_map_loo_residual": pmap.loo_residual}
        models.append(model)
        pmaps.append(pmap)
    return models, pmaps, info


def run_methods(cube, models, pmaps, args):
    from frugal.xray import fit_pixels, sushi
    from frugal.xray.report import map_errors

    common = dict(param_maps=pmaps, names=cube.component_names, mask=cube.mask)
    t0 = time.perf_counter()
    pixels = fit_pixels(cube.counts, models, **common)
    t_pix = time.perf_counter() - t0
    t0 = time.perf_counter()
    reg = sushi(cube.counts, models, init=pixels, k_mad=args.k_mad, n_scales=args.n_scales, **common)
    t_reg = time.perf_counter() - t0
    out = {}
    for name, res, wall in (("fit_pixels", pixels, t_pix), ("SUSHI", reg, t_reg)):
        out[name] = {**map_errors(res, cube), "n_iter": int(res.n_iter), "converged": bool(res.converged),
                     "wall_s": wall, "s_per_iter": wall / max(int(res.n_iter), 1)}
    out["SUSHI"]["wall_total_s"] = t_pix + t_reg
    return out


def median_of(runs):
    keys = runs[0].keys()
    return {k: (statistics.median([r[k] for r in runs]) if isinstance(runs[0][k], (int, float))
                and not isinstance(runs[0][k], bool) else runs[0][k]) for k in keys}


def print_table(results):
    head = (f"{'exposure':9s}{'method':11s}{'A_th dB':>9s}{'A_sy dB':>9s}{'cube_th':>9s}{'cube_sy':>9s}"
            f"{'kT keV':>9s}{'z':>9s}{'Gamma':>8s}{'sweeps':>8s}{'wall s':>8s}{'s/sweep':>8s}")
    print(head)
    print("-" * len(head))
    for exposure, methods in results.items():
        for name, m in methods.items():
            print(f"{exposure:9s}{name:11s}{m['thermal_amplitude_nmse_db']:9.2f}"
                  f"{m['synchrotron_amplitude_nmse_db']:9.2f}{m['thermal_cube_nmse_db']:9.2f}"
                  f"{m['synchrotron_cube_nmse_db']:9.2f}{m['kT_mae']:9.3f}"
                  f"{m['z_mae']:9.5f}{m['photon_index_mae']:8.3f}{m['n_iter']:8d}{m['wall_s']:8.1f}"
                  f"{m['s_per_iter']:8.3f}")


def main(argv=None) -> int:
    args = parse_args(argv)
    from frugal.xray import fit_pixels, simulate_cube, sushi

    t_start = time.perf_counter()
    models, pmaps, training = train(args)
    exposures = [e.strip() for e in args.exposures.split(",") if e.strip()]

    # Compilation, once (the programs depend on the shapes only, not on the exposure).
    cube = simulate_cube((args.size, args.size), exposure=exposures[0], seed=args.seed)
    t0 = time.perf_counter()
    warm = fit_pixels(cube.counts, models, mask=cube.mask, max_iter=1)
    sushi(cube.counts, models, mask=cube.mask, init=warm, max_iter=1, n_scales=args.n_scales)
    t_compile = time.perf_counter() - t0

    results, runs = {}, {}
    for exposure in exposures:
        per_draw = []
        for r in range(args.repeats):
            cube = simulate_cube((args.size, args.size), exposure=exposure, seed=args.seed, noise_seed=100 + r)
            per_draw.append(run_methods(cube, models, pmaps, args))
        runs[exposure] = per_draw
        results[exposure] = {name: median_of([d[name] for d in per_draw]) for name in per_draw[0]}
    total = time.perf_counter() - t_start

    print(f"\ntoy remnant {args.size} x {args.size} x 375, {args.repeats} draw(s) per exposure "
          f"(medians); errors inside the remnant mask")
    print_table(results)
    train_s = sum(v["time_s"] for v in training.values())
    print(f"\nIAE training + parameter maps: {train_s:.1f} s; compilation (first calls, 1 sweep each): "
          f"{t_compile:.1f} s; whole run: {total:.1f} s")
    low = results.get("low")
    if low is not None:
        better = all(low["SUSHI"][k] < low["fit_pixels"][k] for k in ("kT_mae", "z_mae", "photon_index_mae"))
        print(f"SUSHI better than the per-pixel fit on every parameter map at low exposure: {better}")

    out = {"machine": machine(), "size": args.size, "channels": 375, "repeats": args.repeats,
           "k_mad": args.k_mad, "n_scales": args.n_scales, "training": training, "compile_s": t_compile,
           "total_s": total, "results": results, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
