"""The zarr_aac codec against independent references: a sequential decode of the stored
frames, the input PCM, and known impulse positions."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.chunks import Chunk
from support.selections import assert_selections_match, reference_decode
from support.signals import tone_with_noise
from support.stores import RecordingStore

import zarr_aac
from zarr_aac.codec import aac
from zarr_aac.codec.aac_codec import LEAD_IN, LEAD_OUT


def make_array(store, shape, chunks, *, rate=48000, dtype="int16", fill_value=0, **codec_kw):
    return zarr.create_array(
        store,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        fill_value=fill_value,
        serializer=zarr_aac.AACCodec(sample_rate=rate, **codec_kw),
        compressors=None,
    )


def as_dtype(pcm: np.ndarray, dtype: str) -> np.ndarray:
    return (pcm * 32767).astype(np.int16) if dtype == "int16" else pcm


@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_every_selection_kind_equals_sequential_decode(dtype):
    pcm = tone_with_noise(100_000, 2, 48000)
    z = make_array(zarr.storage.MemoryStore(), pcm.shape, (30_000, 2), dtype=dtype)
    z[:] = as_dtype(pcm, dtype)
    assert_selections_match(z, reference_decode(z), np.random.default_rng(0), rounds=8)


@st.composite
def stored_arrays(draw):
    rate = draw(st.sampled_from(aac.AAC_SAMPLE_RATES))
    channels = draw(st.integers(1, 3))
    n = draw(st.integers(1, 24_000))
    chunk = draw(st.integers(max(1, -(-n // 4)), n + 3000))
    dtype = draw(st.sampled_from(["int16", "float32"]))
    one_dim = channels == 1 and draw(st.booleans())
    return rate, channels, n, chunk, dtype, one_dim


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=stored_arrays(), data=st.data())
def test_selections_property(spec, data):
    rate, channels, n, chunk, dtype, one_dim = spec
    pcm = tone_with_noise(n, channels, rate, seed=n)
    shape, chunks = ((n,), (chunk,)) if one_dim else ((n, channels), (chunk, channels))
    z = make_array(zarr.storage.MemoryStore(), shape, chunks, rate=rate, dtype=dtype)
    z[:] = as_dtype(pcm, dtype).reshape(shape)
    reference = reference_decode(z)
    assert z[:].shape == shape
    np.testing.assert_array_equal(z[:], reference)
    index = st.integers(-n, n - 1)
    for _ in range(4):
        start = data.draw(st.integers(0, n))
        stop = data.draw(st.integers(start, n))
        step = data.draw(st.integers(1, max(1, n // 3)))
        np.testing.assert_array_equal(z[start:stop:step], reference[start:stop:step])
        i = data.draw(index)
        np.testing.assert_array_equal(z[i], reference[i])
        points = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=12)))
        np.testing.assert_array_equal(z.oindex[points], reference[points])
        if one_dim:
            np.testing.assert_array_equal(z.vindex[points], reference[points])
        else:
            chans = np.array(
                data.draw(st.lists(st.integers(0, channels - 1), min_size=points.size, max_size=points.size))
            )
            np.testing.assert_array_equal(z.vindex[points, chans], reference[points, chans])
            subset = sorted(set(data.draw(st.lists(st.integers(0, channels - 1), min_size=1, max_size=channels))))
            np.testing.assert_array_equal(z.oindex[points, subset], reference[np.ix_(points, subset)])
            np.testing.assert_array_equal(z[start:stop, subset[0]], reference[start:stop, subset[0]])


@pytest.mark.parametrize("rate", aac.AAC_SAMPLE_RATES)
def test_impulses_stay_at_their_input_positions(rate):
    rng = np.random.default_rng(rate)
    n = 3 * rate // 2
    spacing = max(1200, rate // 8)
    positions = np.arange(300, n - 300, spacing) + rng.integers(-200, 200, size=len(range(300, n - 300, spacing)))
    pcm = np.zeros((n, 1), dtype=np.float32)
    pcm[positions, 0] = 0.8
    chunk = rate // 2 + 17
    z = make_array(
        zarr.storage.MemoryStore(), (n, 1), (chunk, 1), rate=rate, dtype="float32", bitrate=aac.default_bitrate(1, rate)
    )
    z[:] = pcm
    out = z[:, 0]
    for p in positions:
        window = np.abs(out[p - 100 : p + 101])
        assert int(np.argmax(window)) - 100 == 0, (
            f"impulse at {p} found at {p + int(np.argmax(window)) - 100} ({rate} Hz)"
        )


def test_length_partial_last_chunk_and_missing_chunks():
    pcm = (tone_with_noise(25_000, 2, 16000) * 32767).astype(np.int16)
    z = make_array(zarr.storage.MemoryStore(), pcm.shape, (10_000, 2), rate=16000, fill_value=7)
    z[10_000:20_000] = pcm[10_000:20_000]
    assert z.shape == (25_000, 2)
    assert (z[:10_000] == 7).all() and (z[20_000:] == 7).all()
    assert (z[5:9, 1] == 7).all()
    z[20_000:] = pcm[20_000:]
    assert z[20_000:].shape == (5_000, 2)
    np.testing.assert_array_equal(z[:], reference_decode(z))


def test_wide_array_is_chunked_along_channels():
    pcm = (tone_with_noise(12_000, 10, 48000) * 32767).astype(np.int16)
    z = make_array(zarr.storage.MemoryStore(), pcm.shape, (6_000, 5))
    z[:] = pcm
    reference = reference_decode(z)
    np.testing.assert_array_equal(z[100:5000, 3:8], reference[100:5000, 3:8])
    assert _snr(pcm.astype(np.float64), z[:].astype(np.float64)) > 15


def _snr(reference: np.ndarray, test: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - test) ** 2)))


class TestPartialDecode:
    def setup_method(self):
        pcm = (tone_with_noise(240_000, 2, 48000) * 32767).astype(np.int16)
        self.store = RecordingStore(zarr.storage.MemoryStore())
        self.z = make_array(self.store, pcm.shape, (96_000, 2))
        self.z[:] = pcm
        self.log = self.store.log
        self.chunk_nbytes = len(self.store._store._store_dict["c/1/0"])

    def test_a_read_inside_one_chunk_costs_two_small_requests(self):
        self.log.reset()
        self.z[100_000:100_960]
        assert dict(self.log.per_key) == {"c/1/0": 2}
        data = self.store._store._store_dict["c/1/0"].to_bytes()
        header = zarr_aac.codec.chunk_format.parse_header(data, "c/1/0")
        prefix = zarr_aac.codec.chunk_format.parse_prefix(data, header, "c/1/0")
        first, stop = prefix.frames_to_fetch(prefix.index.frame_of(4_000) - 1, prefix.index.frame_of(4_959) + 1)
        assert stop - first == zarr_aac.codec.chunk_format.CHECKSUM_GROUP
        frames_nbytes = int(prefix.index.byte_offsets[stop] - prefix.index.byte_offsets[first])
        assert self.log.bytes == zarr_aac.codec.chunk_format.prefix_nbytes_upper_bound(header.n_frames) + frames_nbytes
        assert self.log.bytes < self.chunk_nbytes / 5

    def test_the_next_read_of_a_chunk_reuses_its_index_and_costs_one_request(self):
        first = self.z[100_000:100_960]
        self.log.reset()
        np.testing.assert_array_equal(self.z[100_000:100_960], first)
        self.z[150_000:151_000]
        assert dict(self.log.per_key) == {"c/1/0": 2}
        assert self.log.gets == 2

    def test_a_whole_chunk_read_costs_one_request(self):
        self.log.reset()
        self.z[96_000:192_000]
        assert dict(self.log.per_key) == {"c/1/0": 1}
        assert self.log.bytes == self.chunk_nbytes

    def test_a_read_across_chunks_costs_at_most_two_requests_per_chunk(self):
        self.log.reset()
        self.z[50_000:200_000]
        assert dict(self.log.per_key) == {"c/0/0": 2, "c/1/0": 1, "c/2/0": 2}

    def test_sparse_points_cost_two_requests(self):
        self.log.reset()
        self.z.vindex[[96_001, 150_000, 191_000], [0, 1, 0]]
        assert dict(self.log.per_key) == {"c/1/0": 2}

    def test_frame_index_costs_under_one_percent(self):
        data = self.store._store._store_dict["c/1/0"].to_bytes()
        header = zarr_aac.codec.chunk_format.parse_header(data, "c/1/0")
        index = zarr_aac.codec.chunk_format.parse_prefix(data, header, "c/1/0").index
        assert index.table.shape == (header.n_frames, 3)
        stored = Chunk.parse(data)  # the spec's layout, parsed without the package
        sizes = stored.sizes.astype(np.int64)
        np.testing.assert_array_equal(index.table[:, 0], np.concatenate([[0], np.cumsum(sizes)[:-1]]))
        np.testing.assert_array_equal(index.table[:, 1], sizes)
        np.testing.assert_array_equal(index.table[:, 2], np.arange(sizes.size) * 1024 - stored.fields["skip"])
        assert header.n_frames == aac.frames_for_samples(96_000 + LEAD_IN + LEAD_OUT)
        assert 2 * header.n_frames / len(data) < 0.01


@pytest.mark.parametrize(
    ("rate", "channels"), [(8000, 1), (16000, 1), (44100, 2), (48000, 1), (48000, 2), (96000, 2), (48000, 6)]
)
def test_index_under_one_percent_at_default_bitrates(rate, channels):
    codec = zarr_aac.AACCodec(sample_rate=rate)
    data = codec.encode_pcm(tone_with_noise(rate * 10, channels, rate))
    header = zarr_aac.codec.chunk_format.parse_header(data, None)
    index_nbytes = 2 * header.n_frames
    checksums_nbytes = (
        header.prefix_nbytes - zarr_aac.codec.chunk_format.HEADER_NBYTES - header.asc_nbytes - index_nbytes
    )
    assert index_nbytes / len(data) < 0.01
    assert checksums_nbytes == 4 * -(-header.n_frames // 16) and checksums_nbytes / len(data) < 0.0015


class TestCorruptChunks:
    def setup_method(self):
        pcm = (tone_with_noise(40_000, 1, 16000) * 32767).astype(np.int16)
        self.store = zarr.storage.MemoryStore()
        self.z = make_array(self.store, pcm.shape, (20_000, 1), rate=16000)
        self.z[:] = pcm
        self.good = self.store._store_dict["c/0/0"].to_bytes()

    def _store(self, data: bytes) -> None:
        from zarr.core.buffer import default_buffer_prototype

        self.store._store_dict["c/0/0"] = default_buffer_prototype().buffer.from_bytes(data)

    @pytest.mark.parametrize("selection", [slice(None), slice(100, 200)])
    @pytest.mark.parametrize("byte", [0, 5, 6, 9, 13, 17, 25, 45, 50, 60, 80])
    def test_flipped_bit_in_header_or_index_names_the_chunk(self, byte, selection):
        data = bytearray(self.good)
        data[byte] ^= 0x10
        self._store(bytes(data))
        with pytest.raises(zarr_aac.CorruptChunkError, match="c/0/0"):
            self.z[selection]

    def test_flipped_payload_bit_fails_the_whole_chunk_checksum(self):
        data = bytearray(self.good)
        data[len(data) // 2] ^= 0x01
        self._store(bytes(data))
        with pytest.raises(zarr_aac.CorruptChunkError, match=r"c/0/0.*checksum mismatch in frames"):
            self.z[:20_000]

    @pytest.mark.parametrize("keep", [0, 10, 47, 48, 200, 2000, -100, -1])
    def test_truncated_chunk_names_the_chunk_on_a_whole_chunk_read(self, keep):
        self._store(self.good[:keep])
        with pytest.raises(zarr_aac.CorruptChunkError, match="c/0/0"):
            self.z[:20_000]

    @pytest.mark.parametrize("keep", [0, 10, 47, 48, 200, 2000])
    @pytest.mark.parametrize("selection", [slice(19_000, 19_500), slice(0, 100)])
    def test_truncated_chunk_names_the_chunk_on_a_partial_read(self, keep, selection):
        self._store(self.good[:keep])
        with pytest.raises(zarr_aac.CorruptChunkError, match="c/0/0"):
            self.z[selection]

    def test_partial_read_that_does_not_reach_a_truncated_tail_is_still_exact(self):
        expected = self.z[1_000:1_400]
        header = zarr_aac.codec.chunk_format.parse_header(self.good, None)
        prefix = zarr_aac.codec.chunk_format.parse_prefix(self.good, header, None)
        index = prefix.index
        _, fetched_stop = prefix.frames_to_fetch(index.frame_of(1_000) - 1, index.frame_of(1_399) + 1)
        assert fetched_stop <= index.frame_of(19_999)
        self._store(self.good[: header.prefix_nbytes + int(index.byte_offsets[fetched_stop])])
        np.testing.assert_array_equal(self.z[1_000:1_400], expected)
        with pytest.raises(zarr_aac.CorruptChunkError, match="c/0/0"):
            self.z[19_990:20_000]

    def test_chunk_of_another_codec_names_the_chunk(self):
        self._store(np.arange(20_000, dtype="<i2").tobytes())
        with pytest.raises(zarr_aac.CorruptChunkError, match=r"c/0/0.*not a zarr_aac chunk"):
            self.z[:]

    def test_chunk_with_other_geometry_is_rejected(self):
        other = zarr_aac.AACCodec(sample_rate=16000).encode_pcm(np.zeros((20_001, 1), dtype=np.int16))
        self._store(other)
        with pytest.raises(zarr_aac.CorruptChunkError, match=r"c/0/0.*20001"):
            self.z[5:10]


class TestConfiguration:
    def test_roundtrip_through_metadata(self, tmp_path):
        z = make_array(
            str(tmp_path / "a.zarr"), (10, 2), (10, 2), rate=250_000, aac_sample_rate=96_000, bitrate=128_000
        )
        reopened = zarr.open_array(str(tmp_path / "a.zarr"))
        codec = reopened.metadata.codecs[0]
        assert codec == zarr_aac.AACCodec(sample_rate=250_000, aac_sample_rate=96_000, bitrate=128_000, gain=0.25)
        assert zarr_aac.AACCodec.from_dict(codec.to_dict()) == codec
        assert codec.to_dict() == {
            "name": "zarr_aac",
            "configuration": {"sample_rate": 250_000, "aac_sample_rate": 96_000, "gain": 0.25, "bitrate": 128_000},
        }
        assert z.metadata.codecs[0] == codec

    @pytest.mark.parametrize(("channels", "expected"), [(1, 130_000), (2, 160_000), (4, 320_000)])
    def test_default_bitrate_is_written_at_creation(self, channels, expected):
        z = make_array(zarr.storage.MemoryStore(), (10, channels), (10, channels))
        assert z.metadata.codecs[0].bitrate == expected

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"sample_rate": 250_000}, "250000 Hz is not an AAC sample rate.*aac_sample_rate=96000"),
            ({"sample_rate": 48000, "aac_sample_rate": 50_000}, "50000 Hz is not an AAC sample rate"),
            ({"sample_rate": 0}, "positive integer"),
            ({"sample_rate": 48000, "bitrate": 100}, "bitrate"),
            ({"sample_rate": "48000"}, "positive integer"),
        ],
    )
    def test_bad_configuration_is_refused_with_a_reason(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            zarr_aac.AACCodec(**kwargs)

    @pytest.mark.parametrize(
        ("shape", "chunks", "dtype", "match"),
        [
            ((10, 9), (10, 9), "int16", "1 to 8 channels"),
            ((10, 2), (10, 2), "int32", "int16 or float32"),
            ((10, 2, 2), (10, 2, 2), "int16", "3-d"),
        ],
    )
    def test_bad_arrays_are_refused_at_creation(self, shape, chunks, dtype, match):
        with pytest.raises(zarr_aac.UnsupportedAudioError, match=match):
            make_array(zarr.storage.MemoryStore(), shape, chunks, dtype=dtype)

    def test_nan_is_refused(self):
        z = make_array(zarr.storage.MemoryStore(), (10, 1), (10, 1), dtype="float32")
        with pytest.raises(ValueError, match="NaN"):
            z[:] = np.full((10, 1), np.nan, dtype=np.float32)


@pytest.mark.parametrize("channels", range(1, 9))
def test_every_channel_count_keeps_channel_order(channels):
    rate, n = 48000, 48000
    freqs = 300.0 + 450.0 * np.arange(channels)
    t = np.arange(n) / rate
    pcm = (0.3 * np.sin(2 * np.pi * t[:, None] * freqs[None, :])).astype(np.float32)
    z = make_array(zarr.storage.MemoryStore(), pcm.shape, (n, channels), dtype="float32")
    z[:] = pcm
    spectrum = np.abs(np.fft.rfft(z[:], axis=0))
    peaks = np.fft.rfftfreq(n, 1 / rate)[np.argmax(spectrum, axis=0)]
    np.testing.assert_allclose(peaks, freqs, atol=2.0)
    for c in range(channels):
        assert _snr(pcm[:, c].astype(np.float64), z[:, c].astype(np.float64)) > 10, f"channel {c}"


@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_reads_never_share_memory_with_the_decode_buffer(dtype):
    """Partial reads decode into a buffer kept per thread; what they return must be a copy."""
    pcm = as_dtype(tone_with_noise(3 * 20_000, 2, 48000, seed=4), dtype)
    z = make_array(zarr.storage.MemoryStore(), pcm.shape, (20_000, 2), dtype=dtype)
    z[:] = pcm
    reference = reference_decode(z)
    first = z[1_000:9_000]
    spanning = z[15_000:45_000]
    z[21_000:29_000]
    np.testing.assert_array_equal(first, reference[1_000:9_000])
    np.testing.assert_array_equal(spanning, reference[15_000:45_000])


def test_a_format_1_chunk_is_refused_with_what_to_do():
    pcm = (tone_with_noise(4096, 1, 16000) * 32767).astype(np.int16)
    codec = zarr_aac.AACCodec(sample_rate=16000)
    data = bytearray(codec.encode_pcm(pcm))
    data[4] = 1
    with pytest.raises(zarr_aac.CorruptChunkError, match=r"'c/0': chunk format 1 .*import the recording again"):
        codec.decode_chunk(bytes(data), pcm.shape, pcm.dtype, "c/0")


def test_partial_chunk_writes_warn_of_generation_loss_and_whole_chunk_writes_do_not():
    """Issue 12, item 4: five writes of 10 samples re-encoded a chunk five times without a word."""
    import warnings

    from zarr_aac.errors import GenerationLossWarning

    rate, chunk = 8000, 4000
    pcm = (tone_with_noise(4 * chunk, 1, rate) * 20000).astype(np.int16)
    array = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=(3 * chunk, 1),
        chunks=(chunk, 1),
        dtype="int16",
        serializer=zarr_aac.AACCodec(sample_rate=rate),
        compressors=None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", GenerationLossWarning)
        array[:] = pcm[: 3 * chunk]  # whole chunks
        array[chunk : 2 * chunk] = pcm[:chunk]  # one whole chunk again
        array.resize((4 * chunk, 1))
        array[3 * chunk :] = pcm[3 * chunk :]  # an append of a whole chunk
        array[:]  # reads decode without encoding
        array[5:17]
    before = array[:chunk].copy()
    with pytest.warns(GenerationLossWarning, match="re-encodes the whole chunk") as caught:
        for i in range(5):
            array[i * 10 : (i + 1) * 10] = pcm[i * 10 : (i + 1) * 10]
    assert sum(w.category is GenerationLossWarning for w in caught) == 5
    assert "zarr_aac.open_writer" in str(caught[0].message)  # the way to append without re-encoding
    # what the warning is about: samples the writes never touched changed
    assert not np.array_equal(array[100:chunk], before[100:])
