"""Make the screenshots of docs/serve.md: `python docs/serve_screenshots.py` (needs the serve and test
extras and Debian's chromium and chromedriver).

An archive of the package's example recording (real bird song, 32 kHz) and a synthetic 250 kHz
recording of bat-like FM sweeps is served on 127.0.0.1 and photographed by headless chromium.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import zarr_aac

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.served import running_server

DOCS = Path(__file__).resolve().parent


def bat_sweeps(rate: int = 250_000, seconds: float = 3.0) -> np.ndarray:
    """FM sweeps from 80 to 35 kHz, 4 ms long, 10 a second, over faint noise."""
    rng = np.random.default_rng(0)
    pcm = 0.003 * rng.standard_normal(round(rate * seconds))
    t = np.arange(round(0.004 * rate)) / rate
    phase = 2 * np.pi * (80_000 * t - (45_000 / (2 * 0.004)) * t**2)
    call = 0.5 * np.sin(phase) * np.hanning(t.size)
    for start in np.arange(0.05, seconds - 0.01, 0.1):
        begin = round(start * rate)
        pcm[begin : begin + call.size] += call
    return pcm.astype(np.float32)


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    archive = folder / "deployment.zarr"
    zarr_aac.import_file(
        zarr_aac.example_recording(), archive, "forest_birds", start_time="2025-06-10T05:00:00Z", progress=False
    )
    sf.write(folder / "bat.wav", bat_sweeps(), 250_000, subtype="PCM_16")
    zarr_aac.import_file(folder / "bat.wav", archive, "bat_sweeps", start_time="2025-06-10T21:30:00Z", progress=False)
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1150,820"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        with running_server(archive) as base:
            for name, view, selection, target in (
                ("forest_birds", "start=0&length=10", (0.42, 0.62), "serve_page.png"),
                ("bat_sweeps", "start=0.3&length=0.5", None, "serve_ultrasonic.png"),
            ):
                driver.get(f"{base}/#name={name}&{view}")
                driver.refresh()
                WebDriverWait(driver, 60).until(
                    lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready")
                )
                driver.execute_async_script("window.zarrAac.state.drawn.then(arguments[0], arguments[0])")
                if selection is not None:
                    canvas = driver.find_element(By.ID, "spectrogram")
                    width = canvas.size["width"]
                    ActionChains(driver).move_to_element_with_offset(
                        canvas, int((selection[0] - 0.5) * width), 0
                    ).click_and_hold().move_by_offset(int((selection[1] - selection[0]) * width), 0).release().perform()
                driver.save_screenshot(str(DOCS / target))
                print(DOCS / target)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
