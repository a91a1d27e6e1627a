"""frugal.solvers."""
