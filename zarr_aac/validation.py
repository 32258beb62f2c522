"""Checks shared by every room: integers in range, the channel count of an array shape.

Each check returns the normalised value or raises the exception class its caller asks for, so
a codec option, an attribute read from a store and a command-line value are judged alike while
the error still says which of them was wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def is_integer(value: Any) -> bool:
    """True for Python and numpy integers, False for ``bool`` (a flag is not a count)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def parse_int_in_range(
    value: Any,
    what: str,
    *,
    minimum: int = 1,
    maximum: int | None = None,
    unit: str = "",
    error: type[Exception] = ValueError,
) -> int:
    """``value`` as an int if it is an integer from ``minimum`` to ``maximum``; else ``error``.

    ``what`` names the value in the message (for example "sample_rate" or "array 'a': the
    sample_rate attribute"), ``unit`` follows the bounds ("Hz", "bits/s").
    """
    if is_integer(value) and value >= minimum and (maximum is None or value <= maximum):
        return int(value)
    unit_text = f" {unit}" if unit else ""
    if maximum is not None:
        expected = f"an integer from {minimum} to {maximum}{unit_text}"
    elif minimum == 1:
        expected = f"a positive integer{f' ({unit})' if unit else ''}"
    else:
        expected = f"an integer of at least {minimum}{unit_text}"
    raise error(f"{what} must be {expected}, got {value!r}")


def parse_positive_int(value: Any, what: str, *, unit: str = "", error: type[Exception] = ValueError) -> int:
    """``value`` as an int if it is an integer above zero; else ``error`` naming ``what``."""
    return parse_int_in_range(value, what, unit=unit, error=error)


def channels_of(shape: tuple[int, ...]) -> int:
    """Channels of an audio array or chunk shape: (samples,) is mono, (samples, channels) not."""
    return 1 if len(shape) == 1 else int(shape[1])
