"""SEMSUN's solver: the pure core (:mod:`frugal.gamma.solver.core`: one spectrum, traceable, and
the jitted program of a chunk) and the checked arguments it takes
(:mod:`frugal.gamma.solver.inputs`). The entry point is :func:`frugal.gamma.unmix`."""
