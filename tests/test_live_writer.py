"""Live recording (zarr_aac.open_writer): appends store what one import of the whole signal
stores, bit for bit and byte for byte; readers in threads and other processes always read
exact samples while it grows; a killed writer loses at most the block it was appending and
another process resumes the recording; wrong blocks and misuse raise clear errors."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live_workers import (
    BITRATE,
    BLOCK,
    CHANNELS,
    CHUNK_DURATION,
    RATE,
    classify_read,
    open_test_writer,
    poll,
    record,
    source,
)
from support.chunks import PcmChunk
from support.media import write_wav
from zarr.storage import MemoryStore

import zarr_aac
from zarr_aac.archive.live_writer import LIVE_ATTR, LiveWriter
from zarr_aac.archive.verification import PCM_TAIL
from zarr_aac.cli import main
from zarr_aac.errors import ArchiveError, CorruptChunkError, RecordingInUseError


def chunk_files(recording: Path) -> dict[str, bytes]:
    """Every stored chunk of a local recording, by its path under the recording."""
    return {str(p.relative_to(recording)): p.read_bytes() for p in sorted((recording / "c").rglob("*")) if p.is_file()}


def imported(tmp_path: Path, pcm: np.ndarray, rate: int, **options) -> zarr.Array:
    """One import of the whole of ``pcm`` (as a 16-bit WAV file): the reference."""
    wav = write_wav(tmp_path / "whole.wav", pcm, rate)
    return zarr_aac.import_file(wav, tmp_path / "imported.zarr", "rec", progress=False, **options)


def zarr_reference(live: zarr.Array, pcm: np.ndarray) -> zarr.Array:
    """``pcm`` written by zarr in one call into an array of ``live``'s codec and chunks."""
    array = zarr.create_array(
        MemoryStore(),
        shape=pcm.shape,
        chunks=live.chunks,
        dtype=live.dtype,
        serializer=live.serializer,
        compressors=None,
        fill_value=0,
        config={"write_empty_chunks": True},
    )
    array[:] = pcm
    return array


def stored_chunks(array: zarr.Array) -> dict[tuple[int, ...], bytes | None]:
    """Every chunk of ``array`` inside its shape, by grid position."""
    store, prototype = array.store_path, zarr.core.buffer.default_buffer_prototype()
    found = {}
    for number in range(array.cdata_shape[0]):
        for group in range(array.cdata_shape[1]):
            key = array.metadata.encode_chunk_key((number, group))
            value = zarr.core.sync.sync((store / key).get(prototype))
            found[number, group] = value.to_bytes() if value is not None else None
    return found


def test_a_thousand_half_second_appends_store_the_import_bit_for_bit_while_a_thread_reads(tmp_path):
    """1000 appends of 0.5 s (8 kHz mono, 5 s chunks) against one import of the same signal
    with the same options: the same samples and the same chunk bytes. A thread opening the
    recording afresh and reading its newest samples meanwhile always gets the finished
    recording's samples for whole chunks and the appended samples exactly for the last one."""
    blocks = 1000
    pcm = source(blocks * BLOCK, channels=1)
    reference = imported(tmp_path, pcm, RATE, chunk_duration=CHUNK_DURATION, bitrate=BITRATE)
    expected = reference[:]
    archive = tmp_path / "live.zarr"
    path = str(archive / "rec")
    done = threading.Event()
    counts = {"encoded": 0, "pcm": 0}
    errors: list[BaseException] = []

    def reader() -> None:
        while not done.is_set():
            try:
                array = zarr.open_array(path, mode="r")
                n = array.shape[0]
                start = max(0, n - array.chunks[0] - 700)
                counts[classify_read(array[start:n], start, n, array.chunks[0], pcm, expected)] += 1
            except FileNotFoundError:
                continue  # not created yet
            except BaseException as exc:  # handed to the test
                errors.append(exc)
                return

    with open_test_writer(archive, "rec", channels=1) as writer:
        thread = threading.Thread(target=reader)
        thread.start()
        for i in range(blocks):
            writer.append(pcm[i * BLOCK : (i + 1) * BLOCK])
            if i % 250 == 0:  # what append returned is visible at once
                seen = zarr.open_array(path, mode="r")
                assert seen.shape[0] == (i + 1) * BLOCK
                np.testing.assert_array_equal(seen[i * BLOCK : (i + 1) * BLOCK], pcm[i * BLOCK : (i + 1) * BLOCK])
        done.set()
        thread.join()
    assert not errors, errors[0]
    assert counts["pcm"] > 10 and counts["encoded"] > 0, counts
    live = zarr.open_array(path, mode="r")
    assert live.shape == reference.shape
    np.testing.assert_array_equal(live[:], expected)
    assert chunk_files(archive / "rec") == chunk_files(tmp_path / "imported.zarr" / "rec")
    assert LIVE_ATTR not in live.attrs and live.attrs["n_samples"] == blocks * BLOCK


