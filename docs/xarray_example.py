"""The example of docs/xarray.md: select one minute by clock time, plot its spectrogram.

Run from anywhere: ``python docs/xarray_example.py [OUT_DIR]``; writes ``dawn.zarr`` and
``xarray_spectrogram.png`` into OUT_DIR (default: the directory of this file).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import soundfile as sf
import xarray as xr
from matplotlib import mlab

import zarr_aac

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
out.mkdir(parents=True, exist_ok=True)

# A 3-minute dawn recording: the packaged 10 s bird soundscape (32 kHz mono), looped.
pcm, rate = sf.read(zarr_aac.example_recording(), dtype="int16")
dawn = xr.DataArray(np.tile(pcm, 18), dims="time", attrs={"sample_rate": rate, "start_time": "2026-06-10T04:59:00Z"})
zarr_aac.to_aac(dawn, str(out / "dawn.zarr"), overwrite=True)

ds = zarr_aac.open_dataset(out / "dawn.zarr")
minute = ds.audio.sel(time=slice("2026-06-10T05:00", "2026-06-10T05:01"))
assert minute.sizes["time"] == 60 * rate

power, freqs, seconds = mlab.specgram(minute.values / 32768.0, NFFT=1024, Fs=rate, noverlap=512)
clock = minute.time.values[0] + (seconds * 1e9).astype("timedelta64[ns]")
fig, ax = plt.subplots(figsize=(9, 3.6))
mesh = ax.pcolormesh(clock, freqs / 1000, 10 * np.log10(power + 1e-12), shading="auto", cmap="magma", vmin=-120)
ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
ax.set_xlabel("time (UTC), 10 June 2026")
ax.set_ylabel("frequency (kHz)")
ax.set_title("ds.audio.sel(time=slice('2026-06-10T05:00', '2026-06-10T05:01'))")
fig.colorbar(mesh, ax=ax, label="power (dB)")
fig.tight_layout()
fig.savefig(out / "xarray_spectrogram.png", dpi=100)
print(f"wrote {out / 'xarray_spectrogram.png'}")
