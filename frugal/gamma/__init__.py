"""frugal.gamma."""