@pytest.mark.slow
def test_recording_48k_stereo_in_default_chunks_stores_the_import(tmp_path):
    """The realistic case: 48 kHz stereo in 0.5 s blocks, the default 60 s chunks and bitrate,
    two whole chunks and a partial one."""
    rate, block = 48000, 24000
    pcm = source(rate * 150, rate=rate, seed=9)
    reference = imported(tmp_path, pcm, rate, bitrate=160_000)
    with zarr_aac.open_writer(tmp_path / "live.zarr", "rec", sample_rate=rate, channels=2, bitrate=160_000) as w:
        for start in range(0, pcm.shape[0], block):
            w.append(pcm[start : start + block])
    live = zarr_aac.open_recording(tmp_path / "live.zarr" / "rec")
    np.testing.assert_array_equal(live[:], reference[:])
    assert chunk_files(tmp_path / "live.zarr" / "rec") == chunk_files(tmp_path / "imported.zarr" / "rec")


@pytest.mark.slow
def test_a_reader_in_another_process_always_reads_exact_samples(tmp_path):
    blocks = 300
    pcm = source(blocks * BLOCK)
    archive = tmp_path / "live.zarr"
    reference_writer = open_test_writer(zarr.open_group(MemoryStore()), "rec")
    for i in range(blocks):
        reference_writer.append(pcm[i * BLOCK : (i + 1) * BLOCK])
    expected = reference_writer.close()[:]
    np.testing.assert_array_equal(expected, zarr_reference(reference_writer.array, pcm)[:])
    np.save(tmp_path / "pcm.npy", pcm)
    np.save(tmp_path / "reference.npy", expected)
    context = multiprocessing.get_context("spawn")
    done, results = context.Event(), context.Queue()
    with open_test_writer(archive, "rec") as writer:
        writer.append(pcm[:BLOCK])
        reader = context.Process(
            target=poll,
            args=(str(archive / "rec"), str(tmp_path / "pcm.npy"), str(tmp_path / "reference.npy"), done, results),
        )
        reader.start()
        time.sleep(3)  # the reader's interpreter starts
        for i in range(1, blocks):
            writer.append(pcm[i * BLOCK : (i + 1) * BLOCK])
            time.sleep(0.01)
        done.set()
        reads, pcm_reads, errors = results.get(timeout=120)
        reader.join(timeout=30)
    assert not errors, errors[0]
    assert reads > 20 and pcm_reads > 0, (reads, pcm_reads)


