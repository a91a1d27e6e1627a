"""frugal.xray."""
