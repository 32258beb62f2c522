"""Stored chunks of format 2 that every later version must read bit for bit, as numcodecs'
``check_backwards_compatibility`` reads its ``fixture/`` folder.

Each folder of tests/data/golden/ is a zarr array written by zarr-aac 0.2 (zarr.json and its
chunks) with ``expected.npy``, the samples that version read from it. A missing folder fails
the tests; it is written only by an explicit

    python tests/test_golden_chunks.py --regenerate

which is for a deliberate change of the format (a new version number) or of FFmpeg's decoder
output, never to make a failing test pass. ``int16-stereo-8k-pcm-tail`` holds a PCM chunk
(flag 1, added to format 2 for live recording) beside an AAC one.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import zarr
from support.chunks import Chunk, PcmChunk
from support.conformance import check_selections
from support.selections import reference_decode
from support.signals import as_int16, tone_with_noise, tones

import zarr_aac
from zarr_aac import AACCodec

GOLDEN = Path(__file__).parent / "data" / "golden"
REGENERATE = "python tests/test_golden_chunks.py --regenerate"


@dataclass(frozen=True)
class Golden:
    """One stored array: its codec, layout and the signal it was written from."""

    codec: AACCodec
    dtype: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]

    def signal(self) -> np.ndarray:
        rate, n = self.codec.sample_rate, self.shape[0]
        channels = self.shape[1] if len(self.shape) == 2 else 1
        pcm = tone_with_noise(n, channels, rate, seed=n)
        if rate > 96000:
            pcm += tones(n, rate, [40_000.0] * channels, amplitude=0.2, noise=0.0)
        return (as_int16(pcm) if self.dtype == "int16" else pcm).reshape(self.shape)


FIXTURES = {
    "int16-mono-48k": Golden(AACCodec(sample_rate=48000), "int16", (24_000,), (10_000,)),
    "float32-stereo-44k1": Golden(AACCodec(sample_rate=44100), "float32", (13_230, 2), (6_000, 2)),
    "int16-mono-250k-as-96k": Golden(
        AACCodec(sample_rate=250_000, aac_sample_rate=96000, bitrate=128_000), "int16", (50_000, 1), (20_000, 1)
    ),
    "int16-6ch-48k": Golden(AACCodec(sample_rate=48000), "int16", (9_600, 6), (4_000, 6)),
}


PCM_TAIL = "int16-stereo-8k-pcm-tail"
"""A recording as a live writer leaves it before closing: chunk 0 AAC, chunk 1 a PCM chunk
(flag 1) holding the first 1904 of its 4096 samples."""
PCM_TAIL_CHUNK, PCM_TAIL_SAMPLES = 4096, 6000


def pcm_tail_signal() -> np.ndarray:
    return as_int16(tone_with_noise(PCM_TAIL_SAMPLES, 2, 8000, seed=13))


def open_golden(name: str) -> tuple[zarr.Array, np.ndarray]:
    """The stored array (read-only) and the samples it must give; fails if the fixture is missing."""
    folder = GOLDEN / name
    if not (folder / "zarr.json").is_file() or not (folder / "expected.npy").is_file():
        pytest.fail(f"golden fixture {folder} is missing: it is part of the repository (made by `{REGENERATE}`)")
    return zarr.open_array(str(folder), mode="r"), np.load(folder / "expected.npy")


@pytest.mark.parametrize("name", FIXTURES)
def test_golden_chunks_are_format_2(name: str) -> None:
    array, _ = open_golden(name)
    chunk_files = sorted(p for p in (GOLDEN / name / "c").rglob("*") if p.is_file())
    assert len(chunk_files) == array.nchunks
    for path in chunk_files:
        fields = Chunk.parse(path.read_bytes()).fields
        assert (fields["magic"], fields["version"], fields["checksum_group"]) == (b"ZAAC", 2, 16), path


@pytest.mark.parametrize("name", FIXTURES)
def test_golden_array_reads_bit_identically(name: str) -> None:
    """The whole array and every selection kind give exactly the stored samples."""
    array, expected = open_golden(name)
    fixture = FIXTURES[name]
    assert array.metadata.codecs[0].sample_rate == fixture.codec.sample_rate
    assert array.metadata.codecs[0].aac_sample_rate == fixture.codec.aac_sample_rate
    assert array.shape == expected.shape == fixture.shape and array.dtype == expected.dtype
    np.testing.assert_array_equal(array[:], expected)
    check_selections(array, expected)


@pytest.mark.parametrize("name", FIXTURES)
def test_golden_samples_are_the_sequential_decode_of_the_frames(name: str) -> None:
    """Tells a changed reader from a changed decoder: if this fails too, FFmpeg's AAC decoder
    now gives other samples for the same frames, and the fixture's expected.npy must be made
    again on purpose (the chunks stay)."""
    array, expected = open_golden(name)
    np.testing.assert_array_equal(reference_decode(array), expected)


def test_golden_pcm_tail_reads_bit_identically():
    """The encoded chunk reads as stored, the PCM chunk as the very samples appended."""
    array, expected = open_golden(PCM_TAIL)
    np.testing.assert_array_equal(expected[PCM_TAIL_CHUNK:], pcm_tail_signal()[PCM_TAIL_CHUNK:])
    np.testing.assert_array_equal(array[:], expected)
    check_selections(array, expected)


def test_golden_pcm_tail_chunk_has_the_documented_layout():
    aac_chunk = Chunk.parse((GOLDEN / PCM_TAIL / "c" / "0" / "0").read_bytes())
    assert (aac_chunk.fields["flags"], aac_chunk.fields["checksum_group"]) == (0, 16)
    tail = PcmChunk.parse((GOLDEN / PCM_TAIL / "c" / "1" / "0").read_bytes())
    assert tail.checksums_hold()
    fields = {k: tail.fields[k] for k in ("version", "flags", "channels", "asc_nbytes", "n_frames", "n_samples")}
    assert fields == {"version": 2, "flags": 1, "channels": 2, "asc_nbytes": 0, "n_frames": 1904, "n_samples": 4096}
    assert (tail.fields["skip"], tail.fields["frame_length"], tail.fields["checksum_group"]) == (0, 2, 0)
    np.testing.assert_array_equal(tail.samples, pcm_tail_signal()[PCM_TAIL_CHUNK:])


def regenerate_pcm_tail() -> None:
    """Write the PCM-tail fixture with a live writer left open, as a recorder leaves it."""
    with tempfile.TemporaryDirectory() as scratch:
        writer = zarr_aac.open_writer(
            Path(scratch) / "a.zarr", "rec", sample_rate=8000, channels=2, chunk_duration=0.5, bitrate=48000
        )
        writer.append(pcm_tail_signal())
        folder = GOLDEN / PCM_TAIL
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(Path(scratch) / "a.zarr" / "rec", folder)
        writer._release()
    array = zarr.open_array(str(folder), mode="r+")
    array.attrs.put({})  # the live writer's host, process and times are no part of the fixture
    np.save(folder / "expected.npy", array[:])
    print(f"{folder}: {sum(p.stat().st_size for p in folder.rglob('*') if p.is_file())} bytes")


def regenerate(names: list[str]) -> None:
    """Write the fixtures ``names`` anew with the current package; prints what it wrote."""
    for name in names:
        if name == PCM_TAIL:
            regenerate_pcm_tail()
            continue
        fixture = FIXTURES[name]
        folder = GOLDEN / name
        shutil.rmtree(folder, ignore_errors=True)
        array = zarr.create_array(
            str(folder),
            shape=fixture.shape,
            chunks=fixture.chunks,
            dtype=fixture.dtype,
            serializer=fixture.codec,
            compressors=None,
        )
        array[:] = fixture.signal()
        expected = array[:]
        np.testing.assert_array_equal(expected, reference_decode(array))
        np.save(folder / "expected.npy", expected)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"{folder}: {size} bytes")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regenerate", action="store_true", help="write the golden fixtures anew")
    parser.add_argument("names", nargs="*", help=f"only these fixtures (default: all of {', '.join(FIXTURES)})")
    arguments = parser.parse_args()
    if not arguments.regenerate:
        parser.error("nothing to do without --regenerate")
    unknown = set(arguments.names) - {*FIXTURES, PCM_TAIL}
    if unknown:
        parser.error(f"no such fixture: {', '.join(sorted(unknown))}")
    regenerate(arguments.names or [*FIXTURES, PCM_TAIL])
