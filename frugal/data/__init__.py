"""Small built-in spectral families for tests, demos and benchmarks."""

from frugal.data.families import Family, Split, line_family, split

__all__ = ["Family", "Split", "line_family", "split"]
