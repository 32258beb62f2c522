"""Developer tasks: `nox -s tests`, `nox -s lint`, `nox -s demo`, `nox -s bench`, `nox -s fuzz`, `nox -s s3`,
`nox -s mutate`."""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests"]
# Sessions use the interpreter nox runs on (any Python 3.11+), in a fresh virtual environment.


@nox.session
def tests(session: nox.Session) -> None:
    """Install the package (not editable, so the entry points are real) and run the tests."""
    session.install(".[test]")
    # ZARR_AAC_S3_FULL: the slow object-store fault tests too (about a minute), so CI runs them.
    env = {"PYTHONHASHSEED": "0", "ZARR_AAC_REQUIRE_INSTALLED": "1", "ZARR_AAC_S3_FULL": "1"}
    session.run("pytest", *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format) on the whole tree, mypy on the package."""
    # The extras put xarray, fsspec, starlette and pillow in reach of mypy; pandas ships no types of its own.
    session.install("ruff>=0.8", "mypy>=1.13", "pandas-stubs>=2.2", "-e", ".[xarray,distributed,remote,serve]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


@nox.session
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


@nox.session
def bench(session: nox.Session) -> None:
    """Speed, size and memory against peers in one run; writes docs/benchmarks.md and JSON."""
    session.install(".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """Hostile chunks at scale: hypothesis with many examples, 1000 byte flips, atheris if it installs."""
    session.install(".[test]")
    scale = {"ZARR_AAC_FUZZ_EXAMPLES": "2000", "ZARR_AAC_FLIPS": "1000", "PYTHONHASHSEED": "0"}
    session.run("pytest", "tests/test_fuzz.py", "tests/test_corruption.py", "--hypothesis-show-statistics", env=scale)
    session.run("python", "tests/test_corruption.py", "--flips", "1000")
    session.run("python", "-m", "pip", "install", "atheris>=2.3", success_codes=[0, 1])
    has_atheris = session.run(
        "python", "-c", "import importlib.util; print(importlib.util.find_spec('atheris') is not None)", silent=True
    )
    if str(has_atheris).strip() == "True":
        session.run("python", "tests/fuzz_atheris.py", "-atheris_runs=200000", *session.posargs)
    else:
        session.warn("atheris did not install here (it needs a wheel or clang); coverage-guided fuzzing skipped")


@nox.session
def s3(session: nox.Session) -> None:
    """Every object-store test against moto on loopback, the slow fault tests included."""
    session.install(".[test]")
    session.run(
        "pytest",
        "tests/test_s3.py",
        "tests/test_live_writer_s3.py",
        "tests/test_distributed_import.py",
        "tests/test_serve.py::test_an_archive_in_s3_is_served_by_the_command",
        "-v",
        *session.posargs,
        env={"ZARR_AAC_S3_FULL": "1"},
    )


@nox.session
def mutate(session: nox.Session) -> None:
    """Mutation testing with mutmut over the read path, chunk format, time index, importer commit
    and the codec's encode side ([tool.mutmut] in pyproject.toml). Arguments name the mutants to
    run, as the recorded runs did one module at a time: `nox -s mutate -- 'zarr_aac.archive.recordings*'`
    (a function: `'zarr_aac.codec.aac_codec.x_parse_*'`, a method: `'zarr_aac.codec.aac_codec.xǁChunkEncoderǁ*'`).
    One child by default (two shared cores); MUTMUT_CHILDREN sets more. Kill rates and every
    survivor: docs/claims.md."""
    session.install("-e", ".[test]")
    children = os.environ.get("MUTMUT_CHILDREN", "1")
    session.run("mutmut", "run", "--max-children", children, *session.posargs)
    session.run("mutmut", "results")
