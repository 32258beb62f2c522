"""The installed package is found by a fresh interpreter through its entry points alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import distribution, entry_points
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import zarr

import zarr_aac

REPO = Path(__file__).resolve().parents[1]


def test_codec_entry_point_is_registered():
    (point,) = [e for e in entry_points(group="zarr.codecs") if e.name == "zarr_aac"]
    assert point.load() is zarr_aac.AACCodec


def test_xarray_engine_entry_point_is_registered():
    from zarr_aac.dataset import ZarrAACBackendEntrypoint

    for name in ("zarr_aac", "aac"):  # "aac": the name xarray's guessing asks before "zarr"
        (point,) = [e for e in entry_points(group="xarray.backends") if e.name == name]
        assert point.load() is ZarrAACBackendEntrypoint


def test_xarray_engine_entry_point_loads_no_reading_code():
    """xarray loads every backend's entry point whatever it opens, and asks ours ("aac") before
    most others whether it opens a path, so loading it and turning down other paths stay cheap."""
    script = (
        "import sys\n"
        "from importlib.metadata import entry_points\n"
        "(point,) = [e for e in entry_points(group='xarray.backends') if e.name == 'zarr_aac']\n"
        "engine = point.load()()\n"
        f"assert not engine.guess_can_open({str(REPO / 'README.md')!r})\n"
        f"assert not engine.guess_can_open({str(REPO)!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith(('zarr_aac.dataset.', 'zarr_aac.archive'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == "['zarr_aac.dataset.backend']"


def test_installed_not_only_editable():
    """Under `nox -s tests` (which sets ZARR_AAC_REQUIRE_INSTALLED) the code under test is a
    real install in site-packages, not the repository checkout."""
    if not os.environ.get("ZARR_AAC_REQUIRE_INSTALLED"):
        pytest.skip("ZARR_AAC_REQUIRE_INSTALLED is unset: only `nox -s tests` tests a real install")
    module_path = Path(zarr_aac.__file__).resolve()
    assert module_path.parent != REPO / "zarr_aac", f"zarr_aac imported from the checkout: {module_path}"
    assert "site-packages" in module_path.parts
    direct_url = distribution("zarr-aac").read_text("direct_url.json")
    assert direct_url is None or not json.loads(direct_url).get("dir_info", {}).get("editable", False)


def test_fresh_process_opens_array_without_importing_package(tmp_path):
    pcm = (np.sin(np.arange(20_000) / 9.0)[:, None] * [8000, -8000]).astype(np.int16)
    path = tmp_path / "rec.zarr"
    z = zarr.create_array(
        str(path),
        shape=pcm.shape,
        chunks=(8192, 2),
        dtype="int16",
        serializer=zarr_aac.AACCodec(sample_rate=48000),
        compressors=None,
    )
    z[:] = pcm
    expected = z[1000:1100]
    script = (
        "import sys, zarr, numpy as np\n"
        f"z = zarr.open_array({str(path)!r})\n"
        "np.save(sys.stdout.buffer, z[1000:1100])\n"
        "print(type(z.metadata.codecs[0]).__module__, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=tmp_path, timeout=120, check=False)
    assert result.returncode == 0, result.stderr.decode()
    np.testing.assert_array_equal(np.load(BytesIO(result.stdout)), expected)
    assert result.stderr.decode().strip().endswith("zarr_aac.codec.aac_codec")
