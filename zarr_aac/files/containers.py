"""Frame indexes of AAC streams in the files other programs write: ADTS and MP4/M4A.

Each reader turns a container into a :class:`StreamIndex`: the AudioSpecificConfig, where each
raw AAC frame lies in the file (ADTS headers excluded), and how the decoded stream maps to array
samples (``priming`` decoded samples come before array sample 0). Readers fetch bytes through a
:class:`ByteSource`, so the same code serves local files, object stores and old archives.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import av
import numpy as np

from zarr_aac.codec.aac import AAC_SAMPLE_RATES, FRAME_LENGTH, MAX_CHANNELS
from zarr_aac.errors import CorruptSourceError, UnsupportedAudioError

AOT_LC = 2
AUDIO_OBJECT_TYPES = {
    1: "AAC Main",
    2: "AAC-LC",
    3: "AAC SSR",
    4: "AAC LTP",
    5: "HE-AAC (SBR)",
    6: "AAC Scalable",
    17: "ER AAC-LC",
    19: "ER AAC LTP",
    20: "ER AAC Scalable",
    22: "ER BSAC",
    23: "AAC-LD",
    29: "HE-AACv2 (PS)",
    39: "AAC-ELD",
    42: "USAC (xHE-AAC)",
}
ADTS_SCAN_BLOCK = 8 << 20
"""Bytes read per request while walking ADTS headers (the whole file is read once)."""
MP4_HEADER_PROBE = 16
HEAD_NBYTES = 4096
"""Bytes read first: enough to recognise the container and, often, reach its first boxes."""


class ByteSource(Protocol):
    """Read access to the bytes of one file or blob; ranges are [start, stop) byte offsets."""

    name: str

    async def size(self) -> int: ...

    async def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]: ...


@dataclass(frozen=True)
class StreamIndex:
    """One AAC-LC stream: its configuration, frame locations and priming.

    ``frame_offsets``/``frame_sizes`` locate each raw frame in the source. Array sample ``i`` is
    decoded sample ``priming + i`` of a sequential decode of all frames; the array holds
    ``n_samples`` samples.
    """

    asc: bytes
    channels: int
    sample_rate: int
    frame_offsets: np.ndarray
    frame_sizes: np.ndarray
    priming: int
    n_samples: int
    container: str
    attributes: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.frame_sizes)

    @property
    def table(self) -> np.ndarray:
        """The 3-column view (byte_offset, frame_size, sample_pos) of the old archives."""
        sample_pos = np.arange(self.n_frames, dtype=np.int64) * FRAME_LENGTH - self.priming
        return np.stack([self.frame_offsets, self.frame_sizes, sample_pos], axis=1)


# -- AudioSpecificConfig -----------------------------------------------------------------------


@dataclass(frozen=True)
class AudioSpecificConfig:
    object_type: int
    sample_rate: int
    channels: int


def _profile_name(object_type: int) -> str:
    return AUDIO_OBJECT_TYPES.get(object_type, f"audio object type {object_type}")


def parse_asc(asc: bytes, source: str) -> AudioSpecificConfig:
    """Read the object type, rate and channels of an ASC; anything but AAC-LC is refused."""
    if len(asc) < 2:
        raise CorruptSourceError(source, f"AudioSpecificConfig of {len(asc)} bytes is too short")
    bits = int.from_bytes(asc[:8].ljust(8, b"\0"), "big")
    object_type, used = bits >> 59, 5
    if object_type == 31:
        object_type, used = 32 + ((bits >> 53) & 0x3F), 11
    if object_type != AOT_LC:
        raise UnsupportedAudioError(
            f"{source}: the stream is {_profile_name(object_type)}; only AAC-LC can be served "
            "frame-exactly (re-encode it with zarr_aac.import_file)"
        )
    rate_index = (bits >> (64 - used - 4)) & 0xF
    used += 4
    if rate_index == 15:
        rate = (bits >> (64 - used - 24)) & 0xFFFFFF
        used += 24
    elif rate_index < len(AAC_SAMPLE_RATES):
        rate = AAC_SAMPLE_RATES[rate_index]
    else:
        raise CorruptSourceError(source, f"AudioSpecificConfig has reserved sample-rate index {rate_index}")
    channel_config = (bits >> (64 - used - 4)) & 0xF
    return AudioSpecificConfig(object_type, rate, _channels_of(channel_config, source))


def _channels_of(channel_config: int, source: str) -> int:
    if channel_config == 0:
        raise UnsupportedAudioError(f"{source}: channel configuration 0 (a program config element) is not supported")
    channels = channel_config if channel_config <= 6 else {7: 8}.get(channel_config)
    if channels is None or channels > MAX_CHANNELS:
        raise UnsupportedAudioError(f"{source}: AAC channel configuration {channel_config} is not supported")
    return channels


def make_asc(object_type: int, rate_index: int, channel_config: int) -> bytes:
    """The 2-byte ASC equivalent to an ADTS fixed header."""
    return ((object_type << 11) | (rate_index << 7) | (channel_config << 3)).to_bytes(2, "big")


def check_plain_lc(asc: bytes, first_frames: Sequence[bytes], config: AudioSpecificConfig, source: str) -> None:
    """Decode the first frames and refuse streams that turn out to carry implicit SBR.

    An ASC may announce AAC-LC while the frames hold SBR extension data; FFmpeg then outputs
    2048 samples a frame at twice the rate, which the frame index cannot address.
    """
    ctx = av.CodecContext.create("aac", "r")
    ctx.extradata = asc
    try:
        decoded = [frame for data in first_frames for frame in ctx.decode(av.Packet(data))]
    except av.FFmpegError as exc:
        raise CorruptSourceError(source, f"the first AAC frames do not decode: {exc}") from exc
    for frame in decoded:
        if frame.samples != FRAME_LENGTH or frame.sample_rate != config.sample_rate:
            raise UnsupportedAudioError(
                f"{source}: frames decode to {frame.samples} samples at {frame.sample_rate} Hz, not "
                f"{FRAME_LENGTH} at {config.sample_rate} Hz: HE-AAC (implicit SBR) is not supported"
            )
        if len(frame.layout.channels) != config.channels:
            raise UnsupportedAudioError(
                f"{source}: frames decode to {len(frame.layout.channels)} channels, the header says {config.channels}"
            )


# -- ADTS --------------------------------------------------------------------------------------


def _id3v2_size(head: bytes) -> int:
    """Bytes of an ID3v2 tag at the start of ``head`` (FFmpeg skips it too), else 0."""
    if len(head) >= 10 and head[:3] == b"ID3":
        size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)
        return 10 + size + (10 if head[5] & 0x10 else 0)
    return 0


def is_adts(head: bytes) -> bool:
    pos = _id3v2_size(head)
    return len(head) >= pos + 2 and head[pos] == 0xFF and head[pos + 1] & 0xF6 == 0xF0


def adts_config(header: bytes, source: str, offset: int) -> tuple[bytes, AudioSpecificConfig, int]:
    """(ASC, its fields, header length) from the fixed header of one ADTS frame."""
    if len(header) < 7 or header[0] != 0xFF or header[1] & 0xF6 != 0xF0:
        raise CorruptSourceError(source, f"no ADTS sync word at byte {offset}")
    profile = header[2] >> 6
    rate_index = (header[2] >> 2) & 0xF
    channel_config = ((header[2] & 1) << 2) | (header[3] >> 6)
    if rate_index >= len(AAC_SAMPLE_RATES):
        raise CorruptSourceError(source, f"ADTS frame at byte {offset} has reserved sample-rate index {rate_index}")
    asc = make_asc(profile + 1, rate_index, channel_config)
    return asc, parse_asc(asc, source), 7 if header[1] & 1 else 9


def _walk_adts(buf: bytes, base: int, fixed: int, starts: list[int], lengths: list[int]) -> int:
    """Append the frames that lie whole in ``buf`` (which starts at file offset ``base``).

    Returns how far the walk got: it stops at the first byte that does not start a frame with
    the stream's fixed header, or at a frame that runs past the end of ``buf``.
    """
    pos = 0
    end = len(buf) - 7
    while pos <= end:
        if buf[pos] != 0xFF or ((buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]) & 0xF7FFF0 != fixed:
            break
        length = ((buf[pos + 3] & 3) << 11) | (buf[pos + 4] << 3) | (buf[pos + 5] >> 5)
        if length < 7 or pos + length > len(buf) or buf[pos + 6] & 3:
            break
        starts.append(base + pos)
        lengths.append(length)
        pos += length
    return pos


async def _read_frames(source: ByteSource, offsets: np.ndarray, sizes: np.ndarray) -> list[bytes]:
    """The given frames, fetched as one range (they are checked for being plain AAC-LC)."""
    start, stop = int(offsets.min()), int((offsets + sizes).max())
    (blob,) = await source.read_ranges([(start, stop)])
    return [blob[int(o) - start : int(o + n) - start] for o, n in zip(offsets, sizes, strict=True)]


async def scan_adts(source: ByteSource, head: bytes | None = None) -> StreamIndex:
    """Walk the ADTS headers of a whole file; sample 0 is the first sample a decoder presents.

    ADTS records no encoder priming, so nothing is dropped: a standard decoder (FFmpeg) also
    presents every decoded sample. The whole file is read once, in large blocks.
    """
    name = source.name
    size = await source.size()
    head = head or await _head(source)
    start = _id3v2_size(head)
    first_header = head[start : start + 9]
    if len(first_header) < 9:
        (first_header,) = await source.read_ranges([(start, min(size, start + 9))])
    asc, config, header_nbytes = adts_config(first_header, name, start)
    fixed = ((first_header[1] << 16) | (first_header[2] << 8) | first_header[3]) & 0xF7FFF0
    starts: list[int] = []
    lengths: list[int] = []
    pos = start
    while pos < size:
        (block,) = await source.read_ranges([(pos, min(size, pos + ADTS_SCAN_BLOCK))])
        walked = _walk_adts(block, pos, fixed, starts, lengths)
        if walked == 0:
            break
        pos += walked
    attributes: dict = {}
    if pos < size:
        (tail,) = await source.read_ranges([(pos, min(size, pos + 9))])
        _explain_adts_stop(name, pos, size, tail, header_nbytes, attributes)
    if not starts:
        raise CorruptSourceError(name, "no whole ADTS frame found")
    frame_offsets = np.asarray(starts, dtype=np.int64) + header_nbytes
    frame_sizes = np.asarray(lengths, dtype=np.int64) - header_nbytes
    check_plain_lc(asc, await _read_frames(source, frame_offsets[:3], frame_sizes[:3]), config, name)
    return StreamIndex(
        asc=asc,
        channels=config.channels,
        sample_rate=config.sample_rate,
        frame_offsets=frame_offsets,
        frame_sizes=frame_sizes,
        priming=0,
        n_samples=len(starts) * FRAME_LENGTH,
        container="adts",
        attributes=attributes,
    )


def _explain_adts_stop(name: str, pos: int, size: int, tail: bytes, header_nbytes: int, attributes: dict) -> None:
    """Accept a trailing tag or one truncated last frame; anything else is corruption."""
    if tail.startswith((b"TAG", b"APETAGEX", b"ID3")):
        attributes["trailing_tag_bytes"] = size - pos
        return
    if len(tail) >= 7 and tail[0] == 0xFF and tail[1] & 0xF6 == 0xF0:
        length = ((tail[3] & 3) << 11) | (tail[4] << 3) | (tail[5] >> 5)
        if tail[6] & 3:
            raise UnsupportedAudioError(
                f"{name}: the ADTS frame at byte {pos} holds {(tail[6] & 3) + 1} raw data blocks; "
                "only one block per frame is supported"
            )
        if pos + length > size:
            attributes["truncated_tail_bytes"] = size - pos
            return
        raise CorruptSourceError(name, f"the ADTS frame at byte {pos} changes the stream's profile, rate or channels")
    if size - pos < header_nbytes:
        attributes["truncated_tail_bytes"] = size - pos
        return
    raise CorruptSourceError(name, f"lost ADTS sync at byte {pos} of {size} (bytes {tail[:4].hex()})")


# -- MP4 ---------------------------------------------------------------------------------------


class _MalformedBox(Exception):
    """A box whose size does not fit its parent; reported as CorruptSourceError with the file name."""


def _boxes(data: bytes, start: int = 0, stop: int | None = None) -> dict[str, list[tuple[int, int]]]:
    """Child boxes of ``data[start:stop]`` as {type: [(payload_start, payload_stop), ...]}."""
    stop = len(data) if stop is None else stop
    found: dict[str, list[tuple[int, int]]] = {}
    pos = start
    while pos + 8 <= stop:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = stop - pos
        if size < header or pos + size > stop:
            raise _MalformedBox(f"box {kind!r} at {pos} claims {size} bytes, its parent has {stop - pos}")
        found.setdefault(kind.decode("latin-1"), []).append((pos + header, pos + size))
        pos += size
    return found


def _child(data: bytes, span: tuple[int, int], *path: str) -> tuple[int, int] | None:
    for kind in path:
        spans = _boxes(data, *span).get(kind)
        if not spans:
            return None
        span = spans[0]
    return span


async def _head(source: ByteSource) -> bytes:
    """The first bytes of the file, where containers are recognised."""
    (head,) = await source.read_ranges([(0, min(await source.size(), HEAD_NBYTES))])
    return head


async def _find_moov(source: ByteSource, head: bytes) -> bytes:
    """Read the top-level boxes' headers until ``moov``; return its payload."""
    size = await source.size()
    pos = 0
    start = head
    while pos + 8 <= size:
        if pos + MP4_HEADER_PROBE <= len(start):
            head = start[pos : pos + MP4_HEADER_PROBE]
        else:
            (head,) = await source.read_ranges([(pos, min(size, pos + MP4_HEADER_PROBE))])
        box_size, kind = struct.unpack_from(">I4s", head)
        header = 8
        if box_size == 1:
            (box_size,) = struct.unpack_from(">Q", head, 8)
            header = 16
        elif box_size == 0:
            box_size = size - pos
        if box_size < header:
            raise CorruptSourceError(source.name, f"MP4 box {kind!r} at byte {pos} has size {box_size}")
        if kind == b"moof":
            raise UnsupportedAudioError(f"{source.name}: fragmented MP4 is not supported")
        if kind == b"moov":
            (moov,) = await source.read_ranges([(pos + header, min(size, pos + box_size))])
            if len(moov) != box_size - header:
                raise CorruptSourceError(source.name, f"the moov box at byte {pos} runs past the end of the file")
            return moov
        pos += box_size
    raise CorruptSourceError(source.name, "no moov box: not an MP4 file, or one that was never finished")


