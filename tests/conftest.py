"""Shared fixtures: small shapes, compiled once per module."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Tests run on the CPU whatever the machine has, with a stable thread count.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

#: Set by the first process of a run (see pytest_configure); inherited by the test workers
#: and by the subprocesses that tests start.
CACHE_VARIABLE = "JAX_COMPILATION_CACHE_DIR"
_OWN_CACHE = pytest.StashKey[str]()

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """One persistent XLA compilation cache for the whole run, shared by its processes.

    The suite is bound by compilation (a SEMSUN program compiles in 6-18 s on two cores),
    and test modules run the same programs on the same toy problems: with the cache a
    program compiled in one module, or by the other test worker, is loaded instead of
    compiled again. Each run starts from an empty cache (a directory of its own, removed
    at the end), so no run depends on an earlier one; set ``JAX_COMPILATION_CACHE_DIR`` to
    keep one across runs.
    """
    if hasattr(config, "workerinput") or os.environ.get(CACHE_VARIABLE):
        return  # a test worker (the variable is inherited) or a cache chosen by the user
    path = tempfile.mkdtemp(prefix="frugal-tests-xla-")
    os.environ[CACHE_VARIABLE] = path
    # Programs that compile in under a second are not worth a file.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
    config.stash[_OWN_CACHE] = path


def pytest_unconfigure(config):
    path = config.stash.get(_OWN_CACHE, None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
        os.environ.pop(CACHE_VARIABLE, None)


def gamma_data_dir():
    """The Geant4 development data beside the checkout, or $FRUGAL_GAMMA_DATA; None if absent."""
    env = os.environ.get("FRUGAL_GAMMA_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data" / "gamma_steel_geant4"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def gamma_toy():
    """The joint toy IAE of two radionuclides and a background (tests/toys.py)."""
    import toys

    return toys.gamma_toy()


@pytest.fixture(scope="session")
def xray_toy_models():
    """The two hand-built X-ray IAEs on 40 channels (tests/toys.py)."""
    import toys

    return toys.xray_toy_models()


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
