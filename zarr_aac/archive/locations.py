"""Where sources and archives are: local paths or fsspec URLs (``s3://``, ``https://``, ``gs://``...).

A source at a URL is copied once to a local temporary file for its import, hashed from that
copy, and read there by every later step (metadata, peak scan, decode). An archive is handed to
other processes (dask workers) as its URL and fsspec options, and opened there: a zarr Group
holds an event loop and open connections that do not travel.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import zarr
from zarr.storage import FsspecStore, LocalStore

from zarr_aac.archive.recordings import PathLike, open_archive
from zarr_aac.errors import ArchiveError, SourceError

if TYPE_CHECKING:
    from fsspec.core import OpenFile
    from zarr.core.common import AccessModeLiteral


def is_url(location: object) -> bool:
    """Whether ``location`` is a string naming a URL (``protocol://...``) rather than a local path."""
    return isinstance(location, str) and "://" in location


FETCH_BLOCK = 8 * 2**20
"""Bytes of a remote source fetched by one request while it is copied: what the copy holds in memory."""


@dataclass(frozen=True)
class RemoteSource:
    """A source file at an fsspec URL, with what the importer asks of a local path: its name and
    stem, size, content hash, and a binary file object.

    ``file`` is an :class:`fsspec.core.OpenFile`, which carries its filesystem's options and
    pickles to other processes. ``local_copy`` is set on the source :meth:`fetched` returns:
    the file's bytes copied to a local temporary file, which is then what :meth:`open` reads.
    """

    file: OpenFile
    local_copy: Path | None = None

    @classmethod
    def parse(cls, source: str | OpenFile) -> RemoteSource:
        """The source at ``source``: a URL, opened with fsspec's configuration (environment
        variables such as ``FSSPEC_S3_ENDPOINT_URL``, credentials), or an ``fsspec.open(...)``
        result, which brings its own options."""
        if isinstance(source, str):
            try:
                import fsspec
            except ModuleNotFoundError as exc:
                raise SourceError(source, "reading URLs needs fsspec: pip install 'zarr-aac[remote]'") from exc
            try:
                return cls(fsspec.open(source, "rb"))
            except (ValueError, ImportError) as exc:  # unknown protocol, or its package missing
                raise SourceError(source, f"fsspec cannot open this URL ({exc})") from exc
        return cls(source)

    def __str__(self) -> str:
        return str(self.file.full_name)

    @property
    def name(self) -> str:
        """The file's name: the last segment of its URL's path."""
        return posixpath.basename(str(self.file.path).rstrip("/"))

    @property
    def stem(self) -> str:
        """The file's name without its extension."""
        return Path(self.name).stem

    def size(self) -> int:
        """Bytes in the file."""
        if self.local_copy is not None:
            return self.local_copy.stat().st_size
        return int(self.file.fs.size(self.file.path))

    def open(self) -> IO[bytes]:
        """The file for reading: the local copy if there is one, else a buffered object that
        fetches ranges as they are read."""
        if self.local_copy is not None:
            return open(self.local_copy, "rb")
        return self.file.fs.open(self.file.path, "rb")

    def checked_sha256(self) -> str:
        """The SHA-256 of the content, read as a stream; a SourceError if the file is missing,
        not a file, or empty."""
        if self.local_copy is not None:
            return _file_sha256(self.local_copy)
        digest = hashlib.sha256()
        with self._opened() as remote:
            while block := remote.read(FETCH_BLOCK):
                digest.update(block)
        return digest.hexdigest()

    @contextmanager
    def fetched(self) -> Iterator[tuple[RemoteSource, str]]:
        """This source with its bytes copied once to a local temporary file, and their SHA-256.

        Every later read of the import (its metadata, its peak, its decode) reads the copy: the
        store sees one streamed download per import instead of one read per step. The copy is
        as large as the file, in the folder :func:`tempfile.gettempdir` names (``TMPDIR``), and
        is deleted on leaving the block. A source that is already fetched is yielded as it is.

        Raises
        ------
        SourceError
            If the file is missing, not a file, or empty.
        """
        if self.local_copy is not None:
            yield self, _file_sha256(self.local_copy)
            return
        with tempfile.TemporaryDirectory(prefix="zarr-aac-source-") as folder:
            copy = Path(folder) / (self.name or "source")
            digest = hashlib.sha256()
            # no read-ahead cache: each read is one ranged request of FETCH_BLOCK bytes
            with self._opened(cache_type="none") as remote, open(copy, "wb") as local:
                while block := remote.read(FETCH_BLOCK):
                    digest.update(block)
                    local.write(block)
            if copy.stat().st_size == 0:
                raise SourceError(self, "it is empty (0 bytes)")
            yield replace(self, local_copy=copy), digest.hexdigest()

    @contextmanager
    def _opened(self, **options: Any) -> Iterator[IO[bytes]]:
        """The remote file for reading, once known to be a regular file that is not empty (from
        the details the file object fetched on opening, where it has them: s3fs's does)."""
        try:
            remote = self.file.fs.open(self.file.path, "rb", **options)
        except FileNotFoundError:
            raise SourceError(self, "no such file") from None
        except IsADirectoryError:
            raise SourceError(self, "not a regular file") from None
        with remote:
            details = getattr(remote, "details", None)
            self._check_info(details if isinstance(details, dict) else None)
            yield remote

    def _check_info(self, info: dict[str, Any] | None = None) -> None:
        """A SourceError if the file (described by ``info``, else asked for) is missing, not a
        file, or empty."""
        if info is None:
            try:
                info = self.file.fs.info(self.file.path)
            except FileNotFoundError:
                raise SourceError(self, "no such file") from None
        if info.get("type") != "file":
            raise SourceError(self, "not a regular file")
        if not info.get("size"):
            raise SourceError(self, "it is empty (0 bytes)")


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


Source = Path | RemoteSource
"""A source as the importer reads it."""


def parse_source(source: PathLike | OpenFile | RemoteSource) -> Source:
    """A local path, or a RemoteSource for a URL or an ``fsspec.open(...)`` result."""
    if isinstance(source, Path | RemoteSource):
        return source
    if is_url(source) or _is_open_file(source):
        return RemoteSource.parse(source)
    return Path(source)


def _is_open_file(source: object) -> bool:
    """Whether ``source`` is an ``fsspec.open(...)`` result (which is path-like, so tested first)."""
    try:
        from fsspec.core import OpenFile
    except ModuleNotFoundError:
        return False
    return isinstance(source, OpenFile)


def open_binary(source: Source) -> IO[bytes]:
    """A source's bytes for reading, wherever it is."""
    return open(source, "rb") if isinstance(source, Path) else source.open()


S3_PROTOCOLS = ("s3", "s3a")
S3_ARCHIVE_OPTIONS: dict[str, Any] = {"max_concurrency": 1}
"""s3fs options an S3 archive is opened with unless its storage options set them. With its
default ``max_concurrency`` s3fs asks an object's size (a HEAD request) before every whole-object
read, to split objects larger than its block size (50 MiB) into concurrent ranged reads; an
archive's objects (metadata, bookkeeping documents, chunks of minutes of AAC) are far smaller,
so that HEAD only doubles the requests of every read."""


@dataclass(frozen=True)
class ArchiveLocation:
    """An archive as another process opens it: an absolute local path or a URL, and the fsspec
    options for a URL."""

    url: str
    storage_options: dict[str, Any] | None = None

    @classmethod
    def of(cls, group: zarr.Group | PathLike, storage_options: dict[str, Any] | None = None) -> ArchiveLocation:
        """Where ``group`` is: a path or URL as given (a relative path made absolute), or the
        location of a Group's local or fsspec store; an ArchiveError for a store other
        processes cannot reach (in memory, say)."""
        if isinstance(group, zarr.Group):
            if storage_options is not None:
                raise TypeError("storage_options apply to an archive given by URL; a zarr Group's store has its own")
            return cls._of_group(group)
        text = os.fspath(group)
        if not is_url(text):
            if storage_options is not None:
                raise TypeError(f"storage_options apply to an archive given by URL, not to the local path {text}")
            return cls(str(Path(text).absolute()))
        return cls(text, dict(storage_options) if storage_options is not None else None)

    @classmethod
    def _of_group(cls, group: zarr.Group) -> ArchiveLocation:
        store = group.store
        if isinstance(store, LocalStore):
            return cls(str(Path(store.root, group.path)))
        if isinstance(store, FsspecStore):
            path = posixpath.join(store.path, group.path) if group.path else store.path
            return cls(store.fs.unstrip_protocol(path), dict(store.fs.storage_options))
        raise ArchiveError(
            f"other processes cannot open an archive in a {type(store).__name__}; "
            "give the archive's path or URL (with storage_options) instead"
        )

    def open(self, mode: AccessModeLiteral = "a") -> zarr.Group:
        """The archive group, created if missing with mode ``a``.

        An archive URL is opened as the Zarr v3 group every archive is (zarr looks for no v2
        metadata), and an S3 one with :data:`S3_ARCHIVE_OPTIONS` where the options do not say
        otherwise.
        """
        if not is_url(self.url):
            return open_archive(self.url, mode=mode)
        options = self.storage_options
        if self.url.split("://", 1)[0] in S3_PROTOCOLS:
            options = {**S3_ARCHIVE_OPTIONS, **(options or {})}
        try:
            try:
                return zarr.open_group(self.url, mode=mode, storage_options=options, zarr_format=3)
            except zarr.errors.ContainsGroupError:
                # another process created it between zarr's look and its create: open that one
                return zarr.open_group(self.url, mode="r+", storage_options=options, zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.ContainsArrayError) as exc:
            raise ArchiveError(f"{self.url} is not a zarr-aac archive (a Zarr group): {exc}") from exc
