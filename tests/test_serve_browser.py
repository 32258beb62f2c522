"""The `zarr-aac serve` page in a real browser: Debian's headless chromium driven by selenium through
the system chromedriver (nothing downloads a browser), against a server on 127.0.0.1.

The page must list the archive's recordings, draw a spectrogram whose brightest row is the test
tone's frequency, play a selection whose decoded samples are the archive's, and download a WAV
identical to `zarr-aac export`'s."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from support.served import STEREO_TONES_HZ, TONE_HZ, make_archive, running_server

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from zarr_aac.cli import main as cli_main  # noqa: E402

pytestmark = pytest.mark.slow


def system_chromium() -> tuple[str, str]:
    """Debian's chromium and chromedriver; skip (a failure under CI=true) where they are missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("requires chromium and chromedriver (apt-get install chromium chromium-driver)")
    return browser, driver


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    return make_archive(tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def base_url(served):
    with running_server(served.path) as url:
        yield url


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    binary, driver_path = system_chromium()
    os.environ["SE_OFFLINE"] = "true"  # selenium manager must not fetch a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1200,900",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(browser, url: str) -> None:
    browser.get(url)
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true", browser.find_element(
        By.ID, "status"
    ).text
    browser.execute_async_script("window.zarrAac.state.drawn.then(arguments[0], arguments[0])")


def brightest_frequency(browser) -> float:
    """The frequency of the canvas row brightest on average, by the page's own frequency axis."""
    luminance = browser.execute_script(
        """
        const canvas = document.getElementById('spectrogram');
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        const rows = [];
        for (let y = 0; y < canvas.height; y++) {
          let sum = 0;
          for (let x = 0; x < canvas.width; x++) {
            const i = 4 * (y * canvas.width + x);
            sum += 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
          }
          rows.push(sum / canvas.width);
        }
        return rows;
        """
    )
    max_hz = browser.execute_script("return window.zarrAac.state.spectrogram.maxHz")
    row = int(np.argmax(luminance))
    return max_hz * (1 - (row + 0.5) / len(luminance))


