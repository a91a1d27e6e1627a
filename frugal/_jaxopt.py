"""The one place that imports jaxopt.

jaxopt still works with current JAX but is no longer maintained and warns on import. Every
use goes through this module (and behind frugal's own solver interfaces), so the warning is
silenced here alone and the library can be swapped out later.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"jaxopt(\..*)?$")
    warnings.filterwarnings("ignore", message=r".*JAXopt is no longer maintained.*")
    import jaxopt  # noqa: E402

__all__ = ["jaxopt"]
