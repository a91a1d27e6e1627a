"""The arguments of :func:`frugal.gamma.unmix` (and of the baselines) checked, with errors that
name the argument, and turned into what the solver takes: counts in the working precision,
the fixed signature rows, the bounds and starts of the weights, the grid of the global start,
further starts and the scale factors of very large spectra.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from frugal._validation import check_array
from frugal.gamma.solver.core import GRID_NODES, SCALED_TOTAL
from frugal.ops.proxes import project_box_section


def float_dtype():
    """The working precision: float32, or float64 when ``jax.enable_x64`` is on."""
    return np.float64 if jax.config.jax_enable_x64 else np.float32


#: Spectra validated at a time: a memory-mapped batch of millions is never copied whole.
CHECK_ROWS = 1 << 16


def check_counts(counts, name: str = "counts", *, convert: bool = True):
    """Counts as a ``(B, m)`` array (in :func:`float_dtype`, or as given with
    ``convert=False``), plus whether a batch was given.

    The checks (non-negative, finite, integer) run over blocks of rows, so a large
    ``np.memmap`` is validated without being loaded or copied whole.
    """
    arr = counts if isinstance(counts, np.ndarray) else check_array(counts, name, ndim=(1, 2), dtype=None)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must have 1 or 2 dimension(s), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    batched = arr.ndim == 2
    arr = arr.reshape(1, -1) if not batched else arr
    floating = np.issubdtype(arr.dtype, np.floating)
    fractional = False
    for start in range(0, arr.shape[0], CHECK_ROWS):
        block = np.asarray(arr[start : start + CHECK_ROWS])
        if floating:
            finite = np.isfinite(block)
            if not finite.all():
                raise ValueError(f"{name} contains {int(block.size - np.count_nonzero(finite))} non-finite "
                                 "value(s) (NaN or inf)")
            fractional = fractional or bool(np.any(block != np.round(block)))
        if np.any(block < 0):
            raise ValueError(f"{name} must be non-negative, found minimum {block.min():.4g}")
    if fractional:
        warnings.warn(
            f"{name} are not all integers: the Poisson likelihood is used as a quasi-likelihood",
            UserWarning, stacklevel=3,
        )
    return (arr.astype(float_dtype()) if convert else arr), batched


def fixed_signature_rows(background, signatures, m: int):
    """Unit-sum rows ``(F, m)`` for the background and extra fixed signatures, with names."""
    rows, names = [], []
    if background is not None:
        b = check_array(background, "background", ndim=1, nonnegative=True)
        if b.shape[0] != m:
            raise ValueError(f"background has {b.shape[0]} channels but counts have {m}")
        if b.sum() <= 0:
            raise ValueError("background is all zero")
        rows.append(b / b.sum())
        names.append("background")
    if signatures is not None:
        if isinstance(signatures, dict):
            names_s, arrs = list(signatures), list(signatures.values())
        else:
            arrs = list(check_array(signatures, "signatures", ndim=(1, 2), nonnegative=True).reshape(-1, m)
                        if np.ndim(signatures) in (1, 2) and np.shape(signatures)[-1] == m
                        else [signatures])
            names_s = [f"fixed{i}" for i in range(len(arrs))]
        for nm, s in zip(names_s, arrs):
            s = check_array(s, f"signatures[{nm!r}]", ndim=1, nonnegative=True)
            if s.shape[0] != m:
                raise ValueError(f"signatures[{nm!r}] has {s.shape[0]} channels but counts have {m}")
            if s.sum() <= 0:
                raise ValueError(f"signatures[{nm!r}] is all zero")
            rows.append(s / s.sum())
            names.append(str(nm))
    dtype = float_dtype()
    return (np.stack(rows).astype(dtype) if rows else np.zeros((0, m), dtype)), names


def latent_setup(models, bounds, latent0):
    """Concatenated lower/upper bounds of the weights and the starting weights per model.

    bounds: ``"training"`` (the range each IAE saw in training), ``"simplex"`` or ``None``
    (:meth:`frugal.iae.IAEModel.weight_bounds`, for every model); latent0: ``None`` (the
    middle of the training range) or one ``(d_k,)`` (or ``(B, d_k)``) array per model.
    """
    if not (bounds is None or isinstance(bounds, str)):
        raise ValueError(f"bounds must be 'training', 'simplex' or None (the same for every model), got {bounds!r}")
    lower, upper, start = [], [], []
    for i, mdl in enumerate(models):
        d = mdl.n_anchors
        lo, hi = mdl.weight_bounds(bounds)
        lower.append(lo)
        upper.append(hi)
        if latent0 is None:
            mid = 0.5 * (mdl.latent_bounds[0] + mdl.latent_bounds[1])
            start.append(mid / mid.sum())
        else:
            start.append(check_array(latent0[i], f"latent0[{i}]", ndim=(1, 2), shape=(d,)))
    return (np.concatenate(lower).astype(float_dtype()), np.concatenate(upper).astype(float_dtype()), start)


# Compiled once: called eagerly, its bisection loop would be traced anew on every call.
project_box = jax.jit(project_box_section)


def simplex_lattice(d: int, resolution: int) -> np.ndarray:
    """All points of the standard simplex with coordinates in ``{0, 1/r, ..., 1}``."""
    if d == 1:
        return np.ones((1, 1))
    pts = []

    def rec(prefix, left, slots):
        if slots == 1:
            pts.append(prefix + [left])
            return
        for v in range(left + 1):
            rec(prefix + [v], left - v, slots - 1)

    rec([], resolution, d)
    return np.asarray(pts, float) / resolution


def latent_grid(models, lower, upper, max_nodes: int = GRID_NODES) -> tuple:
    """Grid nodes of the global start, one ``(G_k, d_k)`` array of weights per model: a
    lattice of the range each model saw in training (``lambda = lo + p (1 - sum lo)`` for
    the lattice points ``p`` of the simplex, ``lo`` the training lower bounds), as fine as
    ``max_nodes`` allows, projected on the solver's bounds ``lower``/``upper``."""
    edges = np.concatenate([[0], np.cumsum([mdl.n_anchors for mdl in models])])
    out = []
    for k, mdl in enumerate(models):
        d = mdl.n_anchors
        resolution = 1
        while d > 1 and len(simplex_lattice(d, resolution + 1)) <= max_nodes:
            resolution += 1
        lo_train = np.asarray(mdl.latent_bounds[0], float)
        spare = max(1.0 - lo_train.sum(), 0.0)
        nodes = lo_train[None] + simplex_lattice(d, resolution) * spare
        lo, hi = lower[edges[k]:edges[k + 1]], upper[edges[k]:edges[k + 1]]
        nodes = np.asarray(project_box(jnp.asarray(nodes, lower.dtype), jnp.asarray(lo), jnp.asarray(hi)))
        out.append(np.unique(nodes.astype(lower.dtype), axis=0))
    return tuple(out)


