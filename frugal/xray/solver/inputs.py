"""The arguments of :func:`frugal.xray.sushi` and :func:`frugal.xray.fit_pixels` checked (errors that
name the argument) and turned into what the solver takes: the models' geometry, the cold-start
grids, the data of the active pixels (padded to a bucket size) and the start.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from frugal._validation import check_array
from frugal.xray.params import ParameterMap
from frugal.xray.solver.cube import Data, Models, project_rows
from frugal.xray.solver.loop import simplex_grid
from frugal.xray.solver.results import SushiResult

__all__ = [
    "active_data", "check_background", "check_cube", "check_init", "check_mask", "check_param_maps",
    "cold_start_grids", "model_geometry", "static_trace_len",
]

#: Cold-start grid: step 1/resolution on the anchors' simplex, by number of anchors.
GRID_RESOLUTION = {2: 8, 3: 5, 4: 4, 5: 3}
#: Active pixels are padded to a multiple of this: cubes of one size share one program.
PIXEL_BUCKET = 256


def check_cube(cube, n_channels: int):
    arr = check_array(cube, "cube", ndim=(3, 4), nonnegative=True, dtype=None)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"cube must hold counts (numbers), got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if arr.shape[-3] != n_channels:
        if arr.shape[-1] == n_channels:
            raise ValueError(
                f"cube must be (E, H, W) with energy first, got shape {arr.shape} whose last axis has "
                f"the models' {n_channels} channels (channels last?): use np.moveaxis(cube, -1, -3)"
            )
        raise ValueError(
            f"cube has {arr.shape[-3]} channels on axis -3 (shape {arr.shape}) but the models "
            f"describe {n_channels}"
        )
    batched = arr.ndim == 4
    return (arr if batched else arr[None]), batched


def check_background(background, cube_shape):
    b, e, h, w = cube_shape
    if background is None:
        return np.zeros(cube_shape, np.float32)
    arr = check_array(background, "background", nonnegative=True)
    allowed = [(e,), (e, h, w)] + ([(b, e, h, w)] if b > 1 else [])
    if arr.shape not in allowed:
        shown = " or ".join(str(s) for s in allowed)
        raise ValueError(f"background must have shape {shown} (channels first, like cube), got {arr.shape}")
    if arr.ndim == 1:
        arr = arr[:, None, None]
    return np.broadcast_to(arr, cube_shape).astype(np.float32)


def check_mask(mask, cube_shape):
    b, _, h, w = cube_shape
    if mask is None:
        return np.ones((b, h, w), bool)
    arr = np.asarray(mask)
    if arr.dtype != bool:
        arr = check_array(mask, "mask")
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError("mask must be boolean (True where the data are used)")
        arr = arr.astype(bool)
    if arr.shape not in [(h, w), (b, h, w)]:
        raise ValueError(f"mask must have shape (H, W) = {(h, w)} like the cube's sky, got {arr.shape}")
    return np.broadcast_to(arr, (b, h, w))


def model_geometry(models) -> Models:
    refs, bases, lowers, uppers = [], [], [], []
    for mdl in models:
        man, d = mdl.manifold, mdl.n_anchors
        lo, hi = (jnp.asarray(v, jnp.float32) for v in mdl.latent_bounds)
        # The anchors' barycentre: the middle of the family, where the decoder is best trained.
        refs.append(man.project(jnp.full((d,), 1.0 / d, jnp.float32), lo, hi))
        bases.append(man.tangent_basis(jnp.float32))
        lowers.append(lo)
        uppers.append(hi)
    # Strong dtypes: a weakly typed array (e.g. from jnp.full) would make another compilation.
    states = tuple(jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=jnp.asarray(a).dtype), m.state)
                   for m in models)
    return Models(states, tuple(refs), tuple(bases), tuple(lowers), tuple(uppers))


def cold_start_grids(models, geometry: Models):
    """Free coordinates ``(n_c, k_c)`` of the cold-start candidates of each component."""
    grids = []
    for c, mdl in enumerate(models):
        d = mdl.n_anchors
        lam = simplex_grid(d, GRID_RESOLUTION.get(d, 2))
        t = (lam - np.asarray(geometry.reference[c])) @ np.asarray(geometry.basis[c])
        grids.append(project_rows(mdl.manifold, geometry, c, jnp.asarray(t, jnp.float32)))
    if int(np.prod([len(g) for g in grids])) > 4096:  # many components: the reference weights only
        grids = [jnp.zeros((1, mdl.manifold.n_free), jnp.float32) for mdl in models]
    return tuple(grids)


def active_data(y, bkg, mask):
    """``Data`` of the pixels inside ``mask`` with counts, padded to a common bucket size."""
    b, e, h, w = y.shape
    y_pe = y.reshape(b, e, h * w).transpose(0, 2, 1)
    bkg_pe = bkg.reshape(b, e, h * w).transpose(0, 2, 1)
    active = mask.reshape(b, h * w) & (y_pe.sum(-1) > 0)
    n_max = int(active.sum(-1).max())
    size = min(h * w, max(1, -(-n_max // PIXEL_BUCKET) * PIXEL_BUCKET))
    index = np.zeros((b, size), np.int32)
    weight = np.zeros((b, size), np.float32)
    for i in range(b):  # over cubes, not pixels
        idx = np.flatnonzero(active[i])
        index[i, : len(idx)] = idx
        weight[i, : len(idx)] = 1.0
    rows = np.arange(b)[:, None]
    ya, ba = y_pe[rows, index] * weight[..., None], bkg_pe[rows, index]
    # NumPy arrays: run_batched cuts them into chunks and places them on the devices.
    data = Data(ya.astype(np.float32), ba.astype(np.float32), (1.0 / np.maximum(ya, 1.0)).astype(np.float32),
                weight, index)
    return data, index, weight


def check_init(init, models, geometry: Models, b: int, h: int, w: int, batched: bool):
    """Free-coordinate maps ``(B, k, P)`` per component and amplitude maps ``(B, C, P)``."""
    n_comp = len(models)
    if isinstance(init, SushiResult):
        amplitude, latent = init.amplitude, init.latent
    elif isinstance(init, (tuple, list)) and len(init) == 2:
        amplitude, latent = init
    else:
        raise TypeError(
            f"init must be None, a SushiResult (e.g. from fit_pixels) or a pair (amplitude, latent), "
            f"got {type(init).__name__}"
        )
    lead = (b,) if batched else ()
    amp = check_array(amplitude, "init.amplitude", nonnegative=True)
    if amp.shape != lead + (n_comp, h, w):
        raise ValueError(f"init.amplitude must have shape {lead + (n_comp, h, w)}, got {amp.shape}")
    if isinstance(latent, np.ndarray) or len(latent) != n_comp:
        raise ValueError(f"init.latent must be a sequence of {n_comp} maps (one per model)")
    ts = []
    for c, (mdl, lam) in enumerate(zip(models, latent)):
        d = mdl.n_anchors
        lam = check_array(lam, f"init.latent[{c}]")
        if lam.shape != lead + (d, h, w):
            raise ValueError(f"init.latent[{c}] must have shape {lead + (d, h, w)}, got {lam.shape}")
        lam = lam.reshape((b, d, h * w))
        t = np.einsum("bdp,dk->bkp", lam - np.asarray(geometry.reference[c])[None, :, None],
                      np.asarray(geometry.basis[c]))
        ts.append(jnp.asarray(t, jnp.float32))
    return tuple(ts), amp.reshape(b, n_comp, h * w).astype(np.float32)


def check_param_maps(param_maps, models):
    if param_maps is None:
        return [None] * len(models)
    if isinstance(param_maps, ParameterMap):
        param_maps = [param_maps]
    param_maps = list(param_maps)
    if len(param_maps) != len(models):
        raise ValueError(f"param_maps must have one entry (or None) per model ({len(models)}), got {len(param_maps)}")
    for i, (pm, mdl) in enumerate(zip(param_maps, models)):
        if pm is None:
            continue
        if not isinstance(pm, ParameterMap):
            raise TypeError(f"param_maps[{i}] must be a ParameterMap or None, got {type(pm).__name__}")
        if pm.n_anchors != mdl.n_anchors:
            raise ValueError(f"param_maps[{i}] maps {pm.n_anchors} weights but models[{i}] has {mdl.n_anchors} anchors")
    return param_maps


def static_trace_len(*limits: int) -> int:
    """Static trace length: one bucket (256) for every usual limit, so one compiled program
    serves the per-pixel fit and SUSHI whatever their ``max_iter``."""
    n = max(limits)
    return 256 if n <= 256 else 1 << (n - 1).bit_length()
