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

import warnings

import zarr
from zarr.abc.codec import Codec

from zarr_aac.codec.aac_codec import AACCodec
from zarr_aac.errors import SlowCodecChainWarning

__all__ = ["codec_chain_problem", "codecs_besides_aac", "warn_codec_chain"]


def codecs_besides_aac(array: zarr.Array) -> tuple[Codec, ...]:
    """The filters and compressors of a zarr_aac array (empty for any other array, and for a
    zarr_aac array created with ``compressors=None``, as it should be)."""
    if array.metadata.zarr_format != 3 or not isinstance(array.serializer, AACCodec):
        return ()
    return (*array.filters, *array.compressors)  # type: ignore[arg-type]  # v3 arrays hold v3 codecs


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
        "compressors=None (and no filters); to fix this one, copy it into a new array made so"
    )


def warn_codec_chain(array: zarr.Array, stacklevel: int = 2) -> None:
    """Warn (:class:`~zarr_aac.errors.SlowCodecChainWarning`) if ``array`` has codecs besides
    its zarr_aac codec; once per array and call site, as warnings are."""
    problem = codec_chain_problem(array)
    if problem is not None:
        warnings.warn(problem, SlowCodecChainWarning, stacklevel=stacklevel + 1)
