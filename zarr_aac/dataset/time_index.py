"""A lazy, exact time axis for sampled audio.

Sample ``k`` of a recording sits at ``origin + floor(k * 1e9 / rate)`` nanoseconds. Every label
is computed in integer arithmetic (split with ``divmod`` so int64 never overflows, even at 10^10
samples), so there is no drift, and the coordinate is never materialised: ``sel`` inverts the
formula, ``isel`` by slice returns a new index over the same clock.

Label semantics (documented in docs/xarray.md):

- A time slice is half-open: ``slice(t0, t1)`` selects the samples whose instant ``t`` satisfies
  ``t0 <= t < t1``, so consecutive slices tile a recording and a 1 s slice holds ``rate`` samples.
- Strings are exact instants parsed by pandas (ISO-8601 recommended); tz-aware labels are
  converted to UTC. Naive labels follow the rule of :mod:`zarr_aac.start_time`: against a
  recording whose start has a non-zero UTC offset they are refused (naming the offset), against
  a start in UTC they are UTC, against a naive start they are on its clock (and aware labels are
  refused there). numpy ``datetime64`` labels are the axis's own instants and always accepted.
  There is no pandas-style partial-string period matching.
- A scalar label must match a sample instant exactly unless ``method`` is ``"nearest"``,
  ``"pad"``/``"ffill"`` (the sample sounding at that instant) or ``"backfill"``/``"bfill"``.
- Without a known start time the axis is ``timedelta64[ns]`` from the first sample; labels are
  then durations (``"90s"``, ``"00:01:30"``, ``pandas.Timedelta``...). Bare numbers are refused
  on both kinds of axis because their unit would be a guess.
"""

from __future__ import annotations

import datetime
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from xarray import DataArray, Variable
from xarray.core.coordinate_transform import CoordinateTransform
from xarray.core.indexes import CoordinateTransformIndex, Index, PandasIndex
from xarray.core.indexing import IndexSelResult

from zarr_aac.errors import TimeAxisError, TimeLabelError
from zarr_aac.start_time import require_comparable, start_time_ns

NS_PER_S = 1_000_000_000
DATETIME = np.dtype("datetime64[ns]")
TIMEDELTA = np.dtype("timedelta64[ns]")
_METHODS = (None, "nearest", "pad", "ffill", "backfill", "bfill")


def sample_offset_ns(k: Any, rate: int) -> Any:
    """floor(k * 1e9 / rate) for Python ints or int64 arrays, without overflowing int64."""
    whole_seconds, remainder = divmod(k, rate)
    return whole_seconds * NS_PER_S + (remainder * NS_PER_S) // rate


