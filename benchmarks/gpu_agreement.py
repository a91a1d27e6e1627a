"""Benchmark: do the GPU's estimates agree with the CPU's on the same spectra?

Reads the ``.npz`` files written on the GPU machine by ``throughput.py --worker --save``
(``benchmarks/gpu.sh`` writes ``estimates_gpu.npz``: the first 2000 input spectra of the
paper problem and their SEMSUN-j estimates), unmixes the same spectra here on the CPU in
float32 and in float64, and reports for each file: the counts' distance to the float64
estimate in standard errors, the deviance above it, the iterations and the share of spectra
whose stopping rule fired. Run ``python benchmarks/gpu_agreement.py LABEL=FILE ...``;
writes ``results/gpu_agreement.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from _common import machine, write_results


def stats(counts, loss, n_iter, converged, ref) -> dict:
    z = np.abs(counts - ref.counts) / ref.stderr
    dloss = loss - ref.loss
    return {"abs_dcounts_sigma_median": float(np.median(z)), "abs_dcounts_sigma_max": float(z.max()),
            "dloss_median": float(np.median(dloss)), "dloss_max": float(dloss.max()),
            "n_iter_median": float(np.median(n_iter)), "n_iter_max": int(np.max(n_iter)),
            "converged": float(np.mean(converged))}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit(__doc__)
    import jax

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import throughput

    from frugal.gamma import unmix

    files = dict(a.split("=", 1) for a in argv)
    saved = {k: np.load(v) for k, v in files.items()}
    y = next(iter(saved.values()))["counts_in"]
    if any(s["counts_in"].shape != y.shape or np.any(s["counts_in"] != y) for s in saved.values()):
        raise SystemExit("the files hold different input spectra")
    model, bkg, _, _, source = throughput.paper_problem()
    kw = dict(background=bkg, latent0=[np.array([1.0, 0.0], np.float32)], return_signatures=False, chunk_size=512)
    cpu32 = unmix(y, model, **kw)
    with jax.enable_x64(True):
        cpu64 = unmix(y, model, **kw)
    rows = {k: stats(s["counts"], s["loss"], s["n_iter"], s["converged"], cpu64) for k, s in saved.items()}
    rows["cpu float32"] = stats(cpu32.counts, cpu32.loss, cpu32.n_iter, cpu32.converged, cpu64)
    rows["cpu float64"] = stats(cpu64.counts, cpu64.loss, cpu64.n_iter, cpu64.converged, cpu64)
    print(f"{len(y)} spectra of the paper problem ({source}); reference: CPU float64 estimates")
    print(f"{'estimates':28s}{'|dcounts|/sigma med':>20s}{'max':>9s}{'dD med':>10s}{'dD max':>9s}"
          f"{'iter med':>9s}{'max':>5s}{'converged':>10s}")
    for k, r in rows.items():
        print(f"{k:28s}{r['abs_dcounts_sigma_median']:20.1e}{r['abs_dcounts_sigma_max']:9.1e}{r['dloss_median']:10.1e}"
              f"{r['dloss_max']:9.1e}{r['n_iter_median']:9.0f}{r['n_iter_max']:5d}{r['converged']:10.4f}")
    path = write_results("gpu_agreement", {"machine": machine(), "spectra": len(y), "source": source,
                                           "files": {k: Path(v).name for k, v in files.items()}, "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
