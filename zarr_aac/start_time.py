"""Clock times: the one reading of a start time or a time bound given as a datetime or an ISO-8601 string.

A time may carry a UTC offset (``2024-09-03T20:26:15+01:00``, ``...Z``) or none ("naive": recorders
write the local time of a clock whose zone they do not record). The rule for naive times, the same
for import, export and the xarray layer (see docs/importing.md, "Start times and time zones"):

- A naive time is kept as written: a recording's ``start_time`` attribute stores it without an
  offset, so nothing claims a zone the recorder never gave.
- Placed on an absolute axis (nanoseconds since the Unix epoch, as the xarray time axis is) a naive
  time is read as UTC.
- Compared with a recording's start time (an export bound, an xarray time label), both must carry
  an offset or both carry none: a naive time against a start with an offset (or the other way
  round) is refused, naming the start's offset, because reading the naive one as UTC would
  silently shift the selection by the offset. One exception: against a start in UTC (``Z``,
  ``+00:00``) a naive time is read as UTC, which is what the xarray axis shows. numpy
  ``datetime64`` values are instants on that axis (the xarray coordinate's own values) and are
  compared as they are.
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


def utc_offset(value: Any) -> timedelta | None:
    """The UTC offset a time carries, None for a naive one; epoch nanoseconds are UTC (zero offset).

    Raises
    ------
    ValueError
        If ``value`` is a string ISO-8601 cannot read.
    """
    if isinstance(value, int | np.integer | np.datetime64):
        return timedelta(0)
    return _read(value)[0].utcoffset()


def require_comparable(value: Any, start: Any) -> None:
    """Refuse to compare ``value`` with a recording's ``start`` where one has a UTC offset and the
    other none (the module's rule); a naive ``value`` against a start in UTC is allowed.

    Raises
    ------
    ValueError
        Naming both times and the start's offset, and how to write ``value`` instead.
    """
    if isinstance(value, np.datetime64):
        return
    value_offset, start_offset = utc_offset(value), utc_offset(start)
    if value_offset is None and start_offset:
        offset = _format_offset(start_offset)
        raise ValueError(
            f"{value} has no UTC offset but the recording's start_time {start} is at UTC{offset}: the two must "
            f"both have a time zone or both have none, as a time without an offset would be read as UTC, {offset} "
            f"away from the recording's clock; write it with the offset (e.g. ...{offset}) or in UTC (...Z)"
        )
    if value_offset is not None and start_offset is None:
        raise ValueError(
            f"{value} has a UTC offset but the recording's start_time {start} has none: the two must both have a "
            "time zone or both have none; write the time without an offset, on the recording's own clock"
        )


def _format_offset(offset: timedelta) -> str:
    sign, magnitude = ("-", -offset) if offset < timedelta(0) else ("+", offset)
    minutes = int(magnitude.total_seconds()) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


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
