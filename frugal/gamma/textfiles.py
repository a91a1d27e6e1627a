"""Bounded, validated reading of the text files that spectra and spectral families come in.

Every reader of :mod:`frugal.gamma.io` and :mod:`frugal.gamma.families` streams its text
through :func:`text_lines`, which refuses a file larger than :data:`MAX_TEXT_BYTES` or a line
longer than :data:`MAX_LINE_CHARS` (no spectrum file is that large; a file that is is
something else, and reading it whole could exhaust memory), and checks counts with
:func:`checked_counts` (errors name the file and what is wrong).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

__all__ = ["FIELD_SEPARATORS", "MAX_CHANNELS", "MAX_LINE_CHARS", "MAX_TEXT_BYTES", "checked_counts", "existing_path",
           "text_lines", "too_many_channels"]

#: Most channels a spectrum file may hold. Detectors have up to 2^16 channels and rebinned
#: list-mode data a few million; more means the file is not a spectrum.
MAX_CHANNELS = 1 << 22

#: Largest text spectrum file, in bytes: MAX_CHANNELS lines of "energy, counts" fit with room
#: to spare, and a larger file is refused before any of it is read.
MAX_TEXT_BYTES = 256 << 20

#: Longest line of a text spectrum file, in characters (65536 counts on one line fit): a
#: line is read at most this far, so a file without line breaks is never read whole.
MAX_LINE_CHARS = 1 << 20


def existing_path(path, what="file") -> Path:
    """``path`` as a :class:`~pathlib.Path`, or an error naming ``what`` if it does not exist."""
    p = Path(os.fspath(path))
    if not p.exists():
        raise ValueError(f"{what} {str(p)!r} does not exist")
    return p


def text_lines(path: Path):
    """``(lineno, line)`` of a text file, streamed; refuses files and lines over the limits."""
    size = path.stat().st_size
    if size > MAX_TEXT_BYTES:
        raise ValueError(
            f"{path}: {size / 2**20:.0f} MiB is too large for a spectrum text file (limit "
            f"{MAX_TEXT_BYTES >> 20} MiB, at most {MAX_CHANNELS} channels); is it a spectrum?"
        )
    with open(path, encoding="utf-8", errors="replace") as fh:
        lineno = 0
        while True:
            line = fh.readline(MAX_LINE_CHARS + 1)
            if not line:
                return
            lineno += 1
            if len(line) > MAX_LINE_CHARS:
                raise ValueError(
                    f"{path}: line {lineno} is longer than {MAX_LINE_CHARS} characters; "
                    "not a spectrum text file"
                )
            yield lineno, line


def too_many_channels(where, n) -> ValueError:
    """The error for a file of more than :data:`MAX_CHANNELS` channels (``n`` says where it stopped)."""
    return ValueError(f"{where}: more than {MAX_CHANNELS} channels ({n}); not a spectrum")


def checked_counts(counts, where: str) -> np.ndarray:
    """``counts`` as a non-empty 1-D float64 array of finite, non-negative numbers (``where`` names the file)."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"{where}: expected a non-empty list of counts, got shape {c.shape}")
    if not np.all(np.isfinite(c)):
        bad = int(np.argmax(~np.isfinite(c)))
        raise ValueError(f"{where}: count {bad} is not finite ({c[bad]})")
    if np.any(c < 0):
        bad = int(np.argmax(c < 0))
        raise ValueError(f"{where}: count {bad} is negative ({c[bad]:g})")
    return c




#: What separates the fields of a line of a numeric text file.
FIELD_SEPARATORS = re.compile(r"[,;\s]+")
