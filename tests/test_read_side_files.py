"""Reads of the first frames of files FFmpeg's encoder made (PNS off), presented by AACFileStore:
an ADTS file has no priming, so frame 0 holds the first samples and a run from it has no
pre-roll to drop; an MP4's edit list skips one frame of priming, so the first samples are in
frame 1, whose pre-roll is frame 0. Each selection equals PyAV's full decode of the file."""

from __future__ import annotations

import numpy as np
import pytest
from support.media import ffmpeg_aac, pyav_decode, require_tool, write_wav
from support.signals import tone_with_noise

import zarr_aac
from zarr_aac.codec import aac

RATE = 48_000
CHUNK = 20 * aac.FRAME_LENGTH + 300
"""Not a multiple of a frame, so later chunks begin inside frames."""


@pytest.fixture(scope="module", params=["aac", "m4a"])
def opened(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    pcm = tone_with_noise(CHUNK * 2, 2, RATE, seed=3)
    path = ffmpeg_aac(require_tool("ffmpeg"), write_wav(root / "a.wav", pcm, RATE), root / f"a.{request.param}")
    array = zarr_aac.open_aac_file(path, dtype="float32", chunk_length=CHUNK, index_path=False)
    return request.param, array, pyav_decode(path)


FIRST_FRAMES = [
    np.s_[0:10],
    np.s_[0:1024],
    np.s_[5:2100],
    np.s_[1023:1025],
    np.s_[[0, 1, 1023, 1024, 2047, 2048]],
    np.s_[[3, 1500]],
    np.s_[7],
    np.s_[::97],
    np.s_[CHUNK - 1 : CHUNK + 1030],
    np.s_[[CHUNK - 1, CHUNK, CHUNK + 1023, CHUNK + 1024]],
]


@pytest.mark.parametrize("selection", FIRST_FRAMES)
def test_selections_in_the_first_frames_equal_the_full_decode(opened, selection):
    container, array, reference = opened
    assert array.attrs["source"]["priming"] == (1024 if container == "m4a" else 0)
    np.testing.assert_array_equal(array[selection], reference[selection])
