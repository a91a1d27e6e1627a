"""Running a vmapped program over a large batch: chunks of bounded memory, sharded over devices.

Every unmixing entry point takes a leading batch axis. :func:`run_batched` cuts it into
chunks of ``chunk_size`` (padded so that every chunk has one shape and the program compiles
once), and places each chunk on a 1-D device mesh with the batch axis split over the
devices (``jax.sharding``), so one call uses every local GPU/TPU (or the host devices made
by ``XLA_FLAGS=--xla_force_host_platform_device_count=N``). With several hosts, call
``jax.distributed.initialize()`` first on each host and pass ``devices=jax.local_devices()``
with each host's share of the batch: chunks are placed on local devices only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def resolve_devices(devices=None) -> list:
    """``None``: all local devices; an int ``n``: the first ``n``; or an explicit sequence."""
    local = jax.local_devices()
    if devices is None:
        return list(local)
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= devices <= len(local):
            raise ValueError(f"devices must be between 1 and {len(local)} (local devices), got {devices}")
        return list(local[:devices])
    if isinstance(devices, Sequence) and devices and all(isinstance(d, jax.Device) for d in devices):
        return list(devices)
    raise ValueError(f"devices must be None, a number of devices or a list of jax devices, got {devices!r}")


def run_batched(
    fn: Callable,
    batched: Sequence[np.ndarray],
    shared: Sequence = (),
    *,
    chunk_size: int = 4096,
    devices=None,
):
    """``fn(*shared, *chunk)`` over the leading axis of ``batched``, chunk by chunk.

    ``fn`` must be jitted and map leading batch axes to leading batch axes (a vmapped
    program); its outputs (a tuple of arrays) are gathered back to NumPy and concatenated.
    Padding repeats the first row of the chunk (a valid problem), then is dropped.
    """
    devs = resolve_devices(devices)
    n_dev = len(devs)
    b = len(batched[0])
    chunk = min(chunk_size, b)
    chunk = -(-chunk // n_dev) * n_dev  # a multiple of the device count
    if n_dev > 1:
        mesh = Mesh(np.array(devs), ("batch",))
        split = NamedSharding(mesh, PartitionSpec("batch"))
        replicated = NamedSharding(mesh, PartitionSpec())
        shared = jax.device_put(tuple(shared), replicated)
        # Each device solves its own share with its own loops: under plain sharding the
        # batched while-loops would agree on "every problem done" across devices at each
        # iteration (a collective per iteration, which can stall host-device meshes).
        n_shared = len(shared)
        fn = jax.jit(jax.shard_map(
            fn, mesh=mesh, in_specs=(PartitionSpec(),) * n_shared + (PartitionSpec("batch"),) * len(batched),
            out_specs=PartitionSpec("batch"), check_vma=False,
        ))
    else:
        shared = jax.device_put(tuple(shared), devs[0])
    outs = []
    for start in range(0, b, chunk):
        part = [np.asarray(x[start : start + chunk]) for x in batched]
        n = len(part[0])
        if n < chunk:  # one shape, one compilation
            part = [np.concatenate([x, np.repeat(x[:1], chunk - n, 0)]) for x in part]
        part = jax.device_put(part, split) if n_dev > 1 else jax.device_put(part, devs[0])
        out = fn(*shared, *part)
        outs.append([np.asarray(o)[:n] for o in out])
    return tuple(np.concatenate(parts) for parts in zip(*outs))
