"""The frame index of the AAC track of an MP4/M4A file, from its sample tables in the ``moov`` box.

An MP4 file is a tree of boxes, each an 8-byte header (size, type; a 64-bit size follows when the
size is 1, and 0 means "to the end of the parent") and a payload, which for container boxes is
more boxes. Only the ``moov`` box is read: its sample tables (``stsz``, ``stsc``, ``stco``/``co64``)
locate every frame, its edit list (``elst``) or iTunes' ``iTunSMPB`` tag gives the priming.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import numpy as np

from zarr_aac.codec.aac import FRAME_LENGTH
from zarr_aac.errors import CorruptSourceError, UnsupportedAudioError
from zarr_aac.files.stream import ByteSource, StreamIndex, check_first_frames, parse_asc

MP4_HEADER_PROBE = 16
"""Bytes read at each top-level box to learn its size and type (a 64-bit size included)."""
TOP_LEVEL_BOXES = (b"ftyp", b"moov", b"free", b"mdat", b"wide", b"skip")
"""Box types an MP4 file starts with, in the files phones, recorders and FFmpeg write."""
AAC_OBJECT_TYPES = (0x40, 0x66, 0x67, 0x68)
"""MPEG-4 audio and the three MPEG-2 AAC profiles, as an esds DecoderConfigDescriptor names them."""
_ITUNSMPB = re.compile(rb"iTunSMPB.{0,40}?data.{8}\s*([0-9A-Fa-f]{8})\s+([0-9A-Fa-f]{8})", re.DOTALL)

Span = tuple[int, int]
"""[start, stop) of a box's payload in the bytes it was read from."""


class _MalformedBox(Exception):
    """A box whose size does not fit its parent; reported as CorruptSourceError with the file name."""


def is_mp4(head: bytes) -> bool:
    """Whether the file whose first bytes are ``head`` starts with an MP4 box."""
    return len(head) >= 8 and head[4:8] in TOP_LEVEL_BOXES


def _box_header(data: bytes, pos: int, room: int, offset: int = 0) -> tuple[bytes, int, int]:
    """(type, header length, size) of the box whose header starts at ``data[pos]``.

    The one parser of box headers, for the top-level boxes read one by one from the file and for
    the boxes inside ``moov``. ``room`` is what is left of the parent from ``pos``, which a size
    of 0 takes; ``offset`` is where ``data`` starts, so that messages give the byte in the file
    or in ``moov``.
    """
    size, kind = struct.unpack_from(">I4s", data, pos)
    header = 8
    if size == 1:
        (size,) = struct.unpack_from(">Q", data, pos + 8)
        header = 16
    elif size == 0:
        size = room
    if size < header:
        raise _MalformedBox(f"MP4 box {kind!r} at byte {offset + pos} has size {size}")
    return kind, header, size


def _boxes(data: bytes, start: int = 0, stop: int | None = None) -> dict[str, list[Span]]:
    """Child boxes of ``data[start:stop]`` as {type: [payload span, ...]}."""
    stop = len(data) if stop is None else stop
    found: dict[str, list[Span]] = {}
    pos = start
    while pos + 8 <= stop:
        kind, header, size = _box_header(data, pos, stop - pos)
        if pos + size > stop:
            raise _MalformedBox(f"box {kind!r} at {pos} claims {size} bytes, its parent has {stop - pos}")
        found.setdefault(kind.decode("latin-1"), []).append((pos + header, pos + size))
        pos += size
    return found


def _child(data: bytes, span: Span, *path: str) -> Span | None:
    """The payload of the first box at ``path`` below the box whose payload is ``span``, or None."""
    for kind in path:
        spans = _boxes(data, *span).get(kind)
        if not spans:
            return None
        span = spans[0]
    return span


def _required_child(data: bytes, span: Span, *path: str, source: str, parent: str) -> Span:
    """:func:`_child`, or CorruptSourceError naming the missing box and where it was looked for."""
    found = _child(data, span, *path)
    if found is None:
        raise CorruptSourceError(source, f"{parent} has no {'/'.join(path)} box")
    return found


def _full_box(data: bytes, span: Span) -> tuple[int, int]:
    """(version, payload start after version/flags) of a full box."""
    return data[span[0]], span[0] + 4


