"""The ``zarr-aac`` command: import, info, export, ls, verify and quality.

Exit status: 0 on success, 1 when the work failed (a message on stderr names the file and the
cause), 2 for a usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from zarr_aac.errors import ImportFailedError, ZarrAACError
from zarr_aac.validation import channels_of

AUDIO_SUFFIXES = {
    ".wav",
    ".wave",
    ".w64",
    ".flac",
    ".mp3",
    ".ogg",
    ".oga",
    ".opus",
    ".m4a",
    ".aac",
    ".mp4",
    ".mov",
    ".mkv",
    ".webm",
    ".aif",
    ".aiff",
    ".aifc",
    ".caf",
    ".wv",
    ".ape",
    ".wma",
    ".amr",
    ".3gp",
    ".au",
    ".snd",
}
"""File types picked up when a directory is given to ``zarr-aac import``."""


def _sources(paths: Sequence[str]) -> list[Path]:
    """Files as given, and the audio files under any directory given (sorted, hidden ones skipped)."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file()
                    and p.suffix.lower() in AUDIO_SUFFIXES
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        else:
            found.append(path)
    return found


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _cmd_import(args: argparse.Namespace) -> int:
    from zarr_aac.archive.import_options import ImportOptions
    from zarr_aac.archive.importer import import_file, import_files

    options = ImportOptions(
        bitrate=args.bitrate,
        aac_sample_rate=args.aac_rate,
        chunk_duration=args.chunk_duration,
        start_time=args.start_time,
        metadata=dict(args.meta) or None,
        stream=args.stream,
        dtype=args.dtype,
        allow_truncated=args.allow_truncated,
        progress=not args.quiet,
    )
    sources = _sources(args.sources)
    if not sources:
        raise ZarrAACError(f"no audio files found in {', '.join(args.sources)}")
    if args.name is not None:
        if len(sources) != 1:
            raise ZarrAACError("--name needs exactly one source file")
        arrays = [import_file(sources[0], args.dest, args.name, options=options)]
    else:
        arrays = import_files(sources, args.dest, workers=args.workers, options=options)
    for source, array in zip(sources, arrays, strict=True):
        print(f"{source} -> {array.store_path}")
    return 0


def _format_bytes(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    exponent = min(len(str(n)) - 1, 12) // 3
    return f"{n / 1000**exponent:.1f} {('kB', 'MB', 'GB', 'TB')[exponent - 1]}"


def _cmd_info(args: argparse.Namespace) -> int:
    from zarr_aac.archive.recordings import codec_of, open_recording

    array = open_recording(args.path)
    codec = codec_of(array)
    rate = codec.sample_rate
    n, channels = array.shape[0], channels_of(array.shape)
    stored = array.nbytes_stored()
    pcm = n * channels * 2
    bitrate = stored * 8 / (n / rate) if n else 0.0
    declared = f" (AAC declared {codec.aac_sample_rate} Hz)" if codec.aac_sample_rate != rate else ""
    size = f"{_format_bytes(stored)} ({bitrate / 1000:.1f} kbps of audio, {100 * stored / pcm:.1f} % of 16-bit PCM)"
    lines = [
        ("array", str(array.store_path)),
        ("shape", f"{array.shape} {array.dtype}"),
        ("duration", f"{n / rate:.3f} s ({n} samples)"),
        ("sample rate", f"{rate} Hz{declared}"),
        ("encoder bitrate", f"{codec.bitrate / 1000:g} kbps at the AAC rate" if codec.bitrate else "default"),
        ("chunks", f"{array.chunks[0]} samples ({array.chunks[0] / rate:.2f} s)"),
        ("bytes on disk", size),
    ]
    attrs = array.attrs.asdict()
    report = attrs.get("fidelity")
    if isinstance(report, dict):
        from zarr_aac.archive.fidelity import band_summary, summary

        lines += [("fidelity", summary(report)), ("SNR by band", band_summary(report))]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key:<{width}}  {value}")
    if attrs:
        print("metadata:")
        print(json.dumps(attrs, indent=2, ensure_ascii=False))
    return 0


