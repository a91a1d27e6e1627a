"""Solver entry points trace their matrix products at full float32 precision (no TF32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from frugal._precision import SOLVER_PRECISION, full_precision


def test_full_precision_sets_and_restores_the_matmul_precision():
    seen = []

    @full_precision
    def fn(x):
        seen.append(jax.config.jax_default_matmul_precision)
        return x

    before = jax.config.jax_default_matmul_precision
    fn(1.0)
    assert seen == [SOLVER_PRECISION] and jax.config.jax_default_matmul_precision == before
    # The precision reaches the traced program: the dot carries it.
    text = jax.jit(full_precision(lambda a: a @ a)).lower(jnp.ones((3, 3))).as_text()
    plain = jax.jit(lambda a: a @ a).lower(jnp.ones((3, 3))).as_text()
    assert "HIGHEST" in text.upper() and "HIGHEST" not in plain.upper()


class _Stop(Exception):
    pass


# Each entry point and a module-level helper its body calls first: the spy records the
# precision in force inside the body, then stops the call.
ENTRIES = [
    ("frugal.gamma.semsun", "unmix", "as_models"),
    ("frugal.gamma.baselines", "fixed", "check_counts"),
    ("frugal.gamma.baselines", "nmf", "check_counts"),
    ("frugal.xray.sushi", "sushi", "_as_models"),
    ("frugal.xray.sushi", "fit_pixels", "_as_models"),
    ("frugal.iae.projection", "project", "check_choice"),
]


@pytest.mark.parametrize("module, entry, helper", ENTRIES)
def test_entry_points_run_at_full_precision(module, entry, helper, monkeypatch):
    import importlib

    mod = importlib.import_module(module)
    seen = []

    def spy(*args, **kwargs):
        seen.append(jax.config.jax_default_matmul_precision)
        raise _Stop

    monkeypatch.setattr(mod, helper, spy)
    fn = getattr(mod, entry)
    args = (None, np.zeros(4)) if entry == "project" else (np.zeros(4), None)
    before = jax.config.jax_default_matmul_precision
    with pytest.raises(_Stop):
        fn(*args)
    assert seen == [SOLVER_PRECISION]
    assert jax.config.jax_default_matmul_precision == before  # restored, even on an error
