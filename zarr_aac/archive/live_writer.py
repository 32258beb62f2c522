"""Recording live: a writer that appends the blocks a recorder delivers to a recording of an archive.

Whole chunks are encoded once, as the importer encodes them (the same :class:`ChunkEncoder`, fed
as samples arrive, so the bytes are the importer's). The unfinished last chunk is stored as a PCM
chunk (docs/spec.md, flag ``FLAG_PCM``) at its own key, rewritten on every append, and the
array's shape then grows over the new samples: a reader, through zarr, ``open_recording`` or
xarray, sees every appended sample, exactly, as soon as ``append`` returns. Each write is of one
key, whole (zarr's local store writes a temporary file and renames it; an object store's PUT is
atomic), and chunks are written before the shape that exposes them, so a reader never meets a
torn chunk nor a chunk missing inside the shape. docs/live-recording.md has the protocol, what a
crash leaves and what it costs.
"""

from __future__ import annotations

import os
import secrets
import threading
import warnings
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

from zarr_aac.archive import source_metadata
from zarr_aac.archive.import_options import DEFAULT_CHUNK_DURATION, ImportOptions, parse_array_dtype
from zarr_aac.archive.importer import _RecordingLayout, aac_rate_for, chunk_length_for
from zarr_aac.archive.recordings import (
    PathLike,
    abandon_reservation,
    change_entry,
    check_recording_name,
    child_names,
    child_path,
    codec_of,
    importing_owner,
    open_archive,
    owner_is_dead,
    publish_recording,
    recording_array,
    reservation_of,
    reserve_name,
)
from zarr_aac.codec import aac
from zarr_aac.codec.aac_codec import DEFAULT_GAINS, ChunkEncoder, parse_sample_rate
from zarr_aac.codec.chunk_format import PcmChunkBuilder, parse_header, parse_pcm_chunk
from zarr_aac.errors import ArchiveError, RecordingInUseError
from zarr_aac.validation import parse_positive_int

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; only this process's own writers are kept apart
    _HAS_FLOCK = False
else:
    _HAS_FLOCK = True

LIVE_ATTR = "live"
"""Attribute of a recording being written live: its writer (host, process id) and, once the writer
has begun to close, ``closing``: the final length. Closing removes it."""

LIVE_CHUNK_BYTES = 32 * 2**20
"""PCM bytes of the unfinished chunk (all its channel groups), at most. The writer holds that
chunk and rewrites it whole on every append, so where the importer's 60 s would exceed this (high
rates, many channels, float32) a live recording's chunks are shorter: its memory and the cost of
an append stay bounded whatever the rate (docs/live-recording.md, "Cost")."""

_writers_here: set[str] = set()
"""Store paths of the recordings this process has a writer open on."""
_writers_here_lock = threading.Lock()


