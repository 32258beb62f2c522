"""Which container a file is, ADTS or MP4/M4A, and the frame index of its AAC stream."""

from __future__ import annotations

from zarr_aac.errors import UnsupportedAudioError
from zarr_aac.files.adts import is_adts, scan_adts
from zarr_aac.files.mp4 import is_mp4, read_mp4
from zarr_aac.files.stream import ByteSource, StreamIndex

HEAD_NBYTES = 4096
"""Bytes read first: enough to recognise the container and, often, reach its first boxes."""


async def index_stream(source: ByteSource, track: int | None = None) -> StreamIndex:
    """Recognise the container (ADTS or MP4) and index its AAC stream.

    ``track`` picks among an MP4 file's audio tracks (None or 0 = the first); an ADTS stream has
    only track 0.
    """
    (head,) = await source.read_ranges([(0, min(await source.size(), HEAD_NBYTES))])
    if is_mp4(head):
        return await read_mp4(source, track, head)
    if is_adts(head):
        if track not in (None, 0):
            raise UnsupportedAudioError(f"{source.name}: an ADTS stream has one track, not track={track}")
        return await scan_adts(source, head)
    raise UnsupportedAudioError(
        f"{source.name}: neither an MP4/M4A file nor an ADTS AAC stream (starts {head[:8].hex()})"
    )
