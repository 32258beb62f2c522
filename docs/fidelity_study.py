"""Regenerates the tables and the plot of docs/fidelity.md from the shared recordings.

    python docs/fidelity_study.py /work/shared/audio
    python docs/fidelity_study.py --replot     # from docs/fidelity.json
    python docs/fidelity_study.py --misses /work/shared/audio


For every recording and bitrate: ``zarr_aac.archive.fidelity.preview`` (what ``zarr-aac quality``
prints: the report of an import and the change of scikit-maad's indices), and the size of the
same file as FLAC (made by the ffmpeg command line; 24-bit for the 24-bit source, else 16-bit).
Writes docs/fidelity.json and docs/fidelity.png and prints the markdown tables.

``--misses`` prints the tables of the section "Where +-5 % is not reached": the two indices
that miss at the defaults against the bitrate, FFmpeg's coder and the gain, and against
perturbations of the source that a lossless coder would also make or that change nothing but
the lowest bit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from zarr_aac.archive.fidelity import acoustic_indices, preview
from zarr_aac.codec import aac

FILES = [
    "field_recording_96k_24bit.wav",
    "forest_birds_soundscape_32k.wav",
    "frogs_pond_storm_44k1_stereo.ogg",
    "bengalese_finch_song_32k.wav",
    "monkeys_8k.wav",
    "crow_44k1.flac",
    "fruitfly_song_10k_3ch.wav",
    "bat_192k.wav",
    "bat_audiomoth_250k.wav",
    "speech_front_center_48k.wav",
    "music_lena_44k1.m4a",
    "music_lena_44k1_adts.aac",
]
BITRATES = [32_000, 64_000, 96_000, 128_000, 160_000, 192_000, 256_000]
DOCS = Path(__file__).parent


def flac_bytes(source: Path, work: Path) -> int:
    target = work / (source.stem + ".flac")
    bits = "s32" if "24bit" in source.name else "s16"
    subprocess.run(
        ["ffmpeg", "-y", "-v", "error", "-i", str(source), "-c:a", "flac", "-sample_fmt", bits, str(target)],
        check=True,
    )
    return target.stat().st_size


def main(audio: Path) -> None:
    results = []
    with tempfile.TemporaryDirectory() as work:
        for name in FILES:
            source = audio / name
            flac = flac_bytes(source, Path(work))
            layout, previews = preview(source, [None, *BITRATES], seconds=600)
            pcm16 = layout["seconds"] * layout["sample_rate"] * layout["channels"] * 2
            for p in previews:
                usable = p.bitrate <= 6 * layout["aac_sample_rate"] * min(layout["channels"], 8)
                if not usable:
                    continue
                size = p.report["size_pct_pcm16"] * pcm16 / 100
                results.append(
                    {
                        "file": name,
                        **layout,
                        "bitrate": p.bitrate,
                        "default": p.is_default,
                        "snr_db": p.report["snr_db"],
                        "bandwidth_hz": p.report["bandwidth_hz"],
                        "size_pct_pcm16": p.report["size_pct_pcm16"],
                        "size_pct_flac": round(100 * size / flac, 1),
                        "indices": {k: round(v, 1) for k, v in (p.index_changes or {}).items()},
                    }
                )
                print(name, p.bitrate, p.report["snr_db"], results[-1]["size_pct_flac"], results[-1]["indices"])
    (DOCS / "fidelity.json").write_text(json.dumps(results, indent=1))
    plot(results)
    tables(results)


def replot() -> None:
    """The plot and tables again from docs/fidelity.json, without measuring."""
    results = json.loads((DOCS / "fidelity.json").read_text())
    plot(results)
    tables(results)


def plot(results: list[dict]) -> None:
    fig, axes = plt.subplots(1, 5, figsize=(22, 4.8))
    colours = plt.get_cmap("tab20").colors
    for colour, name in zip(colours, FILES, strict=False):
        rows = sorted((r for r in results if r["file"] == name and not r["default"]), key=lambda r: r["bitrate"])
        if not rows:
            continue
        kbps = [r["bitrate"] / 1000 for r in rows]
        worst = [max(abs(v) for k, v in r["indices"].items() if k != "BI") for r in rows]
        label = name.rsplit(".", 1)[0]
        bi = [abs(r["indices"]["BI"]) for r in rows]
        for ax, values in zip(
            axes,
            (
                worst,
                bi,
                [r["snr_db"] for r in rows],
                [r["size_pct_pcm16"] for r in rows],
                [r["size_pct_flac"] for r in rows],
            ),
            strict=True,
        ):
            ax.plot(kbps, values, marker="o", color=colour, label=label)
    for ax in axes[:2]:
        ax.axhline(5, color="k", lw=0.8, ls="--")
        ax.set_yscale("log")
    axes[4].axhline(50, color="k", lw=0.8, ls="--")
    titles = [
        "largest |index change| but BI (%)",
        "|BI change| (%)",
        "SNR (dB)",
        "size (% of 16-bit PCM)",
        "size (% of FLAC)",
    ]
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("bitrate (kbps at the declared AAC rate)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(DOCS / "fidelity.png", dpi=90)


def tables(results: list[dict]) -> None:
    indices = ["ACI", "ADI", "AEI", "BI", "NDSI", "Ht", "Hf"]
    print("\n| file | AAC rate / kbps | SNR dB | band kHz | % PCM16 | % FLAC | " + " | ".join(indices) + " |")
    print("|---" * (6 + len(indices)) + "|")
    for r in results:
        if r["default"]:
            cells = " | ".join(f"{r['indices'].get(k, float('nan')):+.1f}" for k in indices)
            print(
                f"| {r['file']} | {r['aac_sample_rate'] / 1000:g}k / {r['bitrate'] // 1000} | {r['snr_db']} | "
                f"{r['bandwidth_hz'] / 1000:.1f} | {r['size_pct_pcm16']} | {r['size_pct_flac']} | {cells} |"
            )
    print("\n| file | " + " | ".join(f"{b // 1000}k" for b in BITRATES) + " |")
    print("|---" * (1 + len(BITRATES)) + "|")
    for name in FILES:
        cells = []
        for b in BITRATES:
            row = next((r for r in results if r["file"] == name and r["bitrate"] == b and not r["default"]), None)
            if row is None:
                cells.append("-")
                continue
            worst = max(row["indices"], key=lambda k: abs(row["indices"][k]))
            cells.append(f"{row['snr_db']} dB, {row['size_pct_flac']} %F, {worst} {row['indices'][worst]:+.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


MISSES = {
    # file: (index, bitrates at the declared rate up to the most FFmpeg accepts, the other coder)
    "monkeys_8k.wav": ("BI", [24_000, 28_000, 32_000, 36_000, 40_000, 48_000], "fast"),
    "fruitfly_song_10k_3ch.wav": (
        "AEI",
        [99_225, 104_000, 110_000, 115_000, 120_000, 132_300, 150_000, 165_000, 198_450],
        "twoloop",
    ),
}
GAINS = [1.0, 0.5, 0.25, 0.125]


@contextmanager
def coder(name: str | None) -> Iterator[None]:
    """Encode with FFmpeg's ``aac_coder`` ``name`` (None: the package's choice). The package does
    not expose the coder, so this wraps ``aac.encoder_options`` for the measurement only."""
    chosen = aac.encoder_options
    if name is not None:
        aac.encoder_options = lambda channels, cutoff=None: {**chosen(channels, cutoff), "aac_coder": name}
    try:
        yield
    finally:
        aac.encoder_options = chosen


def change_row(label: str, p, flac_pct_of_pcm: float) -> str:
    changes = " | ".join(f"{v:+.1f}" for v in p.index_changes.values())
    pct_flac = 100 * p.report["size_pct_pcm16"] / flac_pct_of_pcm
    return f"| {label} | {p.report['snr_db']} | {p.report['size_pct_pcm16']} | {pct_flac:.1f} | {changes} |"


def perturbations(x: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Changes of the source a lossless coder would also make, or that touch only its lowest bit."""
    lsb = 1 / 32768

    def int16(v: np.ndarray) -> np.ndarray:
        return (np.clip(np.round(v * 32768), -32768, 32767) / 32768).astype(np.float32)

    def delayed(samples: int) -> np.ndarray:
        return np.concatenate([np.zeros((samples, x.shape[1]), np.float32), x])

    return {
        "int16 round trip": int16(x),
        "15-bit copy (lowest bit dropped)": int16(x / 2) * 2,
        "1 LSB triangular dither, requantised": int16(x + lsb * (rng.random(x.shape) - rng.random(x.shape))),
        "gain up by 1 LSB at the peak, requantised": int16(x * (1 + lsb / np.abs(x).max())),
        "white noise at -110 dBFS": x + 10 ** (-110 / 20) * rng.standard_normal(x.shape).astype(np.float32),
        "white noise at -100 dBFS": x + 10 ** (-100 / 20) * rng.standard_normal(x.shape).astype(np.float32),
        "white noise at -90 dBFS": x + 10 ** (-90 / 20) * rng.standard_normal(x.shape).astype(np.float32),
        **{f"delayed by {n} samples": delayed(n) for n in (1, 16, 64, 128, 256)},
    }


