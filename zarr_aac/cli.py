"""The ``zarr-aac`` command: import, info, export, ls, verify, quality, set and serve.

Exit status: 0 on success, 1 when the work failed (a message on stderr names the file and the
cause), 2 for a usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
import warnings
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


def _sources(paths: Sequence[str]) -> list[Path | str]:
    """Files as given, URLs as given (fsspec reads them), and the audio files under any directory
    given (sorted, hidden ones skipped)."""
    found: list[Path | str] = []
    for name in paths:
        if "://" in name:
            found.append(name)
            continue
        path = Path(name)
        if not path.exists():
            raise ZarrAACError(f"{name}: no such file or folder")
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


_BITRATE_SUFFIXES = {"k": 1000, "m": 1000_000}


def _bitrate(text: str) -> int:
    """Bits per second as FFmpeg takes them: ``130000``, ``130k`` or ``1.5M``."""
    number, scale = text, 1
    if text[-1:].lower() in _BITRATE_SUFFIXES:
        number, scale = text[:-1], _BITRATE_SUFFIXES[text[-1].lower()]
    try:
        value = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected bits per second such as 130000 or 130k, got {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number of bits per second, got {text!r}")
    return int(value)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of hours, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected hours of 0 or more, got {text!r}")
    return value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"anon\": true}}', got {text!r}")
    return value


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _cmd_import(args: argparse.Namespace) -> int:
    from zarr_aac.archive.import_options import ImportOptions
    from zarr_aac.archive.importer import import_file, import_files
    from zarr_aac.archive.locations import ArchiveLocation

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
    if args.name is not None and len(sources) != 1:
        raise ZarrAACError("--name needs exactly one source file")
    if args.start_time is not None and len(sources) != 1:
        raise ZarrAACError(
            f"--start-time needs exactly one source file ({len(sources)} found): it would give them all one start, "
            "overriding their own; set a start later with zarr-aac set ARCHIVE/NAME --start-time"
        )
    if args.scheduler is not None and (args.name is not None or args.workers is not None):
        raise ZarrAACError("--scheduler imports on the cluster's workers: drop --name and --workers")
    if args.storage_options is not None and "://" not in args.dest:
        raise ZarrAACError(f"--storage-options applies to an archive URL (s3://...), not to the local path {args.dest}")
    before = _recording_names(args.dest, args.storage_options)
    if args.name is not None:
        dest: Any = args.dest
        if args.storage_options is not None:
            dest = ArchiveLocation.of(args.dest, args.storage_options).open()
        arrays = [import_file(sources[0], dest, args.name, options=options)]
    elif args.scheduler is not None:
        arrays = _import_on_cluster(args.scheduler, sources, args.dest, args.storage_options, options)
    else:
        arrays = import_files(
            sources, args.dest, workers=args.workers, storage_options=args.storage_options, options=options
        )
    for source, array in zip(sources, arrays, strict=True):
        if array.basename in before:
            print(f"{source} = {_location(array)} (already imported, not imported again)")
        else:
            print(f"{source} -> {_location(array)}")
    return 0


def _location(array: Any) -> str:
    """Where an array is, as a user would give it: zarr names an fsspec store by its repr, so
    an array in an object store is given by its URL."""
    from zarr.storage import FsspecStore

    store = array.store_path.store
    if isinstance(store, FsspecStore):
        return str(store.fs.unstrip_protocol(f"{store.path}/{array.path}"))
    return str(array.store_path)


def _import_on_cluster(
    address: str, sources: list[Path | str], archive: str, storage_options: dict[str, Any] | None, options: Any
) -> list[Any]:
    """import_files on the dask cluster whose scheduler is at ``address``."""
    from zarr_aac.archive.importer import import_files

    try:
        import distributed
    except ModuleNotFoundError as exc:
        raise ZarrAACError("--scheduler needs dask.distributed: pip install 'zarr-aac[distributed]'") from exc
    with distributed.Client(address) as client:
        return import_files(sources, archive, client=client, storage_options=storage_options, options=options)


def _recording_names(archive: str, storage_options: dict[str, Any] | None = None) -> set[str]:
    """The catalogued recordings of ``archive``, none if it does not exist yet."""
    from zarr_aac.archive.locations import ArchiveLocation
    from zarr_aac.archive.recordings import catalogue_entries
    from zarr_aac.errors import ArchiveError

    if not Path(archive).exists() and "://" not in archive:
        return set()
    try:
        return set(catalogue_entries(ArchiveLocation.of(archive, storage_options).open(mode="r")))
    except ArchiveError:
        return set()


def _cmd_set(args: argparse.Namespace) -> int:
    from zarr_aac.archive.recordings import open_recording, set_recording_attributes

    if args.start_time is None and not args.meta and not args.clear_meta:
        raise ZarrAACError("nothing to set: give --start-time, --meta KEY=VALUE or --clear-meta")
    metadata = None
    if args.meta or args.clear_meta:
        user: Any = open_recording(args.path).attrs.asdict().get("user") or {}
        metadata = {} if args.clear_meta else dict(user)
        metadata.update(dict(args.meta))
    array = set_recording_attributes(args.path, start_time=args.start_time, metadata=metadata)
    print(f"{array.store_path}: start_time {array.attrs.get('start_time')}, user {json.dumps(array.attrs.get('user'))}")
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
    declared = f" (AAC declared {codec.aac_sample_rate} Hz)" if codec.aac_sample_rate != rate else ""
    if n:
        bitrate = stored * 8 / (n / rate)
        size = f"{_format_bytes(stored)} ({bitrate / 1000:.1f} kbps of audio, {100 * stored / pcm:.1f} % of 16-bit PCM)"
    else:
        size = f"{_format_bytes(stored)} (no samples)"
    lines = [
        ("array", str(array.store_path)),
        ("shape", f"{array.shape} {array.dtype}"),
        ("duration", f"{n / rate:.3f} s ({n} samples)"),
        ("sample rate", f"{rate} Hz{declared}"),
        ("encoder bitrate", f"{codec.bitrate / 1000:g} kbps at the AAC rate" if codec.bitrate else "default"),
        ("chunks", f"{array.chunks[0]} samples ({array.chunks[0] / rate:.2f} s)"),
        ("bytes on disk", size),
    ]
    from zarr_aac.codec.chain import codec_chain_problem

    slow = codec_chain_problem(array)
    if slow is not None:
        lines.append(("codecs", f"slow reads: {slow}"))
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
    for name, entry in sorted(entries.items()):
        flat = {"name": name, **entry, **{f"source.{k}": v for k, v in entry.get("source", {}).items()}}
        snr = (entry.get("fidelity") or {}).get("snr_db")  # none while a recording is written live
        flat["snr_db"] = f"{snr:.1f}" if snr is not None else None
        rows.append(tuple(_cell(flat.get(column)) for column in LS_COLUMNS))
    widths = [max(len(row[i]) for row in rows) for i in range(len(LS_COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(f"{len(entries)} recording(s)", file=sys.stderr)
    live = sorted(name for name, entry in entries.items() if entry.get("live"))
    if live:
        print(
            f"{len(live)} being written live, or left by a writer that stopped (resume it with "
            f"zarr_aac.open_writer(..., resume=True)): {', '.join(live)}",
            file=sys.stderr,
        )
    unfinished = unfinished_imports(group, entries)
    if unfinished:
        print(
            f"{len(unfinished)} unfinished import(s), not listed: under way, or left by a killed process "
            f"(`zarr-aac gc {args.group}` removes those that are): {', '.join(unfinished)}",
            file=sys.stderr,
        )
    uncatalogued = [name for name in recording_names(group, entries) if name not in entries]
    if uncatalogued:
        print(f"{len(uncatalogued)} array(s) not in the catalogue: {', '.join(uncatalogued)}", file=sys.stderr)
    return 0


def _cmd_gc(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from zarr_aac.archive.garbage import gc

    report = gc(args.group, dry_run=args.dry_run, grace_period=timedelta(hours=args.grace_hours))
    verb = "would remove" if report.dry_run else "removed"
    for item in report.removed:
        print(f"{verb} {item.kind} {item.name}: {item.reason}")
    for item in report.kept:
        print(f"kept {item.kind} {item.name}: {item.reason}", file=sys.stderr)
    print(f"{len(report.removed)} item(s) {verb}, {len(report.kept)} kept", file=sys.stderr)
    return 0


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        from zarr_aac.archive.verification import CODEC_CHAIN_KEY, PCM_TAIL, is_damage, verify
    except ModuleNotFoundError as exc:
        if exc.name != "zarr_aac.archive.verification":
            raise
        raise ZarrAACError(
            "verify is not available: this installation has no zarr_aac.archive.verification module"
        ) from exc
    listed = verify(args.path, progress=not args.quiet, report_missing=not args.ignore_missing)
    for problem in listed:
        where = "" if problem["key"] == CODEC_CHAIN_KEY else f" chunk {problem['key']}:"
        print(f"{problem['array']}:{where} {problem['error']}")
    bad = [problem for problem in listed if is_damage(problem)]
    tails = sum(problem["error"] == PCM_TAIL for problem in listed)
    if tails:
        print(f"{tails} sound PCM tail chunk(s) of recordings not closed", file=sys.stderr)
    slow = len(listed) - len(bad) - tails
    if slow:
        print(f"{slow} array(s) read slowly: create them with compressors=None", file=sys.stderr)
    if bad:
        print(f"{len(bad)} bad or missing chunk(s)", file=sys.stderr)
        return 1
    print(
        "all chunks present and verified" if not args.ignore_missing else "all stored chunks verified", file=sys.stderr
    )
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


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from zarr_aac.serve import create_app
    except ModuleNotFoundError as exc:
        raise ZarrAACError(
            f"serve needs the serve extra ({exc.name} is missing): pip install 'zarr-aac[serve]'"
        ) from exc
    if args.storage_options is not None and "://" not in args.archive:
        raise ZarrAACError(
            f"--storage-options applies to an archive URL (s3://...), not to the local path {args.archive}"
        )
    # with several workers each builds its own app; this one only makes a bad archive fail clearly
    app = create_app(args.archive, args.storage_options)
    if args.workers > 1:
        shutil.rmtree(app.state.archive.folder, ignore_errors=True)
    url = f"http://{args.host}:{args.port}/"
    print(f"serving {args.archive} read-only at {url} (Ctrl-C stops)", file=sys.stderr)
    if args.open:
        import webbrowser

        threading.Timer(1.0, webbrowser.open, (url,)).start()
    if args.workers == 1:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        return 0
    from zarr_aac.serve.app import ARCHIVE_VARIABLE, STORAGE_OPTIONS_VARIABLE

    os.environ[ARCHIVE_VARIABLE] = args.archive
    if args.storage_options is not None:
        os.environ[STORAGE_OPTIONS_VARIABLE] = json.dumps(args.storage_options)
    factory = "zarr_aac.serve.app:app_from_environment"
    uvicorn.run(factory, factory=True, workers=args.workers, host=args.host, port=args.port, log_level="warning")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zarr-aac", description="AAC-backed Zarr audio archives.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_import_command(commands, common)
    _add_info_command(commands, common)
    _add_export_command(commands, common)
    _add_ls_command(commands, common)
    _add_gc_command(commands, common)
    _add_verify_command(commands, common)
    _add_quality_command(commands, common)
    _add_set_command(commands, common)
    _add_serve_command(commands, common)
    return parser


def _add_import_command(commands: Any, common: argparse.ArgumentParser) -> None:
    imp = commands.add_parser("import", parents=[common], help="import audio or video files into an archive")
    imp.add_argument(
        "sources", nargs="+", metavar="SRC", help="files, directories searched for audio files, or URLs (s3://...)"
    )
    imp.add_argument("dest", metavar="DEST", help="the archive (a Zarr group, created if missing)")
    imp.add_argument("--name", help="array name (one source only; default: the file name)")
    imp.add_argument(
        "--bitrate", type=_bitrate, help="AAC bits per second (default: 130k mono, 160k stereo, 80k a channel above)"
    )
    imp.add_argument("--aac-rate", type=int, help="AAC rate declared to the encoder (default: see docs/importing.md)")
    imp.add_argument("--chunk-duration", type=float, default=60.0, help="seconds per chunk, at least 0.1 (default 60)")
    imp.add_argument("--start-time", help="ISO-8601 start time, overriding tags and file names")
    imp.add_argument("--stream", type=int, help="stream index when a file has several audio streams")
    imp.add_argument("--dtype", choices=("int16", "float32"), help="array dtype (default: from the source)")
    imp.add_argument("--meta", type=_key_value, action="append", default=[], metavar="KEY=VALUE", help="user metadata")
    imp.add_argument("--workers", type=int, help="parallel processes (default: one per core)")
    imp.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="import on a dask.distributed cluster: its scheduler's address (tcp://host:8786); "
        "the workers read the sources and write the archive",
    )
    imp.add_argument(
        "--storage-options",
        type=_json_object,
        metavar="JSON",
        help="fsspec options for an archive URL, as a JSON object (endpoint, credentials)",
    )
    imp.add_argument("--allow-truncated", action="store_true", help="import what a truncated file holds")
    imp.set_defaults(run=_cmd_import)


def _add_info_command(commands: Any, common: argparse.ArgumentParser) -> None:
    info = commands.add_parser("info", parents=[common], help="shape, rates, size and metadata of a recording")
    info.add_argument("path", metavar="PATH", help="ARCHIVE/NAME, or an archive holding one recording")
    info.set_defaults(run=_cmd_info)


def _add_export_command(commands: Any, common: argparse.ArgumentParser) -> None:
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
    exp.add_argument("--bitrate", type=_bitrate, help="encoder bits per second, for lossy formats (e.g. 128k)")
    exp.set_defaults(run=_cmd_export)


def _add_ls_command(commands: Any, common: argparse.ArgumentParser) -> None:
    ls = commands.add_parser("ls", parents=[common], help="the catalogue of an archive")
    ls.add_argument("group", metavar="GROUP")
    ls.add_argument("--json", action="store_true", help="every field, as JSON")
    ls.set_defaults(run=_cmd_ls)


def _add_gc_command(commands: Any, common: argparse.ArgumentParser) -> None:
    gc = commands.add_parser(
        "gc", parents=[common], help="remove what crashed imports left (uncommitted recordings of dead processes)"
    )
    gc.add_argument("group", metavar="GROUP")
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    gc.add_argument(
        "--grace-hours",
        type=_hours,
        default=24.0,
        help="remove uncommitted imports of other hosts started longer ago than this (default 24)",
    )
    gc.set_defaults(run=_cmd_gc)


def _add_verify_command(commands: Any, common: argparse.ArgumentParser) -> None:
    ver = commands.add_parser("verify", parents=[common], help="check every chunk's checksum and structure")
    ver.add_argument("path", metavar="PATH", help="an archive or an array")
    ver.add_argument(
        "--ignore-missing",
        action="store_true",
        help="do not list absent chunks (arrays written by others may leave all-zero chunks out)",
    )
    ver.set_defaults(run=_cmd_verify)


def _add_quality_command(commands: Any, common: argparse.ArgumentParser) -> None:
    quality = commands.add_parser(
        "quality", parents=[common], help="what an import would lose at several bitrates (writes nothing)"
    )
    quality.add_argument("source", metavar="SOURCE", help="an audio or video file")
    quality.add_argument(
        "--bitrates",
        type=_bitrate,
        nargs="+",
        default=[],
        metavar="BPS",
        help="bitrates to try besides the default (e.g. 96k)",
    )
    quality.add_argument("--seconds", type=float, default=60.0, help="seconds of the source measured (default 60)")
    quality.add_argument("--aac-rate", type=int, help="AAC rate declared to the encoder (default: as import)")
    quality.add_argument("--stream", type=int, help="stream index when a file has several audio streams")
    quality.add_argument("--dtype", choices=("int16", "float32"), help="array dtype (default: from the source)")
    quality.set_defaults(run=_cmd_quality)


def _add_set_command(commands: Any, common: argparse.ArgumentParser) -> None:
    set_ = commands.add_parser("set", parents=[common], help="change a recording's start time or user metadata")
    set_.add_argument("path", metavar="PATH", help="ARCHIVE/NAME")
    set_.add_argument("--start-time", help="ISO-8601 start time")
    set_.add_argument(
        "--meta", type=_key_value, action="append", default=[], metavar="KEY=VALUE", help="set a user metadata field"
    )
    set_.add_argument("--clear-meta", action="store_true", help="remove the user metadata first")
    set_.set_defaults(run=_cmd_set)


def _add_serve_command(commands: Any, common: argparse.ArgumentParser) -> None:
    serve = commands.add_parser("serve", parents=[common], help="look at and listen to an archive in the browser")
    serve.add_argument("archive", metavar="ARCHIVE", help="the archive: a local path or an fsspec URL (s3://...)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--open", action="store_true", help="open the page in the default browser")
    serve.add_argument(
        "--workers", type=_positive_int, default=1, help="server processes, e.g. one per core (default 1)"
    )
    serve.add_argument(
        "--storage-options",
        type=_json_object,
        metavar="JSON",
        help="fsspec options for an archive URL, as a JSON object (endpoint, credentials)",
    )
    serve.set_defaults(run=_cmd_serve)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _format_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    return f"zarr-aac: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (kill, a batch scheduler) stops as Ctrl-C does: temporaries deleted, nothing half-written
        signal.signal(signal.SIGTERM, _interrupt)
    warnings.formatwarning = _format_warning
    try:
        return args.run(args)
    except BrokenPipeError:
        # the reader went away (`zarr-aac info ... | head`): stop quietly, and keep Python from
        # reporting the same broken pipe again when it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
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
