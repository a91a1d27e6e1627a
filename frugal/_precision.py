"""Full float32 matrix products inside the solvers.

On NVIDIA GPUs since Ampere, JAX computes float32 matrix products from TF32 inputs by
default (a 10-bit mantissa, relative error about 1e-3). That error reaches the decoded
signatures and the mixture :math:`\\mu = S a`, so a Newton solve near its optimum sees
noisy gradients: measured on an H200 (``benchmarks/results/throughput_gpu.json``, SEMSUN-j,
800 channels), 0.75 % of spectra ran to the iteration limit and, since a vmapped loop waits
for its slowest spectrum, the whole batch ran 2.5 times slower than with full float32
products, which converge like the CPU. So every solver entry point traces its matrix
products at ``"highest"`` precision; on a CPU this changes nothing.
"""

from __future__ import annotations

import functools

import jax

#: Matrix-product precision of the solvers (see :func:`jax.default_matmul_precision`).
SOLVER_PRECISION = "highest"


def full_precision(fn):
    """``fn`` with its matrix products traced at :data:`SOLVER_PRECISION`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with jax.default_matmul_precision(SOLVER_PRECISION):
            return fn(*args, **kwargs)

    return wrapper
