"""Regenerates the tables and the plot of docs/fidelity.md from the shared recordings.

    python docs/fidelity_study.py /work/shared/audio
    python docs/fidelity_study.py --replot     # from docs/fidelity.json

For every recording and bitrate: ``zarr_aac.archive.fidelity.preview`` (what ``zarr-aac quality``
prints: the report of an import and the change of scikit-maad's indices), and the size of the
same file as FLAC (made by the ffmpeg command line; 24-bit for the 24-bit source, else 16-bit).
Writes docs/fidelity.json and docs/fidelity.png and prints the markdown tables.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from zarr_aac.archive.fidelity import preview

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


if __name__ == "__main__":
    if sys.argv[1:] == ["--replot"]:
        replot()
    else:
        main(Path(sys.argv[1]))