async def _find_moov(source: ByteSource, head: bytes) -> bytes:
    """Read the top-level boxes' headers until ``moov``; return its payload."""
    size = await source.size()
    pos = 0
    while pos + 8 <= size:
        if pos + MP4_HEADER_PROBE <= len(head):
            probe = head[pos : pos + MP4_HEADER_PROBE]
        else:
            (probe,) = await source.read_ranges([(pos, min(size, pos + MP4_HEADER_PROBE))])
        try:
            kind, header, box_size = _box_header(probe, 0, size - pos, offset=pos)
        except _MalformedBox as exc:
            raise CorruptSourceError(source.name, str(exc)) from None
        if kind == b"moof":
            raise UnsupportedAudioError(f"{source.name}: fragmented MP4 is not supported")
        if kind == b"moov":
            (moov,) = await source.read_ranges([(pos + header, min(size, pos + box_size))])
            if len(moov) != box_size - header:
                raise CorruptSourceError(source.name, f"the moov box at byte {pos} runs past the end of the file")
            return moov
        pos += box_size
    raise CorruptSourceError(source.name, "no moov box: not an MP4 file, or one that was never finished")


@dataclass(frozen=True)
class _Mp4Track:
    """An audio track: its ``trak`` payload and first sample entry (codec None: no ``stsd`` box)."""

    track_id: int
    codec: str | None
    span: Span
    stsd_entry: Span | None


def _audio_tracks(moov: bytes) -> list[_Mp4Track]:
    tracks = []
    for span in _boxes(moov).get("trak", []):
        hdlr = _child(moov, span, "mdia", "hdlr")
        if hdlr is None or moov[hdlr[0] + 8 : hdlr[0] + 12] != b"soun":
            continue
        tkhd = _child(moov, span, "tkhd")
        version = moov[tkhd[0]] if tkhd else 0
        track_id = struct.unpack_from(">I", moov, tkhd[0] + (20 if version == 1 else 12))[0] if tkhd else 0
        stsd = _child(moov, span, "mdia", "minf", "stbl", "stsd")
        if stsd is None:
            tracks.append(_Mp4Track(track_id, None, span, None))
            continue
        entries = _boxes(moov, stsd[0] + 8, stsd[1])
        codec, entry = next(((k, v[0]) for k, v in entries.items()), ("none", None))
        tracks.append(_Mp4Track(track_id, codec, span, entry))
    return tracks


def _choose_track(moov: bytes, track: int | None, name: str) -> tuple[_Mp4Track, int, Span]:
    """(the audio track ``track`` picks, its number among the audio tracks, its ``mp4a`` sample
    entry); refused unless AAC."""
    tracks = _audio_tracks(moov)
    if not tracks:
        raise UnsupportedAudioError(f"{name}: the MP4 file has no audio track")
    choice = 0 if track is None else track
    if not 0 <= choice < len(tracks):
        raise UnsupportedAudioError(f"{name}: track={track} but the file has {len(tracks)} audio track(s)")
    chosen = tracks[choice]
    if chosen.codec is None:
        raise UnsupportedAudioError(
            f"{name}: audio track {choice} has no mdia/minf/stbl/stsd box to say it holds AAC (mp4a)"
        )
    entry = chosen.stsd_entry
    if chosen.codec != "mp4a" or entry is None:
        raise UnsupportedAudioError(f"{name}: audio track {choice} holds {chosen.codec!r}, not AAC (mp4a)")
    return chosen, choice, entry


