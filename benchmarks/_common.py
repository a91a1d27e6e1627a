"""Shared helpers of the benchmarks: machine description, timing, results files."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """Where and with what a benchmark ran."""
    import jax
    import numpy as np

    import frugal

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "numpy": np.__version__,
        "frugal": frugal.__version__,
    }


def median_time(fn, repeats: int = 5) -> tuple[float, list]:
    """Median wall time of ``fn()`` over ``repeats`` calls (call it once before to compile)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def gamma_data_dir(explicit: str | None = None) -> Path | None:
    """The Geant4 development data: ``--data``, $FRUGAL_GAMMA_DATA or ../shared beside the checkout."""
    candidates = [explicit, os.environ.get("FRUGAL_GAMMA_DATA"),
                  Path(__file__).resolve().parents[2] / "shared" / "data" / "gamma_steel_geant4"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=float))
    return path
