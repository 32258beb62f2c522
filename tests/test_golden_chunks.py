"""Stored chunks of format 2 that every later version must read bit for bit, as numcodecs'
``check_backwards_compatibility`` reads its ``fixture/`` folder.

Each folder of tests/data/golden/ is a zarr array written by zarr-aac 0.2 (zarr.json and its
chunks) with ``expected.npy``, the samples that version read from it. A missing folder fails
the tests; it is written only by an explicit

    python tests/test_golden_chunks.py --regenerate

which is for a deliberate change of the format (a new version number) or of FFmpeg's decoder
output, never to make a failing test pass.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import zarr
from support.chunks import Chunk
from support.conformance import check_selections
from support.selections import reference_decode
from support.signals import as_int16, tone_with_noise, tones

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


def regenerate(names: list[str]) -> None:
    """Write the fixtures ``names`` anew with the current package; prints what it wrote."""
    for name in names:
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
    unknown = set(arguments.names) - set(FIXTURES)
    if unknown:
        parser.error(f"no such fixture: {', '.join(sorted(unknown))}")
    regenerate(arguments.names or list(FIXTURES))