def test_a_killed_writer_loses_at_most_its_last_block_and_another_process_resumes(tmp_path):
    blocks = 400
    pcm = source(blocks * BLOCK)
    archive = tmp_path / "live.zarr"
    context = multiprocessing.get_context("spawn")
    appended, started = context.Value("i", 0), context.Event()
    writer = context.Process(target=record, args=(str(archive), "rec", blocks, appended, started))
    writer.start()
    assert started.wait(60)
    while appended.value < 30:
        time.sleep(0.01)
    with pytest.raises(RecordingInUseError, match="another process"):
        open_test_writer(archive, "rec", resume=True)
    time.sleep(np.random.default_rng().uniform(0, 0.3))  # in the middle of some append
    os.kill(writer.pid, signal.SIGKILL)
    writer.join(timeout=30)
    confirmed = appended.value
    assert 30 <= confirmed < blocks

    with open_test_writer(archive, "rec", resume=True) as resumed:
        n = resumed.n_samples
        assert confirmed * BLOCK <= n <= (confirmed + 1) * BLOCK
        stored = zarr.open_array(archive / "rec", mode="r")
        assert stored.shape[0] == n
        tail_start = n // stored.chunks[0] * stored.chunks[0]
        np.testing.assert_array_equal(stored[tail_start:n], pcm[tail_start:n])  # the unfinished chunk, exact
        for start in range(n, pcm.shape[0], BLOCK):
            resumed.append(pcm[start : min(start + BLOCK, pcm.shape[0])])
    finished = zarr.open_array(archive / "rec", mode="r")
    reference = zarr_reference(finished, pcm)
    np.testing.assert_array_equal(finished[:], reference[:])
    assert stored_chunks(finished) == stored_chunks(reference)
    assert zarr_aac.verify(archive, progress=False) == []


class Crash(BaseException):
    """The process dying at a chosen point."""


def test_resuming_after_a_crash_during_close_finishes_the_close(tmp_path, monkeypatch):
    pcm = source(3 * BLOCK + 123)
    archive = tmp_path / "live.zarr"
    writer = open_test_writer(archive, "rec")
    writer.append(pcm)

    def die(self: LiveWriter) -> None:
        raise Crash

    # close() dies once it has encoded the padded last chunk, before the final attributes
    monkeypatch.setattr(LiveWriter, "_finish", die)
    with pytest.raises(Crash):
        writer.close()
    monkeypatch.undo()
    assert LIVE_ATTR in zarr.open_array(archive / "rec", mode="r").attrs
    with pytest.raises(ArchiveError, match="the close is now finished"):
        open_test_writer(archive, "rec", resume=True)
    finished = zarr.open_array(archive / "rec", mode="r")
    np.testing.assert_array_equal(finished[:], zarr_reference(finished, pcm)[:])
    assert LIVE_ATTR not in finished.attrs and finished.attrs["n_samples"] == pcm.shape[0]
    assert zarr_aac.catalogue(archive).loc["rec", "n_samples"] == pcm.shape[0]
    with pytest.raises(ArchiveError, match="closed recording"):
        open_test_writer(archive, "rec", resume=True)


def test_a_crash_between_the_channel_groups_of_a_chunk_loses_none_of_it(monkeypatch):
    """10 channels are two channel groups: the writer dies after encoding the first group of a
    completed chunk and before the second; the resumed writer takes the whole chunk up."""
    pcm = source(5000, channels=10)
    group = zarr.open_group(MemoryStore())
    options = {"sample_rate": RATE, "channels": 10, "chunk_duration": 0.25, "bitrate": 32000}
    writer = zarr_aac.open_writer(group, "rec", **options)
    writer.append(pcm[:1500])
    put = LiveWriter._put

    def put_then_die(self: LiveWriter, coords: tuple[int, int], data: bytes) -> None:
        if coords == (0, 1) and data[5] == 0:  # the second group's AAC chunk (flags 0)
            raise Crash
        put(self, coords, data)

    monkeypatch.setattr(LiveWriter, "_put", put_then_die)
    with pytest.raises(Crash):
        writer.append(pcm[1500:3000])  # completes chunk 0 (2048 samples)
    monkeypatch.undo()
    writer._release()
    with zarr_aac.open_writer(group, "rec", resume=True, **options) as resumed:
        assert resumed.n_samples == 2048
        resumed.append(pcm[2048:])
    finished = zarr_aac.open_recording(group["rec"])
    reference = zarr_reference(finished, pcm)
    np.testing.assert_array_equal(finished[:], reference[:])
    assert stored_chunks(finished) == stored_chunks(reference)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(0, 5000), min_size=1, max_size=12).filter(lambda s: sum(s) > 0),
    crash_after=st.integers(-1, 11),
    channels=st.sampled_from([1, 2, 10]),
)
def test_any_blocks_with_any_crash_store_what_one_write_of_their_sum_stores(sizes, crash_after, channels):
    """Whatever the block sizes (empty ones too), and a writer abandoned after any block and
    resumed, the samples and chunk bytes are those zarr stores from the whole signal in one
    write; 10 channels are two channel groups, the second padded."""
    pcm = source(sum(sizes), channels=channels)
    group = zarr.open_group(MemoryStore())
    options = {"sample_rate": RATE, "channels": channels, "chunk_duration": 0.25, "bitrate": 32000}
    writer = zarr_aac.open_writer(group, "rec", **options)
    position = 0
    for i, size in enumerate(sizes):
        writer.append(pcm[position : position + size])
        position += size
        if i == crash_after:
            writer._release()  # dropped without closing, as a killed process leaves it
            writer = zarr_aac.open_writer(group, "rec", resume=True, **options)
            assert writer.n_samples == position
    finished = writer.close()
    reference = zarr_reference(finished, pcm)
    np.testing.assert_array_equal(finished[:], reference[:])
    assert stored_chunks(finished) == stored_chunks(reference)


