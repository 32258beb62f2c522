"""Metadata of a source recording: its tags, GUANO fields, bit depth and start time.

Everything returned here is JSON-serialisable, because it ends up in Zarr attributes.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import guano

from zarr_aac.archive.locations import Source, open_binary
from zarr_aac.start_time import parse_start_time

START_TIME_SOURCES = ("user", "guano", "tag", "filename")
UNPARSED_GUANO_KEY = "zarr_aac|unparsed lines"
"""Where lines of a GUANO block that are not ``key: value`` are kept."""
"""Where a recording's start time came from, in order of precedence."""

_AUDIOMOTH_COMMENT = re.compile(
    r"Recorded at (\d{2}):(\d{2}):(\d{2}) (\d{2})/(\d{2})/(\d{4}) \(UTC(?:([+-])(\d{1,2})(?::?(\d{2}))?)?\)"
)
"""AudioMoth's RIFF comment: time, then day/month/year, then the UTC offset it was set to."""

_FILENAME_TIMES = (
    re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})[_T-]?(\d{2})(\d{2})(\d{2})(?!\d)"),
    re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})[_T ](\d{2})[-_.:](\d{2})[-_.:](\d{2})(?!\d)"),
)
"""Recorder file names: AudioMoth and Song Meter ``YYYYMMDD_HHMMSS``, ``YYYYMMDDTHHMMSS``,
and ``YYYY-MM-DD_HH-MM-SS``; the first plausible date in the name wins."""

_DATE_TAGS = ("creation_time", "date", "ICRD", "DATE", "creation_date")
"""Container tags that may hold a full date and time (a bare year is not a start time)."""

_PCM_BITS = re.compile(r"^pcm_[suf](\d+)")


@dataclass(frozen=True)
class RiffInfo:
    """What a WAV file's own chunk headers say, where FFmpeg does not tell: GUANO fields (bat
    detectors write a ``guan`` chunk, often after the samples) and the sample frames its ``data``
    header declares (None when unknown, as a recorder that lost power leaves it)."""

    guano: dict[str, Any]
    declared_frames: int | None


def read_riff(path: Source) -> RiffInfo:
    """Walk the top-level chunks of a RIFF/WAVE file, seeking over the samples."""
    guano_text, block_align, data_size = None, None, None
    with open_binary(path) as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return RiffInfo({}, None)
        size_of_file = f.seek(0, 2)
        position = 12
        while position + 8 <= size_of_file:
            f.seek(position)
            chunk_id, size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"fmt " and size >= 14:
                fmt = f.read(14)
                block_align = struct.unpack("<12xH", fmt)[0] if len(fmt) == 14 else None
            elif chunk_id == b"data":
                data_size = size
            elif chunk_id == b"guan":
                guano_text = f.read(size)
            position += 8 + size + (size & 1)
    fields = parse_guano(guano_text.rstrip(b"\0").decode("utf-8", errors="replace")) if guano_text else {}
    if data_size is None or data_size in (0, 0xFFFFFFFF) or not block_align:
        return RiffInfo(fields, None)
    return RiffInfo(fields, data_size // block_align)


def parse_guano(text: str) -> dict[str, Any]:
    """The fields of a GUANO block, read by the ``guano`` package where it can.

    Recorders write malformed blocks too. A line that is not ``key: value`` is kept, in order,
    under :data:`UNPARSED_GUANO_KEY` rather than failing the import or being dropped; a block
    whose values the package cannot read (a malformed timestamp, say) is kept as text fields.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    pairs = [line for line in lines if ":" in line]
    try:
        parsed = guano.GuanoFile.from_string("\n".join(pairs))
        fields = {f"{ns}|{key}" if ns else key: _json_value(value) for ns, key, value in parsed.items_namespaced()}
    except (ValueError, TypeError, KeyError):
        fields = {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in pairs)}
    unparsed = [line for line in lines if ":" not in line]
    if unparsed:
        fields[UNPARSED_GUANO_KEY] = unparsed
    return fields


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return str(value)


def start_time_from(
    *, user: datetime | None, guano_fields: dict[str, Any], tags: dict[str, str], filename: str
) -> tuple[datetime | None, str | None]:
    """The recording's start time and where it came from (one of START_TIME_SOURCES), or (None, None)."""
    if user is not None:
        return user, "user"
    stamp = guano_fields.get("Timestamp")
    if stamp:
        try:
            return parse_start_time(stamp), "guano"
        except ValueError:
            pass
    for key, value in tags.items():
        found = _time_in_tag(key, value)
        if found is not None:
            return found, f"tag:{key}"
    found = time_in_filename(filename)
    if found is not None:
        return found, "filename"
    return None, None


def _time_in_tag(key: str, value: str) -> datetime | None:
    if key.lower() == "comment":
        return _audiomoth_time(value)
    if key.lower() == "title":  # recorders and selection tools title a clip with its file name
        return time_in_filename(value)
    if key in _DATE_TAGS and len(value) >= 16:
        try:
            return parse_start_time(value)
        except ValueError:
            return None
    return None


def _audiomoth_time(comment: str) -> datetime | None:
    match = _AUDIOMOTH_COMMENT.search(comment)
    if match is None:
        return None
    hour, minute, second, day, month, year = (int(g) for g in match.groups()[:6])
    sign, off_hours, off_minutes = match.groups()[6:]
    offset = timedelta(hours=int(off_hours or 0), minutes=int(off_minutes or 0))
    tz = timezone(-offset if sign == "-" else offset)
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=tz)
    except ValueError:
        return None


def time_in_filename(filename: str) -> datetime | None:
    """The date and time a recorder wrote into a file name (no time zone: recorders do not say)."""
    stem = Path(filename).stem
    for pattern in _FILENAME_TIMES:
        for match in pattern.finditer(stem):
            year, month, day, hour, minute, second = (int(g) for g in match.groups())
            try:
                found = datetime(year, month, day, hour, minute, second)
            except ValueError:
                continue
            if 1970 <= found.year <= 2100:
                return found
    return None


def bit_depth(codec_name: str, sample_format: str, extradata: bytes | None) -> int | None:
    """Bits per sample of a lossless source; None for lossy codecs, where it has no meaning."""
    match = _PCM_BITS.match(codec_name)
    if match:
        return int(match.group(1))
    if codec_name == "flac" and extradata is not None and len(extradata) >= 34:
        # STREAMINFO: bits 103-107 hold bits-per-sample minus one.
        return (((extradata[12] & 0x01) << 4) | (extradata[13] >> 4)) + 1
    if codec_name in {"alac", "wavpack", "ape", "tta"}:
        return {"s16": 16, "s16p": 16, "u8": 8, "u8p": 8}.get(sample_format)
    return None