def first_sample_at_or_after(offset_ns: Any, rate: int) -> Any:
    """Smallest k with floor(k * 1e9 / rate) >= offset_ns, i.e. ceil(offset_ns * rate / 1e9)."""
    whole_seconds, remainder = divmod(offset_ns, NS_PER_S)
    return whole_seconds * rate - ((-remainder * rate) // NS_PER_S)


def parse_start_ns(start: Any) -> int:
    """Nanoseconds since the Unix epoch of a start time given as ISO string or timestamp.

    Read by :func:`zarr_aac.start_time.start_time_ns`, the package's one start-time parser (a
    naive time is UTC on this axis); a time it cannot read is a :class:`TimeLabelError`.
    """
    try:
        return start_time_ns(start)
    except (TypeError, ValueError) as exc:
        raise TimeLabelError(f"cannot read start time {start!r} as a timestamp: {exc}") from exc


def format_start_time(start_ns: int) -> str:
    """ISO-8601 UTC string of an epoch-nanosecond instant, as stored in the ``start_time`` attribute."""
    return pd.Timestamp(start_ns, unit="ns", tz="UTC").isoformat().replace("+00:00", "Z")


def _label_ns(label: Any, is_datetime: bool) -> Any:
    """int64 nanoseconds (scalar or array) of time labels; datetime ones relative to the epoch."""
    values = np.asarray(label.values if isinstance(label, DataArray | Variable) else label)
    if values.dtype.kind in "iufcb":
        raise TimeLabelError(
            f"time label {label!r} is a bare number; pass a "
            + (
                "timestamp (e.g. '2026-06-10T05:00:00Z')"
                if is_datetime
                else "duration (e.g. '90s' or pandas.Timedelta)"
            )
        )
    items = values.ravel()
    parsed: pd.DatetimeIndex | pd.TimedeltaIndex
    try:
        if is_datetime:
            if values.dtype.kind == "m" or any(isinstance(v, datetime.timedelta | np.timedelta64) for v in items):
                raise TypeError("a duration is not an instant")
            parsed = pd.to_datetime(items, utc=True, format="ISO8601" if values.dtype.kind in "OUS" else None)
        else:
            if values.dtype.kind == "M" or any(isinstance(v, datetime.datetime | datetime.date) for v in items):
                raise TypeError("an instant is not a duration")
            parsed = pd.to_timedelta(items)
        ns = parsed.as_unit("ns").asi8
    except (ValueError, TypeError, OverflowError) as exc:
        kind = "timestamp" if is_datetime else "duration (this recording has no start time)"
        raise TimeLabelError(f"cannot read time label {label!r} as a {kind}: {exc}") from exc
    return int(ns[0]) if values.ndim == 0 else ns.reshape(values.shape)


class SampleClockTransform(CoordinateTransform):
    """Positions ``p`` to the instants of samples ``first + p * step`` of a recording.

    ``origin_ns`` is the instant of sample 0 (epoch nanoseconds, or 0 on a timedelta axis);
    keeping ``first`` and ``step`` as sample counts, rather than shifting the origin, keeps
    every label bit-identical to the one the full recording gives.
    """

    def __init__(
        self,
        *,
        origin_ns: int,
        rate: int,
        size: int,
        dim: str,
        coord_name: Hashable | None = None,
        first: int = 0,
        step: int = 1,
        is_datetime: bool = True,
        start: str | None = None,
    ) -> None:
        name = dim if coord_name is None else coord_name
        super().__init__([name], {dim: int(size)}, DATETIME if is_datetime else TIMEDELTA)
        self.origin_ns = int(origin_ns)
        self.rate = int(rate)
        self.first = int(first)
        self.step = int(step)
        self.is_datetime = is_datetime
        # The start as the recording gives it, whose UTC offset (or none) decides which labels compare.
        self.start = start if start is not None or not is_datetime else format_start_time(self.origin_ns)

    @property
    def coord_name(self) -> Hashable:
        return self.coord_names[0]

    @property
    def dim(self) -> str:
        return self.dims[0]

    @property
    def size(self) -> int:
        return self.dim_size[self.dim]

    def sample_of(self, positions: Any) -> Any:
        return self.first + positions * self.step

    def instant_ns(self, positions: Any) -> Any:
        return self.origin_ns + sample_offset_ns(self.sample_of(positions), self.rate)

    def forward(self, dim_positions: dict[str, Any]) -> dict[Hashable, Any]:
        positions = np.asarray(dim_positions[self.dim], dtype=np.int64)
        return {self.coord_name: self.instant_ns(positions).view(self.dtype)}

    def reverse(self, coord_labels: dict[Hashable, Any]) -> dict[str, Any]:
        """Positions of the samples sounding at the labels (the last sample at or before each)."""
        ns = np.asarray(self.label_ns(coord_labels[self.coord_name]), dtype=np.int64)
        return {self.dim: self._position_at_or_before(ns)}

    def label_ns(self, label: Any) -> Any:
        """int64 nanoseconds of time labels; on a datetime axis, a label whose UTC offset (or lack of
        one) cannot be compared with the recording's start is a :class:`TimeLabelError`."""
        ns = _label_ns(label, self.is_datetime)
        values = np.asarray(label.values if isinstance(label, DataArray | Variable) else label)
        if self.is_datetime and values.dtype.kind != "M":
            for item in dict.fromkeys(values.ravel().tolist()):
                try:
                    require_comparable(item, self.start)
                except ValueError as exc:
                    raise TimeLabelError(f"time label {item!r}: {exc}") from exc
        return ns

    def _position_at_or_after(self, ns: Any) -> Any:
        sample = first_sample_at_or_after(ns - self.origin_ns, self.rate)
        return -((self.first - sample) // self.step)

    def _position_at_or_before(self, ns: Any) -> Any:
        sample = first_sample_at_or_after(ns + 1 - self.origin_ns, self.rate) - 1
        return (sample - self.first) // self.step

    def equals(self, other: CoordinateTransform, exclude: frozenset[Hashable] | None = None) -> bool:
        return isinstance(other, SampleClockTransform) and self._key() == other._key()

    def _key(self) -> tuple[int, int, int, int, int, bool, Hashable, str]:
        return (
            self.origin_ns,
            self.rate,
            self.first,
            self.step,
            self.size,
            self.is_datetime,
            self.coord_name,
            self.dim,
        )

    def sliced(self, positions: slice) -> SampleClockTransform:
        selected = range(self.size)[positions]
        return SampleClockTransform(
            origin_ns=self.origin_ns,
            rate=self.rate,
            size=len(selected),
            dim=self.dim,
            coord_name=self.coord_name,
            first=self.first + selected.start * self.step,
            step=self.step * selected.step,
            is_datetime=self.is_datetime,
            start=self.start,
        )

    def __repr__(self) -> str:
        return (
            f"SampleClockTransform(origin={self._origin_label()}, rate={self.rate}, first={self.first}, "
            f"step={self.step}, size={self.size})"
        )

    def _origin_label(self) -> str:
        return format_start_time(self.origin_ns) if self.is_datetime else "none (timedelta axis)"


def _require_same_clock(head: SampleClockTransform, part: SampleClockTransform) -> None:
    if (part.rate, part.step, part.is_datetime) != (head.rate, head.step, head.is_datetime):
        if part.is_datetime != head.is_datetime:
            raise TimeAxisError("cannot concatenate a datetime axis with a timedelta axis")
        raise TimeAxisError(
            f"cannot concatenate time axes of {head.rate} Hz (step {head.step}) and {part.rate} Hz (step {part.step})"
        )


def _require_abutting(head: SampleClockTransform, size: int, part: SampleClockTransform) -> None:
    """``part`` must start where sample ``size`` of ``head``'s clock would sound, within half a period."""
    expected_ns = head.instant_ns(size)
    actual_ns = part.instant_ns(0)
    if part.size and abs(actual_ns - expected_ns) * 2 * head.rate > NS_PER_S * head.step:
        gap = (actual_ns - expected_ns) / NS_PER_S
        raise TimeAxisError(
            f"recordings do not abut: the next one starts {gap:+.9f} s from where the previous one ends "
            f"({np.int64(expected_ns).astype(head.dtype)}); keep them as separate variables"
        )


class SampleTimeIndex(CoordinateTransformIndex):
    """xarray index of a recording's time axis: exact, lazy, picklable, concatenable."""

    transform: SampleClockTransform

    @classmethod
    def for_recording(cls, size: int, rate: int, start: Any = None, *, dim: str = "time") -> SampleTimeIndex:
        """Index of ``size`` samples at ``rate`` Hz from ``start`` (None: a timedelta axis).

        Parameters
        ----------
        size : int
            Samples in the recording.
        rate : int
            Sample rate in Hz.
        start : str, datetime, date or numpy.datetime64, optional
            Instant of sample 0 (naive times are UTC on the axis; a date is its midnight). None
            gives a ``timedelta64[ns]`` axis counted from the first sample.
        dim : str, default "time"
            Name of the time dimension and of its coordinate.

        Returns
        -------
        SampleTimeIndex

        Raises
        ------
        zarr_aac.errors.TimeLabelError
            If ``start`` cannot be read as an instant.
        """
        is_datetime = start is not None
        origin = parse_start_ns(start) if is_datetime else 0
        # The start as written (a date is its naive midnight; a 0-d array holds one), for the offset rule.
        written = start[()] if isinstance(start, np.ndarray) else start
        label = (
            written if isinstance(written, str) else written.isoformat() if isinstance(written, datetime.date) else None
        )
        transform = SampleClockTransform(
            origin_ns=origin, rate=rate, size=size, dim=dim, is_datetime=is_datetime, start=label
        )
        return cls(transform)

    @property
    def dim(self) -> str:
        return self.transform.dim

    def isel(self, indexers: Mapping[Any, int | slice | np.ndarray | Variable]) -> Index | None:
        """A forward slice keeps the lazy clock; reversed slices and position arrays materialise
        only the selected labels."""
        indexer = indexers[self.dim]
        if isinstance(indexer, slice) and (indexer.step is None or indexer.step > 0):
            return type(self)(self.transform.sliced(indexer))
        if isinstance(indexer, slice):
            selected = range(self.transform.size)[indexer]
            positions = np.arange(selected.start, selected.stop, selected.step, dtype=np.int64)
        elif np.ndim(indexer) != 1:
            return None
        else:
            positions = np.asarray(indexer.values if isinstance(indexer, Variable) else indexer)
        labels = self.transform.forward({self.dim: positions % max(self.transform.size, 1)})[self.transform.coord_name]
        new_dim = indexer.dims[0] if isinstance(indexer, Variable) else self.dim
        return PandasIndex(pd.Index(labels, name=self.transform.coord_name), new_dim, coord_dtype=labels.dtype)

    def sel(self, labels: dict[Any, Any], method: str | None = None, tolerance: Any = None) -> IndexSelResult:
        label = labels[self.transform.coord_name]
        if method not in _METHODS:
            raise TimeLabelError(f"unknown selection method {method!r}; use one of {_METHODS[1:]} or None")
        if isinstance(label, slice):
            if method is not None or tolerance is not None:
                raise TimeLabelError("a time slice selects [start, stop) exactly; method= and tolerance= do not apply")
            return IndexSelResult({self.dim: self._slice_positions(label)})
        ns = self.transform.label_ns(label)
        positions = self._positions(np.atleast_1d(np.asarray(ns, dtype=np.int64)), method, tolerance, label)
        if isinstance(label, DataArray):
            return IndexSelResult({self.dim: DataArray(positions.reshape(label.shape), dims=label.dims)})
        if isinstance(label, Variable):
            return IndexSelResult({self.dim: Variable(label.dims, positions.reshape(label.shape))})
        return IndexSelResult({self.dim: int(positions[0]) if np.ndim(ns) == 0 else positions.reshape(np.shape(ns))})

    def _slice_positions(self, label: slice) -> slice:
        if label.step is not None:
            raise TimeLabelError(f"time slices take no step (got {label.step!r}); use .isel or resample for decimation")
        clock = self.transform
        size = clock.size
        start = 0 if label.start is None else clock._position_at_or_after(clock.label_ns(label.start))
        stop = size if label.stop is None else clock._position_at_or_after(clock.label_ns(label.stop))
        start = min(max(start, 0), size)
        return slice(start, max(start, min(stop, size)))

    def _positions(self, ns: np.ndarray, method: str | None, tolerance: Any, label: Any) -> np.ndarray:
        clock = self.transform
        last = clock.size - 1
        if clock.size == 0:
            raise TimeLabelError(f"cannot select {label!r}: the time axis is empty")
        before = clock._position_at_or_before(ns)
        after = clock._position_at_or_after(ns)
        if method is None:
            exact = (before == after) & (before >= 0) & (before <= last)
            self._require(exact, ns, label, "is not the instant of a sample; pass method='nearest' or 'pad'")
            return before
        if method in ("pad", "ffill"):
            self._require(before >= 0, ns, label, "lies before the recording")
            positions = np.minimum(before, last)
        elif method in ("backfill", "bfill"):
            self._require(after <= last, ns, label, "lies after the recording")
            positions = np.maximum(after, 0)
        else:
            below = np.clip(before, 0, last)
            above = np.clip(after, 0, last)
            use_above = np.abs(clock.instant_ns(above) - ns) < np.abs(ns - clock.instant_ns(below))
            positions = np.where(use_above, above, below)
        if tolerance is not None:
            limit = int(_label_ns(tolerance, False))
            within = np.abs(clock.instant_ns(positions) - ns) <= limit
            self._require(within, ns, label, f"has no sample within {tolerance!r}")
        return positions

    def _require(self, ok: np.ndarray, ns: np.ndarray, label: Any, problem: str) -> None:
        if not ok.all():
            missing = ns[~ok][0].astype(self.transform.dtype)
            raise TimeLabelError(f"time {missing} (from label {label!r}) {problem} ({self._describe()})")

    def _describe(self) -> str:
        clock = self.transform
        first, last = clock.forward({clock.dim: np.array([0, clock.size - 1])})[clock.coord_name]
        return f"axis {clock.coord_name!r} runs from {first} to {last} at {clock.rate} Hz"

    @classmethod
    def concat(cls, indexes: Sequence[SampleTimeIndex], dim: Hashable, positions: Any = None) -> SampleTimeIndex:
        """Join recordings that abut: each must start where the previous one's next sample would be
        (within half a sample period); the result keeps the first recording's clock.

        xarray calls this from ``xr.concat``; :func:`zarr_aac.concat_recordings` calls it directly.

        Parameters
        ----------
        indexes : sequence of SampleTimeIndex
            The recordings' time indexes, in time order.
        dim : hashable
            Dimension of the joined index.
        positions : None
            Must be None: a lazy axis cannot interleave its parts.

        Returns
        -------
        SampleTimeIndex
            The first recording's clock, as long as all of them together.

        Raises
        ------
        zarr_aac.errors.TimeAxisError
            If ``positions`` is given, an index is not a :class:`SampleTimeIndex`, the axes differ
            in rate, step or kind (datetime or timedelta), or a recording does not abut the previous.
        """
        if positions is not None:
            raise TimeAxisError("a lazy time axis can only be concatenated in order (positions= is not supported)")
        head = indexes[0].transform
        size = head.size
        for index in indexes[1:]:
            part = getattr(index, "transform", None)
            if not isinstance(part, SampleClockTransform):
                raise TimeAxisError(f"cannot concatenate a lazy time axis with a {type(index).__name__}")
            _require_same_clock(head, part)
            _require_abutting(head, size, part)
            size += part.size
        return cls(
            SampleClockTransform(
                origin_ns=head.origin_ns,
                rate=head.rate,
                size=size,
                dim=str(dim),
                coord_name=head.coord_name,
                first=head.first,
                step=head.step,
                is_datetime=head.is_datetime,
                start=head.start,
            )
        )

    def to_pandas_index(self) -> pd.Index:
        """The materialised labels (8 bytes a sample): only for axes small enough to hold."""
        values = self.transform.generate_coords()[self.transform.coord_name]
        return pd.Index(values, name=self.transform.coord_name)

    def _repr_inline_(self, max_width: int) -> str:
        clock = self.transform
        return (
            f"{type(self).__name__} (start={clock._origin_label()}, rate={clock.rate} Hz, "
            f"first={clock.first}, step={clock.step})"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"