def test_readers_see_every_sample_through_open_recording_xarray_and_read_clips(tmp_path, capsys):
    pcm = source(11_000)
    archive = tmp_path / "live.zarr"
    with open_test_writer(archive, "rec") as writer:
        writer.append(pcm[:7000])
        writer.append(pcm[7000:])
        recording = zarr_aac.open_recording(archive / "rec")
        np.testing.assert_array_equal(recording[:], pcm)  # one chunk, still PCM: exact
        np.testing.assert_array_equal(recording[4000:4010, 1], pcm[4000:4010, 1])
        ds = zarr_aac.open_dataset(archive, variable="rec")
        np.testing.assert_array_equal(ds["audio"].values, pcm)
        clips = zarr_aac.read_clips(recording, [0, 5000, 10_000], 1000)
        np.testing.assert_array_equal(clips, np.stack([pcm[0:1000], pcm[5000:6000], pcm[10_000:11_000]]))
        assert "rec" in zarr_aac.catalogue(archive).index
        assert main(["ls", str(archive)]) == 0
        assert main(["info", str(archive / "rec")]) == 0
        listed = capsys.readouterr()
        assert "rec" in listed.out and "1 being written live" in listed.err
    closed = zarr_aac.open_recording(archive / "rec")
    np.testing.assert_array_equal(closed[:], zarr_reference(closed, pcm)[:])


def test_verify_reports_a_pcm_tail_as_such_and_a_damaged_one_as_corrupt(tmp_path):
    pcm = source(50_000)
    archive = tmp_path / "live.zarr"
    writer = open_test_writer(archive, "rec")
    writer.append(pcm)  # one whole 5 s chunk (39936 samples: 39 frames) and a tail
    tail_file = archive / "rec" / "c" / "1" / "0"
    assert zarr_aac.verify(archive, progress=False) == [{"array": "rec", "key": "rec/c/1/0", "error": PCM_TAIL}]
    command = [sys.executable, "-m", "zarr_aac.cli", "verify", "--quiet", str(archive)]
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "1 sound PCM tail chunk(s)" in run.stderr

    chunk = PcmChunk.parse(tail_file.read_bytes())  # the spec's layout, parsed independently
    assert chunk.checksums_hold() and chunk.fields["n_samples"] == 39936
    np.testing.assert_array_equal(chunk.samples, pcm[39936:])
    damaged = bytearray(tail_file.read_bytes())
    damaged[-3] ^= 0x10
    tail_file.write_bytes(bytes(damaged))
    (problem,) = zarr_aac.verify(archive, progress=False)
    assert "checksum mismatch in the PCM samples" in problem["error"]
    with pytest.raises(CorruptChunkError, match="PCM samples"):
        zarr.open_array(archive / "rec", mode="r")[45_000:45_010]
    tail_file.write_bytes(chunk.pack())
    writer.close()
    assert zarr_aac.verify(archive, progress=False) == []


