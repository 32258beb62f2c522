"""The keys of the codec's configuration (``parse_configuration_keys`` through ``AACCodec.from_dict``):
a key this version does not know and a missing sample rate are refused with the whole message a
user acts on (which keys, which keys this version knows, what to install), in memory and when
zarr opens an array whose zarr.json carries them. Written for the mutants of both functions
(docs/claims.md, "Mutation testing").
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import zarr
from support.arrays import aac_array

from zarr_aac.codec.aac_codec import CONFIGURATION_KEYS, AACCodec, parse_configuration_keys

UNKNOWN_WINDOW_AND_BITRAT = (
    "zarr_aac codec configuration has unknown key(s) 'bitrat', 'window'; this zarr-aac knows "
    "sample_rate, aac_sample_rate, bitrate, gain, cutoff, all_chunks_stored. An array written by a "
    "newer zarr-aac needs that version (pip install -U zarr-aac)"
)
NO_SAMPLE_RATE = "zarr_aac codec configuration has no 'sample_rate': the array's metadata is incomplete"


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def test_the_known_keys_are_the_ones_to_dict_writes():
    full = AACCodec(sample_rate=48000, bitrate=96000, gain=0.5, cutoff=16000, all_chunks_stored=True)
    assert set(full.to_dict()["configuration"]) == set(CONFIGURATION_KEYS)
    assert parse_configuration_keys(full.to_dict()["configuration"]) == full.to_dict()["configuration"]


def test_unknown_keys_are_named_sorted_with_the_known_ones_and_the_upgrade():
    configuration = {"sample_rate": 48000, "window": 1, "bitrat": 96000}
    with pytest.raises(ValueError, match=exactly(UNKNOWN_WINDOW_AND_BITRAT)):
        parse_configuration_keys(configuration)
    with pytest.raises(ValueError, match=exactly(UNKNOWN_WINDOW_AND_BITRAT)):
        AACCodec.from_dict({"name": "zarr_aac", "configuration": configuration})


def test_unknown_keys_are_refused_before_a_missing_sample_rate():
    with pytest.raises(ValueError, match=r"unknown key\(s\) 'window';"):
        parse_configuration_keys({"window": 1})


def test_a_missing_sample_rate_is_named():
    with pytest.raises(ValueError, match=exactly(NO_SAMPLE_RATE)):
        parse_configuration_keys({"bitrate": 96000})
    with pytest.raises(ValueError, match=exactly(NO_SAMPLE_RATE)):
        AACCodec.from_dict({"name": "zarr_aac", "configuration": {"bitrate": 96000}})
    with pytest.raises(ValueError, match=exactly(NO_SAMPLE_RATE)):
        AACCodec.from_dict({"name": "zarr_aac", "configuration": {}})


def edit_codec_configuration(path, **changes) -> None:
    metadata = json.loads((path / "zarr.json").read_text())
    metadata["codecs"][0]["configuration"].update(changes)
    (path / "zarr.json").write_text(json.dumps(metadata))


@pytest.fixture
def stored_array(tmp_path):
    path = tmp_path / "a.zarr"
    aac_array((4800, 1), (4800, 1), 48000, store=str(path))[:] = np.zeros((4800, 1), dtype="int16")
    return path


def test_opening_an_array_from_a_newer_zarr_aac_names_its_keys(stored_array):
    edit_codec_configuration(stored_array, window=1, bitrat=96000)
    with pytest.raises(ValueError, match=exactly(UNKNOWN_WINDOW_AND_BITRAT)):
        zarr.open_array(str(stored_array))


def test_opening_an_array_without_a_sample_rate_says_so(stored_array):
    metadata = json.loads((stored_array / "zarr.json").read_text())
    del metadata["codecs"][0]["configuration"]["sample_rate"]
    (stored_array / "zarr.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match=exactly(NO_SAMPLE_RATE)):
        zarr.open_array(str(stored_array))
