"""What ``AACCodec._decode_partial_single`` accepts from zarr: a tuple per chunk; anything else is
refused by name rather than read as something it is not."""

from __future__ import annotations

import asyncio

import pytest

import zarr_aac


@pytest.mark.parametrize(("selection", "name"), [(slice(0, 10), "slice"), ([1, 2], "list"), (3, "int")])
def test_a_selection_that_is_not_a_tuple_is_refused_by_its_type(selection, name):
    codec = zarr_aac.AACCodec(sample_rate=48_000)
    with pytest.raises(TypeError) as caught:
        asyncio.run(codec._decode_partial_single(None, selection, None))
    assert str(caught.value) == f"zarr_aac reads chunk selections given as tuples, zarr gave {name}"