def _descriptor_header(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, payload length, payload start) of the MPEG-4 descriptor at ``data[pos]``."""
    tag = data[pos]
    pos += 1
    length = 0
    for _ in range(4):
        byte = data[pos]
        pos += 1
        length = (length << 7) | (byte & 0x7F)
        if not byte & 0x80:
            break
    return tag, length, pos


def _esds_asc(moov: bytes, entry: Span, name: str) -> bytes:
    """The DecoderSpecificInfo (ASC) inside an ``mp4a`` sample entry's ``esds`` box."""
    version = struct.unpack_from(">H", moov, entry[0] + 8)[0]
    children = entry[0] + 28 + {0: 0, 1: 16, 2: 36}.get(version, 0)
    esds = _child(moov, (children, entry[1]), "esds")
    if esds is None:
        raise CorruptSourceError(name, "the mp4a sample entry has no esds box")
    data = moov[esds[0] + 4 : esds[1]]
    pos = 0
    while pos < len(data):
        tag, length, pos = _descriptor_header(data, pos)
        if tag == 0x03:  # ES_Descriptor: skip its ES_ID, flags and the optional fields they announce
            flags = data[pos + 2]
            pos += (
                3 + (2 if flags & 0x80 else 0) + (data[pos + 3] + 1 if flags & 0x40 else 0) + (2 if flags & 0x20 else 0)
            )
        elif tag == 0x04:  # DecoderConfigDescriptor: the object type, then 12 bytes of buffer sizes and rates
            object_type = data[pos]
            if object_type not in AAC_OBJECT_TYPES:
                raise UnsupportedAudioError(f"{name}: the audio track is not AAC (MP4 object type {object_type:#04x})")
            pos += 13
        elif tag == 0x05:  # DecoderSpecificInfo: the ASC
            return bytes(data[pos : pos + length])
        else:
            pos += length
    raise CorruptSourceError(name, "the esds box holds no AudioSpecificConfig")


def _timescale(moov: bytes, header_box: Span) -> int:
    """Units per second of an ``mdhd`` or ``mvhd`` box (after its creation and modification times)."""
    version, pos = _full_box(moov, header_box)
    (scale,) = struct.unpack_from(">I", moov, pos + (16 if version == 1 else 8))
    return scale


def _sample_table(moov: bytes, stbl: Span, name: str) -> tuple[np.ndarray, np.ndarray]:
    """File offsets and sizes of every sample, from stsz, stsc and stco/co64."""
    stsz = _child(moov, stbl, "stsz")
    stsc = _child(moov, stbl, "stsc")
    stco = _child(moov, stbl, "stco") or _child(moov, stbl, "co64")
    if stsz is None or stsc is None or stco is None:
        raise CorruptSourceError(name, "the audio track lacks an stsz, stsc or stco/co64 table")
    _, pos = _full_box(moov, stsz)
    fixed_size, count = struct.unpack_from(">II", moov, pos)
    if fixed_size:
        sizes = np.full(count, fixed_size, dtype=np.int64)
    else:
        sizes = np.frombuffer(moov, ">u4", count, pos + 8).astype(np.int64)
    _, pos = _full_box(moov, stco)
    (n_chunks,) = struct.unpack_from(">I", moov, pos)
    wide = _child(moov, stbl, "stco") is None
    chunk_offsets = np.frombuffer(moov, ">u8" if wide else ">u4", n_chunks, pos + 4).astype(np.int64)
    _, pos = _full_box(moov, stsc)
    (n_entries,) = struct.unpack_from(">I", moov, pos)
    entries = np.frombuffer(moov, ">u4", 3 * n_entries, pos + 4).reshape(n_entries, 3).astype(np.int64)
    first_chunk = entries[:, 0] - 1
    runs = np.diff(np.append(first_chunk, n_chunks))
    if n_entries == 0 or first_chunk[0] != 0 or (runs < 0).any():
        raise CorruptSourceError(name, "the stsc table does not cover the track's chunks in order")
    per_chunk = np.repeat(entries[:, 1], runs)
    if int(per_chunk.sum()) != count:
        raise CorruptSourceError(name, f"stsc places {int(per_chunk.sum())} samples, stsz lists {count}")
    chunk_of_sample = np.repeat(np.arange(n_chunks), per_chunk)
    ends = np.cumsum(sizes)
    chunk_first = np.concatenate(([0], np.cumsum(per_chunk)[:-1]))
    within = ends - sizes - (ends - sizes)[np.minimum(chunk_first, max(count - 1, 0))][chunk_of_sample]
    return chunk_offsets[chunk_of_sample] + within, sizes


