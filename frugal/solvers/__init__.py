"""Block-proximal solver core shared by the unmixing problems.

* ``status``: ``Status``, the stop reason every iterative result carries, and the scaled
  projected-gradient residual behind ``Status.CONVERGED``.
* ``block``: ``block_solve`` runs block updates ``(state, data) -> state`` Gauss-Seidel under
  ``lax.while_loop``; ``chain``, ``repeat``, ``jacobi``, ``update_field`` compose them.
* ``multiplicative``: Poisson EM/NNPU amplitude updates, Fisher standard errors, KL-NMF.
* ``gradient``: inner solvers for one block (projected gradient with Armijo backtracking,
  jaxopt's L-BFGS-B, diagonal projected Newton, forward-backward step).
"""

from frugal.solvers.status import Status, decide, scaled_residual, status_counts, status_names
from frugal.solvers.block import BlockResult, block_solve, chain, jacobi, merge_fields, repeat, update_field
from frugal.solvers.gradient import (
    InnerResult,
    lbfgsb,
    projected_gradient,
    projected_newton_diag,
    proximal_gradient_step,
)
from frugal.solvers.batching import resolve_devices, run_batched
from frugal.solvers.variants import AMPLITUDE_STEPS, LATENT_STEPS, OUTER_LOOPS, amplitude_step, latent_step
from frugal.solvers.newton import NewtonResult, damped_newton, stationarity, sum_to_one_basis
from frugal.solvers.multiplicative import (
    NMFResult,
    NNPUResult,
    kl_nmf,
    nmf_residual,
    nnpu,
    nnpu_init,
    poisson_count_residual,
    poisson_covariance,
    poisson_fisher,
    poisson_multiplicative_step,
    poisson_stderr,
)

__all__ = [
    "Status",
    "decide",
    "scaled_residual",
    "status_counts",
    "status_names",
    "AMPLITUDE_STEPS",
    "LATENT_STEPS",
    "OUTER_LOOPS",
    "amplitude_step",
    "latent_step",
    "resolve_devices",
    "run_batched",
    "BlockResult",
    "InnerResult",
    "NMFResult",
    "NNPUResult",
    "NewtonResult",
    "block_solve",
    "chain",
    "damped_newton",
    "jacobi",
    "kl_nmf",
    "lbfgsb",
    "merge_fields",
    "nmf_residual",
    "nnpu",
    "nnpu_init",
    "poisson_count_residual",
    "poisson_covariance",
    "poisson_fisher",
    "poisson_multiplicative_step",
    "poisson_stderr",
    "projected_gradient",
    "projected_newton_diag",
    "proximal_gradient_step",
    "repeat",
    "stationarity",
    "sum_to_one_basis",
    "update_field",
]