def test_pcm_chunk_fields_that_break_the_spec_are_corrupt(tmp_path):
    archive = tmp_path / "live.zarr"
    writer = open_test_writer(archive, "rec")
    writer.append(source(1000))
    tail_file = archive / "rec" / "c" / "0" / "0"
    chunk = PcmChunk.parse(tail_file.read_bytes())
    array = zarr.open_array(archive / "rec", mode="r")
    for overrides, message in [
        ({"frame_length": 4}, "payload bytes"),  # float32 samples claimed in int16 bytes
        ({"n_frames": 50_000}, "stored of"),
        ({"n_samples": 4096}, "chunk holds 4096 samples"),
        ({"asc_nbytes": 2}, "AudioSpecificConfig"),
        ({"flags": 3}, "unknown flags"),
    ]:
        tail_file.write_bytes(chunk.pack(**overrides))
        with pytest.raises(CorruptChunkError, match=message):
            array[:10]
    writer._release()


def test_wrong_blocks_and_misuse_raise_clear_errors(tmp_path):
    archive = tmp_path / "live.zarr"
    with open_test_writer(archive, "rec") as writer:
        with pytest.raises(ValueError, match="float32 samples for recording 'rec' of int16"):
            writer.append(np.zeros((10, CHANNELS), dtype="float32"))
        with pytest.raises(ValueError, match=r"shape \(10, 3\) for recording 'rec' of 2 channel"):
            writer.append(np.zeros((10, 3), dtype="int16"))
        with pytest.raises(ValueError, match="block at 44100 Hz for recording 'rec' at 8000 Hz"):
            writer.append(np.zeros((10, CHANNELS), dtype="int16"), sample_rate=44100)
        with pytest.raises(TypeError, match="numpy array"):
            writer.append([[0, 0]])
        with pytest.raises(RecordingInUseError, match="this process"):
            open_test_writer(archive, "rec", resume=True)
        with pytest.raises(ArchiveError, match="already exists; pass resume=True"):
            open_test_writer(archive, "rec")
        writer.append(np.zeros((10, CHANNELS), dtype="int16"))
    with pytest.raises(ValueError, match="is closed"):
        writer.append(np.zeros((10, CHANNELS), dtype="int16"))
    with pytest.raises(ArchiveError, match="closed recording"):
        open_test_writer(archive, "rec", resume=True)
    float_writer = zarr_aac.open_writer(archive, "f", sample_rate=RATE, channels=1, dtype="float32")
    with pytest.raises(ValueError, match="NaN or infinite"):
        float_writer.append(np.array([0.1, np.nan], dtype="float32"))
    float_writer._release()
    with pytest.raises(ArchiveError, match=r"sample_rate 8000, not 16000; shape \(0, 1\), not 2 channel"):
        zarr_aac.open_writer(archive, "f", sample_rate=16000, channels=2, dtype="float32", resume=True)
    with zarr_aac.open_writer(archive, "new", sample_rate=RATE, channels=1, resume=True) as started:
        assert started.n_samples == 0  # resume=True starts a recording that does not exist
        started.append(np.arange(5, dtype="int16"))
    np.testing.assert_array_equal(zarr_aac.open_recording(archive / "new")[:, 0], np.arange(5))
    with pytest.raises(ArchiveError, match="bitrate 24000, not 96000"):
        zarr_aac.open_writer(archive, "f", sample_rate=RATE, channels=1, dtype="float32", bitrate=96000, resume=True)


def test_a_zarr_that_rewrites_local_files_in_place_is_warned_of(tmp_path, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zarr >= 3.1.3 here: nothing to warn of
        open_test_writer(tmp_path / "a.zarr", "rec").close()
    monkeypatch.setattr(zarr, "__version__", "3.1.2")
    with pytest.warns(UserWarning, match=r"zarr 3.1.2 rewrites local files in place.*zarr>=3.1.3"):
        open_test_writer(tmp_path / "a.zarr", "other").close()