def misses(audio: Path) -> None:
    """The tables of "Where +-5 % is not reached" in docs/fidelity.md."""
    header = "| {} | SNR dB | % PCM16 | % FLAC | ACI | ADI | AEI | BI | NDSI | Ht | Hf |"
    with tempfile.TemporaryDirectory() as work:
        for name, (index, bitrates, other_coder) in MISSES.items():
            source = audio / name
            flac = flac_bytes(source, Path(work))
            layout, default = preview(source, [None], seconds=600)
            pcm16 = layout["seconds"] * layout["sample_rate"] * layout["channels"] * 2
            flac_pct = 100 * flac / pcm16
            print(f"\n{name}: {index}, bitrate and coder (default {layout['default_bitrate']})\n")
            print(header.format("setting"))
            print("|---" * 11 + "|")
            _, own = preview(source, bitrates, seconds=600)
            with coder(other_coder):
                _, other = preview(source, bitrates, seconds=600)
            for p in own:
                print(change_row(f"{p.bitrate // 1000} kbps", p, flac_pct))
            for p in other:
                print(change_row(f"{p.bitrate // 1000} kbps, `{other_coder}`", p, flac_pct))
            peak = default[0].report["input_peak_dbfs"]
            print(f"\n{name}: gain, at the default bitrate (source peak {peak} dBFS)\n")
            print(header.format("gain"))
            print("|---" * 11 + "|")
            for gain in GAINS:
                p = preview_with_gain(source, gain)
                print(change_row(f"{gain:g}", p, flac_pct))
            x = decoded(source)
            reference = acoustic_indices(x, layout["sample_rate"])
            print(f"\n{name}: {index} of the source, perturbed, against the source\n")
            print("| perturbation | change of " + index + " % |")
            print("|---|---|")
            for label, y in perturbations(x, np.random.default_rng(0)).items():
                value = acoustic_indices(y, layout["sample_rate"])[index]
                print(f"| {label} | {100 * (value - reference[index]) / abs(reference[index]):+.1f} |")


def preview_with_gain(source: Path, gain: float):
    """``preview`` at the default bitrate with the stored gain ``gain`` instead of the importer's."""
    from dataclasses import replace

    from zarr_aac.archive import importer

    chosen = importer._RecordingLayout.of

    def of(*args, **kwargs):
        return replace(chosen(*args, **kwargs), gain=gain)

    importer._RecordingLayout.of = of
    try:
        return preview(source, [None], seconds=600)[1][0]
    finally:
        importer._RecordingLayout.of = chosen


CSV = ["-of", "csv=p=0"]


def decoded(source: Path) -> np.ndarray:
    """The source as float32 (samples, channels), decoded by the ffmpeg command line."""
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=channels", *CSV, str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    channels = int(probe.stdout.strip())
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(source), "-f", "f32le", "-acodec", "pcm_f32le", "-"],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.float32).reshape(-1, channels).copy()


if __name__ == "__main__":
    if sys.argv[1:] == ["--replot"]:
        replot()
    elif sys.argv[1:2] == ["--misses"]:
        misses(Path(sys.argv[2]))
    else:
        main(Path(sys.argv[1]))
