"""An S3-compatible server on loopback for tests: moto's server mode in a subprocess."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager

REGION = "eu-west-1"
CREDENTIALS = {"key": "testing", "secret": "testing"}


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def moto_server(start_seconds: float = 10) -> Iterator[str]:
    """moto's S3 server in its own process on a free loopback port; yields its endpoint URL."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_seconds
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError(f"moto server exited with {server.returncode}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start within {start_seconds} s") from None
                time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def s3_options(endpoint: str) -> dict:
    """s3fs storage options for the moto server at ``endpoint`` (no instance cache, so that a
    filesystem made in one test is not reused by another with other settings)."""
    return {
        **CREDENTIALS,
        "client_kwargs": {"endpoint_url": endpoint, "region_name": REGION},
        "skip_instance_cache": True,
    }


def s3_environment(endpoint: str) -> dict[str, str]:
    """Environment variables by which fsspec (in another process) opens ``s3://`` URLs on the
    moto server at ``endpoint`` without storage options."""
    return {
        "FSSPEC_S3_ENDPOINT_URL": endpoint,
        "FSSPEC_S3_KEY": CREDENTIALS["key"],
        "FSSPEC_S3_SECRET": CREDENTIALS["secret"],
        "AWS_DEFAULT_REGION": REGION,
    }
