"""Running a vmapped program over a large batch: chunks of bounded memory, sharded over devices.

Every unmixing entry point takes a leading batch axis. :func:`run_batched` cuts it into
chunks of ``chunk_size`` (padded so that every chunk has one shape and the program compiles
once), and places each chunk on a 1-D device mesh with the batch axis split over the
devices (``jax.sharding``), so one call uses every local GPU/TPU (or the host devices made
by ``XLA_FLAGS=--xla_force_host_platform_device_count=N``). With several hosts, call
``jax.distributed.initialize()`` first on each host and pass ``devices=jax.local_devices()``
with each host's share of the batch: chunks are placed on local devices only.

Inputs and outputs are pytrees (arrays, tuples, NamedTuples...) with a leading batch axis on
every leaf; the outputs come back with NumPy leaves.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

#: Sharded programs kept (keyed by the function and the devices): repeated calls with the
#: same function and devices reuse the compiled program instead of tracing a new wrapper.
_CACHE_SIZE = 32
_SHARDED: OrderedDict = OrderedDict()


def resolve_devices(devices=None) -> list:
    """``None``: all local accelerators (one device on a CPU); an int ``n``: the first ``n``
    local devices; or an explicit sequence of devices.

    On a CPU one device already spreads its work over every core; host devices made with
    ``--xla_force_host_platform_device_count`` share those cores and are used only when
    asked for: 1000 spectra of the paper's 800-channel problem sharded over 2 host devices
    did not finish in 300 s where one device took 26 s, although a small 64-channel problem
    ran 2.6x faster sharded (``benchmarks/host_devices.py``).
    """
    local = jax.local_devices()
    if devices is None:
        return list(local[:1]) if local[0].platform == "cpu" else list(local)
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(local):
            raise ValueError(f"devices must be between 1 and {len(local)} (local devices), got {devices}")
        return list(local[:devices])
    if isinstance(devices, Sequence) and devices and all(isinstance(d, jax.Device) for d in devices):
        return list(devices)
    raise ValueError(f"devices must be None, a number of devices or a list of jax devices, got {devices!r}")


def _fn_key(fn):
    """A hashable identity of ``fn``: a ``functools.partial`` made afresh at each call (e.g.
    ``partial(solve, spec)`` with a static ``spec``) is the same program when its function
    and arguments are equal."""
    if isinstance(fn, partial):
        try:
            key = (_fn_key(fn.func), fn.args, tuple(sorted(fn.keywords.items())))
            hash(key)
            return key
        except TypeError:
            return fn
    return fn


def _sharded(fn: Callable, devs: list, n_shared: int, n_batched: int):
    """``fn`` under ``shard_map`` over the 1-D mesh of ``devs`` (axis ``"batch"``), cached."""
    key = (_fn_key(fn), tuple(devs), n_shared, n_batched)
    try:
        hit = _SHARDED.get(key)
    except TypeError:  # an unhashable function: no caching
        key, hit = None, None
    if hit is not None:
        _SHARDED.move_to_end(key)
        return hit
    mesh = Mesh(np.array(devs), ("batch",))
    # Each device solves its own share with its own loops: under plain sharding the
    # batched while-loops would agree on "every problem done" across devices at each
    # iteration (a collective per iteration, which can stall host-device meshes).
    # A PartitionSpec is a pytree prefix: one spec covers every leaf of an argument.
    out = jax.jit(jax.shard_map(
        fn, mesh=mesh, in_specs=(PartitionSpec(),) * n_shared + (PartitionSpec("batch"),) * n_batched,
        out_specs=PartitionSpec("batch"), check_vma=False,
    )), mesh
    if key is not None:
        _SHARDED[key] = out
        while len(_SHARDED) > _CACHE_SIZE:
            _SHARDED.popitem(last=False)
    return out


#: Default spectra per chunk of the gamma unmixing, by platform. On a CPU one spectrum's
#: linear algebra already keeps the cores busy and a vmapped loop runs until the slowest
#: spectrum of its chunk stops, so small chunks are faster: on 2 cores, 1000 paper spectra
#: (800 channels) ran at 144 spectra/s in chunks of 16 against 70 in chunks of 1024, in a
#: fifth of the memory, and a 64-channel problem at the same rate (2411 against 2314
#: spectra/s). A GPU needs large chunks to fill it (``benchmarks/README.md``).
CHUNK_SIZE = {"cpu": 16, "accelerator": 4096}


def first_of_batch(tree):
    """The result of a batch of one, un-batched: the first row of every array leaf of ``tree``.

    Tuples, lists, dicts and NamedTuples keep their structure, ``None`` stays ``None``; the
    callers pass the batched fields of their result only (a string would lose its tail).
    """
    return jax.tree_util.tree_map(lambda x: x[0], tree)


def default_chunk_size(devices=None) -> int:
    """:data:`CHUNK_SIZE` for the platform of ``devices`` (as :func:`resolve_devices`)."""
    cpu = resolve_devices(devices)[0].platform == "cpu"
    return CHUNK_SIZE["cpu" if cpu else "accelerator"]


def bucket_size(b: int) -> int:
    """The padded length of a batch of ``b`` rows: the next power of two up to 16, then the
    next multiple of 16.

    A compiled program has one batch shape: rounding up makes batches of 5 to 8 spectra
    share one program (a compilation costs seconds; the padded rows cost at most as much
    again as the real ones, and at most 15 rows beyond 16).
    """
    b = int(b)
    return 1 << max(b - 1, 0).bit_length() if b <= 16 else -(-b // 16) * 16


def run_batched(
    fn: Callable,
    batched: Sequence,
    shared: Sequence = (),
    *,
    chunk_size: int = 4096,
    devices=None,
    prepare: Callable | None = None,
    buckets: bool = False,
    min_chunk: int = 1,
):
    """``fn(*shared, *chunk)`` over the leading axis of ``batched``, chunk by chunk.

    ``batched``: a sequence of pytrees (arrays, tuples or NamedTuples of arrays) with a
    leading batch axis of one length on every leaf; ``shared``: a sequence of pytrees passed
    whole to every chunk (replicated on the devices). With ``buckets``, a batch shorter than
    ``chunk_size`` is padded to :func:`bucket_size` rows (at most ``chunk_size``), so that
    batches of nearby sizes share a program (for cheap rows, like spectra; not for cubes);
    ``min_chunk`` pads a short batch further (a second pass over a few rows then runs the
    first pass's program instead of compiling one).
    ``fn`` must be jitted and map leading batch axes to leading batch axes (a vmapped
    program); its output (a pytree of arrays, e.g. a tuple or a NamedTuple) is gathered
    back to NumPy and concatenated over the chunks, and returned with the same structure. Padding repeats the first row of the
    chunk (a valid problem), then is dropped. A batch smaller than the number of devices
    uses only as many devices as it has rows. ``prepare``, if given, maps each chunk's tuple
    of batched NumPy arrays to the arrays sent to the devices (a host-side conversion that
    would not fit in memory for the whole batch).
    """
    # On the host once: chunks are NumPy slices (slicing a device array would compile).
    batched = jax.tree_util.tree_map(np.asarray, tuple(batched))
    leaves = jax.tree_util.tree_leaves(batched)
    if not leaves:
        raise ValueError("run_batched needs at least one batched array")
    b = len(leaves[0]) if np.ndim(leaves[0]) else 0
    if any(np.ndim(x) == 0 or len(x) != b for x in leaves):
        raise ValueError(f"every batched array must have the same leading batch axis ({b} rows)")
    if b == 0:
        raise ValueError("run_batched needs a non-empty batch")
    devs = resolve_devices(devices)
    devs = devs[: max(1, min(len(devs), b))]
    n_dev = len(devs)
    chunk = max(min(chunk_size, bucket_size(b) if buckets else b), min_chunk)
    chunk = -(-chunk // n_dev) * n_dev  # a multiple of the device count
    if n_dev > 1:
        call, mesh = _sharded(fn, devs, len(shared), len(batched))
        split = NamedSharding(mesh, PartitionSpec("batch"))
        shared = jax.device_put(tuple(shared), NamedSharding(mesh, PartitionSpec()))
    else:
        call, split = fn, devs[0]
        shared = jax.device_put(tuple(shared), devs[0])
    outs, pending = [], None

    def fetch(job):
        out, n = job
        return jax.tree_util.tree_map(lambda o: np.asarray(o)[:n], out)

    for start in range(0, b, chunk):
        part = jax.tree_util.tree_map(lambda x: x[start : start + chunk], batched)
        n = min(chunk, b - start)
        if n < chunk:  # one shape, one compilation
            part = jax.tree_util.tree_map(lambda x: np.concatenate([x, np.repeat(x[:1], chunk - n, 0)]), part)
        # Dispatch is asynchronous: the next chunk is sliced, sent and queued before the
        # previous one is fetched, so the host work overlaps the device's (two chunks live).
        if prepare is not None:
            part = tuple(prepare(part))
        job = (call(*shared, *jax.device_put(part, split)), n)
        if pending is not None:
            outs.append(fetch(pending))
        pending = job
    outs.append(fetch(pending))
    if len(outs) == 1:
        return outs[0]
    return jax.tree_util.tree_map(lambda *parts: np.concatenate(parts), *outs)