def open_writer(
    archive: zarr.Group | PathLike,
    name: str,
    *,
    sample_rate: int,
    channels: int,
    dtype: str | np.dtype = "int16",
    start_time: datetime | date | str | None = None,
    resume: bool = False,
    bitrate: int | None = None,
    aac_sample_rate: int | None = None,
    chunk_duration: float | None = None,
    metadata: dict[str, Any] | None = None,
) -> LiveWriter:
    """A writer that appends blocks of samples to recording ``name`` of ``archive`` as they come.

    The recording is in the archive's catalogue from the start, and every appended sample is
    readable (exactly as appended, until its chunk is whole and encoded) as soon as ``append``
    returns. Closing the writer encodes the last chunk; the samples and chunk bytes are then
    those one import of the whole signal with the same options stores.

    Parameters
    ----------
    archive
        The archive: a Zarr group or its path or URL, created if missing.
    name
        The recording's name: one path segment, not starting with '.' or '__'.
    sample_rate
        The recorder's rate, in Hz.
    channels
        The recorder's channel count.
    dtype
        ``"int16"`` or ``"float32"``: what the blocks are and what is stored.
    start_time
        When the recording started, a datetime or an ISO-8601 string; left out, it is read
        from ``name`` if that holds one (``20250610_050000``), as the importer reads file names.
    resume
        Continue recording ``name`` if it exists, after the samples its last writer stored
        (one that crashed loses at most the block it was appending); start it if not. The
        other arguments must agree with the recording; ``bitrate``, ``aac_sample_rate`` and
        ``chunk_duration`` may be left out.
    bitrate, aac_sample_rate, chunk_duration, metadata
        As in :class:`~zarr_aac.ImportOptions` (``chunk_duration`` None: 60 s, or less where a
        chunk would hold more than :data:`LIVE_CHUNK_BYTES` of PCM: 8.4 s at 500 kHz x 4
        channels of int16); the lower bitrate the importer gives near-mono stereo, judged from a
        file's first seconds, is not chosen here.

    Returns
    -------
    LiveWriter
        Use it as a context manager, or call ``close``.

    Raises
    ------
    ArchiveError
        If ``name`` exists and ``resume`` is false, or it is a closed recording, or it was
        recorded with another rate, channel count, dtype or encoding.
    RecordingInUseError
        If another writer has the recording open (see docs/live-recording.md for what each
        store can detect).
    ValueError, UnsupportedAudioError
        If an argument is invalid, or ``chunk_duration`` gives chunks of more than
        :data:`LIVE_CHUNK_BYTES` of PCM.
    """
    check_recording_name(name)
    rate = parse_sample_rate(sample_rate)
    n_channels = parse_positive_int(channels, "channels")
    array_dtype = parse_array_dtype(dtype)
    if array_dtype is None:
        raise ValueError("dtype must be int16 or float32, got None")
    options = ImportOptions(
        bitrate=bitrate,
        aac_sample_rate=aac_sample_rate,
        chunk_duration=DEFAULT_CHUNK_DURATION if chunk_duration is None else chunk_duration,
        start_time=start_time,
        metadata=metadata,
        dtype=array_dtype,
    )
    group = open_archive(archive)
    if name in child_names(group):
        if not resume:
            raise ArchiveError(
                f"{child_path(group, name)} already exists; pass resume=True to go on recording it, "
                "or pick another name"
            )
        array = recording_array(group, name)
        _check_agrees(array, rate, n_channels, array_dtype, options, chunk_duration_given=chunk_duration is not None)
        return LiveWriter._resumed(group, array)
    layout = _layout(rate, n_channels, array_dtype, options, chunk_duration_given=chunk_duration is not None)
    attrs = _live_attributes(layout, options, name)
    array = _publish(group, name, attrs, layout=layout)
    return LiveWriter(group, array, attrs, _claim(array), n_samples=0)


def _layout(
    rate: int, channels: int, dtype: np.dtype, options: ImportOptions, *, chunk_duration_given: bool
) -> _RecordingLayout:
    """The importer's layout for a source of this rate, channel count and dtype with ``options``,
    with chunks no larger than :data:`LIVE_CHUNK_BYTES`."""
    aac_rate = options.aac_sample_rate or aac_rate_for(rate)
    chunk_channels = min(channels, aac.MAX_CHANNELS)
    return _RecordingLayout(
        sample_rate=rate,
        channels=channels,
        dtype=dtype,
        chunk_length=live_chunk_length(
            options.chunk_duration if chunk_duration_given else None, rate, channels, chunk_channels, dtype
        ),
        chunk_channels=chunk_channels,
        aac_sample_rate=aac_rate,
        bitrate=options.bitrate or aac.default_bitrate(chunk_channels, aac_rate, rate),
        # the peak of what a recorder will deliver is not known: keep the dtype's full headroom
        gain=DEFAULT_GAINS[dtype],
    )


