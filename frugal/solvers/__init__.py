"""Block-proximal solver core shared by the unmixing problems.

* ``status``: ``Status``, the stop reason every iterative result carries, and the scaled
  projected-gradient residual behind ``Status.CONVERGED``.
* ``block``: ``block_solve`` runs block updates ``(state, data) -> state`` Gauss-Seidel under
  ``lax.while_loop``; ``chain``, ``repeat``, ``jacobi``, ``update_field`` compose them;
  ``inertial_point`` is iPALM's extrapolation.
* ``multiplicative``: Poisson EM/NNPU amplitude updates, Fisher standard errors, KL-NMF.
* ``variants``: the solver pieces as values (amplitude steps, latent steps, outer loops)
  and SEMSUN's solvers ``Newton`` and ``BCD`` composed of them.
* ``gradient``: inner solvers for one block (projected gradient with Armijo backtracking,
  jaxopt's L-BFGS-B, diagonal projected Newton, forward-backward step).
"""

from frugal.solvers.status import Status, decide, scaled_residual, status_counts, status_names
from frugal.solvers.block import (
    IPALM_BETA,
    BlockResult,
    block_solve,
    chain,
    inertial_point,
    jacobi,
    merge_fields,
    repeat,
    update_field,
)
from frugal.solvers.gradient import (
    InnerResult,
    lbfgsb,
    projected_gradient,
    projected_newton_diag,
    proximal_gradient_step,
)
from frugal.solvers.batching import resolve_devices, run_batched
from frugal.solvers.variants import (
    AMPLITUDE_STEPS,
    BCD,
    IPALM,
    LATENT_STEPS,
    LBFGSB,
    OUTER_LOOPS,
    SOLVERS,
    Adam,
    DiagonalNewton,
    Fista,
    GaussSeidel,
    Jacobi,
    LatentNewton,
    Multiplicative,
    Newton,
    ProjectedGradient,
    amplitude_step,
    as_solver,
    latent_step,
)
from frugal.solvers.newton import NewtonResult, damped_newton, jacobi_scale, stationarity, sum_to_one_basis
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
    "SOLVERS",
    "Adam",
    "BCD",
    "DiagonalNewton",
    "Fista",
    "GaussSeidel",
    "IPALM",
    "Jacobi",
    "LBFGSB",
    "LatentNewton",
    "Multiplicative",
    "Newton",
    "ProjectedGradient",
    "amplitude_step",
    "as_solver",
    "latent_step",
    "resolve_devices",
    "run_batched",
    "BlockResult",
    "InnerResult",
    "NMFResult",
    "NNPUResult",
    "NewtonResult",
    "IPALM_BETA",
    "block_solve",
    "inertial_point",
    "chain",
    "damped_newton",
    "jacobi_scale",
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