def _edit(moov: bytes, trak: Span, name: str) -> tuple[int, int] | None:
    """(media_time, segment_duration in movie units) of the track's one edit, or None."""
    elst = _child(moov, trak, "edts", "elst")
    if elst is None:
        return None
    version, pos = _full_box(moov, elst)
    (count,) = struct.unpack_from(">I", moov, pos)
    layout = ">Qqi" if version == 1 else ">Iii"
    step = struct.calcsize(layout)
    edits = [struct.unpack_from(layout, moov, pos + 4 + k * step) for k in range(count)]
    edits = [(time, duration) for duration, time, _ in edits if time != -1]
    if len(edits) > 1:
        raise UnsupportedAudioError(f"{name}: edit lists with {len(edits)} edits are not supported")
    if count > len(edits):
        raise UnsupportedAudioError(f"{name}: edit lists that start with a delay (an empty edit) are not supported")
    return edits[0] if edits else None


def _itunsmpb_priming(moov: bytes) -> int | None:
    """Encoder delay from iTunes' gapless tag (used by FFmpeg when there is no edit list)."""
    udta = _child(moov, (0, len(moov)), "udta")
    if udta is None:
        return None
    found = _ITUNSMPB.search(moov, udta[0], udta[1])
    return int(found.group(2), 16) if found else None


@dataclass(frozen=True)
class _Presented:
    """Which decoded samples a standard decoder presents: ``priming`` dropped, then ``n_frames`` frames' worth."""

    priming: int
    n_frames: int
    priming_from: str


def _presented(moov: bytes, chosen: _Mp4Track, sample_rate: int, n_frames: int, name: str) -> _Presented:
    """Priming from the edit list, else from an iTunSMPB tag, else 0, as FFmpeg's demuxer does.

    The end of the edit is honoured to the frame: whole frames up to it, the last not trimmed.
    """
    mdhd = _required_child(moov, chosen.span, "mdia", "mdhd", source=name, parent="the audio track")
    mvhd = _required_child(moov, (0, len(moov)), "mvhd", source=name, parent="the moov box")
    media_scale, movie_scale = _timescale(moov, mdhd), _timescale(moov, mvhd)
    edit = _edit(moov, chosen.span, name)
    if edit is None:
        smpb = _itunsmpb_priming(moov)
        return _Presented(smpb or 0, n_frames, "iTunSMPB" if smpb is not None else "none")
    media_time, duration = edit
    priming = media_time * sample_rate // media_scale
    end = priming + duration * sample_rate // movie_scale
    return _Presented(priming, min(n_frames, -(-end // FRAME_LENGTH)), "edit list")


async def read_mp4(source: ByteSource, track: int | None, head: bytes) -> StreamIndex:
    """Index the AAC track of an MP4/M4A file whose first bytes are ``head`` (the moov box only).

    ``track`` picks among the file's audio tracks (None or 0 = the first).
    """
    moov = await _find_moov(source, head)
    try:
        return await _index_mp4(source, moov, track)
    except (struct.error, IndexError, _MalformedBox) as exc:
        raise CorruptSourceError(source.name, f"malformed MP4 tables: {exc}") from exc


async def _index_mp4(source: ByteSource, moov: bytes, track: int | None) -> StreamIndex:
    name = source.name
    if _child(moov, (0, len(moov)), "mvex") is not None:
        raise UnsupportedAudioError(f"{name}: fragmented MP4 is not supported")
    chosen, choice, sample_entry = _choose_track(moov, track, name)
    asc = _esds_asc(moov, sample_entry, name)
    config = parse_asc(asc, name)
    stbl = _required_child(moov, chosen.span, "mdia", "minf", "stbl", source=name, parent="the audio track")
    offsets, sizes = _sample_table(moov, stbl, name)
    if sizes.size == 0:
        raise CorruptSourceError(name, "the audio track has no samples")
    presented = _presented(moov, chosen, config.sample_rate, len(sizes), name)
    n_samples = presented.n_frames * FRAME_LENGTH - presented.priming
    if n_samples <= 0:
        raise CorruptSourceError(
            name, f"priming of {presented.priming} samples leaves nothing of {presented.n_frames} frames"
        )
    await check_first_frames(source, asc, config, offsets, sizes)
    return StreamIndex(
        asc=asc,
        channels=config.channels,
        sample_rate=config.sample_rate,
        frame_offsets=offsets[: presented.n_frames],
        frame_sizes=sizes[: presented.n_frames],
        priming=presented.priming,
        n_samples=n_samples,
        container="mp4",
        attributes={"track_id": chosen.track_id, "audio_track": choice, "priming_from": presented.priming_from},
    )
