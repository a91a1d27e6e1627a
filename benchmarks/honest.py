"""Honest answers: how often does SEMSUN return a wrong answer flagged good?

The adversarial cases of the honest-answers issue, on the toy problem of the tests (two
line-family sources sharing one weight, a background, 96 channels, a joint IAE):

* 200 noiseless mixtures (random weights inside the training range, counts 5e3-5e4 per
  source) started at the far anchor, for the default solver and ``bcd``, with and without
  the global start: "silently wrong" = ``converged`` and a counting error above 1 % with a
  goodness-of-fit p-value above 1e-3 (nothing tells the user);
* the same on the paper's Geant4 problem when its data are found (the joint IAE of four
  radionuclides of ``gamma_semsun.py``, 800 channels, trained there the first time): 200
  noiseless mixtures of its own signatures at random weights inside the training range and
  counts ``N * [0.5, 0.2, 0.12, 0.08, 0.1]`` times 0.5-2 per source (``N = 100 000``),
  started at the first anchor (0.001 mm of steel) and at the default;
* inputs: int64 counts of 3e9 per channel, float64 counts beyond the float32 range, a total
  of 1e15 counts (deviance sign), an all-zero spectrum, one hot channel of 1e9 counts,
  ``jax.grad`` through ``unmix``.

Run ``python benchmarks/honest.py`` (about 5 minutes on 2 CPU cores, 5 more with the Geant4 data); results in
``benchmarks/results/honest.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import jax
import numpy as np

import frugal.iae as iae
from frugal.data import line_family, split
from frugal.gamma import unmix
from frugal.solvers import Status

HERE = Path(__file__).resolve().parent
M = 96


def toy():
    fam = line_family(30, M, seed=5)
    s = split(fam, test_fraction=0.2, seed=0)
    joint = np.stack([fam.spectra, fam.spectra[:, ::-1] * np.linspace(1.5, 0.5, M)], axis=1)
    joint /= joint.sum(-1, keepdims=True)
    model = iae.train(joint[s.train], joint[s.anchors], epochs=400, progress=False)
    e = np.linspace(0, 1, M)
    background = np.exp(-3 * e) + 0.2
    return model, background / background.sum()


def mixtures(model, background, n, seed=0):
    rng = np.random.default_rng(seed)
    lo, hi = model.latent_bounds
    w = rng.uniform(max(lo[1], 1 - hi[0]), min(hi[1], 1 - lo[0]), n)
    lam = np.stack([1 - w, w], 1).astype(np.float32)
    a = rng.uniform(5e3, 5e4, (n, 3))
    sig = np.maximum(model.decode(lam), 0)
    sig = sig / sig.sum(-1, keepdims=True)
    rows = np.concatenate([np.broadcast_to(background, (n, 1, M)), sig], 1)
    return np.einsum("bk,bkm->bm", a, rows), lam, a


def classify(res, a):
    off = np.any(np.abs(res.counts / a - 1) > 0.01, 1)
    flagged = ~res.converged | (res.gof_pvalue < 1e-3)
    return {"n": int(len(a)), "within_1pct": int(np.sum(~off)), "wrong_but_flagged": int(np.sum(off & flagged)),
            "silently_wrong": int(np.sum(off & ~flagged)),
            "status": {s.name.lower(): int(np.sum(res.status == s)) for s in Status}}


def geant4_rows(n, seed=1):
    """Far-start and default-start noiseless mixtures of the Geant4 joint IAE (None without the data)."""
    import gamma_semsun as G
    from frugal.gamma import io

    data_dir = G.find_data(None)
    if data_dir is None:
        return None
    problem = G.load_problem(data_dir)
    model = G.train_models(problem, io.published_split(), epochs=1500, cache=HERE / "results" / "models",
                           retrain=False, quiet=True)["models"]["joint"]
    background = problem["background"]
    rng = np.random.default_rng(seed)
    lo, hi = model.latent_bounds
    w = rng.uniform(max(lo[1], 1 - hi[0]), min(hi[1], 1 - lo[0]), n)
    lam = np.stack([1 - w, w], 1).astype(np.float32)
    a = 1e5 * G.FRACTIONS * rng.uniform(0.5, 2.0, (n, len(G.FRACTIONS)))
    sig = np.maximum(model.decode(lam), 0)
    sig = sig / sig.sum(-1, keepdims=True)
    rows = np.concatenate([np.broadcast_to(background, (n, 1, background.shape[0])), sig], 1)
    mu = np.einsum("bk,bkm->bm", a, rows)
    out = {}
    for solver in ("newton", "bcd"):
        for start, latent0 in (("first anchor", [np.array([1.0, 0.0])]), ("default start", None)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = time.perf_counter()
                res = unmix(mu, model, background=background, latent0=latent0, solver=solver,
                            return_signatures=False)
                out[f"Geant4 {solver}, {start}"] = {**classify(res, a), "time_s": time.perf_counter() - t}
    return out


def run_input_cases(model, background):
    cases = {}
    mu, _, _ = mixtures(model, background, 1, seed=3)
    y = np.random.default_rng(4).poisson(mu[0]).astype(np.float64)
    ref = unmix(y, model, background=background)

    def attempt(name, fn, check):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = fn()
            cases[name] = check(res)
        except (ValueError, TypeError) as err:
            cases[name] = f"clear error: {type(err).__name__}: {str(err)[:120]}"

    def scaled(factor):
        return lambda r: ("right" if r.converged and np.allclose(r.counts / factor, ref.counts, rtol=2e-3)
                          and r.loss > 0 else f"WRONG: counts {np.round(r.counts / factor)}, loss {r.loss:.3g}, "
                          f"status {int(r.status)}")

    attempt("int64 counts, ~3e9 per channel", lambda: unmix((y * 3e9 / y.mean()).astype(np.int64), model,
                                                            background=background), scaled(3e9 / y.mean()))
    attempt("float64 counts beyond float32", lambda: unmix(y * 1e37, model, background=background), scaled(1e37))
    attempt("total 1e15 counts", lambda: unmix(y * 1e15 / y.sum(), model, background=background),
            scaled(1e15 / y.sum()))
    attempt("all-zero spectrum", lambda: unmix(np.zeros(M), model, background=background),
            lambda r: "right" if r.converged and np.all(r.counts == 0) else f"WRONG: {r.counts}, status {r.status}")
    hot = np.zeros(M)
    hot[30] = 1e9
    attempt("one hot channel (1e9 counts)", lambda: unmix(hot, model, background=background),
            lambda r: "flagged" if (not r.converged or r.gof_pvalue < 1e-3) else f"SILENT: {r.counts}")
    attempt("jax.grad through unmix", lambda: jax.grad(lambda b: unmix(np.round(mu[0]), model,
                                                                     background=b).counts.sum())(background),
            lambda r: "gradient returned")
    return cases


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--out", default=str(HERE / "results" / "honest.json"))
    args = p.parse_args()
    t0 = time.perf_counter()
    model, background = toy()
    mu, lam, a = mixtures(model, background, args.n)
    far = [np.array([1.0, 0.0]) if np.mean(lam[:, 0]) < 0.5 else np.array([0.0, 1.0])]
    rows = {}
    for solver in ("newton", "bcd"):
        for grid in (True, False):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = time.perf_counter()
                res = unmix(mu, model, background=background, latent0=far, solver=solver, grid_start=grid,
                            return_signatures=False)
                rows[f"{solver}, grid_start={grid}"] = {**classify(res, a), "time_s": time.perf_counter() - t}
    geant4 = geant4_rows(args.n)
    if geant4 is None:
        print("Geant4 data not found: the Geant4 mixtures are skipped")
    else:
        rows.update(geant4)
    inputs = run_input_cases(model, background)
    print(f"{'far-anchor noiseless mixtures':36s} {'within 1 %':>10s} {'flagged':>8s} {'silent':>7s}  status")
    for name, r in rows.items():
        print(f"{name:36s} {r['within_1pct']:10d} {r['wrong_but_flagged']:8d} {r['silently_wrong']:7d}  "
              + ", ".join(f"{k} {v}" for k, v in r["status"].items() if v))
    for name, verdict in inputs.items():
        print(f"{name:36s} {verdict}")
    out = {"mixtures": rows, "inputs": inputs, "seconds": time.perf_counter() - t0,
           "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
           "jax": jax.__version__, "numpy": np.__version__}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
