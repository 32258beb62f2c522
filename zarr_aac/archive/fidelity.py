"""What an import lost: the stored signal compared with the source, block by block as it is written.

The report is stored in each recording's ``fidelity`` attribute (docs/importing.md) and printed
by ``zarr-aac info`` and ``zarr-aac quality``. Spectra are taken over Hann-windowed blocks of
BLOCK_LENGTH samples, which keeps its cost to a small part of the encoding's (docs/fidelity.md).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from zarr_aac.archive.import_options import ImportOptions
from zarr_aac.archive.recordings import PathLike
from zarr_aac.codec import aac, decode_pool
from zarr_aac.codec.aac_codec import AACCodec
from zarr_aac.errors import SourceError

BLOCK_LENGTH = 4096
SPECTRUM_EVERY = 2
"""Spectra (per-band SNR, coded bandwidth) are taken over every second block: half the cost of
all of them, for an estimate of stationary bands within a few tenths of a dB. Overall SNR, peaks
and clipping count every sample."""
FIRST_BAND_EDGE_HZ = 250.0
"""Per-band SNR is reported in octaves from this edge up (and one band below it)."""
EMPTY_BAND_DB = 60.0
"""A band this far below the loudest band of the source holds no content worth a bandwidth verdict."""
BANDWIDTH_DROP_DB = 3.0
"""The coded bandwidth ends at the first band whose stored power falls this far below the source's."""
BANDWIDTH_SEARCH_FROM_HZ = 1000.0


def _power(spectrum: np.ndarray) -> np.ndarray:
    """|spectrum|**2 without the square root ``abs`` takes."""
    return np.square(spectrum.real) + np.square(spectrum.imag)


def _db(ratio: float) -> float | None:
    """``10 log10(ratio)`` rounded to 0.1 dB; None where it is undefined or infinite (JSON holds neither)."""
    if not ratio > 0 or not math.isfinite(ratio):
        return None
    return round(10 * math.log10(ratio), 1)


