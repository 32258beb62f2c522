"""AACFileStore over HTTP through fsspec, against a loopback server that honours Range.

The server logs every request, so the tests count what a read costs: a 1 s read must be a
bounded number of range requests, never a download of the file.
"""

from __future__ import annotations

import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from support.media import ffmpeg_aac, pyav_decode, require_tool, write_wav

pytest.importorskip("aiohttp")
from zarr_aac.files.store import open_aac_file

RATE = 48000
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class RangeRequestHandler(SimpleHTTPRequestHandler):
    """Serves files with single-range ``Range`` support and records (method, range) per request."""

    def log_message(self, format, *args):
        pass

    def do_HEAD(self):
        self.server.log.append(("HEAD", None))
        super().do_HEAD()

    def do_GET(self):
        header = self.headers.get("Range")
        self.server.log.append(("GET", header))
        if header is None:
            return super().do_GET()
        path = Path(self.translate_path(self.path))
        match = _RANGE.match(header)
        if not path.is_file() or match is None:
            return self.send_error(416 if path.is_file() else 404)
        size = path.stat().st_size
        first, last = match.groups()
        if first == "":
            start, stop = max(size - int(last), 0), size
        else:
            start, stop = int(first), min(size, int(last) + 1 if last else size)
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return None
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(stop - start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(body)
        return None


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, request log, directory) of a loopback HTTP server over a fresh directory."""
    root = tmp_path_factory.mktemp("http")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeRequestHandler, directory=str(root)))
    server.log = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server.log, root
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def recordings(served):
    """An M4A and an ADTS file of 20 s stereo, made by the ffmpeg command line, in the served directory."""
    ffmpeg = require_tool("ffmpeg")
    _, _, root = served
    rng = np.random.default_rng(3)
    t = np.arange(20 * RATE) / RATE
    pcm = 0.3 * np.sin(2 * np.pi * np.array([300.0, 500.0])[None, :] * t[:, None]) + 0.02 * rng.standard_normal(
        (t.size, 2)
    )
    wav = write_wav(root / "rec.wav", pcm.astype(np.float32), RATE)
    for name in ("rec.m4a", "rec.aac"):
        ffmpeg_aac(ffmpeg, wav, root / name)
    return root


def fetched_bytes(log, size: int) -> int:
    """Bytes the logged GET requests asked for (a GET without Range counts as the whole file)."""
    total = 0
    for method, header in log:
        if method != "GET":
            continue
        if header is None:
            total += size
            continue
        first, last = _RANGE.match(header).groups()
        total += int(last) - int(first) + 1 if first and last else size
    return total


@pytest.mark.parametrize("name", ["rec.m4a", "rec.aac"])
def test_one_second_read_costs_a_bounded_number_of_range_requests(served, recordings, name):
    url, log, _ = served
    path = recordings / name
    size = path.stat().st_size
    log.clear()
    array = open_aac_file(f"{url}/{name}", dtype="float32", chunk_length=RATE * 4)
    opened = list(log)
    if name.endswith(".m4a"):
        assert fetched_bytes(opened, size) < size / 4, "indexing an MP4 reads its moov box, not the file"
    log.clear()
    start = 7 * RATE + 123
    got = array[start : start + RATE]
    reads = list(log)
    assert len(reads) <= 2, reads  # one per chunk touched: this read crosses a chunk boundary
    assert all(method == "GET" and header is not None for method, header in reads)
    assert fetched_bytes(reads, size) < size / 8
    ref = pyav_decode(path)
    np.testing.assert_array_equal(got, ref[start : start + RATE])
    assert array.shape == ref.shape
    log.clear()
    short = array[start : start + RATE // 50]
    assert len(log) == 1, log
    np.testing.assert_array_equal(short, ref[start : start + RATE // 50])


def test_remote_index_cache_at_a_user_location_skips_the_scan(served, recordings, tmp_path):
    url, log, _ = served
    size = (recordings / "rec.aac").stat().st_size
    index_path = tmp_path / "rec.aac.npz"
    log.clear()
    first = open_aac_file(f"{url}/rec.aac", index_path=index_path)
    assert fetched_bytes(log, size) >= size, "an ADTS file is scanned whole on first open"
    log.clear()
    second = open_aac_file(f"{url}/rec.aac", index_path=index_path)
    assert fetched_bytes(log, size) <= 2 * 64 * 1024, "the cached index is checked by hashing the file's ends only"
    np.testing.assert_array_equal(second[RATE : 2 * RATE], first[RATE : 2 * RATE])


def test_missing_remote_file_is_named(served):
    from zarr_aac.errors import SourceNotFoundError

    url, _, _ = served
    with pytest.raises(SourceNotFoundError, match=r"absent\.m4a"):
        open_aac_file(f"{url}/absent.m4a")
