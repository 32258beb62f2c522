"""A chunk shorter than the samples its lead-out is predicted from (``FIT_SAMPLES``) is encoded
from its own samples alone: nothing the encoder keeps for the lead-out starts out uninitialised.

``numpy.empty`` is poisoned while the chunk is encoded (every array it makes filled with NaN, or
with a large finite value), as a debugging allocator poisons fresh memory: the chunk's bytes must
be those of an encode without the poison, and decode to the source's samples within AAC's error
(more than 12 dB below the signal for this tone with noise).
"""

from __future__ import annotations

import numpy as np
import pytest
from support.chunks import decode_chunk_sequentially
from support.signals import tone_with_noise

from zarr_aac import AACCodec
from zarr_aac.codec.chunk_edges import FIT_SAMPLES

RATE = 48_000


def poisoned_empty(value: float):
    """``numpy.empty`` whose arrays are filled with ``value`` (the integer ones with -1)."""
    empty = np.empty

    def poisoned(*args, **kwargs):
        out = empty(*args, **kwargs)
        out.fill(value if out.dtype.kind in "fc" else -1)
        return out

    return poisoned


@pytest.mark.parametrize("length", [40, 1500, FIT_SAMPLES - 1])
@pytest.mark.parametrize("channels", [1, 2])
def test_a_chunk_shorter_than_the_lead_out_fit_is_encoded_from_its_samples_alone(monkeypatch, length, channels):
    pcm = (tone_with_noise(length, channels, RATE, seed=31) * 0.5).astype(np.float32)
    codec = AACCodec(sample_rate=RATE, gain=1.0)
    """Gain 1 with float32 samples: the chunk's decoded floats are the samples themselves."""
    clean = codec.encode_pcm(pcm)
    for value in (np.nan, 1e6):
        with monkeypatch.context() as patch:
            patch.setattr(np, "empty", poisoned_empty(value))
            poisoned = codec.encode_pcm(pcm)
        assert poisoned == clean, f"the chunk depends on uninitialised memory (poisoned with {value})"
    decoded = decode_chunk_sequentially(clean)
    assert decoded.shape == (length, channels)
    assert np.sqrt(np.mean((decoded - pcm) ** 2)) < 0.25 * np.sqrt(np.mean(pcm**2))
