"""Codecs around the zarr_aac codec in an array's chain, which zarr lets in and which cost reads.

``zarr.create_array(..., serializer=AACCodec(...))`` without ``compressors=None`` puts zarr's
default zstd after the codec. zarr then cannot decode part of a chunk (its pipeline decodes
partially only when the array-to-bytes codec is the only codec), so every read fetches and
decodes whole chunks: 13x slower for short reads in issue 12's trial. The codec cannot refuse
such an array when it is created: zarr shows a codec the array's shape, data type and chunk grid
(``Codec.validate``, ``Codec.evolve_from_array_spec``) but never the other codecs. What can be
done is done where zarr_aac sees the whole array: opening it through zarr_aac (xarray, reads of
recordings) warns, and ``zarr-aac verify``/``info`` name the fix (docs/reliability.md).
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import zarr
from zarr.abc.codec import BytesBytesCodec, Codec
from zarr.core.array_spec import ArrayConfig, ArraySpec
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.metadata import ArrayV3Metadata
from zarr.core.sync import sync

from zarr_aac.codec.aac_codec import AACCodec
from zarr_aac.errors import CorruptChunkError, SlowCodecChainWarning

__all__ = [
    "codec_chain_problem",
    "codecs_besides_aac",
    "copy_without_compressors",
    "undo_compressors",
    "warn_codec_chain",
]


def codecs_besides_aac(array: zarr.Array) -> tuple[Codec, ...]:
    """The filters and compressors of a zarr_aac array (empty for any other array, and for a
    zarr_aac array created with ``compressors=None``, as it should be)."""
    if array.metadata.zarr_format != 3 or not isinstance(array.serializer, AACCodec):
        return ()
    return (*array.filters, *array.compressors)


def codec_chain_problem(array: zarr.Array) -> str | None:
    """What the codecs around a zarr_aac array's codec cost and how to avoid them, or None."""
    others = codecs_besides_aac(array)
    if not others:
        return None
    names = ", ".join(type(codec).__name__ for codec in others)
    return (
        f"{array.store_path} has {names} besides the zarr_aac codec (zarr adds its default zstd unless "
        "the array is created with compressors=None): zarr then decodes whole chunks for every read, "
        "many times slower for short reads, and AAC does not compress further. Create such arrays with "
        "compressors=None (and no filters); zarr_aac.codec.chain.copy_without_compressors copies this one into "
        "such an array without re-encoding"
    )


def warn_codec_chain(array: zarr.Array, stacklevel: int = 2) -> None:
    """Warn (:class:`~zarr_aac.errors.SlowCodecChainWarning`) if ``array`` has codecs besides
    its zarr_aac codec; once per array and call site, as warnings are."""
    problem = codec_chain_problem(array)
    if problem is not None:
        warnings.warn(problem, SlowCodecChainWarning, stacklevel=stacklevel + 1)


async def undo_compressors(array: zarr.Array, stored: Buffer, key: str) -> bytes:
    """The zarr_aac chunk inside a stored value: the array's bytes-to-bytes codecs (zarr's default
    zstd when ``compressors=None`` was not given) undone, last first, as a read undoes them.

    Raises
    ------
    CorruptChunkError
        If a compressor cannot decompress the value.
    """
    metadata = array.metadata
    if not isinstance(metadata, ArrayV3Metadata):  # a zarr_aac serializer exists in v3 only
        return stored.to_bytes()
    spec = ArraySpec(
        shape=array.chunks,
        dtype=metadata.data_type,
        fill_value=metadata.fill_value,
        config=ArrayConfig.from_dict({}),
        prototype=default_buffer_prototype(),
    )
    for compressor in reversed([c for c in array.compressors if isinstance(c, BytesBytesCodec)]):
        try:
            (decoded,) = await compressor.decode([(stored, spec)])
        except Exception as exc:  # the compressor's own error type: zstd raises RuntimeError
            raise CorruptChunkError(key, f"{compressor} cannot decompress it: {exc}") from exc
        if decoded is None:
            raise CorruptChunkError(key, f"{compressor} decompressed it to nothing")
        stored = decoded
    return stored.to_bytes()


def copy_without_compressors(array: zarr.Array, store: Any, *, name: str | None = None) -> zarr.Array:
    """Copy a zarr_aac array that has compressors into a new array without them, chunk by chunk
    with the compressors undone: the same AAC chunks, not decoded and encoded again.

    Parameters
    ----------
    array
        A zarr_aac array (its filters, array-to-array codecs, cannot be undone so and are refused).
    store
        Where to create the new array (any zarr store or path; it must not exist).
    name
        Path of the new array inside ``store``.

    Returns
    -------
    zarr.Array
        The new array: same shape, chunks, dtype, codec, fill value, attributes and dimension
        names, and ``compressors=None``, so reads decode only the frames they need.

    Raises
    ------
    ValueError
        If ``array`` is not a zarr_aac array, or has filters.
    CorruptChunkError
        If a stored value cannot be decompressed (nothing is left half-copied to look whole:
        remove the new array and see ``zarr-aac verify``).
    """
    codec = array.serializer if array.metadata.zarr_format == 3 else None
    if not isinstance(codec, AACCodec):
        raise ValueError(f"{array.store_path} is not stored with the zarr_aac codec")
    if array.filters:
        raise ValueError(
            f"{array.store_path} has filters {list(array.filters)}: its chunks cannot be copied without decoding them"
        )
    metadata = array.metadata
    assert isinstance(metadata, ArrayV3Metadata)
    target = zarr.create_array(
        store,
        name=name,
        shape=array.shape,
        chunks=array.chunks,
        dtype=array.dtype,
        serializer=codec,
        compressors=None,
        fill_value=array.fill_value,
        attributes=array.attrs.asdict(),
        dimension_names=metadata.dimension_names,
    )
    for coords in itertools.product(*(range(n) for n in array.cdata_shape)):
        key = metadata.encode_chunk_key(coords)
        stored = sync((array.store_path / key).get(default_buffer_prototype()))
        if stored is None:
            continue
        inner = sync(undo_compressors(array, stored, f"{array.store_path}/{key}"))
        sync((target.store_path / key).set(default_buffer_prototype().buffer.from_bytes(inner)))
    return target
