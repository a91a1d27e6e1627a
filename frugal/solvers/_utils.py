"""Small helpers shared by the solvers: tracer-aware argument checks and pytree arithmetic."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from frugal._validation import check_array


def is_traced(x) -> bool:
    """True inside ``jit``/``vmap``/``grad`` where values are not available for checks."""
    return isinstance(x, jax.core.Tracer)


def float_dtype(*arrays):
    """Common floating dtype of ``arrays`` (float32 unless x64 is on and an input is float64)."""
    dt = jnp.result_type(*[jnp.asarray(a).dtype for a in arrays if a is not None])
    if not jnp.issubdtype(dt, jnp.floating):
        dt = jnp.result_type(float)
    return dt


def checked(x, name, *, ndim=None, nonnegative=False):
    """``x`` as a JAX array after the value checks it can afford.

    Concrete inputs get the full ``check_array`` treatment (finite, non-negative, shape);
    traced inputs (inside ``jit``/``vmap``) only the shape checks, which are static.
    """
    if is_traced(x):
        if ndim is not None:
            allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
            if x.ndim not in allowed:
                want = " or ".join(str(a) for a in allowed)
                raise ValueError(f"{name} must have {want} dimension(s), got shape {x.shape}")
        return x
    arr = check_array(x, name, ndim=ndim, nonnegative=nonnegative, dtype=None)
    if not np.issubdtype(arr.dtype, np.floating) and arr.dtype != bool:
        arr = arr.astype(np.result_type(float) if jax.config.jax_enable_x64 else np.float32)
    return jnp.asarray(arr)


def tree_vdot(a, b):
    """Sum over leaves of ``<a, b>``."""
    leaves = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda u, v: jnp.sum(u * v), a, b))
    return sum(leaves[1:], leaves[0])


def tree_max_abs(a):
    """Largest absolute entry over all leaves."""
    leaves = [jnp.max(jnp.abs(u)) for u in jax.tree_util.tree_leaves(a)]
    return jnp.max(jnp.stack(leaves))


def tree_all_finite(a):
    leaves = [jnp.all(jnp.isfinite(u)) for u in jax.tree_util.tree_leaves(a)]
    return jnp.all(jnp.stack(leaves))
