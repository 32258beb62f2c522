"""Chunks whose frames pass every check but decode to fewer samples than the header says, forged
with support.chunks: frames replaced by an AAC raw data block holding only its END element, which
FFmpeg decodes to no samples. Every read of them (whole chunk, zarr's partial read, the decode
worker processes) refuses the chunk by name with the counts, rather than returning samples shifted
or short."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from support.arrays import tone_array
from support.chunks import Chunk, chunk_key, get_bytes, put_bytes
from support.pool import record_pool

import zarr_aac
from zarr_aac.codec import aac, decode_pool
from zarr_aac.errors import CorruptChunkError

RATE = 48_000
CHUNK = 30 * aac.FRAME_LENGTH
KEY = "take/c/0/0"
EMPTY_FRAME = b"\xe0"
"""An AAC raw data block of the END element alone (ID_END, 0b111, padded to a byte): no channel
element, so FFmpeg outputs no samples for it."""


@pytest.fixture(scope="module")
def stored():
    """A stereo int16 array of one chunk, and that chunk's bytes."""
    z = tone_array((CHUNK, 2), (CHUNK, 2), RATE, seed=7)
    key = chunk_key(z, (0, 0))
    return z, key, get_bytes(z, key)


def silenced(data: bytes, frames: list[int]) -> bytes:
    """The chunk with ``frames`` replaced by EMPTY_FRAME, its sizes, payload length and checksums
    made to match: it passes every check of the format and decodes short."""
    chunk = Chunk.parse(data)
    payloads = chunk.frames
    for i in frames:
        payloads[i] = EMPTY_FRAME
    chunk.sizes = np.array([len(p) for p in payloads], "<u2")
    chunk.payload = b"".join(payloads)
    return chunk.pack(payload_nbytes=len(chunk.payload))


def test_an_empty_frame_decodes_to_no_samples(stored):
    """The forgery's premise, through PyAV directly: three empty frames take three frames' samples."""
    _, _, data = stored
    chunk = Chunk.parse(data)
    n_frames = chunk.fields["n_frames"]
    forged = Chunk.parse(silenced(data, [0, 1, 2]))
    context = aac.FrameDecoder(forged.asc, 2)
    assert context.decode(forged.frames).shape == ((n_frames - 3) * aac.FRAME_LENGTH, 2)


@pytest.mark.parametrize("where", [[0, 1, 2], [10, 20, 30]])
def test_decode_chunk_refuses_frames_that_decode_short_of_the_header(stored, where):
    z, _, data = stored
    fields = Chunk.parse(data).fields
    decoded = (fields["n_frames"] - 3) * aac.FRAME_LENGTH - fields["skip"]
    assert decoded < fields["n_samples"] == CHUNK
    with pytest.raises(CorruptChunkError) as caught:
        z.metadata.codecs[0].decode_chunk(silenced(data, where), (CHUNK, 2), np.dtype("int16"), KEY)
    assert caught.value.key == KEY
    assert str(caught.value) == f"corrupt chunk {KEY!r}: frames decode to {decoded} samples, header says {CHUNK}"


def read_refused(z, key, data, selection):
    put_bytes(z, key, data)
    with pytest.raises(CorruptChunkError) as caught:
        z[selection]
    assert caught.value.key is not None and caught.value.key.endswith(key)
    return str(caught.value)


@pytest.mark.parametrize(
    ("selection", "emptied", "run"),
    [
        # A span: its one run, from the pre-roll frame before its first sample to the frame of its
        # last. Samples 2000-8999 are in frames 6-13 (the skip is 5 frames).
        (np.s_[2000:9000], 6, (5, 14)),
        # Rows: runs of the frames holding them, each with its pre-roll frame: 5-6 and 12-13.
        (np.s_[[2000, 9000]], 6, (5, 7)),
        # The whole chunk: every frame, the encoder's priming in frame 0 included.
        (np.s_[:], 1, (0, 37)),
        (np.s_[:], 0, (0, 37)),
    ],
)
def test_a_read_refuses_frames_that_decode_short(stored, selection, emptied, run):
    z, key, data = stored
    fields = Chunk.parse(data).fields
    assert fields["skip"] == 5 * aac.FRAME_LENGTH and fields["n_frames"] == 37
    first, stop = run
    try:
        message = read_refused(z, key, silenced(data, [emptied]), selection)
    finally:
        put_bytes(z, key, data)
    expected = (stop - first) * aac.FRAME_LENGTH
    assert message.endswith(
        f"frames {first}-{stop - 1} decode to {expected - aac.FRAME_LENGTH} samples, expected {expected}"
    )


@pytest.mark.parametrize("emptied", [0, 20])
def test_a_span_decoded_in_the_workers_refuses_frames_that_decode_short(stored, monkeypatch, emptied):
    z, key, data = stored
    monkeypatch.setattr(decode_pool, "POOL_MIN_FRAMES", 1)
    record = record_pool(monkeypatch)
    try:
        with zarr.config.set({decode_pool.CONFIG_KEY: 2}):
            message = read_refused(z, key, silenced(data, [emptied]), np.s_[:])
    finally:
        put_bytes(z, key, data)
    (jobs,) = record.reads
    (job,) = [job for job in jobs if job.first_frame <= emptied < job.first_frame + job.n_frames]
    first, n, length = job.first_frame, job.n_frames, aac.FRAME_LENGTH
    assert message.endswith(
        f"frames {first}-{first + n - 1} decode to {(n - 1) * length} samples, expected {n * length}"
    )


def test_tolerant_reads_fill_a_chunk_that_decodes_short(stored):
    z, key, data = stored
    put_bytes(z, key, silenced(data, [6]))
    try:
        with zarr_aac.tolerant_reads() as report:
            got = z[100:5000]  # frames 4-9
    finally:
        put_bytes(z, key, data)
    np.testing.assert_array_equal(got, 0)
    (error,) = report.errors
    assert isinstance(error, CorruptChunkError) and error.key.endswith(key)


@pytest.mark.parametrize("cut", [1, 100])
def test_a_partial_read_of_a_chunk_cut_short_names_the_bytes_missing(stored, cut):
    """The prefix is whole, the payload ends ``cut`` bytes early: a read of the last samples fetches
    frames 32-36 (their checksum group) and finds fewer bytes than the index points to."""
    z, key, data = stored
    chunk = Chunk.parse(data)
    ends = chunk.prefix_nbytes + np.concatenate([[0], np.cumsum(chunk.sizes.astype(np.int64))])
    start, stop = int(ends[32]), int(ends[37])
    assert stop == len(data)
    try:
        message = read_refused(z, key, data[:-cut], np.s_[CHUNK - 100 :])
    finally:
        put_bytes(z, key, data)
    assert message.endswith(
        f"chunk ends before byte {stop} that its index points to (got {stop - start - cut} of {stop - start} "
        f"bytes from {start})"
    )
