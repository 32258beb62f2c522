"""`zarr-aac serve`'s HTTP API against an archive made by the importer: the catalogue, exact WAV,
AAC passthrough, spectrograms in true Hz, downloads identical to `zarr-aac export`, and clear
JSON errors for bad ranges, unknown or outside names and corrupt chunks."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time

import av
import numpy as np
import pytest
import soundfile
import zarr
from support.chunks import chunk_key, get_bytes, put_bytes
from support.served import BAT_TONE_HZ, CHUNK_SECONDS, STEREO_TONES_HZ, TONE_HZ, free_port, make_archive
from support.signals import tone_with_noise

import zarr_aac

pytest.importorskip("starlette")
pytest.importorskip("httpx2")
from starlette.testclient import TestClient

from zarr_aac.cli import main as cli_main
from zarr_aac.serve import create_app


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    return make_archive(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def client(served):
    with TestClient(create_app(str(served.path)), raise_server_exceptions=False) as test_client:
        yield test_client


def recording(served, name: str) -> zarr.Array:
    return zarr.open_array(served.path / name, mode="r")


def first_answer(process: subprocess.Popen, url: str, seconds: float = 60):
    """The first response of the server ``process`` starts at ``url``, once it listens."""
    import httpx2 as httpx

    deadline = time.monotonic() + seconds
    while True:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
            time.sleep(0.2)


def check_error(response, status: int, *words: str) -> dict:
    """The response is a JSON error with ``status`` whose reason names ``words``, and no traceback."""
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "kind"}
    for word in words:
        assert word in body["error"]
    assert "Traceback" not in response.text
    return body


def test_catalogue_lists_recordings_by_clock_time_with_layout_and_fidelity(client, served):
    body = client.get("/api/recordings").json()
    rows = {row["name"]: row for row in body["recordings"]}
    assert [row["name"] for row in body["recordings"]] == ["birds", "stereo", "bat"]  # timed first, by start
    assert rows["birds"]["sample_rate"] == 32000 and rows["birds"]["channels"] == 1
    assert rows["birds"]["duration_s"] == pytest.approx(12.0)
    assert rows["birds"]["start_time"].startswith("2025-06-10T05:00:00")
    assert rows["stereo"]["channels"] == 2
    assert rows["bat"]["sample_rate"] == 250_000 and rows["bat"]["start_time"] is None
    assert rows["bat"]["aac_sample_rate"] < 250_000
    for row in rows.values():
        assert "SNR" in row["fidelity"] and row["snr_db"] > 10


def test_page_and_script_are_served_without_network_fetches(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    script = client.get("/static/app.js")
    assert script.status_code == 200
    for text in (page.text, script.text):
        assert "http://" not in text and "https://" not in text  # nothing from a CDN


@pytest.mark.parametrize(
    ("name", "query", "first", "last"),
    [
        ("birds", "start=1&stop=3", 32000, 96000),
        ("birds", "start=127000&stop=129001&unit=samples", 127000, 129001),  # across the chunk boundary at 4 s
        ("stereo", "start=3.5&stop=4.5", 168000, 216000),
        ("bat", "start=0.25&stop=0.5", 62500, 125000),
    ],
)
def test_wav_audio_is_the_arrays_samples_exactly(client, served, name, query, first, last):
    response = client.get(f"/api/recordings/{name}/audio?{query}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    samples, rate = soundfile.read(io.BytesIO(response.content), dtype="int16", always_2d=True)
    assert rate == served.rates[name]
    np.testing.assert_array_equal(samples, recording(served, name)[first:last])


def test_time_expansion_divides_the_wav_rate_and_keeps_the_samples(client, served):
    plain = client.get("/api/recordings/bat/audio?start=0&stop=0.2")
    slow = client.get("/api/recordings/bat/audio?start=0&stop=0.2&expand=10")
    a, rate_a = soundfile.read(io.BytesIO(plain.content), dtype="int16")
    b, rate_b = soundfile.read(io.BytesIO(slow.content), dtype="int16")
    assert (rate_a, rate_b) == (250_000, 25_000)
    np.testing.assert_array_equal(a, b)
    check_error(client.get("/api/recordings/bat/audio?start=0&stop=0.2&expand=0"), 400, "expand")
    check_error(client.get("/api/recordings/birds/audio?start=0&stop=1&expand=7"), 400, "multiple")


def decode_adts(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data), format="aac") as container:
        return np.concatenate([frame.to_ndarray().T for frame in container.decode(audio=0)])


@pytest.mark.parametrize(("name", "first", "last"), [("birds", 40000, 60000), ("stereo", 0, 4096), ("bat", 100, 90000)])
def test_aac_passthrough_decodes_to_the_arrays_samples(client, served, name, first, last):
    response = client.get(f"/api/recordings/{name}/audio?start={first}&stop={last}&unit=samples&format=aac")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/aac"
    skip = int(response.headers["x-zarr-aac-skip-samples"])
    count = int(response.headers["x-zarr-aac-samples"])
    gain = float(response.headers["x-zarr-aac-gain"])
    assert count == last - first
    assert 1024 <= skip < 2048  # the pre-roll frame and the part of the first frame before the range
    decoded = decode_adts(response.content)
    assert decoded.shape[0] >= skip + count
    expected = np.asarray(recording(served, name)[first:last]).reshape(count, -1)
    # the frames decoded as the codec decodes them: the same floats, to int16 rounding
    np.testing.assert_allclose(decoded[skip : skip + count] / gain * 32768, expected, atol=1.0)
    assert int(response.headers["x-zarr-aac-sample-rate"]) == recording(served, name).serializer.aac_sample_rate


def test_aac_passthrough_refuses_a_range_across_chunks_and_negotiation_falls_back_to_wav(client, served):
    boundary = round(CHUNK_SECONDS * 32000)
    query = f"start={boundary - 100}&stop={boundary + 100}&unit=samples"
    check_error(client.get(f"/api/recordings/birds/audio?{query}&format=aac"), 422, "chunk boundary", "WAV")
    check_error(client.get(f"/api/recordings/birds/audio?{query}", headers={"Accept": "audio/aac"}), 406, "WAV")
    either = client.get(f"/api/recordings/birds/audio?{query}", headers={"Accept": "audio/aac, audio/wav;q=0.5"})
    assert either.status_code == 200 and either.headers["content-type"] == "audio/wav"
    inside = client.get("/api/recordings/birds/audio?start=0&stop=1", headers={"Accept": "audio/aac, */*"})
    assert inside.headers["content-type"] == "audio/aac"


@pytest.mark.parametrize("suffix", ["wav", "flac"])
def test_download_is_byte_identical_to_zarr_aac_export(client, served, tmp_path, suffix):
    response = client.get(f"/api/recordings/birds/download?start=2.5&stop=6.25&format={suffix}")
    assert response.status_code == 200, response.text
    assert f"birds_80000-200000.{suffix}" in response.headers["content-disposition"]
    out = tmp_path / f"clip.{suffix}"
    assert cli_main(["export", "-q", f"{served.path}/birds", str(out), "--start", "2.5", "--stop", "6.25"]) == 0
    assert response.content == out.read_bytes()


def peak_frequency(body: dict) -> float:
    power = np.asarray(body["power_db"])
    return body["frequencies_hz"][int(np.argmax(power.mean(axis=1)))]


@pytest.mark.parametrize(
    ("name", "query", "tone", "top", "reduced"),
    [
        ("birds", "start=0&stop=2&columns=100", TONE_HZ, 16000, False),
        ("birds", "columns=8&nfft=512", TONE_HZ, 16000, True),  # 12 s in 8 short clips
        ("stereo", "start=1&stop=2&channel=1", STEREO_TONES_HZ[1], 24000, False),
        ("stereo", "start=1&stop=2&channel=0", STEREO_TONES_HZ[0], 24000, False),
        ("bat", "start=0&stop=1&nfft=4096", BAT_TONE_HZ, 125_000, False),
    ],
)
def test_spectrogram_array_peaks_at_the_tone_in_true_hz(client, name, query, tone, top, reduced):
    body = client.get(f"/api/recordings/{name}/spectrogram?format=json&{query}").json()
    resolution = body["frequencies_hz"][1]
    assert body["frequencies_hz"][-1] == pytest.approx(top)
    assert body["reduced"] is reduced
    assert abs(peak_frequency(body) - tone) <= resolution
    if reduced:
        assert body["samples_read"] < 12 * 32000 / 10


def test_reduced_spectrogram_of_a_long_window_reads_a_fraction_of_it(served):
    from zarr_aac.serve.spectrogram import compute_spectrogram

    array = recording(served, "birds")
    full = compute_spectrogram(array, 0, array.shape[0], columns=200, nfft=256)
    sparse = compute_spectrogram(array, 0, array.shape[0], columns=20, nfft=256)
    assert not full.reduced and full.samples_read == array.shape[0]
    assert sparse.reduced and sparse.samples_read == 20 * 2 * 256  # a clip of two FFT lengths a column
    # a steady tone: the sparse columns agree with the full ones at the tone's bin
    tone_bin = round(TONE_HZ / full.frequencies_hz[1])
    assert abs(np.median(sparse.power_db[tone_bin]) - np.median(full.power_db[tone_bin])) < 1.5


def test_spectrogram_png_is_brightest_at_the_tones_row(client):
    from PIL import Image

    response = client.get("/api/recordings/birds/spectrogram?start=0&stop=2&columns=200&height=160")
    assert response.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(response.content)).convert("L"), dtype=np.float64)
    assert image.shape == (160, 200)
    top = float(response.headers["x-zarr-aac-frequency-max"])
    row = int(np.argmax(image.mean(axis=1)))
    assert abs(top * (1 - (row + 0.5) / 160) - TONE_HZ) < 2 * top / 160


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("start=3&stop=2", ("empty or outside",)),
        ("start=-1&stop=2", ("outside",)),
        ("start=0&stop=13", ("outside", "12 s")),
        ("start=abc", ("start must be a number",)),
        ("start=nan", ("finite",)),
        ("start=1.5&stop=9&unit=samples", ("whole sample",)),
        ("unit=minutes", ("unit must be one of",)),
        ("start=0&stop=1&format=mp3", ("format must be one of",)),
    ],
)
def test_bad_ranges_and_parameters_are_400_with_the_reason(client, query, words):
    check_error(client.get(f"/api/recordings/birds/audio?{query}"), 400, *words)


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("channel=1", ("channel 1 does not exist",)),
        ("nfft=1000", ("power of two",)),
        ("columns=0", ("columns",)),
        ("start=0&stop=0.01&nfft=1024", ("shorter than one FFT frame",)),
    ],
)
def test_bad_spectrogram_parameters_are_400(client, query, words):
    check_error(client.get(f"/api/recordings/birds/spectrogram?{query}"), 400, *words)


def test_a_range_longer_than_the_server_sends_at_once_is_413(client, monkeypatch):
    from zarr_aac.serve import api

    monkeypatch.setattr(api, "MAX_AUDIO_SECONDS", 5.0)
    check_error(client.get("/api/recordings/birds/audio?start=0&stop=6"), 413, "longer than the 5 s")
    check_error(client.get("/api/recordings/birds/download?start=0&stop=6"), 413, "zarr-aac export")


@pytest.mark.parametrize(
    "path",
    [
        "/api/recordings/nosuch/audio",
        "/api/recordings/..%2F..%2F..%2Fetc%2Fpasswd/audio",
        "/api/recordings/%2E%2E/audio",
        "/api/recordings/../zarr.json",
        "/api/recordings/birds%2Fc%2F0%2F0/audio",
        "/api/recordings/.importing-x/spectrogram",
        "/api/recordings/zarr.json",
        "/api/recordings/uncatalogued",
        "/static/..%2F..%2Fcli.py",
        "/static/../api.py",
        "/static/%2e%2e/%2e%2e/zarr_aac/cli.py",
    ],
)
def test_names_cannot_reach_outside_the_catalogue(client, served, path):
    response = client.get(path)
    assert response.status_code == 404, response.text
    for leaked in ('"zarr_format"', "import ", "root:"):
        assert leaked not in response.text


def test_an_array_outside_the_catalogue_is_not_served(served, tmp_path):
    group = zarr.open_group(served.path, mode="r+")
    group.create_array("uncatalogued", shape=(10,), dtype="int16")
    try:
        with TestClient(create_app(str(served.path)), raise_server_exceptions=False) as client:
            body = check_error(client.get("/api/recordings/uncatalogued"), 404, "no recording named")
            assert "catalogue" in body["error"]
    finally:
        del group["uncatalogued"]


def test_corrupt_chunk_is_a_500_json_error_naming_it(tmp_path):
    served = make_archive(tmp_path)
    array = zarr.open_array(served.path / "birds", mode="r+")
    key = chunk_key(array, (1, 0))
    data = bytearray(get_bytes(array, key))
    data[-200] ^= 0xFF  # a frame of the chunk's last group
    put_bytes(array, key, bytes(data))
    with TestClient(create_app(str(served.path)), raise_server_exceptions=False) as client:
        for url in (
            "/api/recordings/birds/audio?start=7&stop=8",
            "/api/recordings/birds/audio?start=7.5&stop=7.99&format=aac",
            "/api/recordings/birds/spectrogram?start=4&stop=8",
            "/api/recordings/birds/download?start=6&stop=8",
        ):
            body = check_error(client.get(url), 500, "damaged", "checksum mismatch", "zarr-aac verify")
            assert body["kind"] == "CorruptChunkError"
        assert client.get("/api/recordings/birds/audio?start=0&stop=3").status_code == 200  # other chunks serve


def test_an_unexpected_failure_is_a_500_json_error_without_traceback(client, monkeypatch):
    from zarr_aac.serve import api

    def broken(*args, **kwargs):
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(api, "compute_spectrogram", broken)
    body = check_error(client.get("/api/recordings/birds/spectrogram"), 500, "RuntimeError", "the disk caught fire")
    assert body["kind"] == "RuntimeError"


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_command_binds_localhost_by_default(served, workers):
    from zarr_aac.cli import build_parser

    assert build_parser().parse_args(["serve", "a.zarr"]).host == "127.0.0.1"
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "zarr_aac.cli", "serve", str(served.path), "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--workers", str(workers)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        import httpx2 as httpx

        response = first_answer(process, f"http://127.0.0.1:{port}/api/recordings")
        assert [row["name"] for row in response.json()["recordings"]] == ["birds", "stereo", "bat"]
        import psutil

        listening = [c.laddr for c in psutil.Process(process.pid).net_connections() if c.status == psutil.CONN_LISTEN]
        assert listening and all(address.ip == "127.0.0.1" for address in listening)
        if workers > 1:  # uvicorn's worker processes, each with its own app
            assert len(psutil.Process(process.pid).children(recursive=True)) >= workers
        for _ in range(4):  # every request answered, whichever worker takes it
            assert httpx.get(f"http://127.0.0.1:{port}/api/recordings/birds/audio?start=0&stop=1").status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_command_refuses_a_path_without_an_archive(tmp_path, capsys, workers):
    assert cli_main(["serve", str(tmp_path / "missing.zarr"), "--workers", workers]) == 1
    assert "is not a zarr-aac archive" in capsys.readouterr().err


def test_serve_command_refuses_zero_workers(capsys):
    with pytest.raises(SystemExit):
        cli_main(["serve", "a.zarr", "--workers", "0"])
    assert "expected at least 1" in capsys.readouterr().err


def test_describe_recording_gives_layout_and_attributes(client, served):
    body = client.get("/api/recordings/bat").json()
    assert body["sample_rate"] == 250_000 and body["aac_sample_rate"] < 250_000
    assert body["chunk_samples"] == recording(served, "bat").chunks[0]
    assert body["n_samples"] == 500_000
    assert json.dumps(body["attributes"])  # plain JSON


def test_a_catalogued_recording_whose_array_is_gone_is_a_500_naming_it(tmp_path):
    served = make_archive(tmp_path)
    shutil.rmtree(served.path / "stereo")
    with TestClient(create_app(str(served.path)), raise_server_exceptions=False) as client:
        check_error(client.get("/api/recordings/stereo/audio?start=0&stop=1"), 500, "in the catalogue", "verify")
        assert client.get("/api/recordings/birds/audio?start=0&stop=1").status_code == 200


def test_an_archive_behind_an_fsspec_url_is_served(served, tmp_path):
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    memory.put(str(served.path), "/served-archive.zarr", recursive=True)
    try:
        with TestClient(create_app("memory://served-archive.zarr"), raise_server_exceptions=False) as client:
            names = [row["name"] for row in client.get("/api/recordings").json()["recordings"]]
            assert names == ["birds", "stereo", "bat"]
            response = client.get("/api/recordings/birds/audio?start=1&stop=2")
            samples, _ = soundfile.read(io.BytesIO(response.content), dtype="int16", always_2d=True)
            np.testing.assert_array_equal(samples, recording(served, "birds")[32000:64000])
            aac = client.get("/api/recordings/birds/audio?start=1&stop=2&format=aac")
            assert aac.status_code == 200 and aac.headers["content-type"] == "audio/aac"
    finally:
        memory.rm("/served-archive.zarr", recursive=True)


@pytest.mark.parametrize("workers", [1, 2])
def test_an_archive_in_s3_is_served_by_the_command(served, workers):
    """`zarr-aac serve s3://... --storage-options JSON` against moto's S3 server on loopback:
    the catalogue and exact audio come from the bucket, in every worker process."""
    s3fs = pytest.importorskip("s3fs")
    import httpx2 as httpx
    from support.s3 import moto_server, s3_options

    with moto_server() as endpoint:
        options = s3_options(endpoint)
        filesystem = s3fs.S3FileSystem(**options)
        filesystem.mkdir("served-bucket")
        filesystem.put(str(served.path), "served-bucket/archive.zarr", recursive=True)
        port = free_port()
        command = [sys.executable, "-m", "zarr_aac.cli", "serve", "s3://served-bucket/archive.zarr"]
        process = subprocess.Popen(
            [*command, "--port", str(port), "--workers", str(workers), "--storage-options", json.dumps(options)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            response = first_answer(process, f"http://127.0.0.1:{port}/api/recordings")
            assert [row["name"] for row in response.json()["recordings"]] == ["birds", "stereo", "bat"]
            for _ in range(2 * workers):
                audio = httpx.get(f"http://127.0.0.1:{port}/api/recordings/birds/audio?start=1&stop=2", timeout=30)
                samples, _ = soundfile.read(io.BytesIO(audio.content), dtype="int16", always_2d=True)
                np.testing.assert_array_equal(samples, recording(served, "birds")[32000:64000])
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_serve_command_refuses_storage_options_for_a_local_path(served, capsys):
    assert cli_main(["serve", str(served.path), "--storage-options", "{}"]) == 1
    assert "applies to an archive URL" in capsys.readouterr().err


def test_a_live_recording_is_served_exactly_and_its_pcm_chunk_is_not_passed_through_as_aac(tmp_path):
    """A recording being written live: its unfinished chunk is PCM, served as exact WAV; AAC
    passthrough there is refused with the reason, while its encoded chunks still pass through."""
    rate = 8000
    signal = (tone_with_noise(rate * 7, 1, rate, seed=5) * 20000).astype(np.int16)
    with zarr_aac.open_writer(
        tmp_path / "live.zarr", "now", sample_rate=rate, channels=1, dtype="int16", chunk_duration=5
    ) as writer:
        writer.append(signal)
        with TestClient(create_app(str(tmp_path / "live.zarr")), raise_server_exceptions=False) as client:
            wav = client.get("/api/recordings/now/audio?start=5.5&stop=6.5")
            samples, _ = soundfile.read(io.BytesIO(wav.content), dtype="int16", always_2d=True)
            np.testing.assert_array_equal(samples, signal[44000:52000])
            check_error(client.get("/api/recordings/now/audio?start=5.5&stop=6.5&format=aac"), 422, "PCM", "WAV")
            assert client.get("/api/recordings/now/audio?start=1&stop=2&format=aac").status_code == 200
