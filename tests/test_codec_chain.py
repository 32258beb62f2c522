"""Issue 12, item 6: zarr's default zstd after the zarr_aac codec.

zarr lets ``zarr.create_array(..., serializer=AACCodec(...))`` add its default compressor and
gives the codec no way to see it (zarr_aac/codec/chain.py says why). Such arrays must still read
correctly, ``verify`` must check their chunks through the compressor, and every zarr_aac tool
that sees the array must name the fix, ``compressors=None``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import zarr

from zarr_aac import AACCodec
from zarr_aac.archive.verification import CODEC_CHAIN_KEY, is_damage, verify
from zarr_aac.cli import main
from zarr_aac.codec.chain import codec_chain_problem, codecs_besides_aac, copy_without_compressors
from zarr_aac.errors import SlowCodecChainWarning

RATE = 8000


def _array(path, compressors="auto"):
    array = zarr.create_array(
        str(path),
        shape=(4 * RATE, 2),
        chunks=(RATE, 2),
        dtype="int16",
        serializer=AACCodec(sample_rate=RATE),
        compressors=compressors,
        dimension_names=("time", "channel"),
        attributes={"sample_rate": RATE},
    )
    array[:] = (np.random.default_rng(5).standard_normal((4 * RATE, 2)) * 3000).astype(np.int16)
    return array


@pytest.fixture
def zstd_array(tmp_path):
    array = _array(tmp_path / "zstd.zarr")
    assert [type(c).__name__ for c in array.compressors] == ["ZstdCodec"]  # zarr's default, unasked
    return array


def test_reads_through_zarrs_default_compressor_equal_those_of_an_array_without_it(zstd_array, tmp_path):
    plain = _array(tmp_path / "plain.zarr", compressors=None)
    # the same chunks inside: the encoder is deterministic, zstd wraps them losslessly
    np.testing.assert_array_equal(zstd_array[:], plain[:])
    for selection in (slice(100, 300), slice(RATE - 50, RATE + 70), slice(3 * RATE + 1, 4 * RATE)):
        np.testing.assert_array_equal(zstd_array[selection], plain[selection])


def test_verify_names_the_fix_and_does_not_call_it_damage(zstd_array, tmp_path):
    findings = verify(zstd_array, progress=False)
    assert len(findings) == 1
    (finding,) = findings
    assert finding["key"] == CODEC_CHAIN_KEY
    assert "ZstdCodec" in finding["error"] and "compressors=None" in finding["error"]
    assert not is_damage(finding)
    assert verify(_array(tmp_path / "plain.zarr", compressors=None), progress=False) == []


def test_verify_still_finds_damage_in_an_array_with_a_compressor(zstd_array):
    from support.chunks import put_bytes

    put_bytes(zstd_array, "c/2/0", b"not zstd at all")
    findings = verify(zstd_array, progress=False)
    assert [f["key"] for f in findings if is_damage(f)] == ["c/2/0"]


def test_cli_verify_and_info_name_the_fix(zstd_array, capsys):
    path = str(zstd_array.store_path)
    assert main(["verify", "-q", path]) == 0  # the chunks are sound
    out, err = capsys.readouterr()
    assert "compressors=None" in out and "chunk" not in out.split(":", 1)[0]
    assert "1 array(s) read slowly: create them with compressors=None" in err
    assert main(["info", path]) == 0
    out, _ = capsys.readouterr()
    assert "slow reads" in out and "compressors=None" in out


def test_opening_through_xarray_warns_with_the_fix(zstd_array, tmp_path):
    pytest.importorskip("xarray")
    import zarr_aac

    with pytest.warns(SlowCodecChainWarning, match="compressors=None"):
        ds = zarr_aac.open_dataset(zstd_array)
    np.testing.assert_array_equal(ds.audio[100:200].values, zstd_array[100:200])
    plain = _array(tmp_path / "plain.zarr", compressors=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowCodecChainWarning)
        zarr_aac.open_dataset(plain)


def test_only_zarr_aac_arrays_with_other_codecs_are_named(tmp_path):
    other = zarr.create_array(str(tmp_path / "pcm.zarr"), shape=(10,), dtype="int16")
    assert codecs_besides_aac(other) == () and codec_chain_problem(other) is None
    assert codec_chain_problem(_array(tmp_path / "plain.zarr", compressors=None)) is None


def test_the_fix_copies_the_same_aac_chunks_into_an_array_without_compressors(zstd_array, tmp_path):
    """The message's way out: no re-encoding (a copy through zarr reads would lose a generation)."""
    import numcodecs
    from support.chunks import get_bytes

    copy = copy_without_compressors(zstd_array, str(tmp_path / "copy.zarr"))
    assert copy.compressors == () and codec_chain_problem(copy) is None
    for chunk in range(4):
        key = f"c/{chunk}/0"
        assert get_bytes(copy, key) == numcodecs.Zstd().decode(get_bytes(zstd_array, key))
    np.testing.assert_array_equal(copy[:], zstd_array[:])
    assert copy.attrs.asdict() == zstd_array.attrs.asdict()
    assert copy.metadata.dimension_names == ("time", "channel")
    assert verify(copy, progress=False) == []
    with pytest.raises(ValueError, match="not stored with the zarr_aac codec"):
        copy_without_compressors(zarr.create_array(str(tmp_path / "pcm.zarr"), shape=(4,), dtype="int16"), {})
