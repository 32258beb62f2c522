"""Clock times: the one reading of a start time or a time bound given as a datetime or an ISO-8601 string.

A time may carry a UTC offset (``2024-09-03T20:26:15+01:00``, ``...Z``) or none ("naive": recorders
write the local time of a clock whose zone they do not record). The rule for naive times, the same
for import, export and the xarray layer (see docs/importing.md, "Start times and time zones"):

- A naive time is kept as written: a recording's ``start_time`` attribute stores it without an
  offset, so nothing claims a zone the recorder never gave.
- Placed on an absolute axis (nanoseconds since the Unix epoch, as the xarray time axis is) a naive
  time is read as UTC.
- Compared with another time, both must carry an offset or both carry none: an export bound
  without an offset against a recording whose start has one (or the other way round) is refused,
  because reading either as UTC would silently shift the segment by the offset.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT64 = np.iinfo(np.int64)
_FRACTION = re.compile(r"[T ]\d{2}:?\d{2}:?\d{2}[.,](\d+)")
"""The fractional seconds of an ISO-8601 time; ``datetime`` keeps six digits of them, the axis nine."""


def _expected(value: Any) -> ValueError:
    return ValueError(
        f"expected a datetime or an ISO-8601 date and time such as 2024-09-03T20:26:15+01:00, got {value!r}"
    )


def _read(value: Any) -> tuple[datetime, int]:
    """``value`` as a datetime and the nanoseconds (0 to 999) below its microsecond."""
    if isinstance(value, datetime):
        return value, int(getattr(value, "nanosecond", 0))  # a pandas Timestamp keeps them there
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day), 0
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise _expected(value) from None
        fraction = _FRACTION.search(value)
        digits = fraction.group(1)[6:9] if fraction is not None else ""
        return parsed, int(digits.ljust(3, "0"))
    raise _expected(value)


def parse_start_time(value: datetime | date | str) -> datetime:
    """A clock time given as a datetime (a date is its midnight) or an ISO-8601 string.

    A naive time stays naive (see the module's rule); digits below the microsecond are dropped.

    Raises
    ------
    ValueError
        If ``value`` is neither a datetime nor a string ISO-8601 can read.
    """
    return _read(value)[0]


def start_time_ns(value: Any) -> int:
    """Nanoseconds since the Unix epoch of a start time, exact to the nanosecond; naive is UTC.

    ``value`` is a datetime (pandas Timestamps keep their nanoseconds), a ``numpy.datetime64``,
    an ISO-8601 string (up to nine fractional digits) or a zero-dimensional array of one.

    Raises
    ------
    TypeError
        If ``value`` is a bare number, whose unit would be a guess.
    ValueError
        If ``value`` is no time ISO-8601 reads, or lies outside 1677-09-21 to 2262-04-11, the
        span of int64 nanoseconds from 1970.
    """
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, np.datetime64):
        if np.isnat(value):
            raise ValueError("NaT is not a start time")
        return int(value.astype("datetime64[ns]").astype(np.int64))
    if isinstance(value, bool | int | float | np.number):
        raise TypeError(f"{value!r} is a bare number, not a time; pass a timestamp such as '2026-06-10T05:00:00Z'")
    moment, nanoseconds = _read(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    ns = (moment - _EPOCH) // timedelta(microseconds=1) * 1000 + nanoseconds
    if not _INT64.min < ns <= _INT64.max:  # the minimum is NaT
        raise ValueError(f"{value!r} lies outside 1677-09-21 to 2262-04-11, the span of int64 nanoseconds from 1970")
    return ns
