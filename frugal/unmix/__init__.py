"""What the unmixing solvers share: the manifold protocol (:mod:`frugal.unmix.manifold`), the
one interface between a model of deforming signatures and the solvers of SEMSUN and SUSHI."""

from frugal.unmix.manifold import (
    BarycentricManifold,
    BoxManifold,
    Manifold,
    ManifoldModel,
    SignatureModel,
    as_models,
    pad_channels,
)

__all__ = ["BarycentricManifold", "BoxManifold", "Manifold", "ManifoldModel", "SignatureModel", "as_models",
           "pad_channels"]
