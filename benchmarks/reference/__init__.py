"""Independent reference implementations used to check and time frugal (not part of the package)."""
