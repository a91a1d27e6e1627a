"""Benchmark: gamma unmixing throughput against batch size, and peak memory.

For batch sizes from 1 to ``--max-batch`` spectra, ``frugal.gamma.unmix`` (SEMSUN-j, the
default solver, no signatures returned) runs in a fresh process on Poisson draws of the
paper's mixture; the process reports the wall time of the compiled call (the program is
compiled first on one chunk), spectra per second and its peak resident memory, sampled
every 10 ms from ``/proc/self/status`` (anonymous pages: the working memory, without the
pages of a memory-mapped input file). A fresh process per point keeps one point's peak
from hiding the next one's.

Then ``--million`` spectra (default 10^6) are unmixed from a ``uint16`` ``np.memmap`` on
disk, chunk by chunk (``chunk_size``), to show that the memory stays bounded whatever the
number of spectra. On a CPU this run uses a smaller problem (``--million-problem small``:
a small joint IAE of two sources over 64 channels) so that it ends sooner; the memory
behaviour does not depend on the size of the model.

Problems: ``paper`` (the Geant4 joint model of ``gamma_semsun.py``, 800 channels, 4
radionuclides, trained and cached there; the built-in simulator when the Geant4 data are
absent) and ``small``. Run ``python benchmarks/throughput.py`` (``--quick`` for a smoke
run). Writes ``benchmarks/results/throughput.json`` and ``throughput.png`` (``--tag``
names them otherwise), after every point, so that a run stopped early keeps what it
measured. ``--chunk-sweep 16,64`` also times ``--max-batch`` spectra in chunks of those
sizes. The backend (CPU / GPU) is whatever JAX finds: with ``jax[cuda]`` installed the same
script measures a GPU, and ``--cpu-baseline 1000`` then also times 1000 spectra on JAX's CPU
backend of the same machine (``benchmarks/gpu.sh`` runs it all on a GPU machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, gamma_data_dir, machine, write_results

HERE = Path(__file__).resolve().parent
CACHE = RESULTS / "models"
PAPER_CACHE = CACHE / "throughput_paper_problem.npz"


class MemorySampler:
    """Peak anonymous resident memory (MiB) of this process, sampled by a thread."""

    def __init__(self, period_s: float = 0.01):
        self.period_s = period_s
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def anon_mib() -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024.0
        return float("nan")

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.anon_mib())
            time.sleep(self.period_s)

    def __enter__(self):
        self.peak = self.anon_mib()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.anon_mib())


# ---------------------------------------------------------------------------------------
# Problems (built in the worker process)


def paper_problem():
    """The Geant4 (or simulator) joint model, background and true rows of the paper mixture.

    The rows are also cached beside the model (``results/models``), so that a machine
    without the Geant4 data (a GPU machine, say) runs the same problem from the cache.
    """
    import frugal.iae as iae

    data = gamma_data_dir()
    if data is None and PAPER_CACHE.exists():
        saved = np.load(PAPER_CACHE)
        model = iae.load(CACHE / str(saved["model"]))
        return model, saved["background"], saved["rows"], saved["fractions"], str(saved["source"])
    sys.path.insert(0, str(HERE))
    import gamma_semsun as gs

    from frugal.gamma import io

    problem = gs.load_problem(data)
    split = io.published_split()
    models = gs.train_models(problem, split, epochs=1500, cache=CACHE, retrain=False, quiet=True)
    rows = np.concatenate([problem["background"][None], problem["full"][gs.TRUE_INDEX]])
    np.savez(PAPER_CACHE, model=f"{problem['source']}_e1500_joint.frugal", background=problem["background"],
             rows=rows, fractions=gs.FRACTIONS, source=problem["source"])
    return models["models"]["joint"], problem["background"], rows, gs.FRACTIONS, problem["source"]


def small_problem():
    """A small joint IAE (one layer of 32, code 4) of two line families over 64 channels
    (cached), a smooth background."""
    import frugal.iae as iae
    from frugal.data import line_family, split

    m = 64
    path = CACHE / "throughput_small_joint_64.frugal"
    fam = line_family(40, m, seed=0)
    joint = np.stack([fam.spectra, fam.spectra[:, ::-1] * np.linspace(1.5, 0.5, m)], axis=1)
    joint /= joint.sum(-1, keepdims=True)
    if path.exists():
        model = iae.load(path)
    else:
        s = split(fam, test_fraction=0.2, seed=0)
        model = iae.train(joint[s.train], joint[s.anchors], epochs=400, width=32, depth=1, latent_dim=4,
                          progress=False)
        CACHE.mkdir(parents=True, exist_ok=True)
        iae.save(model, path)
    bkg = np.exp(-3 * np.linspace(0, 1, m)) + 0.2
    bkg /= bkg.sum()
    rows = np.concatenate([bkg[None], joint[17]])
    return model, bkg, rows, np.array([0.5, 0.3, 0.2]), "line family"


def draws(rows, fractions, counts: float, n: int, seed: int, out=None, block: int = 65536):
    """``n`` Poisson draws of the mixture as uint16 (into ``out`` when given, block by block)."""
    rng = np.random.default_rng(seed)
    mu = (counts * fractions) @ rows
    out = np.empty((n, rows.shape[1]), np.uint16) if out is None else out
    for i in range(0, n, block):
        k = min(block, n - i)
        out[i : i + k] = np.minimum(rng.poisson(mu, size=(k, rows.shape[1])), 65535)
    return out


def worker(args) -> dict:
    """One point of the curve, in this process (prints one JSON line)."""
    import jax

    from frugal.gamma import unmix

    model, bkg, rows, fractions, source = paper_problem() if args.problem == "paper" else small_problem()
    start = [np.array([1.0, 0.0], np.float32)]
    kw = dict(background=bkg, latent0=start, return_signatures=False, chunk_size=args.chunk_size)
    tmp = None
    if args.memmap:
        tmp = tempfile.TemporaryDirectory()
        path = Path(tmp.name) / "counts.u16"
        mm = np.memmap(path, dtype=np.uint16, mode="w+", shape=(args.batch, rows.shape[1]))
        draws(rows, fractions, args.counts, args.batch, seed=1, out=mm)
        mm.flush()
        del mm
        y = np.memmap(path, dtype=np.uint16, mode="r", shape=(args.batch, rows.shape[1]))
    else:
        y = draws(rows, fractions, args.counts, args.batch, seed=1)
    warm = min(args.batch, args.chunk_size)
    t0 = time.perf_counter()
    unmix(y[:warm], model, **kw)  # compiles the chunk program (one shape for every chunk)
    compile_s = time.perf_counter() - t0
    before = MemorySampler.anon_mib()
    times = []
    with MemorySampler() as mem:
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = unmix(y, model, **kw)
            times.append(time.perf_counter() - t0)
    seconds = float(np.median(times))
    stats = jax.devices()[0].memory_stats() or {}
    out = {
        "problem": args.problem, "source": source, "batch": args.batch, "chunk_size": args.chunk_size,
        "channels": int(rows.shape[1]), "counts": args.counts, "memmap": bool(args.memmap),
        "seconds_median": seconds, "seconds_all": times, "spectra_per_s": args.batch / seconds,
        "first_call_s": compile_s, "rss_anon_before_mib": before, "rss_anon_peak_mib": mem.peak,
        "converged": float(np.mean(res.converged)), "backend": jax.default_backend(),
        "devices": len(jax.devices()), "device_kind": jax.devices()[0].device_kind,
        "device_peak_mib": stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None,
    }
    if args.save:  # inputs and estimates, to compare backends or precisions on the same spectra
        k = min(args.batch, 2000)
        np.savez(args.save, counts_in=np.asarray(y[:k]), counts=res.counts[:k], latent=np.concatenate(
            [np.asarray(z)[:k] for z in res.latent], axis=-1), loss=res.loss[:k], n_iter=res.n_iter[:k],
                 converged=res.converged[:k])
    if tmp is not None:
        tmp.cleanup()
    return out


def run_point(problem: str, batch: int, *, chunk_size: int, counts: float, repeats: int, memmap=False,
              timeout=None, platform=None) -> dict:
    """One point in a fresh worker process (``platform="cpu"`` forces JAX's CPU backend)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--problem", problem, "--batch", str(batch),
           "--chunk-size", str(chunk_size), "--counts", str(counts), "--repeats", str(repeats)]
    if memmap:
        cmd.append("--memmap")
    env = dict(os.environ, **({"JAX_PLATFORMS": platform} if platform else {}))
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        print(f"  batch {batch} (chunk {chunk_size}) stopped after the {timeout} s limit", flush=True)
        return {"problem": problem, "batch": batch, "chunk_size": chunk_size, "timed_out_s": timeout}
    if res.returncode != 0:
        raise SystemExit(f"worker failed for batch {batch}:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def show(p: dict, note: str = "") -> None:
    if "timed_out_s" in p:
        return
    print(f"{p['problem']:8s}{p['batch']:10d}{p['chunk_size']:8d}{p['seconds_median']:10.3f}{p['spectra_per_s']:12.1f}"
          f"{p['rss_anon_peak_mib']:10.0f}{p['rss_anon_before_mib']:11.0f}  {p['backend']}{note}", flush=True)


def plot(saved: dict, path):
    """Spectra per second and peak memory against batch size, from a results dict.

    Draws the curve, the memory-mapped run, and (for a GPU run that has one) the run made
    before the solvers' products were set to full float32 precision.
    """
    from frugal.plotting import figure

    series = [("", saved)]
    if saved.get("before_precision_fix"):
        series.append((", TF32 products (before the fix)", saved["before_precision_fix"]))
    first = [p for p in saved["curve"] if "timed_out_s" not in p]
    if not first:
        return
    fig = figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for suffix, run in series:
        million = run.get("memmap_run") or {}
        lines = [(f"{{}} problem{suffix}", run["curve"], "o-"),
                 (f"{{}} problem, memmap input{suffix}", million.get("same_problem_smaller_batches", []) + [million]
                  if million else [], "s-")]
        for label, points, style in lines:
            points = [p for p in points if p and "timed_out_s" not in p]
            if not points:
                continue
            b = [p["batch"] for p in points]
            style = style if not suffix else style[0] + "--"
            label = label.format(points[0]["problem"]) + f", chunk {points[0]['chunk_size']}"
            ax1.loglog(b, [p["spectra_per_s"] for p in points], style, label=label)
            ax2.semilogx(b, [p["rss_anon_peak_mib"] for p in points], style, label=label)
    ax1.set_xlabel("spectra in the call")
    ax1.set_ylabel("spectra per second")
    ax2.set_xlabel("spectra in the call")
    ax2.set_ylabel("peak anonymous RSS of the host (MiB)")
    for ax in (ax1, ax2):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"frugal.gamma.unmix throughput ({first[0]['backend']}, {first[0].get('device_kind', '')})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--max-batch", type=int, default=100_000)
    p.add_argument("--million", type=int, default=1_000_000, help="spectra of the memory-mapped run (0: skip)")
    p.add_argument("--million-problem", choices=("paper", "small"), default="small")
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--chunk-sweep", default="", help="comma-separated chunk sizes also timed at --max-batch")
    p.add_argument("--cpu-baseline", type=int, default=0,
                   help="on an accelerator, also time this batch on JAX's CPU backend (the same run's baseline)")
    p.add_argument("--counts", type=float, default=100_000)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per point (1 beyond 10^4 spectra)")
    p.add_argument("--timeout", type=float, default=None, help="seconds allowed per point (worker process)")
    p.add_argument("--tag", default="throughput", help="name of the results file and figure")
    p.add_argument("--quick", action="store_true", help="a smoke run: small batches")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--problem", choices=("paper", "small"), default="paper")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--memmap", action="store_true")
    p.add_argument("--save", default=None, help=argparse.SUPPRESS)  # worker: .npz of inputs and estimates
    p.add_argument("--plot-only", action="store_true", help="redraw the figure from results/<tag>.json")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    figure = RESULTS / f"{args.tag}.png"
    if args.plot_only:
        plot(json.loads((RESULTS / f"{args.tag}.json").read_text()), figure)
        return 0
    if args.quick:
        args.max_batch, args.million, args.repeats = min(args.max_batch, 100), min(args.million, 2000), 1
    batches = [b for b in (1, 10, 100, 1000, 10_000, 100_000, 1_000_000) if b <= args.max_batch]
    point = dict(counts=args.counts, timeout=args.timeout)
    results = {"machine": machine(), "curve": [], "chunk_sweep": [], "cpu_baseline": None, "memmap_run": None,
               "chunk_size": args.chunk_size, "counts": args.counts, "complete": False}

    def save():  # after every point, so that a run stopped early keeps what it measured
        return write_results(args.tag, results)

    print(f"{'problem':8s}{'spectra':>10s}{'chunk':>8s}{'seconds':>10s}{'spectra/s':>12s}{'peak MiB':>10s}"
          f"{'before MiB':>11s}  backend")
    for b in batches:
        p = run_point(args.problem, b, chunk_size=args.chunk_size, repeats=args.repeats if b < 10_000 else 1, **point)
        results["curve"].append(p)
        show(p)
        save()
    for c in [int(c) for c in args.chunk_sweep.split(",") if c]:
        p = run_point(args.problem, args.max_batch, chunk_size=c, repeats=1, **point)
        results["chunk_sweep"].append(p)
        show(p, "  (chunk sweep)")
        save()
    done = [p for p in results["curve"] if "timed_out_s" not in p]
    if args.cpu_baseline and done and done[0]["backend"] != "cpu":
        b = args.cpu_baseline
        p = run_point(args.problem, b, chunk_size=args.chunk_size, repeats=args.repeats, platform="cpu", **point)
        same = [q for q in done if q["batch"] == b]
        if same and "timed_out_s" not in p:
            p["accelerator_over_cpu"] = same[0]["spectra_per_s"] / p["spectra_per_s"]
        results["cpu_baseline"] = p
        show(p, "  (baseline, same machine)")
        save()
    if args.million:
        million = run_point(args.million_problem, args.million, chunk_size=args.chunk_size, repeats=1, memmap=True,
                            **point)
        small = [run_point(args.million_problem, b, chunk_size=args.chunk_size, repeats=1, memmap=True, **point)
                 for b in (args.chunk_size, 10 * args.chunk_size)]
        for p in small + [million]:
            show(p, "  (memmap input)")
        million["same_problem_smaller_batches"] = small
        results["memmap_run"] = million
    results["complete"] = True
    path = save()
    plot(results, figure)
    print(f"wrote {path} and {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