def test_page_lists_the_recordings_and_draws_the_tone(browser, base_url):
    open_page(browser, base_url + "/")
    names = [row.get_attribute("data-name") for row in browser.find_elements(By.CSS_SELECTOR, "#recordings tbody tr")]
    assert names == ["birds", "stereo", "bat"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timeline .bar")) == 2  # the two with a start time
    assert browser.find_element(By.ID, "current-name").text == "birds"
    assert abs(brightest_frequency(browser) - TONE_HZ) < 16000 / 320 * 2  # two rows of 50 Hz


def test_channel_choice_and_another_recording_redraw(browser, base_url):
    open_page(browser, base_url + "/#name=stereo&start=1&length=2")
    assert abs(brightest_frequency(browser) - STEREO_TONES_HZ[0]) < 24000 / 320 * 2
    browser.execute_script(
        "const c = document.getElementById('channel'); c.value = '1'; c.dispatchEvent(new Event('change'));"
    )
    browser.execute_async_script("window.zarrAac.state.drawn.then(arguments[0], arguments[0])")
    assert abs(brightest_frequency(browser) - STEREO_TONES_HZ[1]) < 24000 / 320 * 2


def drag_select(browser, from_fraction: float, to_fraction: float) -> tuple[float, float]:
    canvas = browser.find_element(By.ID, "spectrogram")
    width = canvas.size["width"]
    left = -width / 2
    ActionChains(browser).move_to_element_with_offset(
        canvas, int(left + from_fraction * width), 0
    ).click_and_hold().move_by_offset(int((to_fraction - from_fraction) * width), 0).release().perform()
    return tuple(browser.execute_script("return window.zarrAac.state.selection"))


def test_playing_a_selection_gives_the_archives_samples(browser, base_url, served):
    open_page(browser, base_url + "/#name=birds&start=2&length=4")
    start, stop = drag_select(browser, 0.25, 0.75)  # about 3 s to 5 s, across the chunk boundary at 4 s
    assert 2.9 < start < 3.1 and 4.9 < stop < 5.1
    browser.find_element(By.ID, "play-selection").click()
    WebDriverWait(browser, 60).until(
        lambda d: d.execute_script("return document.getElementById('player').readyState") >= 1
    )
    duration = browser.execute_script("return document.getElementById('player').duration")
    assert duration == pytest.approx(stop - start, abs=1e-3)
    WebDriverWait(browser, 60).until(
        lambda d: d.execute_script("return document.getElementById('player').currentTime") > 0
    )
    decoded = browser.execute_async_script("window.zarrAac.decodePlayerAudio().then(arguments[0])")
    assert decoded["sampleRate"] == 32000
    samples = np.asarray(decoded["channels"][0], dtype=np.float64)
    first = round(start * 32000)
    array = zarr.open_array(served.path / "birds", mode="r")
    assert len(samples) == round(stop * 32000) - first
    # Chromium maps int16 to float as v / 32767 above zero and v / 32768 below: undo that exactly
    as_int16 = np.rint(np.where(samples > 0, samples * 32767, samples * 32768)).astype(np.int16)
    np.testing.assert_array_equal(as_int16, array[first : first + len(samples), 0])  # WAV playback is exact
    source = served.sources["birds"][first : first + len(samples), 0]
    snr = 10 * np.log10(np.sum(source**2) / np.sum((samples - source) ** 2))
    assert snr > 25  # and within the codec's tolerance of what was imported


def test_time_expansion_plays_slower(browser, base_url):
    open_page(browser, base_url + "/#name=bat&start=0&length=1")
    assert browser.find_element(By.ID, "expansion").get_attribute("value") == "10"  # ultrasonic: 10x by default
    assert browser.execute_script("return window.zarrAac.state.spectrogram.maxHz") == 125000
    browser.find_element(By.ID, "play-visible").click()
    WebDriverWait(browser, 60).until(
        lambda d: d.execute_script("return document.getElementById('player').readyState") >= 1
    )
    assert browser.execute_script("return document.getElementById('player').duration") == pytest.approx(10.0, abs=1e-3)


def test_download_link_gives_the_same_wav_as_zarr_aac_export(browser, base_url, served, downloads, tmp_path):
    open_page(browser, base_url + "/#name=birds&start=2&length=4")
    start, stop = drag_select(browser, 0.1, 0.6)
    href = browser.find_element(By.ID, "download-wav").get_attribute("href")
    browser.find_element(By.ID, "download-wav").click()
    deadline = time.monotonic() + 60
    while not (found := [p for p in downloads.glob("birds_*.wav")]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(found) == 1, list(downloads.iterdir())
    first, last = (int(n) for n in found[0].stem.removeprefix("birds_").split("-"))
    assert (first, last) == (round(start * 32000), round(stop * 32000)), href
    out = tmp_path / "export.wav"
    assert (
        cli_main(
            ["export", "-q", f"{served.path}/birds", str(out), "--samples", "--start", str(first), "--stop", str(last)]
        )
        == 0
    )
    assert found[0].read_bytes() == out.read_bytes()


def test_zoom_pan_and_the_playback_cursor(browser, base_url):
    open_page(browser, base_url + "/#name=birds&start=2&length=4")

    def window() -> tuple[float, float]:
        browser.execute_async_script("window.zarrAac.state.drawn.then(arguments[0], arguments[0])")
        return tuple(
            browser.execute_script("return [window.zarrAac.state.windowStart, window.zarrAac.state.windowLength]")
        )

    browser.find_element(By.ID, "zoom-in").click()
    assert window() == pytest.approx((3.0, 2.0))
    browser.find_element(By.ID, "pan-right").click()
    assert window() == pytest.approx((4.0, 2.0))
    browser.find_element(By.ID, "zoom-out").click()
    assert window() == pytest.approx((3.0, 4.0))
    browser.find_element(By.ID, "pan-left").click()
    assert window() == pytest.approx((1.0, 4.0))
    assert "start=1" in browser.current_url and "length=4" in browser.current_url
    browser.find_element(By.ID, "play-visible").click()
    WebDriverWait(browser, 60).until(
        lambda d: d.execute_script("return document.getElementById('player').currentTime") > 0.2
    )
    cursor = browser.execute_script(
        "const c = document.getElementById('cursor'); return [c.hidden, parseFloat(c.style.left)];"
    )
    played = browser.execute_script("return document.getElementById('player').currentTime")
    assert cursor[0] is False
    assert 0 < cursor[1] <= 1000 * played / 4 + 50  # the cursor has moved with the player, not past it
    browser.execute_script("document.getElementById('player').pause()")
