"""Frame indexes of ADTS and MP4 files against ffprobe's packet list, and refusal of what
cannot be served exactly."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
from support.media import ffmpeg_aac, require_tool, two_track_aac
from zarr.core.sync import sync

from zarr_aac.errors import CorruptSourceError, SourceNotFoundError, UnsupportedAudioError
from zarr_aac.files.containers import index_stream
from zarr_aac.files.store import StoreByteSource, open_aac_file
from zarr_aac.files.stream import make_asc, parse_asc


def _index(path, track=None):
    return sync(index_stream(sync(StoreByteSource.from_path(path)), track))


def _ffprobe_packets(path: Path, stream: int = 0) -> np.ndarray:
    """(pos, size) of every packet of audio stream ``stream`` as ffprobe lists them."""
    ffprobe = require_tool("ffprobe")
    out = subprocess.run(
        [
            ffprobe,
            "-v",
            "error",
            "-select_streams",
            f"a:{stream}",
            "-show_entries",
            "packet=pos,size",
            "-of",
            "json",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return np.array([(int(p["pos"]), int(p["size"])) for p in json.loads(out)["packets"]], dtype=np.int64)


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    t = np.arange(44100 * 2) / 44100
    pcm = np.stack([0.3 * np.sin(2 * np.pi * 330 * t), 0.3 * np.sin(2 * np.pi * 550 * t)], axis=1)
    pcm += 0.02 * rng.standard_normal(pcm.shape)
    path = tmp_path_factory.mktemp("containers") / "in.wav"
    soundfile.write(path, pcm.astype(np.float32), 44100, subtype="PCM_16")
    return path


def test_adts_index_matches_ffprobe_packets(ffmpeg, wav):
    path = ffmpeg_aac(ffmpeg, wav, wav.with_name("x.aac"))
    index = _index(path)
    packets = _ffprobe_packets(path)
    assert index.container == "adts" and index.priming == 0
    header = 7
    np.testing.assert_array_equal(index.frame_offsets, packets[:, 0] + header)
    np.testing.assert_array_equal(index.frame_sizes, packets[:, 1] - header)
    assert index.n_samples == len(packets) * 1024
    assert (index.sample_rate, index.channels) == (44100, 2)


def test_mp4_index_matches_ffprobe_packets_and_edit_list(ffmpeg, wav):
    path = ffmpeg_aac(ffmpeg, wav, wav.with_name("x.m4a"))
    index = _index(path)
    packets = _ffprobe_packets(path)
    np.testing.assert_array_equal(index.frame_offsets, packets[:, 0])
    np.testing.assert_array_equal(index.frame_sizes, packets[:, 1])
    assert index.priming == 1024 and index.attributes["priming_from"] == "edit list"
    table = index.table
    assert table.shape == (len(packets), 3)
    np.testing.assert_array_equal(table[:, 2], np.arange(len(packets)) * 1024 - 1024)


def test_second_audio_track_is_chosen_by_number(ffmpeg, wav, tmp_path):
    mono = tmp_path / "mono.wav"
    soundfile.write(mono, soundfile.read(wav)[0][:, 0], 44100)
    path = tmp_path / "two.m4a"
    two_track_aac(ffmpeg, wav, mono, path)
    second = _index(path, track=1)
    np.testing.assert_array_equal(second.frame_offsets, _ffprobe_packets(path, 1)[:, 0])
    assert second.channels == 1 and second.attributes["audio_track"] == 1
    assert _index(path).channels == 2
    with pytest.raises(UnsupportedAudioError, match="track=2 but the file has 2 audio track"):
        _index(path, track=2)


@pytest.mark.parametrize(
    ("object_type", "name"), [(1, "AAC Main"), (5, r"HE-AAC \(SBR\)"), (29, r"HE-AACv2 \(PS\)"), (4, "AAC LTP")]
)
def test_profiles_other_than_lc_are_refused_by_name(object_type, name):
    with pytest.raises(UnsupportedAudioError, match=f"rec.m4a: the stream is {name}"):
        parse_asc(make_asc(object_type, 4, 2), "rec.m4a")
    assert parse_asc(make_asc(2, 3, 1), "rec.m4a").sample_rate == 48000


def test_adts_main_profile_file_is_refused(ffmpeg, wav, tmp_path):
    data = bytearray(ffmpeg_aac(ffmpeg, wav, tmp_path / "lc.aac").read_bytes())
    data[2] &= 0x3F  # profile bits 00: AAC Main
    path = tmp_path / "main.aac"
    path.write_bytes(bytes(data))
    with pytest.raises(UnsupportedAudioError, match=r"main\.aac.*AAC Main"):
        open_aac_file(path, index_path=False)


def test_adts_with_garbage_in_the_middle_names_the_offset(ffmpeg, wav, tmp_path):
    data = bytearray(ffmpeg_aac(ffmpeg, wav, tmp_path / "ok.aac").read_bytes())
    offset = int(_index(tmp_path / "ok.aac").frame_offsets[20]) - 7
    data[offset : offset + 2] = b"\x00\x00"
    path = tmp_path / "broken.aac"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptSourceError, match=f"broken.aac: lost ADTS sync at byte {offset}"):
        open_aac_file(path, index_path=False)


def test_truncated_adts_drops_the_partial_last_frame(ffmpeg, wav, tmp_path):
    """As FFmpeg does: it decodes the whole frames, then fails on the cut one."""
    data = ffmpeg_aac(ffmpeg, wav, tmp_path / "whole.aac").read_bytes()
    whole = _index(tmp_path / "whole.aac")
    path = tmp_path / "cut.aac"
    path.write_bytes(data[: int(whole.frame_offsets[-1]) + 5])
    array = open_aac_file(path, index_path=False, dtype="float32")
    assert array.shape[0] == (whole.n_frames - 1) * 1024
    assert array.attrs["source"]["truncated_tail_bytes"] == 12
    decoded = []
    with pytest.raises(av.FFmpegError), av.open(str(path)) as container:
        decoded.extend(frame.to_ndarray().T for frame in container.decode(audio=0))
    np.testing.assert_array_equal(array[:], np.concatenate(decoded))


def test_mp4_without_moov_is_reported_as_unfinished(ffmpeg, wav, tmp_path):
    data = ffmpeg_aac(ffmpeg, wav, tmp_path / "ok.m4a").read_bytes()
    path = tmp_path / "cut.m4a"
    path.write_bytes(data[: data.index(b"moov") - 4])
    with pytest.raises(CorruptSourceError, match=r"cut\.m4a: no moov box"):
        open_aac_file(path, index_path=False)


@pytest.mark.parametrize(
    ("box", "error", "named"),
    [
        ("mdhd", CorruptSourceError, "the audio track has no mdia/mdhd box"),
        ("mvhd", CorruptSourceError, "the moov box has no mvhd box"),
        ("stbl", UnsupportedAudioError, "audio track 0 has no mdia/minf/stbl/stsd box"),
    ],
)
def test_mp4_missing_a_required_box_names_it(ffmpeg, wav, tmp_path, box, error, named):
    """A box renamed to an unknown type is a box missing, the sizes still walk (issue 12 item 14)."""
    data = ffmpeg_aac(ffmpeg, wav, tmp_path / "ok.m4a").read_bytes()
    path = tmp_path / f"no_{box}.m4a"
    moov = data.index(b"moov")
    path.write_bytes(data[:moov] + data[moov:].replace(box.encode(), b"zzzz", 1))
    with pytest.raises(error, match=f"no_{box}.m4a: {named}"):
        open_aac_file(path, index_path=False)


def test_files_that_are_not_aac_are_refused_by_name(wav, data_dir):
    with pytest.raises(UnsupportedAudioError, match=r"in\.wav: neither an MP4/M4A file nor an ADTS AAC stream"):
        open_aac_file(wav, index_path=False)
    with pytest.raises(UnsupportedAudioError, match=r"crow_44k1\.flac"):
        open_aac_file(data_dir / "crow_44k1.flac", index_path=False)
    with pytest.raises(SourceNotFoundError, match=r"no such audio file: .*absent\.m4a"):
        open_aac_file(wav.with_name("absent.m4a"))


def test_frames_that_decode_unlike_their_config_are_refused(ffmpeg, wav, tmp_path):
    """The implicit-SBR guard: frames that decode at another rate or channel count than the
    ASC announces (as LC-signalled HE-AAC does, at twice the rate) are refused at open."""
    from zarr_aac.files.stream import AudioSpecificConfig, check_plain_lc

    path = ffmpeg_aac(ffmpeg, wav, tmp_path / "lc.aac")
    index = _index(path)
    data = path.read_bytes()
    frames = [data[o : o + n] for o, n in zip(index.frame_offsets[:3], index.frame_sizes[:3], strict=True)]
    check_plain_lc(index.asc, frames, AudioSpecificConfig(2, 44100, 2), "rec.aac")
    with pytest.raises(
        UnsupportedAudioError,
        match=r"rec.aac: frames decode to 1024 samples at 44100 Hz, not 1024 at 22050 Hz: HE-AAC \(implicit SBR\)",
    ):
        check_plain_lc(index.asc, frames, AudioSpecificConfig(2, 22050, 2), "rec.aac")
    with pytest.raises(UnsupportedAudioError, match="frames decode to 2 channels, the header says 1"):
        check_plain_lc(index.asc, frames, AudioSpecificConfig(2, 44100, 1), "rec.aac")
