"""``python -m benchmarks [--quick] [--only SECTION ...]``: run the sections, write the report.

Writes ``benchmarks.json`` and ``benchmarks.md`` (one table per section, PNG plots, the machine
it ran on) into ``bench-out/``. Only a full run (every section, not ``--quick``) also writes
them into ``docs/``: the published report holds every section from one run on one commit, so
a partial or quick run never mixes with the sections of another run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from benchmarks import Context

SECTIONS = ["codec", "importer", "adapter", "xarray", "archive", "serve"]
ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGES = ("zarr-aac", "zarr", "numcodecs", "av", "numpy", "soundfile", "xarray", "dask", "distributed")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every section")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        metavar="SECTION",
        help=f"run only this section (repeatable; one of {', '.join(SECTIONS)})",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "zarr-aac-bench",
        help="scratch directory; the looped WAV is kept there between runs (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench-out", help="where every run's report goes (default: %(default)s)"
    )
    parser.add_argument(
        "--docs",
        type=Path,
        default=DOCS,
        help="where a full run also publishes benchmarks.md, the plots and the JSON (default: %(default)s)",
    )
    return parser.parse_args(argv)


def machine_info() -> dict:
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "ffmpeg": _ffmpeg_version(),
        "git_commit": _git_commit(),
        "packages": versions,
    }


def _ffmpeg_version() -> str | None:
    exe = shutil.which("ffmpeg")
    if exe is None:
        return None
    return subprocess.run([exe, "-version"], capture_output=True, text=True, check=True).stdout.split("\n")[0]


def _git_commit() -> str | None:
    """The commit measured, with ``-modified`` when tracked files differ from it."""
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    commit = result.stdout.strip()
    if not commit:
        return None
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return f"{commit}-modified" if changed.stdout.strip() else commit


def run_section(name: str, ctx: Context) -> dict:
    try:
        module = importlib.import_module(f"benchmarks.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"benchmarks.{name}":
            raise
        return {
            "title": name,
            "rows": [],
            "notes": [f"skipped: benchmarks/{name}.py does not exist yet"],
            "skipped": True,
        }
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    started = datetime.datetime.now(datetime.UTC)
    try:
        result = module.run(ctx)
    except Exception as exc:
        # One owner's broken section must not cost the others' numbers; the run still fails.
        trace = traceback.format_exc()
        print(trace, file=sys.stderr)
        result = {
            "title": name,
            "rows": [],
            "notes": [f"FAILED: {exc!r} (traceback in benchmarks.json)"],
            "error": trace,
        }
    result["seconds"] = round((datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1)
    return result


def plot_section(name: str, result: dict, folder: Path) -> str | None:
    """Grouped bars from ``result["plot"] = {"x": [labels], "series": {name: [values]}, "xlabel",
    "ylabel", "log"}``; a None value leaves a gap."""
    spec = result.get("plot")
    if not spec:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, series = spec["x"], spec["series"]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for g, (group, values) in enumerate(series.items()):
        offset = (g - (len(series) - 1) / 2) * width
        points = [(i + offset, v) for i, v in enumerate(values) if v is not None]
        ax.bar([p for p, _ in points], [v for _, v in points], width, label=group)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel(spec.get("xlabel", ""))
    ax.set_ylabel(spec.get("ylabel", ""))
    if spec.get("log"):
        ax.set_yscale("log")
    ax.set_title(result["title"])
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    filename = f"benchmarks_{name}.png"
    fig.savefig(folder / filename, dpi=110)
    plt.close(fig)
    return filename


def markdown_table(rows: list[dict]) -> list[str]:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines.extend("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows)
    return lines


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def write_markdown(report: dict, folder: Path, command: str) -> None:
    m = report["machine"]
    lines = [
        "# Benchmarks",
        "",
        (
            f"Generated by `{command}` on {report['date']} (git {m['git_commit']}), every section in this "
            "one run; do not edit by hand. Raw numbers: [benchmarks.json](benchmarks.json)."
        ),
        "",
        (
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, {m['platform']}, "
            f"Python {m['python']}; {m['ffmpeg'] or 'no ffmpeg command line'}."
        ),
        "Packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v) + ".",
        "",
        (
            "Reproduce: `nox -s bench` (full run) or `nox -s bench -- --quick` (smoke run); "
            "`python -m benchmarks --only codec` runs one section into bench-out/ without publishing it here."
        ),
        "",
    ]
    if report["quick"]:
        lines += ["**Quick smoke run: small sizes, numbers are not representative.**", ""]
    for name, result in report["sections"].items():
        lines += [f"## {result['title']}", ""]
        if result.get("rows"):
            lines += [*markdown_table(result["rows"]), ""]
        for table in result.get("tables", []):
            lines += [f"### {table['title']}", "", *markdown_table(table["rows"]), ""]
        if result.get("image"):
            lines += [f"![{result['title']}]({result['image']})", ""]
        lines += [f"- {note}" for note in result.get("notes", [])]
        if result.get("seconds") is not None:
            lines.append(f"- section `{name}` took {result['seconds']} s")
        lines.append("")
    (folder / "benchmarks.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = Context(workdir=args.workdir, quick=args.quick)
    report = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "machine": machine_info(),
        "sections": {},
    }
    for name in args.only or SECTIONS:
        result = run_section(name, ctx)
        result["image"] = plot_section(name, result, args.out)
        report["sections"][name] = result
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    (args.out / "benchmarks.json").write_text(json.dumps(report, indent=1, default=str))
    write_markdown(report, args.out, command.strip())
    if args.only or args.quick:
        print(
            f"[bench] wrote {args.out}; {args.docs / 'benchmarks.md'} is left as it was: "
            "only a full run (every section, not --quick) publishes there",
            file=sys.stderr,
        )
    else:
        args.docs.mkdir(parents=True, exist_ok=True)
        for produced in [args.out / "benchmarks.json", args.out / "benchmarks.md", *args.out.glob("benchmarks_*.png")]:
            shutil.copyfile(produced, args.docs / produced.name)
        print(f"[bench] wrote {args.out} and published it in {args.docs}", file=sys.stderr)
    failed = [name for name, result in report["sections"].items() if "error" in result]
    if failed:
        sys.exit(f"[bench] sections failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
