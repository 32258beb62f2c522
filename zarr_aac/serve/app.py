"""The starlette application of ``zarr-aac serve``: one page, its script, and the HTTP API."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from zarr_aac.serve import api

STATIC = Path(__file__).parent / "static"
ARCHIVE_VARIABLE = "ZARR_AAC_SERVE_ARCHIVE"
"""The archive of :func:`app_from_environment`: how ``zarr-aac serve --workers`` tells each
uvicorn worker process what to serve."""
STORAGE_OPTIONS_VARIABLE = "ZARR_AAC_SERVE_STORAGE_OPTIONS"
"""Its fsspec storage options, as a JSON object (optional)."""


def create_app(archive_url: str, storage_options: dict[str, Any] | None = None) -> Starlette:
    """The web application serving one archive, read-only.

    Parameters
    ----------
    archive_url
        The archive: a local path or an fsspec URL (``s3://bucket/deployment.zarr``).
    storage_options
        Passed to fsspec for a URL (credentials, endpoint).

    Returns
    -------
    starlette.applications.Starlette
        An ASGI application: run it with uvicorn, or test it with starlette's TestClient.

    Raises
    ------
    ArchiveError
        If there is no Zarr group at ``archive_url``.
    """
    archive = api.ServedArchive.open(archive_url, storage_options)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            shutil.rmtree(archive.folder, ignore_errors=True)

    routes = [
        Route("/", lambda request: FileResponse(STATIC / "index.html")),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        Route("/api/recordings", api.list_recordings),
        Route("/api/recordings/{name}", api.describe_recording),
        Route("/api/recordings/{name}/audio", api.audio),
        Route("/api/recordings/{name}/spectrogram", api.spectrogram),
        Route("/api/recordings/{name}/download", api.download),
    ]
    app = Starlette(routes=routes, exception_handlers=api.EXCEPTION_HANDLERS, lifespan=lifespan)
    app.state.archive = archive
    return app


def app_from_environment() -> Starlette:
    """``create_app`` of the archive named by the ``ZARR_AAC_SERVE_ARCHIVE`` environment variable
    (a factory for ``uvicorn --factory``, as each of several worker processes builds its own app)."""
    archive = os.environ.get(ARCHIVE_VARIABLE)
    if not archive:
        raise RuntimeError(f"set {ARCHIVE_VARIABLE} to the archive to serve")
    options = os.environ.get(STORAGE_OPTIONS_VARIABLE)
    return create_app(archive, json.loads(options) if options else None)