def reject_tracers(**arrays):
    for name, value in arrays.items():
        if isinstance(value, jax.core.Tracer) or any(
                isinstance(v, jax.core.Tracer) for v in (value.values() if isinstance(value, dict) else ())):
            raise TypeError(
                f"unmix got a JAX tracer for {name}: it validates and chunks its inputs on the host and "
                "cannot run under jax.grad/jit/vmap; use frugal.gamma.unmix_function(models), a pure "
                "function of (counts, fixed signatures, model states) that these transformations accept")


def count_scales(y, dtype) -> np.ndarray:
    """Per-spectrum factor ``c >= 1`` with ``total / c <= SCALED_TOTAL`` (see there)."""
    limit = SCALED_TOTAL[np.dtype(dtype)]
    # float64 sums on the host: exact for any integer dtype, one block of rows at a time.
    totals = np.concatenate([np.asarray(y[i:i + CHECK_ROWS], np.float64).sum(1)
                             for i in range(0, y.shape[0], CHECK_ROWS)])
    if not np.all(np.isfinite(totals)):
        raise ValueError("counts: a spectrum's total is not finite in float64")
    peak = max(float(np.max(y[i:i + CHECK_ROWS])) for i in range(0, y.shape[0], CHECK_ROWS))
    if peak > float(np.finfo(dtype).max) / 1e3:
        raise ValueError(f"counts reach {peak:.3g}, beyond what {np.dtype(dtype).name} can hold in the solver; "
                         "enable float64 with jax.config.update('jax_enable_x64', True)")
    return np.maximum(totals / limit, 1.0)


def spread_starts(models, lower, upper, first, n: int) -> list:
    """Up to ``n`` more starting weight vectors (concatenated over the models), unlike
    ``first`` (the ``(B, d)`` starts already used): the middle of every model's training
    range, then every model at its anchor ``j`` (``j mod d_k``), projected on its bounds."""
    if n <= 0:
        return []
    sizes = [mdl.n_anchors for mdl in models]
    edges = np.concatenate([[0], np.cumsum(sizes)])
    dtype = lower.dtype

    def at(point_of_model):
        parts = []
        for k, d in enumerate(sizes):
            lo, hi = lower[edges[k]:edges[k + 1]], upper[edges[k]:edges[k + 1]]
            x = jnp.asarray(point_of_model(k, d), dtype)
            parts.append(np.asarray(project_box(x, jnp.asarray(lo), jnp.asarray(hi))))
        return np.concatenate(parts).astype(dtype)

    def middle(k, _):
        mid = 0.5 * (models[k].latent_bounds[0] + models[k].latent_bounds[1])
        return mid / mid.sum()

    candidates = [at(middle)] + [at(lambda k, d, j=j: np.eye(d)[j % d]) for j in range(max(sizes))]
    # A start that equals one already used (e.g. latent0 at an anchor) would only repeat it.
    used = [first[0]] if np.all(first == first[0]) else []
    out = []
    for x in candidates:
        if len(out) < n and all(np.max(np.abs(x - u)) > 1e-3 for u in used):
            out.append(x)
            used.append(x)
    return out
