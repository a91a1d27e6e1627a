"""Interpolatory AutoEncoder (IAE): learn a spectral family from a handful of simulations.

Bobin et al., "Learning to interpolate between spectra", Digital Signal Processing (2023);
DESIGN.md section 2. Typical use::

    model = frugal.iae.train(spectra, anchors)          # Optax training, best params kept
    latent = model.interpolate(x)                        # barycentric weights (fast)
    x_hat = model.decode(latent)                         # back to spectra
    fit = frugal.iae.project(model, counts, loss="poisson")   # BSP fit with amplitude
    frugal.iae.save(model, "co60.frugal"); model = frugal.iae.load("co60.frugal")
"""

from frugal.iae.barycenter import barycentric_weights, constrain_weights
from frugal.iae.checkpoint import CheckpointError, load, save
from frugal.iae.metrics import nmse_db
from frugal.iae.model import IAEConfig, IAEModel, IAEState
from frugal.iae.projection import ProjectionResult, project
from frugal.iae.training import train

__all__ = [
    "CheckpointError",
    "IAEConfig",
    "IAEModel",
    "IAEState",
    "ProjectionResult",
    "barycentric_weights",
    "constrain_weights",
    "load",
    "nmse_db",
    "project",
    "save",
    "train",
]
