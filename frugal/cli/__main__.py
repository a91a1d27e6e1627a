"""``python -m frugal.cli``: the ``frugal`` command."""

import sys

from frugal.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
