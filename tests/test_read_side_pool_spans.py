"""How ``_decode_span_in_pool`` splits one chunk's span among the decode worker processes: the
ranges, the frames and bytes each job gets and the samples it writes, checked against a full
sequential decode (support.selections, support.media) and the chunk's own frame index."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from support.chunks import Chunk, chunk_key, get_bytes
from support.media import ffmpeg_aac, pyav_decode, require_tool, write_wav
from support.pool import record_pool
from support.selections import reference_decode
from support.signals import tone_with_noise

import zarr_aac
from zarr_aac.codec import aac, decode_pool

RATE = 48_000


@pytest.fixture(scope="module")
def pns_file(tmp_path_factory):
    """Six seconds of FFmpeg's AAC with PNS on (about 283 frames), and all its samples decoded in order."""
    ffmpeg = require_tool("ffmpeg")
    root = tmp_path_factory.mktemp("pns")
    pcm = tone_with_noise(RATE * 6, 2, RATE, seed=9)
    m4a = ffmpeg_aac(ffmpeg, write_wav(root / "a.wav", pcm, RATE), root / "a.m4a", pns=True)
    return m4a, pyav_decode(m4a)


def test_a_chunk_of_another_encoder_decodes_in_one_run_in_the_pool(pns_file, monkeypatch):
    """PNS noise depends on every frame decoded before: a span of a file that may use it is one job
    from its first frame, through a fresh decoder, and equals the file's sequential decode exactly,
    however many workers there are."""
    m4a, reference = pns_file
    array = zarr_aac.open_aac_file(m4a, dtype="float32", chunk_length=reference.shape[0], index_path=False)
    record = record_pool(monkeypatch)
    with zarr.config.set({decode_pool.CONFIG_KEY: 2}):
        got = array[:]
    np.testing.assert_array_equal(got, reference)
    ((job,),) = record.reads
    assert job.first_frame == 0 and not job.reuse


CHUNK = 400 * aac.FRAME_LENGTH


@pytest.fixture(scope="module")
def stored():
    """One chunk of 400 frames, stereo int16, with its sequential decode and its frames' bytes."""
    z = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=(CHUNK, 2),
        chunks=(CHUNK, 2),
        dtype="int16",
        serializer=zarr_aac.AACCodec(sample_rate=RATE),
        compressors=None,
    )
    z[:] = (tone_with_noise(CHUNK, 2, RATE, seed=13) * 32767).astype(np.int16)
    return z, reference_decode(z), Chunk.parse(get_bytes(z, chunk_key(z, (0, 0))))


@pytest.mark.parametrize("processes", [2, 3])
@pytest.mark.parametrize(("start", "stop"), [(40 * aac.FRAME_LENGTH + 17, 370 * aac.FRAME_LENGTH - 5), (0, CHUNK)])
def test_the_jobs_of_a_span_partition_it_and_hold_exactly_their_frames(stored, monkeypatch, processes, start, stop):
    """Each job's payload is its frames' bytes back to back as the chunk stores them (past the
    first checksum group too, where the fetched bytes begin at a later frame), its first sample
    that of its first frame; the jobs' writes cover the span once, in order, each from the frame
    after its pre-roll frame; the samples are the sequential decode's."""
    z, reference, chunk = stored
    record = record_pool(monkeypatch)
    with zarr.config.set({decode_pool.CONFIG_KEY: processes}):
        np.testing.assert_array_equal(z[start:stop], reference[start:stop])
    (jobs,) = record.reads
    assert len(jobs) == processes
    skip = chunk.fields["skip"]
    covered = start
    for number, job in enumerate(jobs):
        frames = chunk.frames[job.first_frame : job.first_frame + job.n_frames]
        assert bytes(job.payload) == b"".join(frames)
        np.testing.assert_array_equal(job.frame_offsets, np.cumsum([0, *map(len, frames)]))
        assert job.first_sample == job.first_frame * aac.FRAME_LENGTH - skip
        (write,) = job.writes
        assert write.lo == covered and write.hi > write.lo
        assert write.destination == (slice(write.lo - start, write.hi - start),)
        if number:
            assert write.lo == (job.first_frame + 1) * aac.FRAME_LENGTH - skip
        covered = write.hi
    assert covered == stop


def test_a_span_in_the_pool_is_named_by_its_samples_and_chunk_for_a_dead_workers_error(stored, monkeypatch):
    """``decode_async`` puts ``what`` in the DecodeWorkerError a worker dying mid-read raises
    (tests/test_decode_pool.py kills one): the span's first and last sample and its chunk's key."""
    z, reference, _ = stored
    named = []
    decode_async = decode_pool.decode_async

    async def naming(output, jobs, gain, processes, what, **options):
        named.append(what)
        return await decode_async(output, jobs, gain, processes, what, **options)

    monkeypatch.setattr(decode_pool, "decode_async", naming)
    with zarr.config.set({decode_pool.CONFIG_KEY: 2}):
        np.testing.assert_array_equal(z[1000:300_000], reference[1000:300_000])
    (what,) = named
    # The key with the store's location: the array was opened by the chunk key alone.
    assert what.startswith("samples 1000-299999 of chunk 'memory://") and what.endswith("/c/0/0'")
