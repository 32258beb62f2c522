"""``zarr-aac serve``: a web page and an HTTP API to look at and listen to an archive.

Needs the ``serve`` extra (starlette, uvicorn, pillow). :func:`create_app` builds the ASGI
application; docs/serve.md describes the page and the API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zarr_aac.serve.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from zarr_aac.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'zarr_aac.serve' has no attribute {name!r}")
