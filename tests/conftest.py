"""Shared fixtures: small shapes, compiled once per module."""

import os
from pathlib import Path

import pytest

# Tests run on the CPU whatever the machine has, with a stable thread count.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = Path(__file__).resolve().parents[1]


def gamma_data_dir():
    """The Geant4 development data beside the checkout, or $FRUGAL_GAMMA_DATA; None if absent."""
    env = os.environ.get("FRUGAL_GAMMA_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data" / "gamma_steel_geant4"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def geant4_dir():
    d = gamma_data_dir()
    if d is None:
        pytest.skip("Geant4 development data (../shared/data/gamma_steel_geant4) is not available")
    return d


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """Drop every compiled program after each test module.

    XLA keeps the machine code of each compiled program in its own memory mappings; a
    whole suite in one process (hundreds of programs) passed Linux's default limit of 65530
    mappings per process (``vm.max_map_count``) and XLA crashed with a segmentation fault
    while compiling the next one. A module's tests share their programs (module-scoped
    fixtures), other modules do not need them.
    """
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
