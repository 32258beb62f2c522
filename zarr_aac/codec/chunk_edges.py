"""Signal extensions around a chunk, so the encoder never starts or stops on a discontinuity.

Each chunk is encoded on its own. Starting the encoder on silence, or on a mirrored copy of
the chunk's first samples, makes a transient at the edge that costs several dB near it, and
FFmpeg's rate control takes many frames to recover from it. A linear-prediction continuation,
faded to silence away from the edge, looks to the encoder like the signal simply went on
(docs/design-notes.md has the measurement).
"""

from __future__ import annotations

import numpy as np

LPC_ORDER = 32
FIT_SAMPLES = 4096


def _predictor(segment: np.ndarray, order: int) -> np.ndarray | None:
    """Forward-prediction coefficients (autocorrelation method), newest sample first."""
    autocorr = np.correlate(segment, segment, "full")[len(segment) - 1 : len(segment) + order]
    if autocorr[0] <= 0:
        return None
    autocorr[0] *= 1.0 + 1e-6
    toeplitz = autocorr[np.abs(np.subtract.outer(np.arange(order), np.arange(order)))]
    return np.linalg.solve(toeplitz, autocorr[1 : order + 1])


def continue_signal(history: np.ndarray, count: int) -> np.ndarray:
    """``count`` samples that continue ``history`` (shape (n, channels), oldest first), fading out."""
    channels = history.shape[1]
    out = np.zeros((count, channels), dtype=np.float64)
    if count == 0:
        return out.astype(np.float32)
    segment = history[-FIT_SAMPLES:].astype(np.float64)
    order = min(LPC_ORDER, len(segment) - 1)
    if order >= 1:
        coeffs = np.zeros((order, channels))
        for c in range(channels):
            predictor = _predictor(segment[:, c], order)
            if predictor is not None:
                coeffs[:, c] = predictor
        recent = np.zeros((order + count, channels))
        recent[:order] = segment[-order:]
        for t in range(count):
            recent[order + t] = np.einsum("kc,kc->c", coeffs, recent[t : t + order][::-1])
        peak = np.abs(segment).max(axis=0)
        out = np.clip(recent[order:], -peak, peak)
    elif len(segment):
        out[:] = segment[-1]
    fade = np.cos(np.linspace(0.0, np.pi / 2, count)) ** 2
    return (out * fade[:, None]).astype(np.float32)


def lead_in(first: np.ndarray, count: int) -> np.ndarray:
    """``count`` samples to encode before a chunk, predicted backwards from its first samples
    (its first ``FIT_SAMPLES`` are all that is used), fading to silence away from the chunk."""
    return continue_signal(first[::-1], count)[::-1]


def lead_out(last: np.ndarray, count: int) -> np.ndarray:
    """``count`` samples to encode after a chunk, predicted from its last ``FIT_SAMPLES`` samples."""
    return continue_signal(last, count)
