"""Scan an archive and list the chunks that fail their checks.

Reads check only what they fetch: the header and index and the checksum groups of the frames
they decode. A scrub with ``verify`` reads every chunk whole and checks every group, so damage
in frames nobody has read yet is found before it is needed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any

import zarr
from tqdm.auto import tqdm
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from zarr_aac.archive.recordings import check_committed, check_committed_at, codec_of, recording_arrays
from zarr_aac.codec.aac_codec import AACCodec
from zarr_aac.codec.chain import codec_chain_problem, undo_compressors
from zarr_aac.codec.chunk_format import (
    check_chunk_geometry,
    parse_header,
    parse_pcm_chunk,
    parse_prefix,
    verify_payload,
)
from zarr_aac.errors import ArchiveError, CorruptChunkError

PCM_TAIL = (
    "PCM tail: sound, stored losslessly and not yet encoded; the recording is being written live, or its "
    "writer stopped before closing (zarr_aac.open_writer(..., resume=True) and close() encode it)"
)
"""The ``error`` of a sound PCM chunk in ``verify``'s list: no damage, but a recording not closed."""
CODEC_CHAIN_KEY = "zarr.json"
"""The ``key`` of the finding for an array with codecs besides the zarr_aac codec (zarr's default
zstd): no damage, every chunk is checked through them, but every read decodes whole chunks."""
CONCURRENT_GETS = 16
"""Chunks fetched at once: enough to hide an object store's latency, few enough to bound memory."""


def verify(
    source: str | os.PathLike | zarr.Group | zarr.Array,
    *,
    progress: bool = True,
    decode: bool = False,
    report_missing: bool = True,
) -> list[dict[str, str]]:
    """Check every chunk of every ``zarr_aac`` array in ``source``.

    A stored chunk is bad when it fails its header, index or payload checks; an absent one is
    reported as missing. Reads check only
    what they fetch; this reads every chunk whole, so damage in frames nobody has read yet is
    found before it is needed.

    Parameters
    ----------
    source
        A path or URL, a group (every array below it) or an array.
    progress
        Show a progress bar over chunks.
    decode
        Also decode every chunk, which catches frames FFmpeg rejects despite a matching
        checksum; much slower (docs/importing.md, "Verifying").
    report_missing
        List absent chunks too. The importer stores every chunk, so there an absent chunk is
        lost data; pass False for arrays written by zarr's default, which leaves out chunks
        equal to the fill value.

    Returns
    -------
    list of dict
        One ``{"array", "key", "error"}`` dict per bad or missing chunk, per sound PCM chunk
        (``error`` is then :data:`PCM_TAIL`: a live recording's unfinished tail, or one whose
        writer stopped before closing), and per array with codecs besides the zarr_aac codec
        (``key`` is then :data:`CODEC_CHAIN_KEY` and ``error`` says to create arrays with
        ``compressors=None``); empty when all are sound, encoded and read at full speed.
        :func:`is_damage` tells the damage from the other findings.

    Raises
    ------
    ArchiveError
        If ``source`` cannot be opened as a Zarr group or array.
    RecordingNotCommittedError
        If ``source`` is an array whose import has not committed it; below a group such arrays
        are left out (``zarr-aac ls`` lists them).
    """
    arrays = _aac_arrays(_open(source))
    total = sum(array.nchunks for array in arrays)
    problems: list[dict[str, str]] = []
    with tqdm(total=total, unit="chunk", desc="verify", disable=None if progress else True) as bar:
        for array in arrays:
            chain = codec_chain_problem(array)
            if chain is not None:
                problems.append(_problem(array, CODEC_CHAIN_KEY, chain))
            problems.extend(sync(_verify_array(array, decode, report_missing, bar)))
    return problems


def is_damage(problem: dict[str, str]) -> bool:
    """Whether a finding of :func:`verify` is a bad or missing chunk, rather than a sound PCM tail
    or an array that reads slowly through codecs besides the zarr_aac codec."""
    return problem["error"] != PCM_TAIL and problem["key"] != CODEC_CHAIN_KEY


def _open(source: Any) -> zarr.Group | zarr.Array:
    if isinstance(source, zarr.Group | zarr.Array):
        return source
    location = str(source) if isinstance(source, os.PathLike) else source
    try:
        node = zarr.open(location, mode="r")
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise ArchiveError(f"cannot open {source} as a zarr archive: {exc}") from exc
    return check_committed_at(location, node) if isinstance(node, zarr.Array) else node


def _aac_arrays(node: zarr.Group | zarr.Array) -> list[zarr.Array]:
    """The zarr_aac arrays to check: an array given (once committed), or every committed one below a group."""
    if isinstance(node, zarr.Array):
        is_aac = node.metadata.zarr_format == 3 and isinstance(node.serializer, AACCodec)
        return [check_committed(node)] if is_aac else []
    return list(recording_arrays(node).values())


async def _verify_array(array: zarr.Array, decode: bool, report_missing: bool, bar: tqdm) -> list[dict[str, str]]:
    store = array.store_path.store
    prefix = f"{array.store_path.path}/" if array.store_path.path else ""
    limit = asyncio.Semaphore(CONCURRENT_GETS)

    async def check(coords: tuple[int, ...]) -> dict[str, str] | None:
        key = prefix + array.metadata.encode_chunk_key(coords)
        async with limit:
            buf = await store.get(key, default_buffer_prototype())
        try:
            if buf is None:
                return _problem(array, key, _missing_message(array)) if report_missing else None
            try:
                note = _check_chunk(array, await undo_compressors(array, buf, key), key, decode)
            except CorruptChunkError as exc:
                return _problem(array, key, exc.reason)
            return _problem(array, key, note) if note is not None else None
        finally:
            bar.update()

    grid = itertools.product(*(range(n) for n in array.cdata_shape))
    results = await asyncio.gather(*(check(coords) for coords in grid))
    return [r for r in results if r is not None]


def _missing_message(array: zarr.Array) -> str:
    codec = array.serializer
    if isinstance(codec, AACCodec) and codec.all_chunks_stored:
        return "missing: not stored, though the array stores every chunk (lost data; reads raise MissingChunkError)"
    return "missing: not stored, reads as fill values (zarr leaves out chunks equal to the fill value)"


def _check_chunk(array: zarr.Array, data: bytes, key: str, decode: bool) -> str | None:
    """Raise CorruptChunkError if the chunk is bad; :data:`PCM_TAIL` if it is a sound PCM chunk."""
    codec = codec_of(array)
    chunk_shape = array.chunks
    header = parse_header(data, key)
    check_chunk_geometry(header, chunk_shape, key)
    if header.is_pcm:
        parse_pcm_chunk(data, header, array.dtype, key)
        return PCM_TAIL
    if decode:
        codec.decode_chunk(data, chunk_shape, array.dtype, key)
        return None
    verify_payload(data, parse_prefix(data, header, key), key)
    return None


def _problem(array: zarr.Array, key: str, error: str) -> dict[str, str]:
    return {"array": array.path, "key": key, "error": error}