def _position(text: str | None, samples: bool) -> int | float | str | None:
    """--start/--stop: a sample number with --samples, else seconds or an ISO-8601 clock time."""
    if text is None:
        return None
    if samples:
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def _cmd_export(args: argparse.Namespace) -> int:
    from zarr_aac.archive.exporter import export

    unit: Literal["s", "samples"] = "samples" if args.samples else "s"
    start, stop = _position(args.start, args.samples), _position(args.stop, args.samples)
    target = export(
        args.path,
        args.out,
        start,
        stop,
        unit=unit,
        format=args.format,
        codec=args.codec,
        bitrate=args.bitrate,
        progress=not args.quiet,
    )
    print(target)
    return 0


LS_COLUMNS = (
    "name",
    "duration_s",
    "sample_rate",
    "channels",
    "dtype",
    "snr_db",
    "start_time",
    "source.name",
    "source.codec",
)


def _cmd_ls(args: argparse.Namespace) -> int:
    from zarr_aac.archive.recordings import catalogue_entries, open_archive, recording_names, unfinished_imports

    group = open_archive(args.group, mode="r")
    entries = catalogue_entries(group)
    if args.json:
        print(json.dumps(entries, indent=2, ensure_ascii=False))
        return 0
    rows: list[tuple[str, ...]] = [LS_COLUMNS]
    for name, entry in entries.items():
        flat = {"name": name, **entry, **{f"source.{k}": v for k, v in entry.get("source", {}).items()}}
        snr = entry.get("fidelity", {}).get("snr_db")
        flat["snr_db"] = f"{snr:.1f}" if snr is not None else None
        rows.append(tuple(_cell(flat.get(column)) for column in LS_COLUMNS))
    widths = [max(len(row[i]) for row in rows) for i in range(len(LS_COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(f"{len(entries)} recording(s)", file=sys.stderr)
    unfinished = unfinished_imports(group)
    if unfinished:
        print(
            f"{len(unfinished)} unfinished import(s) left by a killed process, safe to delete when no import "
            f"is running: {', '.join(unfinished)}",
            file=sys.stderr,
        )
    uncatalogued = [name for name in recording_names(group) if name not in entries]
    if uncatalogued:
        print(f"{len(uncatalogued)} array(s) not in the catalogue: {', '.join(uncatalogued)}", file=sys.stderr)
    return 0


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        from zarr_aac.archive.verification import verify
    except ModuleNotFoundError as exc:
        if exc.name != "zarr_aac.archive.verification":
            raise
        raise ZarrAACError(
            "verify is not available: this installation has no zarr_aac.archive.verification module"
        ) from exc
    bad = verify(args.path, progress=not args.quiet)
    for problem in bad:
        print(f"{problem['array']}: chunk {problem['key']}: {problem['error']}")
    if bad:
        print(f"{len(bad)} bad chunk(s)", file=sys.stderr)
        return 1
    print("all chunks verified", file=sys.stderr)
    return 0


def _cmd_quality(args: argparse.Namespace) -> int:
    from zarr_aac.archive.fidelity import band_summary, preview, summary
    from zarr_aac.archive.import_options import ImportOptions

    options = ImportOptions(aac_sample_rate=args.aac_rate, stream=args.stream, dtype=args.dtype, progress=False)
    layout, previews = preview(args.source, [None, *args.bitrates], options, seconds=args.seconds)
    print(
        f"{args.source}: {layout['sample_rate']} Hz, {layout['channels']} channel(s), {layout['dtype']}, "
        f"AAC declared {layout['aac_sample_rate']} Hz; first {layout['seconds']:.1f} s measured, nothing written"
    )
    seen = set()
    for result in previews:
        if result.bitrate in seen:
            continue
        seen.add(result.bitrate)
        label = f"{result.bitrate / 1000:g} kbps" + (" (default)" if result.is_default else "")
        print(f"{label}: {summary(result.report)}")
        print(f"  SNR by band: {band_summary(result.report)}")
        if result.index_changes is None:
            print("  index changes: not computed (pip install 'zarr-aac[indices]' for scikit-maad)")
        else:
            changes = ", ".join(f"{k} {v:+.1f} %" for k, v in result.index_changes.items())
            print(f"  index changes: {changes}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zarr-aac", description="AAC-backed Zarr audio archives.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    imp = commands.add_parser("import", parents=[common], help="import audio or video files into an archive")
    imp.add_argument("sources", nargs="+", metavar="SRC", help="files, or directories searched for audio files")
    imp.add_argument("dest", metavar="DEST", help="the archive (a Zarr group, created if missing)")
    imp.add_argument("--name", help="array name (one source only; default: the file name)")
    imp.add_argument(
        "--bitrate", type=int, help="AAC bits per second (default: 130k mono, 160k stereo, 80k a channel above)"
    )
    imp.add_argument("--aac-rate", type=int, help="AAC rate declared to the encoder (default: see docs/importing.md)")
    imp.add_argument("--chunk-duration", type=float, default=60.0, help="seconds per chunk (default 60)")
    imp.add_argument("--start-time", help="ISO-8601 start time, overriding tags and file names")
    imp.add_argument("--stream", type=int, help="stream index when a file has several audio streams")
    imp.add_argument("--dtype", choices=("int16", "float32"), help="array dtype (default: from the source)")
    imp.add_argument("--meta", type=_key_value, action="append", default=[], metavar="KEY=VALUE", help="user metadata")
    imp.add_argument("--workers", type=int, help="parallel processes (default: one per core)")
    imp.add_argument("--allow-truncated", action="store_true", help="import what a truncated file holds")
    imp.set_defaults(run=_cmd_import)

    info = commands.add_parser("info", parents=[common], help="shape, rates, size and metadata of a recording")
    info.add_argument("path", metavar="PATH", help="ARCHIVE/NAME, or an archive holding one recording")
    info.set_defaults(run=_cmd_info)

    exp = commands.add_parser(
        "export", parents=[common], help="write a segment to WAV, FLAC or any format FFmpeg writes"
    )
    exp.add_argument("path", metavar="PATH", help="ARCHIVE/NAME, or an archive holding one recording")
    exp.add_argument("out", metavar="OUT", help="output file; its extension picks the format")
    exp.add_argument("--start", help="start: seconds, or an ISO-8601 clock time (default: the beginning)")
    exp.add_argument("--stop", help="stop: seconds, or an ISO-8601 clock time (default: the end)")
    exp.add_argument("--samples", action="store_true", help="--start/--stop are sample numbers")
    exp.add_argument("--format", help="FFmpeg container name, when the extension does not say")
    exp.add_argument("--codec", help="FFmpeg encoder name (default: the container's)")
    exp.add_argument("--bitrate", type=int, help="encoder bits per second, for lossy formats")
    exp.set_defaults(run=_cmd_export)

    ls = commands.add_parser("ls", parents=[common], help="the catalogue of an archive")
    ls.add_argument("group", metavar="GROUP")
    ls.add_argument("--json", action="store_true", help="every field, as JSON")
    ls.set_defaults(run=_cmd_ls)

    ver = commands.add_parser("verify", parents=[common], help="check every chunk's checksum and structure")
    ver.add_argument("path", metavar="PATH", help="an archive or an array")
    ver.set_defaults(run=_cmd_verify)

    quality = commands.add_parser(
        "quality", parents=[common], help="what an import would lose at several bitrates (writes nothing)"
    )
    quality.add_argument("source", metavar="SOURCE", help="an audio or video file")
    quality.add_argument(
        "--bitrates", type=int, nargs="+", default=[], metavar="BPS", help="bitrates to try besides the default"
    )
    quality.add_argument("--seconds", type=float, default=60.0, help="seconds of the source measured (default 60)")
    quality.add_argument("--aac-rate", type=int, help="AAC rate declared to the encoder (default: as import)")
    quality.add_argument("--stream", type=int, help="stream index when a file has several audio streams")
    quality.add_argument("--dtype", choices=("int16", "float32"), help="array dtype (default: from the source)")
    quality.set_defaults(run=_cmd_quality)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("zarr-aac: interrupted", file=sys.stderr)
        return 130
    except ImportFailedError as exc:
        print(f"zarr-aac: {exc}", file=sys.stderr)
        return 1
    except (ZarrAACError, ValueError, OSError) as exc:
        print(f"zarr-aac {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