def live_chunk_length(
    chunk_duration: float | None, rate: int, channels: int, chunk_channels: int, dtype: np.dtype
) -> int:
    """Samples per chunk of a live recording: the importer's for ``chunk_duration`` (None: its
    default, cut to :data:`LIVE_CHUNK_BYTES` of PCM), in whole AAC frames.

    Raises
    ------
    ValueError
        If ``chunk_duration`` is given and its chunks hold more than :data:`LIVE_CHUNK_BYTES`.
    """
    bytes_per_sample = -(-channels // chunk_channels) * chunk_channels * np.dtype(dtype).itemsize
    longest = max(1, LIVE_CHUNK_BYTES // bytes_per_sample // aac.FRAME_LENGTH) * aac.FRAME_LENGTH
    if chunk_duration is None:
        return min(chunk_length_for(DEFAULT_CHUNK_DURATION, rate), longest)
    length = chunk_length_for(chunk_duration, rate)
    if length > longest:
        raise ValueError(
            f"chunk_duration={chunk_duration:g} s holds {length * bytes_per_sample / 2**20:.0f} MiB of PCM at "
            f"{rate} Hz, {channels} channel(s), {np.dtype(dtype).name}: the live writer holds the unfinished "
            f"chunk and rewrites it on every append, so it takes at most {LIVE_CHUNK_BYTES // 2**20} MiB, "
            f"{longest / rate:.3g} s here; pass a shorter chunk_duration or leave it out"
        )
    return length


def _live_attributes(layout: _RecordingLayout, options: ImportOptions, name: str) -> dict[str, Any]:
    """A live recording's attributes: the importer's, without a source file or fidelity report."""
    started, started_from = source_metadata.start_time_from(
        user=options.start_time, guano_fields={}, tags={}, filename=name
    )
    return {
        "sample_rate": layout.sample_rate,
        "channels": layout.channels,
        # the array's shape is the length so far; these are written when the writer closes
        "n_samples": None,
        "duration_s": None,
        "dtype": layout.dtype.name,
        "start_time": started.isoformat() if started is not None else None,
        "start_time_source": started_from,
        "aac": {"sample_rate": layout.aac_sample_rate, "bitrate": layout.bitrate, "chunk_samples": layout.chunk_length},
        "fidelity": None,
        "source": {"live": True},
        "tags": {},
        "guano": None,
        "user": options.metadata or {},
        LIVE_ATTR: {"writer": importing_owner(), "began": datetime.now(UTC).isoformat()},
    }


def _publish(
    group: zarr.Group, name: str, attrs: dict[str, Any], *, layout: _RecordingLayout | None = None
) -> zarr.Array:
    """Write recording ``name``'s catalogue entry, creating its array first when ``layout`` is given.

    The only place the live writer touches the catalogue: at the start and at the close. At the
    start the name is reserved exactly (an ArchiveError if anything holds it), the array created
    in place and committed at once, so readers see it while it grows. Its content is not known
    then, so its entry is keyed by a random digest of its own and takes part in no content
    dedup. At the close the entry is replaced by the final attributes (docs/spec.md, "Archive
    commit protocol").
    """
    if layout is not None:
        reservation = reserve_name(group, name, secrets.token_hex(32), exact=True)
        try:
            array = layout.create_array(group, name, reservation.owner)
            array.attrs.put(attrs)
        except BaseException:
            abandon_reservation(group, reservation)
            raise
        publish_recording(group, reservation, attrs)
        return array
    held = reservation_of(group, name)
    if held is None:
        raise ArchiveError(f"{child_path(group, name)} has no reservation, so it was not started by open_writer")
    change_entry(group, str(held["digest"]), {"name": name, "token": held["token"], "recording": attrs})
    return recording_array(group, name)


class LiveWriter:
    """Appends blocks of samples to a recording as a recorder delivers them; see :func:`open_writer`.

    ``n_samples`` is the recording's length so far. Use it as a context manager: leaving the
    block closes it, also on an error (what was appended is kept, and the last chunk encoded).
    One thread appends at a time; readers may be anywhere.
    """

    def __init__(
        self,
        group: zarr.Group,
        array: zarr.Array,
        attrs: dict[str, Any],
        release: _Release,
        *,
        n_samples: int,
    ) -> None:
        self._group = group
        self._array = array
        self._codec = codec_of(array)
        self._attrs = attrs
        self._release = release
        self._name = array.basename
        self.sample_rate = self._codec.sample_rate
        self.chunk_length, self._chunk_channels = array.chunks
        self.channels = array.shape[1]
        self.dtype = array.dtype
        self.n_samples = n_samples
        self._groups = -(-self.channels // self._chunk_channels)
        self._tails: list[PcmChunkBuilder] | None = None
        """The PCM chunk of each channel group of the chunk under way (None before its first sample)."""
        self._tail_length = 0
        self._chunk_number = n_samples // self.chunk_length
        """The chunk under way: ``_tail_length`` of its samples are in ``_tails`` and fed to ``_encoders``."""
        self._encoders: list[ChunkEncoder] | None = None
        self._closed = False

    @classmethod
    def _resumed(cls, group: zarr.Group, array: zarr.Array) -> LiveWriter:
        """A writer going on after the samples the recording's last writer stored."""
        live = array.attrs.get(LIVE_ATTR)
        if not isinstance(live, dict):
            raise ArchiveError(
                f"{array.store_path} is a closed recording: it takes no more samples; record into a new one"
            )
        release = _claim(array, owner=live.get("writer"))
        try:
            attrs: dict[str, Any] = dict(array.attrs)
            writer = cls(group, array, attrs, release, n_samples=array.shape[0])
            writer._recover(live.get("closing"))
            if writer.closed:
                raise ArchiveError(
                    f"{array.store_path} was being closed when its writer stopped: the close is now finished, "
                    "and a closed recording takes no more samples; record into a new one"
                )
            resumed = {k: v for k, v in live.items() if k != "closing"}
            attrs[LIVE_ATTR] = {**resumed, "writer": importing_owner(), "resumed": datetime.now(UTC).isoformat()}
            array.attrs.put(attrs)
            if writer.n_samples != array.shape[0]:
                array.resize((writer.n_samples, writer.channels))
        except BaseException:
            release()
            raise
        return writer

    @property
    def array(self) -> zarr.Array:
        """The recording being written (its shape is the samples appended so far)."""
        return self._array

    @property
    def closed(self) -> bool:
        """Whether ``close`` has run: the recording is finished and takes no more samples."""
        return self._closed

    def __enter__(self) -> LiveWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<LiveWriter {self._array.store_path}: {self.n_samples} samples, {state}>"

    def append(self, block: np.ndarray, *, sample_rate: int | None = None) -> None:
        """Append ``block``; readers see its samples when this returns.

        Parameters
        ----------
        block : numpy.ndarray
            The next samples, shape (samples, channels), or (samples,) for a mono recording, of
            the recording's dtype.
        sample_rate : int, optional
            The block's rate, if the recorder gives one: checked against the recording's.

        Raises
        ------
        ValueError
            If the writer is closed, or ``block`` has another rate, channel count, dtype or
            number of dimensions, or holds NaN or infinite samples.
        TypeError
            If ``block`` is not a numpy array.
        """
        pcm = self._check_block(block, sample_rate)
        if not pcm.shape[0]:
            return
        self._take(pcm)
        if self._tail_length:
            self._put_pcm_tail()
        self.n_samples += pcm.shape[0]
        self._array.resize((self.n_samples, self.channels))

    def close(self) -> zarr.Array:
        """Encode the last chunk, write the final attributes and catalogue entry, and let the
        recording go; a second call does nothing.

        Returns
        -------
        zarr.Array
            The finished recording.
        """
        if self._closed:
            return self._array
        try:
            if self._tail_length:
                # Marked first: a writer resuming after a crash from here on must not take the
                # padding of the chunk encoded below for samples.
                self._array.attrs.update({LIVE_ATTR: {**self._attrs[LIVE_ATTR], "closing": self.n_samples}})
                self._encode_tail_padded()
            self._finish()
        finally:
            self._closed = True
            self._release()
        return self._array

    def _finish(self) -> None:
        """Write the final attributes (without the live mark) and the catalogue entry."""
        final = {k: v for k, v in self._attrs.items() if k != LIVE_ATTR}
        final.update(n_samples=self.n_samples, duration_s=self.n_samples / self.sample_rate)
        self._array.attrs.put(final)
        self._array = _publish(self._group, self._name, final)
        self._attrs = final

    def _check_block(self, block: Any, sample_rate: int | None) -> np.ndarray:
        where = f"recording {self._name!r}"
        if self._closed:
            raise ValueError(f"the writer of {where} is closed, and a closed recording takes no more samples")
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise ValueError(f"block at {sample_rate} Hz for {where} at {self.sample_rate} Hz; resample it first")
        if not isinstance(block, np.ndarray):
            raise TypeError(f"append takes a numpy array of samples, not {type(block).__name__}")
        if block.dtype != self.dtype:
            raise ValueError(
                f"block of {block.dtype} samples for {where} of {self.dtype}; convert it first "
                "(scaling by 32768 between int16 and float32)"
            )
        pcm = block.reshape(-1, 1) if block.ndim == 1 and self.channels == 1 else block
        if pcm.ndim != 2 or pcm.shape[1] != self.channels:
            mono = " or (samples,)" if self.channels == 1 else ""
            raise ValueError(
                f"block of shape {block.shape} for {where} of {self.channels} channel(s): "
                f"give (samples, {self.channels}){mono}"
            )
        if pcm.dtype.kind == "f" and pcm.size and not np.isfinite(pcm).all():
            raise ValueError(f"block for {where} holds NaN or infinite samples, which cannot be encoded")
        return pcm

    def _take(self, pcm: np.ndarray) -> None:
        """Add samples to the chunk under way, encoding and storing each chunk they complete."""
        position = 0
        while position < pcm.shape[0]:
            take = min(self.chunk_length - self._tail_length, pcm.shape[0] - position)
            piece = pcm[position : position + take]
            if self._tails is None:
                self._tails = [
                    PcmChunkBuilder(self.chunk_length, self._chunk_channels, self.dtype, self._codec.aac_sample_rate)
                    for _ in range(self._groups)
                ]
            for group, tail in enumerate(self._tails):
                tail.extend(self._columns(piece, group))
            self._feed(piece)
            self._tail_length += take
            position += take
            if self._tail_length == self.chunk_length:
                if self._groups > 1:
                    # Each group's PCM holds the whole chunk before any group is encoded: a crash
                    # between the groups' writes leaves every group whole, encoded or not.
                    self._put_pcm_tail()
                self._store_encoded()

    def _feed(self, pcm: np.ndarray) -> None:
        if self._encoders is None:
            self._encoders = [ChunkEncoder(self._codec, self._chunk_channels, self.dtype) for _ in range(self._groups)]
        for group, encoder in enumerate(self._encoders):
            encoder.feed(self._columns(pcm, group))

    def _columns(self, pcm: np.ndarray, group: int) -> np.ndarray:
        """Channel group ``group`` of ``pcm``, the last padded with zero channels as zarr pads it."""
        width = self._chunk_channels
        block = pcm[:, group * width : (group + 1) * width]
        if block.shape[1] < width:
            block = np.pad(block, ((0, 0), (0, width - block.shape[1])))
        return block

    def _store_encoded(self) -> None:
        """Store the chunk under way, encoded, in place of its PCM, and begin the next."""
        assert self._encoders is not None
        for group, encoder in enumerate(self._encoders):
            self._put((self._chunk_number, group), encoder.finish())
        self._encoders = None
        self._tails = None
        self._tail_length = 0
        self._chunk_number += 1

    def _encode_tail_padded(self) -> None:
        """Store the last, unfinished chunk encoded, padded with zeros as zarr pads an array's edge chunk."""
        self._feed(np.zeros((self.chunk_length - self._tail_length, self.channels), dtype=self.dtype))
        self._store_encoded()

    def _put_pcm_tail(self) -> None:
        assert self._tails is not None
        for group, tail in enumerate(self._tails):
            self._put((self._chunk_number, group), tail.chunk())

    def _put(self, coords: tuple[int, int], data: bytes) -> None:
        key = self._array.metadata.encode_chunk_key(coords)
        sync((self._array.store_path / key).set(default_buffer_prototype().buffer.from_bytes(data)))

    def _get(self, coords: tuple[int, int]) -> tuple[str, bytes | None]:
        key = self._array.metadata.encode_chunk_key(coords)
        found = sync((self._array.store_path / key).get(default_buffer_prototype()))
        return f"{self._array.store_path}/{key}", found.to_bytes() if found is not None else None

    def _recover(self, closing: int | None) -> None:
        """Take up what the last writer stored beyond the shape it published: whole chunks it
        encoded (or whose groups' PCM is whole: encoded now) and the PCM of the chunk under way.
        With ``closing`` (it had begun to close at that length), finish its close instead."""
        while True:
            found = [self._get((self._chunk_number, group)) for group in range(self._groups)]
            if all(data is None for _, data in found):
                break
            pcm: dict[int, np.ndarray] = {}
            for group, (key, data) in enumerate(found):
                if data is None:
                    pcm[group] = np.zeros((0, self._chunk_channels), dtype=self.dtype)
                    continue
                header = parse_header(data, key)
                if header.is_pcm:
                    pcm[group] = parse_pcm_chunk(data, header, self.dtype, key)
            if closing is not None:
                self._finish_close(closing, pcm)
                return
            if all(samples.shape[0] == self.chunk_length for samples in pcm.values()):
                for group, samples in pcm.items():
                    encoder = ChunkEncoder(self._codec, self._chunk_channels, self.dtype)
                    encoder.feed(samples)
                    self._put((self._chunk_number, group), encoder.finish())
                self._chunk_number += 1
                self.n_samples = max(self.n_samples, self._chunk_number * self.chunk_length)
                continue
            stored = min(samples.shape[0] for samples in pcm.values())
            start = self._chunk_number * self.chunk_length
            if len(pcm) < self._groups or start + stored < self.n_samples:
                raise ArchiveError(
                    f"{self._array.store_path}: chunk {self._chunk_number} is stored in a state no writer leaves "
                    f"({len(pcm)} of {self._groups} channel groups unencoded, {stored} samples where the shape "
                    f"says {self.n_samples - start}); run zarr-aac verify on it"
                )
            tail = np.concatenate([pcm[group][:stored] for group in range(self._groups)], axis=1)
            self._take(tail[:, : self.channels])
            self.n_samples = start + stored
            return
        if self.n_samples != self._chunk_number * self.chunk_length:
            raise ArchiveError(
                f"{self._array.store_path}: chunk {self._chunk_number} is missing though the shape covers it; "
                "run zarr-aac verify on it"
            )

    def _finish_close(self, closing: int, pcm: dict[int, np.ndarray]) -> None:
        """Finish a close its writer began: encode the groups of the last chunk still in PCM."""
        stored = closing - self._chunk_number * self.chunk_length
        for group, samples in pcm.items():
            if samples.shape[0] < stored:
                raise ArchiveError(
                    f"{self._array.store_path}: chunk {self._chunk_number} holds {samples.shape[0]} samples, "
                    f"fewer than the {stored} its writer was closing with; run zarr-aac verify on it"
                )
            padded = np.zeros((self.chunk_length, self._chunk_channels), dtype=self.dtype)
            padded[:stored] = samples[:stored]
            encoder = ChunkEncoder(self._codec, self._chunk_channels, self.dtype)
            encoder.feed(padded)
            self._put((self._chunk_number, group), encoder.finish())
        self.n_samples = closing
        if self._array.shape[0] != closing:
            self._array.resize((closing, self.channels))
        self._finish()
        self._closed = True


def _check_agrees(
    array: zarr.Array, rate: int, channels: int, dtype: np.dtype, options: ImportOptions, *, chunk_duration_given: bool
) -> None:
    """Raise ArchiveError unless the recording to resume has the rate, channels, dtype and encoding asked for."""
    codec = codec_of(array)
    differences = []
    if codec.sample_rate != rate:
        differences.append(f"sample_rate {codec.sample_rate}, not {rate}")
    if array.ndim != 2 or array.shape[1] != channels:
        differences.append(f"shape {array.shape}, not {channels} channel(s)")
    if array.dtype != dtype:
        differences.append(f"dtype {array.dtype}, not {dtype}")
    if options.bitrate is not None and codec.bitrate != options.bitrate:
        differences.append(f"bitrate {codec.bitrate}, not {options.bitrate}")
    if options.aac_sample_rate is not None and codec.aac_sample_rate != options.aac_sample_rate:
        differences.append(f"aac_sample_rate {codec.aac_sample_rate}, not {options.aac_sample_rate}")
    if chunk_duration_given and chunk_length_for(options.chunk_duration, rate) != array.chunks[0]:
        differences.append(f"chunks of {array.chunks[0]} samples, not {options.chunk_duration} s")
    if differences:
        raise ArchiveError(f"{array.store_path} cannot be resumed as asked: it has " + "; ".join(differences))


class _Release:
    """Lets a recording go: ends this process's claim on it and its lock."""

    def __init__(self, path: str, descriptor: int | None) -> None:
        self._path = path
        self._descriptor = descriptor
        self._done = False

    def __call__(self) -> None:
        if self._done:
            return
        self._done = True
        if self._descriptor is not None:
            os.close(self._descriptor)  # releases the flock
        with _writers_here_lock:
            _writers_here.discard(self._path)


ATOMIC_LOCAL_WRITES_SINCE = (3, 1, 3)
"""zarr version whose LocalStore writes each key by a temporary file and a rename (zarr-python
PR 3412); before it a file is rewritten in place, and a reader can meet it half-written."""


def _warn_if_local_writes_tear(array: zarr.Array) -> None:
    """Warn that readers may meet half-written keys, on a local store of a zarr that writes in place."""
    release = tuple(int(part) for part in zarr.__version__.split(".")[:3] if part.isdigit())
    if isinstance(array.store, LocalStore) and release < ATOMIC_LOCAL_WRITES_SINCE:
        warnings.warn(
            f"zarr {zarr.__version__} rewrites local files in place: a reader polling {array.store_path} while "
            "it is written can meet a half-written chunk or metadata and raise (never read wrong samples); "
            "zarr 3.1.3 and later write each file whole: pip install 'zarr>=3.1.3'",
            stacklevel=3,
        )


def _claim(array: zarr.Array, owner: Any = None) -> _Release:
    """Claim the recording for one writer, or raise RecordingInUseError.

    In this process a registry of open writers decides. On a local store an exclusive flock on
    the recording's directory, held while the writer is open and released by the system when
    its process dies (SIGKILL too), keeps out writers of every process of this machine. Other
    stores have no lock: a writer there refuses a recording whose last writer (``owner``, from
    its live mark) is a live process of this host, and cannot tell whether one on another host
    still runs (docs/live-recording.md).
    """
    _warn_if_local_writes_tear(array)
    path = str(array.store_path)
    with _writers_here_lock:
        if path in _writers_here:
            raise RecordingInUseError(f"{path} is being written by another writer of this process; close it first")
        _writers_here.add(path)
    descriptor = None
    try:
        store = array.store
        if isinstance(store, LocalStore) and _HAS_FLOCK:
            descriptor = os.open(Path(store.root, array.path), os.O_RDONLY)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RecordingInUseError(
                    f"{path} is being written by a writer in another process of this machine; "
                    "stop it, or wait for it to close"
                ) from None
        elif isinstance(owner, dict) and _is_other_live_process(owner):
            raise RecordingInUseError(
                f"{path} is being written by process {owner.get('pid')} of this host, which still runs; "
                "stop it, or wait for it to close"
            )
    except BaseException:
        if descriptor is not None:
            os.close(descriptor)
        with _writers_here_lock:
            _writers_here.discard(path)
        raise
    return _Release(path, descriptor)


def _is_other_live_process(owner: dict[str, Any]) -> bool:
    """Whether ``owner`` (host and pid) is another process of this host that still runs."""
    here = importing_owner()
    pid = owner.get("pid")
    if owner.get("host") != here["host"] or not isinstance(pid, int) or pid == here["pid"]:
        return False
    return not owner_is_dead(owner)
