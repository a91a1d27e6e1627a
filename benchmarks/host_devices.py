"""Benchmark: one CPU device against the batch sharded over forced host devices.

``XLA_FLAGS=--xla_force_host_platform_device_count=N`` makes N "devices" out of one CPU;
they share its cores. This script unmixes the same batch (a problem of ``throughput.py``) with ``devices=1`` and ``devices=N`` in one process with N host devices
and prints both wall times (compiled; a run past ``--timeout`` seconds is reported as
such). Run ``python benchmarks/host_devices.py [--problem paper]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = """
import json, sys, time
import numpy as np
sys.path.insert(0, {here!r})
from throughput import {problem}_problem as problem, draws
from frugal.gamma import unmix
model, bkg, rows, fractions, _ = problem()
y = draws(rows, fractions, 1e5, {batch}, seed=1)
kw = dict(background=bkg, latent0=[np.array([1.0, 0.0], np.float32)], return_signatures=False)
unmix(y[:8], model, devices={devices}, **kw)            # compile a small shape first
t0 = time.perf_counter(); unmix(y, model, devices={devices}, **kw); first = time.perf_counter() - t0
t0 = time.perf_counter(); unmix(y, model, devices={devices}, **kw); second = time.perf_counter() - t0
print(json.dumps({{"devices": {devices}, "batch": {batch}, "first_s": first, "second_s": second}}))
"""


def run(devices: int, n_host: int, batch: int, timeout: float, problem: str = "small") -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n_host}", JAX_PLATFORMS="cpu")
    code = CHILD.format(here=str(HERE), batch=batch, devices=devices, problem=problem)
    t0 = time.perf_counter()
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"devices": devices, "batch": batch, "problem": problem, "timed_out_after_s": timeout}
    if res.returncode:
        raise SystemExit(res.stderr[-3000:])
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - t0
    out["problem"] = problem
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host-devices", type=int, default=2)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--problem", choices=("small", "paper"), default="small")
    args = p.parse_args(argv)
    for devices in (1, args.host_devices):
        print(json.dumps(run(devices, args.host_devices, args.batch, args.timeout, args.problem)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
