"""Argument checks shared by every public entry point.

Each check raises ``ValueError`` (or ``TypeError`` for the wrong kind of object) with a
message that names the argument and says what was expected, so that a user sees
``counts must be non-negative`` rather than a NaN three calls later.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_array(
    x,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    shape: Sequence[int | None] | None = None,
    finite: bool = True,
    nonnegative: bool = False,
    dtype=np.float32,
) -> np.ndarray:
    """Return ``x`` as a NumPy array after checking it.

    ``ndim`` is an allowed number of dimensions (or a tuple of them); ``shape`` gives the
    trailing sizes that must match (``None`` for any size). ``dtype=None`` keeps the
    input's dtype.
    """
    try:
        arr = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array of numbers, got {type(x).__name__}") from err
    if arr.dtype == object:
        raise TypeError(f"{name} must be an array of numbers, got a ragged or object array")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimension(s), got shape {arr.shape}")
    if shape is not None:
        shape = tuple(shape)
        tail = arr.shape[arr.ndim - len(shape):] if arr.ndim >= len(shape) else None
        ok = tail is not None and all(s is None or s == t for s, t in zip(shape, tail))
        if not ok:
            want = "(..., " + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if finite and np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")
    if nonnegative and np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative, found minimum {arr.min():.4g}")
    return arr


def check_int(value, name: str, *, minimum: int | None = None) -> int:
    """``value`` as an ``int``, at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_float(value, name: str, *, minimum: float | None = None, strict: bool = False) -> float:
    """``value`` as a finite ``float``, above ``minimum`` (strictly if ``strict``)."""
    try:
        out = float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a number, got {value!r}") from err
    if not np.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if minimum is not None and (out < minimum or (strict and out == minimum)):
        op = ">" if strict else ">="
        raise ValueError(f"{name} must be {op} {minimum}, got {value!r}")
    return out


def check_choice(value, name: str, choices: Sequence) -> object:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value
