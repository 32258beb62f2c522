"""One decode job (zarr_aac.codec.decode_pool.DecodeJob) run in the reading process: the blocks it
decodes through this thread's kept buffer, and the decoders it keeps for the next job. Its samples
are checked against a full sequential decode of the stored chunk (support.selections)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import zarr
from support.pool import record_pool
from support.selections import reference_decode, stored_gain
from support.signals import tone_with_noise

import zarr_aac
from zarr_aac.codec import aac, aac_codec, decode_pool

RATE = 48_000
CHUNK = 40 * aac.FRAME_LENGTH
N = CHUNK - 3000


@pytest.fixture(scope="module")
def stored():
    """A stereo int16 array of one chunk, with its sequential decode."""
    z = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=(N, 2),
        chunks=(CHUNK, 2),
        dtype="int16",
        serializer=zarr_aac.AACCodec(sample_rate=RATE),
        compressors=None,
    )
    z[:] = (tone_with_noise(N, 2, RATE, seed=11) * 32767).astype(np.int16)
    return z, reference_decode(z)


@pytest.fixture
def job(stored, monkeypatch):
    """The one decode job a read of the whole chunk through the pool makes (kept in this process)."""
    z, _ = stored
    monkeypatch.setattr(decode_pool, "POOL_MIN_FRAMES", 1)
    record = record_pool(monkeypatch)
    with zarr.config.set({decode_pool.CONFIG_KEY: 1}):
        z[0:N]
    ((only,),) = record.reads
    return only


def run_here(job, stored):
    z, _ = stored
    out = np.zeros((N, 2), np.int16)
    job.run(out, stored_gain(z))
    return out


def test_the_recorded_job_is_the_whole_span(job, stored):
    assert job.reuse and job.writes[0].lo == 0 and job.writes[0].hi == N
    np.testing.assert_array_equal(run_here(job, stored), stored[1])


@pytest.mark.parametrize("block_frames", [1, 3, 7])
def test_a_job_decodes_through_the_kept_buffer_a_block_at_a_time(job, stored, monkeypatch, block_frames):
    """Blocks of exactly as many frames as aac.SCRATCH_MAX_BYTES holds (the last one shorter), each
    into this thread's kept buffer, give the sequential decode's samples."""
    monkeypatch.setattr(aac, "SCRATCH_MAX_BYTES", block_frames * 4 * aac.FRAME_LENGTH * 2)
    blocks = []
    decode_with = aac.FrameDecoder._decode_with

    def recording(self, ctx, frames, out):
        blocks.append((len(frames), out is not None))
        return decode_with(self, ctx, frames, out)

    monkeypatch.setattr(aac.FrameDecoder, "_decode_with", recording)
    np.testing.assert_array_equal(run_here(job, stored), stored[1])
    sizes = [size for size, _ in blocks]
    assert sum(sizes) == job.n_frames
    assert sizes[:-1] == [block_frames] * (len(sizes) - 1) and 0 < sizes[-1] <= block_frames
    assert all(into_kept_buffer for _, into_kept_buffer in blocks)


def test_a_job_of_this_codec_keeps_its_decoder_for_the_next(job, stored):
    """Chunks this codec wrote (PNS off) decode with reused decoders: a job leaves its decoder kept."""
    aac.drop_idle_decoders()
    run_here(job, stored)
    assert len(aac._idle_decoders.get(job.asc, [])) == 1


def test_a_job_of_frames_with_pns_keeps_no_decoder(job, stored):
    """Frames of other encoders (reuse off) decode with fresh decoders, none kept."""
    aac.drop_idle_decoders()
    np.testing.assert_array_equal(run_here(replace(job, reuse=False), stored), stored[1])
    assert job.asc not in aac._idle_decoders


def test_an_async_read_runs_its_last_job_here_and_hands_the_others_to_the_workers(stored, monkeypatch):
    """A span split three ways: two ranges go to the workers, the last decodes in this process."""
    z, reference = stored
    monkeypatch.setattr(decode_pool, "POOL_MIN_FRAMES", 1)
    monkeypatch.setattr(aac_codec, "SPLIT_MIN_FRAMES", 5)
    monkeypatch.setattr(aac_codec, "HANDOFF_FRAMES", 2)
    handed = []
    batch_message = decode_pool.batch_message

    def recording_message(output, batch, gain):
        handed.extend(id(job) for job in batch)
        return batch_message(output, batch, gain)

    monkeypatch.setattr(decode_pool, "batch_message", recording_message)
    record = record_pool(monkeypatch)
    with zarr.config.set({decode_pool.CONFIG_KEY: 3}):
        np.testing.assert_array_equal(z[0:N], reference)
    ((*to_workers, last),) = record.reads
    assert len(to_workers) == 2
    assert sorted(handed) == sorted(id(job) for job in to_workers)
    assert [id(job) for job in record.here] == [id(last)]
