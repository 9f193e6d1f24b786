"""Pure spectral functions: arrays in, arrays out, librosa-compatible definitions and defaults.

Shapes follow librosa: frequency on the first axis, frames on the last, except
`stft_power_frames`, which returns (frames, bins) because streaming code appends frames.
"""
from __future__ import annotations

import functools

import numpy as np

# Slaney's mel scale (librosa htk=False): linear below 1 kHz, logarithmic above.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_BREAK_HZ = 1_000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL  # 15 mel
_SLANEY_LOG_STEP = np.log(6.4) / 27.0  # 27 log-spaced mels per factor of 6.4 in Hz


def hz_to_mel(frequencies_hz: np.ndarray) -> np.ndarray:
    """Hz -> Slaney mel."""
    f = np.asarray(frequencies_hz, dtype=np.float64)
    linear = f / _SLANEY_HZ_PER_MEL
    with np.errstate(divide="ignore"):
        logarithmic = _SLANEY_BREAK_MEL + np.log(np.maximum(f, 1e-300) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
    return np.where(f >= _SLANEY_BREAK_HZ, logarithmic, linear)


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Slaney mel -> Hz (inverse of hz_to_mel)."""
    m = np.asarray(mels, dtype=np.float64)
    linear = m * _SLANEY_HZ_PER_MEL
    logarithmic = _SLANEY_BREAK_HZ * np.exp(_SLANEY_LOG_STEP * (m - _SLANEY_BREAK_MEL))
    return np.where(m >= _SLANEY_BREAK_MEL, logarithmic, linear)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int = 128, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Triangular mel filters, shape (n_mels, 1 + n_fft // 2), float32.

    Slaney mel scale and Slaney area normalisation (each triangle has unit area in Hz·2/width),
    which is librosa.filters.mel's default, so a flat spectrum gives similar values in every band.
    """
    if fmax is None:
        fmax = sample_rate / 2.0
    bin_hz = np.linspace(0.0, sample_rate / 2.0, 1 + n_fft // 2)
    # n_mels + 2 edges: filter i rises from edge i to its peak at i+1 and falls to i+2.
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths_hz = np.diff(edges_hz)
    distance = edges_hz[:, None] - bin_hz[None, :]  # (n_mels + 2, bins)
    rising = -distance[:-2] / widths_hz[:-1, None]
    falling = distance[2:] / widths_hz[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.astype(np.float32)


def power_to_db(
    power: np.ndarray, ref: float = 1.0, amin: float = 1e-10, top_db: float | None = 80.0
) -> np.ndarray:
    """10·log10(power / ref) in dB, floored at `amin`; with `top_db`, clipped to top_db below the
    array's maximum (global over the whole array, as librosa does: streaming code passes None)."""
    power = np.asarray(power)
    db = 10.0 * np.log10(np.maximum(amin, power))
    db -= 10.0 * np.log10(max(amin, ref))
    if top_db is not None:
        if top_db < 0:
            raise ValueError("top_db must be non-negative")
        db = np.maximum(db, db.max() - top_db)
    return db


@functools.lru_cache(maxsize=8)
def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window (scipy get_window('hann', n, fftbins=True)), float32, read-only."""
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    window.setflags(write=False)
    return window


def frame_signal(samples: np.ndarray, frame_length: int, hop: int) -> np.ndarray:
    """(frames, frame_length) read-only view, no centering or padding: frame t starts at t·hop."""
    samples = np.asarray(samples)
    if samples.shape[-1] < frame_length:
        return np.empty((0, frame_length), dtype=samples.dtype)
    return np.lib.stride_tricks.sliding_window_view(samples, frame_length)[::hop]


def stft_power_frames(
    samples: np.ndarray, n_fft: int = 1_024, hop: int = 512, window: np.ndarray | None = None
) -> np.ndarray:
    """|rFFT|² of windowed frames, shape (frames, 1 + n_fft // 2), float32.

    Matches np.abs(librosa.stft(y, n_fft, hop, center=False)) ** 2 transposed.
    """
    if window is None:
        window = hann_window(n_fft)
    frames = frame_signal(np.asarray(samples, dtype=np.float32), n_fft, hop)
    spectrum = np.fft.rfft(frames * window, axis=-1)
    return (spectrum.real**2 + spectrum.imag**2).astype(np.float32, copy=False)


def onset_strength_frame(prev_logmel: np.ndarray, logmel: np.ndarray) -> np.ndarray:
    """Spectral flux: mean over mel bins (axis 0) of max(0, logmel - prev_logmel).

    librosa.onset.onset_strength with lag=1, max_size=1, aggregate=np.mean on a log-mel input.
    Works on one frame (n_mels,) -> scalar array, or on (n_mels, frames) -> (frames,).
    """
    rise = np.asarray(logmel) - np.asarray(prev_logmel)
    return np.mean(np.maximum(rise, 0.0), axis=0)


def section_edges(n_bins: int, sections: int) -> np.ndarray:
    """Bin indices splitting bins 1..n_bins-1 (DC left out) into equal-width sections."""
    return np.linspace(1, n_bins, sections + 1).round().astype(int)


def fft_section_softmax(
    power_spectrum: np.ndarray, sections: int = 8, temperature: float = 1.0
) -> np.ndarray:
    """softmax(section energy / temperature) over `sections` equal-width slices of the spectrum.

    Section energy is log10 of the section's mean power (bels), not raw power: raw power spans
    many orders of magnitude, so its softmax would be one-hot whatever the temperature; in bels
    temperature 1 lets a 10 dB louder section weigh e≈2.7 times more. Input (bins,) or
    (..., bins); output (sections,) or (..., sections), summing to 1.
    """
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    power = np.asarray(power_spectrum, dtype=np.float64)
    edges = section_edges(power.shape[-1], sections)
    sums = np.add.reduceat(power, edges[:-1], axis=-1)
    energy_bels = np.log10(np.maximum(sums / np.diff(edges), 1e-12))
    logits = energy_bels / temperature
    logits -= logits.max(axis=-1, keepdims=True)  # exp cannot overflow
    weights = np.exp(logits)
    return weights / weights.sum(axis=-1, keepdims=True)


def band_bins(sample_rate: int, n_fft: int, low_hz: float, high_hz: float) -> slice:
    """rFFT bins whose centre frequency lies in [low_hz, high_hz); at least one bin."""
    bin_hz = sample_rate / n_fft
    first = int(np.ceil(low_hz / bin_hz))
    last = max(first + 1, int(np.ceil(high_hz / bin_hz)))
    return slice(first, min(last, n_fft // 2 + 1))


def rms_frames(samples: np.ndarray, frame_length: int = 2_048, hop: int = 512) -> np.ndarray:
    """sqrt(mean(x²)) per frame, no centering (librosa.feature.rms(center=False)), (frames,)."""
    frames = frame_signal(np.asarray(samples, dtype=np.float32), frame_length, hop)
    return np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=-1))