class FidelityReport:
    """Accumulates source and stored samples of one recording and reports what the coding changed.

    Parameters
    ----------
    sample_rate : int
        The recording's true rate, in Hz.
    channels : int
        Its channel count.
    clip_level : float
        The magnitude above which a source sample cannot be stored: 1.0 for int16 (the array's
        range), 1 / gain for float32 (where the encoder saturates).
    """

    def __init__(self, sample_rate: int, channels: int, clip_level: float) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.clip_level = clip_level
        self.samples = 0
        """Samples compared with what was stored."""
        self.samples_seen = 0
        """Samples of the source accounted for, compared or not (peaks and clipped samples)."""
        self.source_energy = 0.0
        self.error_energy = 0.0
        self.source_peak = 0.0
        self.stored_peak = 0.0
        self.clipped = 0
        self.spectrum_blocks = 0
        self.window = np.hanning(BLOCK_LENGTH).astype(np.float32)
        bins = BLOCK_LENGTH // 2 + 1
        self.source_spectrum = np.zeros(bins)
        self.stored_spectrum = np.zeros(bins)
        self.error_spectrum = np.zeros(bins)

    def add(self, source: np.ndarray, stored: np.ndarray) -> None:
        """Account for the next samples: ``source`` as decoded from the file and ``stored`` as read
        back from the array, both float32 of shape (n, channels) in full-scale units."""
        source_flat, stored_flat = source.ravel(), stored.ravel()
        error = stored_flat - source_flat
        self.samples += source.shape[0]
        self.source_energy += float(np.dot(source_flat, source_flat))
        self.error_energy += float(np.dot(error, error))
        self.note_source(source)
        if stored.size:
            self.stored_peak = max(self.stored_peak, float(stored.max()), -float(stored.min()))
        whole = source.shape[0] // BLOCK_LENGTH * BLOCK_LENGTH
        if not whole:
            return
        # One row a block and channel, contiguous in time: numpy transforms a 2-d array several
        # times faster than the same rows in 3-d. The error's spectrum is the difference of the
        # two, so two transforms suffice.
        source_spectrum = np.fft.rfft(self._blocks(source[:whole]), axis=-1)
        stored_spectrum = np.fft.rfft(self._blocks(stored[:whole]), axis=-1)
        self.spectrum_blocks += -(-whole // BLOCK_LENGTH // SPECTRUM_EVERY)
        for total, spectrum in (
            (self.source_spectrum, source_spectrum),
            (self.stored_spectrum, stored_spectrum),
            (self.error_spectrum, stored_spectrum - source_spectrum),
        ):
            np.add(total, _power(spectrum).sum(axis=0), out=total)

    def note_source(self, source: np.ndarray) -> None:
        """Account for source samples in the peak and clipped counts only (not compared)."""
        self.samples_seen += source.shape[0]
        if source.size:
            self.source_peak = max(self.source_peak, float(source.max()), -float(source.min()))
            self.clipped += int(np.count_nonzero((source > self.clip_level) | (source < -self.clip_level)))

    def _blocks(self, pcm: np.ndarray) -> np.ndarray:
        """Hann-windowed (blocks x channels, BLOCK_LENGTH) float32 copy of every SPECTRUM_EVERY-th block of ``pcm``."""
        by_channel = pcm.reshape(-1, BLOCK_LENGTH, pcm.shape[1])[::SPECTRUM_EVERY].transpose(0, 2, 1)
        return (by_channel * self.window).reshape(-1, BLOCK_LENGTH)

    def band_edges(self) -> list[float]:
        """Edges of the per-band SNR: 0, FIRST_BAND_EDGE_HZ and octaves above it, the Nyquist frequency."""
        nyquist = self.sample_rate / 2
        edges = [0.0]
        edge = FIRST_BAND_EDGE_HZ
        while edge < nyquist:
            edges.append(edge)
            edge *= 2
        return [*edges, nyquist]

    def coded_bandwidth(self) -> float:
        """The highest frequency (Hz) up to which every twelfth-octave band holding source content
        keeps its power within BANDWIDTH_DROP_DB; the Nyquist frequency if all do."""
        freqs = np.fft.rfftfreq(BLOCK_LENGTH, 1 / self.sample_rate)
        nyquist = self.sample_rate / 2
        low = min(BANDWIDTH_SEARCH_FROM_HZ, nyquist / 4)
        edges = low * 2 ** (np.arange(0, 12 * math.log2(nyquist / low) + 1) / 12)
        bands = list(itertools.pairwise(edges))
        bin_of = np.searchsorted(freqs, [e for band in bands for e in band]).reshape(-1, 2)
        source = np.array([self.source_spectrum[i:j].sum() for i, j in bin_of])
        stored = np.array([self.stored_spectrum[i:j].sum() for i, j in bin_of])
        occupied = source > source.max(initial=0.0) * 10 ** (-EMPTY_BAND_DB / 10)
        for (bottom, _), src, out, full in zip(bands, source, stored, occupied, strict=True):
            if full and out < src * 10 ** (-BANDWIDTH_DROP_DB / 10):
                return round(float(bottom))
        return nyquist

    def result(self, stored_nbytes: int) -> dict[str, Any]:
        """The report as JSON-ready values (dB rounded to 0.1; None where undefined, as the SNR of silence).

        Parameters
        ----------
        stored_nbytes : int
            Bytes the recording takes in the store, for its size as a percentage of 16-bit PCM.
        """
        freqs = np.fft.rfftfreq(BLOCK_LENGTH, 1 / self.sample_rate)
        edges = self.band_edges()
        # A block's power sums to BLOCK_LENGTH x sum(window**2) x its mean square: normalise to dBFS.
        scale = BLOCK_LENGTH * float(np.sum(self.window**2)) * max(self.spectrum_blocks, 1) * self.channels
        bands = []
        for low, high in itertools.pairwise(edges):
            in_band = (freqs >= low) & (freqs < high) if high < edges[-1] else freqs >= low
            source = float(self.source_spectrum[in_band].sum())
            error = float(self.error_spectrum[in_band].sum())
            bands.append(
                {
                    "low_hz": low,
                    "high_hz": high,
                    "level_dbfs": _db(2 * source / scale),
                    "snr_db": _db(source / error) if error > 0 else None,
                }
            )
        pcm16_nbytes = self.samples * self.channels * 2
        return {
            "snr_db": _db(self.source_energy / self.error_energy) if self.error_energy > 0 else None,
            "bands": bands,
            "bandwidth_hz": self.coded_bandwidth(),
            "nyquist_hz": self.sample_rate / 2,
            "input_peak_dbfs": _db(self.source_peak**2),
            "output_peak_dbfs": _db(self.stored_peak**2),
            "clipped_samples": self.clipped,
            "compared_fraction": round(self.samples / self.samples_seen, 3) if self.samples_seen else None,
            "size_pct_pcm16": round(100 * stored_nbytes / pcm16_nbytes, 1) if pcm16_nbytes else None,
        }


def summary(report: dict[str, Any]) -> str:
    """One line: overall SNR, coded bandwidth, peaks, clipped samples and size."""

    def db(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    return (
        f"SNR {db(report['snr_db'])} dB, bandwidth {report['bandwidth_hz'] / 1000:.1f} kHz "
        f"of {report['nyquist_hz'] / 1000:.1f}, peak {db(report['input_peak_dbfs'])} dBFS in / "
        f"{db(report['output_peak_dbfs'])} out, {report['clipped_samples']} clipped samples, "
        f"{db(report['size_pct_pcm16'])} % of 16-bit PCM"
    )


def band_summary(report: dict[str, Any]) -> str:
    """One line: each band's SNR and (in brackets) its source level."""

    def khz(hz: float) -> str:
        return f"{hz / 1000:g}"

    def db(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    return ", ".join(
        f"{khz(b['low_hz'])}-{khz(b['high_hz'])} kHz {db(b['snr_db'])} dB ({db(b['level_dbfs'])} dBFS)"
        for b in report["bands"]
    )


def acoustic_indices(pcm: np.ndarray, sample_rate: int) -> dict[str, float]:
    """scikit-maad's ACI, ADI, AEI, BI, NDSI, temporal (Ht) and spectral (Hf) entropy of ``pcm``
    (channels averaged to mono), with the settings of docs/fidelity.md.

    Raises
    ------
    ModuleNotFoundError
        If scikit-maad is not installed (``pip install zarr-aac[indices]``).
    """
    try:
        from maad import features, sound
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "acoustic indices need scikit-maad: pip install 'zarr-aac[indices]'", name=exc.name
        ) from exc
    x = np.asarray(pcm, np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    nyquist = sample_rate / 2
    amplitude, _, fn, _ = sound.spectrogram(x, sample_rate, nperseg=512, mode="amplitude")
    psd, _, _, _ = sound.spectrogram(x, sample_rate, nperseg=512, mode="psd")
    fmax = min(20000, nyquist)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "ACI": float(features.acoustic_complexity_index(amplitude)[2]),
            "ADI": float(features.acoustic_diversity_index(amplitude, fn, fmin=0, fmax=fmax)),
            "AEI": float(features.acoustic_eveness_index(amplitude, fn, fmin=0, fmax=fmax)),
            "BI": float(features.bioacoustics_index(amplitude, fn, flim=(2000, min(15000, nyquist)))),
            "NDSI": float(
                features.soundscape_index(
                    psd, fn, flim_bioPh=(1000, min(10000, nyquist)), flim_antroPh=(0, min(1000, nyquist))
                )[0]
            ),
            "Ht": float(features.temporal_entropy(x)),
            "Hf": float(features.frequency_entropy(psd)[0]),
        }


@dataclass(frozen=True)
class QualityPreview:
    """What an import of ``seconds`` of a source at ``bitrate`` would store (see ``preview``)."""

    bitrate: int
    is_default: bool
    report: dict[str, Any]
    index_changes: dict[str, float] | None
    """Percentage change of each acoustic index, None without scikit-maad."""


def preview(
    source: PathLike, bitrates: Sequence[int | None], options: ImportOptions | None = None, seconds: float = 60.0
) -> tuple[dict[str, Any], list[QualityPreview]]:
    """Encode and decode the first ``seconds`` of ``source`` as an import with ``options`` would, at
    each of ``bitrates`` (None: the import's default), and report what each loses; nothing is written.
    The gain is the import's, picked from the peak of the whole source (one decode of it all).

    Returns
    -------
    layout : dict
        The source's rate, channels, dtype, declared AAC rate and default bitrate, and the seconds measured.
    previews : list of QualityPreview
        One per bitrate, in order.

    Raises
    ------
    SourceError
        If FFmpeg cannot read ``source`` or it holds no audio.
    """
    from zarr_aac.archive import importer

    path = Path(source)
    options = options or ImportOptions(progress=False)
    with importer._open_source(path) as container:
        audio = importer._pick_stream(container, options.stream, path)
        importer._check_stream_declares_format(audio, path)
        layout = importer._RecordingLayout.of(audio, None, options, importer.source_peak(path, audio.index))
        wanted = int(seconds * layout.sample_rate)
        blocks = importer._decoded_blocks(
            container, audio, path, importer._DecodeEnd(), salvage=options.allow_truncated
        )
        head, _ = importer._peek(blocks, wanted)
    if not head:
        raise SourceError(path, "it holds no audio samples")
    pcm = np.concatenate(head)[:wanted]
    if pcm.shape[0] < wanted:
        # the whole source: the import gives it a chunk of its own length in whole frames
        frames_long = -(-pcm.shape[0] // aac.FRAME_LENGTH) * aac.FRAME_LENGTH
        layout = replace(layout, chunk_length=min(layout.chunk_length, frames_long))
    layout = layout.for_content(pcm[: int(importer.NEAR_MONO_PROBE_SECONDS * layout.sample_rate)], options)
    source_indices = _indices_or_none(pcm, layout.sample_rate)
    previews = []
    for bitrate in bitrates:
        chosen = replace(layout, bitrate=bitrate) if bitrate is not None else layout
        report, stored = _roundtrip(pcm, chosen)
        changes = None
        if source_indices is not None:
            stored_indices = acoustic_indices(stored, layout.sample_rate)
            changes = {k: 100 * (stored_indices[k] - v) / abs(v) if v else 0.0 for k, v in source_indices.items()}
        previews.append(QualityPreview(chosen.bitrate, bitrate is None, report, changes))
    description = {
        "sample_rate": layout.sample_rate,
        "channels": layout.channels,
        "dtype": layout.dtype.name,
        "aac_sample_rate": layout.aac_sample_rate,
        "default_bitrate": layout.bitrate,
        "seconds": pcm.shape[0] / layout.sample_rate,
    }
    return description, previews


def _indices_or_none(pcm: np.ndarray, sample_rate: int) -> dict[str, float] | None:
    try:
        return acoustic_indices(pcm, sample_rate)
    except ModuleNotFoundError as exc:
        if exc.name != "maad":
            raise
        return None


def _roundtrip(pcm: np.ndarray, layout: Any) -> tuple[dict[str, Any], np.ndarray]:
    """The report of ``pcm`` stored chunk by chunk with ``layout``, and the stored samples (float32).

    The last chunk is padded with zeros to the chunk length, as zarr pads an array's edge chunk,
    so the result is the import's sample for sample.
    """
    codec = AACCodec(
        sample_rate=layout.sample_rate,
        aac_sample_rate=layout.aac_sample_rate,
        bitrate=layout.bitrate,
        gain=layout.gain,
    )
    report = FidelityReport(layout.sample_rate, layout.channels, clip_level_for(layout.dtype, layout.gain))
    stored = np.empty_like(pcm)
    nbytes = 0
    for start in range(0, pcm.shape[0], layout.chunk_length):
        for first in range(0, layout.channels, layout.chunk_channels):
            block = pcm[start : start + layout.chunk_length, first : first + layout.chunk_channels]
            padded = np.zeros((layout.chunk_length, block.shape[1]), np.float32)
            padded[: block.shape[0]] = block
            samples = aac.to_dtype(padded, layout.dtype)
            data = codec.encode_pcm(samples)
            nbytes += len(data)
            decoded = codec.decode_chunk(data, samples.shape, layout.dtype)[: block.shape[0]]
            stored[start : start + block.shape[0], first : first + block.shape[1]] = aac.from_dtype(decoded)
    report.add(pcm, stored)
    return report.result(nbytes), stored


def clip_level_for(dtype: np.dtype, gain: float) -> float:
    """The magnitude above which a sample cannot be stored: int16's range, or where the encoder
    saturates for float32 (full scale divided by the gain)."""
    return 1.0 if dtype == np.int16 else 1 / gain


COMPARED_BYTES_PER_CHUNK = 8 * 2**20
"""Source samples of each chunk compared with what the array reads back, in bytes of float32, at most."""
STRETCH_SAMPLES = 16 * BLOCK_LENGTH
"""Samples read back and compared at a time."""
STRETCHES_PER_READ = 4
"""Stretches of a chunk read back in one request: fewer requests than one a stretch (an object
store's cost is per request), and a bounded read whatever the chunk holds."""


class ReadBackComparison:
    """Feeds a :class:`FidelityReport` while a recording is written chunk by chunk.

    The importer hands over each decoded block with its position. The first
    ``COMPARED_BYTES_PER_CHUNK`` of every chunk (all of a chunk of 60 s of stereo at 48 kHz or
    less) are kept until the array has grown over them, then read back and compared in
    stretches; the rest of the chunk counts towards the peaks and clipped samples only. What is
    held is bounded whatever the chunk size, and which samples are compared depends only on
    their position, so the report does not depend on timing.

    Parameters
    ----------
    array : zarr.Array
        The recording being written, of shape (samples, channels): its chunking.
    report : FidelityReport
        The report to add the samples to.
    """

    def __init__(self, array: zarr.Array, report: FidelityReport) -> None:
        self._report = report
        self._chunk_length = array.chunks[0]
        frame_bytes = 4 * report.channels
        self._compared_per_chunk = min(self._chunk_length, max(BLOCK_LENGTH, COMPARED_BYTES_PER_CHUNK // frame_bytes))
        self._held: deque[tuple[int, np.ndarray]] = deque()

    def hold(self, block: np.ndarray, start: int) -> None:
        """Take float32 ``block``, written at row ``start``: keep what is to be compared."""
        position, end = start, start + block.shape[0]
        while position < end:
            chunk_start = position - position % self._chunk_length
            compared_end = chunk_start + self._compared_per_chunk
            stop = min(end, compared_end if position < compared_end else chunk_start + self._chunk_length)
            piece = block[position - start : stop - start]
            if position < compared_end:
                self._held.append((position, piece))
            else:
                self._report.note_source(piece)
            position = stop

    def compare_stored(self, array: zarr.Array) -> None:
        """Read back from ``array`` (the recording as stored so far: it grows as chunks are
        stored) and compare the held samples it now holds, in contiguous stretches;
        ``STRETCHES_PER_READ`` stretches of one chunk are read back in one request."""
        stored = array.shape[0]
        stretches: list[tuple[int, np.ndarray]] = []
        while self._held and self._held[0][0] + self._held[0][1].shape[0] <= stored:
            start, first = self._held.popleft()
            pieces, length = [first], first.shape[0]
            while (
                self._held
                and length < STRETCH_SAMPLES
                and self._held[0][0] == start + length
                and self._held[0][0] + self._held[0][1].shape[0] <= stored
            ):
                pieces.append(self._held.popleft()[1])
                length += pieces[-1].shape[0]
            stretches.append((start, np.concatenate(pieces) if len(pieces) > 1 else first))
        for _, in_chunk in itertools.groupby(stretches, key=lambda stretch: stretch[0] // self._chunk_length):
            in_chunk_list = list(in_chunk)
            for offset in range(0, len(in_chunk_list), STRETCHES_PER_READ):
                self._compare_run(array, in_chunk_list[offset : offset + STRETCHES_PER_READ])

    def _compare_run(self, array: zarr.Array, run: list[tuple[int, np.ndarray]]) -> None:
        """Compare consecutive stretches of one chunk with what one read of the array gives back."""
        first_row, last_row = run[0][0], run[-1][0] + run[-1][1].shape[0]
        # Decoded here, not by the decode pool: the encoder is busy on the cores, and an import
        # worker process would start a pool of its own for this alone.
        with zarr.config.set({decode_pool.CONFIG_KEY: 0}):
            read_back = aac.from_dtype(np.asarray(array[first_row:last_row]))
        for start, source in run:
            self._report.add(source, read_back[start - first_row : start - first_row + source.shape[0]])