def is_mp4(head: bytes) -> bool:
    return len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"free", b"mdat", b"wide", b"skip")


@dataclass(frozen=True)
class _Mp4Track:
    track_id: int
    codec: str
    span: tuple[int, int]
    stsd_entry: tuple[int, int] | None


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
        entries = _boxes(moov, stsd[0] + 8, stsd[1]) if stsd else {}
        codec, entry = next(((k, v[0]) for k, v in entries.items()), ("none", None))
        tracks.append(_Mp4Track(track_id, codec, span, entry))
    return tracks


def _esds_asc(moov: bytes, entry: tuple[int, int], name: str) -> bytes:
    """The DecoderSpecificInfo (ASC) inside an ``mp4a`` sample entry's ``esds`` box."""
    version = struct.unpack_from(">H", moov, entry[0] + 8)[0]
    children = entry[0] + 28 + {0: 0, 1: 16, 2: 36}.get(version, 0)
    esds = _child(moov, (children, entry[1]), "esds")
    if esds is None:
        raise CorruptSourceError(name, "the mp4a sample entry has no esds box")
    data = moov[esds[0] + 4 : esds[1]]
    pos = 0
    while pos < len(data):
        tag = data[pos]
        pos += 1
        length = 0
        for _ in range(4):
            byte = data[pos]
            pos += 1
            length = (length << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        if tag == 0x03:
            flags = data[pos + 2]
            pos += (
                3 + (2 if flags & 0x80 else 0) + (data[pos + 3] + 1 if flags & 0x40 else 0) + (2 if flags & 0x20 else 0)
            )
        elif tag == 0x04:
            object_type = data[pos]
            if object_type not in (0x40, 0x66, 0x67, 0x68):
                raise UnsupportedAudioError(f"{name}: the audio track is not AAC (MP4 object type {object_type:#04x})")
            pos += 13
        elif tag == 0x05:
            return bytes(data[pos : pos + length])
        else:
            pos += length
    raise CorruptSourceError(name, "the esds box holds no AudioSpecificConfig")


def _full_box(moov: bytes, span: tuple[int, int]) -> tuple[int, int]:
    """(version, payload start after version/flags) of a full box."""
    return moov[span[0]], span[0] + 4


def _sample_table(moov: bytes, stbl: tuple[int, int], name: str) -> tuple[np.ndarray, np.ndarray]:
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


def _edit(moov: bytes, trak: tuple[int, int], name: str) -> tuple[int, int] | None:
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


_ITUNSMPB = re.compile(rb"iTunSMPB.{0,40}?data.{8}\s*([0-9A-Fa-f]{8})\s+([0-9A-Fa-f]{8})", re.S)


def _itunsmpb_priming(moov: bytes) -> int | None:
    """Encoder delay from iTunes' gapless tag (used by FFmpeg when there is no edit list)."""
    udta = _child(moov, (0, len(moov)), "udta")
    if udta is None:
        return None
    found = _ITUNSMPB.search(moov, udta[0], udta[1])
    return int(found.group(2), 16) if found else None


async def read_mp4(source: ByteSource, track: int | None = None, head: bytes | None = None) -> StreamIndex:
    """Index the AAC track of an MP4/M4A file from its sample tables (the moov box only).

    ``track`` picks among the file's audio tracks (0 = the first). Priming comes from the edit
    list, else from an iTunSMPB tag, else is 0, as FFmpeg's demuxer does; the sample count is
    what FFmpeg presents: whole frames up to the end of the edit, without trimming the last one.
    """
    name = source.name
    moov = await _find_moov(source, head or await _head(source))
    try:
        return await _index_mp4(source, moov, track)
    except (struct.error, IndexError, _MalformedBox) as exc:
        raise CorruptSourceError(name, f"malformed MP4 tables: {exc}") from exc


async def _index_mp4(source: ByteSource, moov: bytes, track: int | None) -> StreamIndex:
    name = source.name
    if _child(moov, (0, len(moov)), "mvex") is not None:
        raise UnsupportedAudioError(f"{name}: fragmented MP4 is not supported")
    tracks = _audio_tracks(moov)
    if not tracks:
        raise UnsupportedAudioError(f"{name}: the MP4 file has no audio track")
    choice = 0 if track is None else track
    if not 0 <= choice < len(tracks):
        raise UnsupportedAudioError(f"{name}: track={track} but the file has {len(tracks)} audio track(s)")
    chosen = tracks[choice]
    if chosen.codec != "mp4a" or chosen.stsd_entry is None:
        raise UnsupportedAudioError(f"{name}: audio track {choice} holds {chosen.codec!r}, not AAC (mp4a)")
    asc = _esds_asc(moov, chosen.stsd_entry, name)
    config = parse_asc(asc, name)
    mdhd = _child(moov, chosen.span, "mdia", "mdhd")
    version, pos = _full_box(moov, mdhd)
    (media_scale,) = struct.unpack_from(">I", moov, pos + (16 if version == 1 else 8))
    mvhd = _child(moov, (0, len(moov)), "mvhd")
    version, pos = _full_box(moov, mvhd)
    (movie_scale,) = struct.unpack_from(">I", moov, pos + (16 if version == 1 else 8))
    stbl = _child(moov, chosen.span, "mdia", "minf", "stbl")
    offsets, sizes = _sample_table(moov, stbl, name)
    if sizes.size == 0:
        raise CorruptSourceError(name, "the audio track has no samples")
    n_frames = len(sizes)
    attributes: dict = {"track_id": chosen.track_id, "audio_track": choice}
    edit = _edit(moov, chosen.span, name)
    if edit is not None:
        media_time, duration = edit
        priming = media_time * config.sample_rate // media_scale
        end = priming + duration * config.sample_rate // movie_scale
        n_frames = min(n_frames, -(-end // FRAME_LENGTH))
        attributes["priming_from"] = "edit list"
    else:
        smpb = _itunsmpb_priming(moov)
        priming = smpb or 0
        attributes["priming_from"] = "iTunSMPB" if smpb is not None else "none"
    n_samples = n_frames * FRAME_LENGTH - priming
    if n_samples <= 0:
        raise CorruptSourceError(name, f"priming of {priming} samples leaves nothing of {n_frames} frames")
    check_plain_lc(asc, await _read_frames(source, offsets[:3], sizes[:3]), config, name)
    return StreamIndex(
        asc=asc,
        channels=config.channels,
        sample_rate=config.sample_rate,
        frame_offsets=offsets[:n_frames],
        frame_sizes=sizes[:n_frames],
        priming=priming,
        n_samples=n_samples,
        container="mp4",
        attributes=attributes,
    )


async def index_stream(source: ByteSource, track: int | None = None) -> StreamIndex:
    """Recognise the container (ADTS or MP4) and index its AAC stream."""
    head = await _head(source)
    if is_mp4(head):
        return await read_mp4(source, track, head)
    if is_adts(head):
        if track not in (None, 0):
            raise UnsupportedAudioError(f"{source.name}: an ADTS stream has one track, not track={track}")
        return await scan_adts(source, head)
    raise UnsupportedAudioError(
        f"{source.name}: neither an MP4/M4A file nor an ADTS AAC stream (starts {head[:8].hex()})"
    )
