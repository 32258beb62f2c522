"""``AACCodec.decode_chunk`` (the whole-chunk decode the importer's verification and the CLI use)
and ``_decode_single`` (zarr's path when a codec follows this one): their samples against a full
sequential decode through PyAV directly (support.chunks), PCM chunks against the samples stored,
and every refusal naming the chunk."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from numcodecs import Zstd
from support.arrays import tone_array
from support.chunks import Chunk, chunk_key, decode_chunk_sequentially, get_bytes, put_bytes
from support.selections import stored_gain, to_int16
from support.signals import tone_with_noise

import zarr_aac
from zarr_aac.codec import aac
from zarr_aac.codec.chunk_format import PcmChunkBuilder
from zarr_aac.errors import CorruptChunkError

RATE = 48_000
CHUNK = 30 * aac.FRAME_LENGTH
KEY = "take/c/3/0"


def make_array(shape, chunks, dtype="int16", gain=None, compressors=None):
    return tone_array(shape, chunks, RATE, dtype=dtype, gain=gain, compressors=compressors, seed=7)


def codec_of(z):
    return z.metadata.codecs[0]


@pytest.mark.parametrize(
    ("shape", "chunks", "dtype", "gain"),
    [((CHUNK, 2), (CHUNK, 2), "int16", None), ((CHUNK,), (CHUNK,), "float32", 0.5)],
)
def test_decode_chunk_gives_the_sequential_decode(shape, chunks, dtype, gain):
    z = make_array(shape, chunks, dtype, gain)
    key = chunk_key(z, (0, 0) if len(shape) == 2 else (0,))
    pcm = decode_chunk_sequentially(get_bytes(z, key))
    g = stored_gain(z)
    expected = to_int16(pcm, g) if dtype == "int16" else (pcm / np.float32(g)).astype(np.float32)
    got = codec_of(z).decode_chunk(get_bytes(z, key), chunks, np.dtype(dtype), KEY)
    assert got.dtype == np.dtype(dtype) and got.shape == chunks
    np.testing.assert_array_equal(got, expected[: chunks[0]].reshape(chunks))


@pytest.fixture(scope="module")
def stereo():
    z = make_array((CHUNK, 2), (CHUNK, 2))
    return z, get_bytes(z, chunk_key(z, (0, 0)))


def refused(z, data, shape=(CHUNK, 2)):
    with pytest.raises(CorruptChunkError) as caught:
        codec_of(z).decode_chunk(data, shape, np.dtype("int16"), KEY)
    assert KEY in str(caught.value)
    return str(caught.value)


def test_decode_chunk_names_the_chunk_of_a_wrong_shape(stereo):
    z, data = stereo
    refused(z, data, (CHUNK, 3))


def test_decode_chunk_names_the_chunk_of_a_cut_prefix(stereo):
    z, data = stereo
    refused(z, data[: Chunk.parse(data).prefix_nbytes - 8])


def test_decode_chunk_names_the_chunk_of_a_flipped_payload_byte(stereo):
    z, data = stereo
    damaged = bytearray(data)
    damaged[-50] ^= 0x10
    assert "checksum" in refused(z, bytes(damaged))


def test_decode_chunk_names_the_chunk_ffmpeg_refuses(stereo):
    """A frame of garbage under recomputed checksums passes every check and fails in FFmpeg."""
    z, data = stereo
    chunk = Chunk.parse(data)
    frames = chunk.frames
    frames[10] = bytes([0xFF]) * len(frames[10])
    chunk.payload = b"".join(frames)
    refused(z, chunk.pack())


def pcm_chunk(samples, channels):
    builder = PcmChunkBuilder(CHUNK, channels, np.dtype("int16"), RATE)
    builder.extend(samples)
    return builder.chunk()


def test_decode_chunk_of_a_mono_pcm_chunk_is_its_samples_then_zeros():
    z = make_array((CHUNK,), (CHUNK,))
    samples = (tone_with_noise(CHUNK - 500, 1, RATE, seed=2) * 20000).astype(np.int16)
    got = codec_of(z).decode_chunk(pcm_chunk(samples, 1), (CHUNK,), np.dtype("int16"), KEY)
    assert got.dtype == np.int16 and got.shape == (CHUNK,)
    np.testing.assert_array_equal(got[: CHUNK - 500], samples[:, 0])
    np.testing.assert_array_equal(got[CHUNK - 500 :], 0)


def test_decode_chunk_names_a_damaged_pcm_chunk():
    z = make_array((CHUNK, 2), (CHUNK, 2))
    data = bytearray(pcm_chunk(np.ones((100, 2), np.int16), 2))
    data[-1] ^= 1
    refused(z, bytes(data))


@pytest.fixture(scope="module")
def compressed():
    """An array whose chunks zstd compresses after this codec: zarr decodes its chunks whole
    (``_decode_single``), with the array's own gain."""
    z = make_array((2 * CHUNK, 2), (CHUNK, 2), "float32", gain=0.5, compressors=zarr.codecs.ZstdCodec())
    return z, reference_decode_compressed(z)


def reference_decode_compressed(z):
    """reference_decode for an array whose stored chunks are zstd frames of this codec's chunks."""
    out = np.zeros(z.shape, np.float32)
    for i in range(2):
        pcm = decode_chunk_sequentially(bytes(Zstd().decode(get_bytes(z, chunk_key(z, (i, 0))))))
        out[i * CHUNK : (i + 1) * CHUNK] = pcm[:CHUNK] / np.float32(0.5)  # the gain the array was made with
    return out


def test_a_chunk_decoded_whole_undoes_the_arrays_gain(compressed):
    z, reference = compressed
    np.testing.assert_array_equal(z[:], reference)


def test_a_corrupt_chunk_decoded_whole_is_filled_inside_tolerant_reads(compressed):
    z, reference = compressed
    key = chunk_key(z, (1, 0))
    intact = get_bytes(z, key)
    data = bytearray(Zstd().decode(intact))
    data[-50] ^= 0x10
    put_bytes(z, key, bytes(Zstd().encode(bytes(data))))
    try:
        with zarr_aac.tolerant_reads() as report:
            got = z[:]
        # zarr hands a chunk decoded whole to the codec without its key: the report holds the error alone.
        assert len(report.errors) == 1 and isinstance(report.errors[0], CorruptChunkError)
        np.testing.assert_array_equal(got[:CHUNK], reference[:CHUNK])
        np.testing.assert_array_equal(got[CHUNK:], 0)
    finally:
        put_bytes(z, key, intact)
