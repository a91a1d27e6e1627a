"""frugal.ops."""
