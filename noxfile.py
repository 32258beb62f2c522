"""Developer tasks: `nox -s tests`, `nox -s demo`, `nox -s bench`, `nox -s fuzz`, `nox -s s3`."""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests"]
PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Install the package (not editable, so the entry points are real) and run the tests."""
    session.install(".[test]")
    session.run("pytest", *session.posargs, env={"PYTHONHASHSEED": "0", "ZARR_AAC_REQUIRE_INSTALLED": "1"})


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Import the built-in example recording, show what was stored, read a segment back."""
    session.install(".")
    out = session.create_tmp()
    archive = os.path.join(out, "demo.zarr")
    example = session.run(
        "python", "-c", "from zarr_aac.examples import example_recording; print(example_recording())", silent=True
    ).strip()
    session.run("zarr-aac", "import", example, archive)
    session.run("zarr-aac", "ls", archive)
    session.run("zarr-aac", "info", archive)
    session.run("zarr-aac", "export", archive, os.path.join(out, "segment.wav"), "--start", "2", "--stop", "4")
    session.log(f"wrote {archive} and a 2 s segment.wav in {out}")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Speed, size and memory against peers in one run; writes docs/benchmarks.md and JSON."""
    session.install(".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)
