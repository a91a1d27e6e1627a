"""frugal: data-frugal learning of spectral models and physics unmixing, in JAX.

Subpackages
-----------
iae      Interpolatory AutoEncoder: learn a spectral family from a few simulations.
data     Small built-in spectral families for tests and demos.
ops      Losses, proximal operators and the starlet transform.
solvers  Block-proximal solver core shared by the unmixing problems.
unmix    The manifold protocol: what the unmixing solvers need of a model of signatures.
gamma    Gamma-ray spectrometry: simulator, I/O, SEMSUN unmixing.
xray     X-ray hyperspectral cubes: simulator, I/O, SUSHI unmixing.
"""

__version__ = "0.1.0"
