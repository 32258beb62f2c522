"""Coverage-guided fuzzing of the chunk parser and decoder with atheris (``nox -s fuzz``).

Each input becomes a chunk: either raw, or a real chunk whose header fields, frame sizes and
frames are overwritten from the input with both checksums recomputed, so the fuzzer reaches
the checks and the FFmpeg decode behind them. Anything but a CorruptChunkError naming the
chunk, or samples of the array's shape and dtype (exact ones for an unchanged chunk), is a
finding; forged but consistent fields may shift samples (checksums guard against accidents).

    python tests/fuzz_atheris.py -atheris_runs=100000
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris
import numpy as np

with atheris.instrument_imports():
    from zarr_aac.codec.aac_codec import AACCodec
    from zarr_aac.codec.chunk_format import HEADER_NBYTES
    from zarr_aac.errors import CorruptChunkError

sys.path.insert(0, str(Path(__file__).parent))
from support.chunks import FIELDS, Chunk

KEY = "fuzz/c/0/0"
SHAPE = (4096, 2)
CODEC = AACCodec(sample_rate=48000, bitrate=128000)
_t = np.arange(SHAPE[0]) / 48000
PCM = (0.3 * np.sin(2 * np.pi * np.outer(_t, [440.0, 660.0])) * 32767).astype(np.int16)
ORIGINAL = CODEC.encode_pcm(PCM)
EXPECTED = CODEC.decode_chunk(ORIGINAL, SHAPE, np.dtype("int16"), KEY)
_WIDTHS = {
    "magic": 0,
    "version": 1,
    "flags": 1,
    "channels": 1,
    "asc_nbytes": 1,
    "aac_sample_rate": 4,
    "n_frames": 4,
    "n_samples": 8,
    "skip": 4,
    "frame_length": 4,
    "payload_nbytes": 8,
    "checksum_group": 4,
}


def forged(fdp: atheris.FuzzedDataProvider) -> bytes:
    chunk = Chunk.parse(ORIGINAL)
    overrides = {}
    for name in FIELDS:
        width = _WIDTHS.get(name, 0)
        if width and fdp.ConsumeBool():
            overrides[name] = fdp.ConsumeInt(width * 8) % (1 << (width * 8))
    sizes = chunk.sizes.astype(np.int64)
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        sizes[fdp.ConsumeIntInRange(0, sizes.size - 1)] = fdp.ConsumeIntInRange(0, 65535)
    payload = bytearray(chunk.payload)
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        payload[fdp.ConsumeIntInRange(0, len(payload) - 1)] = fdp.ConsumeIntInRange(0, 255)
    cut = fdp.ConsumeIntInRange(0, len(payload)) if fdp.ConsumeBool() else len(payload)
    return Chunk(chunk.fields, chunk.asc, sizes, chunk.checksums, bytes(payload[:cut])).pack(**overrides)


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    chunk = forged(fdp) if fdp.ConsumeBool() else fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4 * HEADER_NBYTES))
    try:
        pcm = CODEC.decode_chunk(chunk, SHAPE, np.dtype("int16"), KEY)
    except CorruptChunkError as exc:
        if exc.key != KEY:
            raise AssertionError(f"error does not name the chunk: {exc}") from exc
        return
    if pcm.shape != SHAPE or pcm.dtype != np.int16:
        raise AssertionError(f"decoded {pcm.shape} {pcm.dtype}, the array expects {SHAPE} int16")
    if chunk == ORIGINAL and not np.array_equal(pcm, EXPECTED):
        raise AssertionError("the unchanged chunk decoded to other samples")


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
