"""An archive on an object store opened by ``s3://`` URL, its endpoint and credentials given only
as ``storage_options``: the commit check of a recording opened by its own URL opens the archive
holding it with the same options, so an uncommitted recording is refused there as it is on a local
disk. moto's S3 server on loopback; no ``FSSPEC_S3_*`` or ``AWS_*`` settings in the environment,
so that only the options can reach the server. Marked ``s3`` as the object-store tests of
tests/test_s3.py are; it runs with the default suite too (about 10 s).
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("moto")
pytest.importorskip("s3fs")
import zarr
from support.s3 import moto_server, s3_options

import zarr_aac
from zarr_aac.archive import recordings
from zarr_aac.errors import RecordingNotCommittedError

pytestmark = pytest.mark.s3

BUCKET = "options-only"
ARCHIVE = f"s3://{BUCKET}/archive.zarr"


@pytest.fixture(scope="module")
def options():
    """Storage options for a bucket on moto's server, the only way to reach it."""
    with moto_server() as endpoint, pytest.MonkeyPatch.context() as env:
        for name in list(os.environ):
            if name.startswith(("FSSPEC_S3", "AWS_")) and name != "AWS_CA_BUNDLE":
                env.delenv(name)
        # Without the options, botocore finds no credentials at once instead of asking the
        # instance metadata service, and the URL's bucket is looked for on an unused loopback port.
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        options = s3_options(endpoint)
        import s3fs

        s3fs.S3FileSystem(**options).mkdir(BUCKET)
        yield options


@pytest.fixture(scope="module")
def archive(options):
    """An archive with one committed recording, ``done``, and one whose import reserved its name
    and wrote its array but never committed it, ``under_way`` (plain arrays: the commit protocol
    never looks inside)."""
    group = zarr.open_group(ARCHIVE, mode="a", storage_options=options)
    reservation = recordings.reserve_name(group, "done", "a" * 64, exact=True)
    group.create_array(reservation.name, shape=(4,), dtype="int16")
    recordings.publish_recording(group, reservation, {"source": {"sha256": "a" * 64}})
    recordings.reserve_name(group, "under_way", "b" * 64, exact=True)
    group.create_array("under_way", shape=(4,), dtype="int16")
    return group


def test_an_uncommitted_recording_opened_by_url_with_storage_options_is_refused(archive, options):
    url = f"{ARCHIVE}/under_way"
    array = zarr.open_array(url, mode="r", storage_options=options)
    with pytest.raises(RecordingNotCommittedError, match=r"under_way is not committed"):
        recordings.check_committed_at(url, array, options)
    with pytest.raises(RecordingNotCommittedError, match=r"under_way is not committed"):
        zarr_aac.open_dataset(url, storage_options=options)


def test_a_committed_recording_opened_by_url_with_storage_options_is_let_through(archive, options):
    url = f"{ARCHIVE}/done"
    array = zarr.open_array(url, mode="r", storage_options=options)
    assert recordings.check_committed_at(url, array, options) is array
