"""Telling a partial-chunk write from a whole-chunk one, to warn that the first re-encodes audio.

zarr writes part of a chunk by reading the stored chunk, decoding it, merging the new samples
and encoding the result (``BatchedCodecPipeline.write_batch``), and it hands the codec the same
``ArraySpec`` object for the decode and the encode of that chunk. A whole-chunk write decodes
nothing, and a read decodes without encoding. So an encode whose spec was decoded just before
is a read-modify-write: it encodes decoded AAC again and adds a generation of coding loss to the
samples the write did not touch.
"""

from __future__ import annotations

import warnings
import weakref
from typing import TYPE_CHECKING

from zarr_aac.errors import GenerationLossWarning

if TYPE_CHECKING:
    from zarr.core.array_spec import ArraySpec

_decoded: dict[int, weakref.ref[ArraySpec]] = {}
"""Specs of chunks decoded and not yet encoded, by identity; an entry leaves with its spec."""


def note_decoded(spec: ArraySpec) -> None:
    """Remember that the chunk described by ``spec`` was decoded whole."""
    key = id(spec)
    _decoded[key] = weakref.ref(spec, lambda _, key=key: _decoded.pop(key, None))  # type: ignore[misc]


def warn_if_reencoded(spec: ArraySpec) -> None:
    """Warn with :class:`GenerationLossWarning` when ``spec``'s chunk was decoded for this encode."""
    decoded = _decoded.pop(id(spec), None)
    if decoded is None or decoded() is not spec:
        return
    warnings.warn(
        f"writing part of a chunk of {spec.shape[0]} samples re-encodes the whole chunk: zarr decodes the stored "
        "AAC, merges the new samples and encodes it again, so its other samples lose quality with every such "
        "write. Write whole chunks (selections aligned to array.chunks), or append blocks as they come with "
        "zarr_aac.open_writer, which encodes each chunk once (docs/live-recording.md)",
        GenerationLossWarning,
        stacklevel=2,
    )
