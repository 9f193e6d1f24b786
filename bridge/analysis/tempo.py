"""Tempo and beat phase from an onset-strength envelope (pure functions).

Tempo follows librosa.feature.tempo: autocorrelate the envelope, compress it with log1p(1e6·x),
add a log-normal prior around 120 bpm (one octave standard deviation) and take the best lag.
Differences for a short streaming window:
  - the envelope's mean is removed first: without it the autocorrelation of an 8 s window is
    mostly a slope, and on the Sonic Pi loops the estimate agreed with librosa's less often;
  - the best lag is refined by a parabola through its neighbours (a lag of 43 frames is
    120.2 bpm, 44 is 117.4 bpm: too coarse for a beat phase that must stay locked for seconds);
  - `previous_bpm` gets a bonus, so a loop whose 3:2 or 4:3 ratios score almost equally does not
    flip between them every update;
  - an envelope without a periodic peak (drones, pads) gives 0.0 instead of the prior's 120.
"""
from __future__ import annotations

import numpy as np

STICKINESS = 0.6  # score bonus of the previous tempo: its strength may be e^0.6≈1.8x weaker and still win
MIN_PULSE = 0.1  # normalised autocorrelation at the beat lag below which there is no pulse


def autocorrelation(signal: np.ndarray) -> np.ndarray:
    """Biased autocorrelation sum_t x[t]·x[t+lag] for lags 0..len-1, by FFT (O(n log n))."""
    x = np.asarray(signal, dtype=np.float64)
    n = len(x)
    if n == 0:
        return x
    size = 1 << int(np.ceil(np.log2(2 * n - 1)))  # zero padding: no circular wrap-around
    spectrum = np.fft.rfft(x, size)
    return np.fft.irfft(spectrum.real**2 + spectrum.imag**2, size)[:n]


def estimate_tempo(
    onset_env: np.ndarray,
    frame_rate_hz: float,
    bpm_range: tuple[float, float] = (60.0, 200.0),
    prior_bpm: float = 120.0,
    prior_octaves: float = 1.0,
    previous_bpm: float = 0.0,
) -> float:
    """Tempo in bpm of an onset envelope sampled at `frame_rate_hz` (frames per second);
    0.0 if it has no pulse (shorter than two periods of the slowest tempo, or aperiodic)."""
    env = np.asarray(onset_env, dtype=np.float64)
    slowest, fastest = bpm_range
    min_lag = max(1, int(np.floor(60.0 * frame_rate_hz / fastest)))
    max_lag = int(np.ceil(60.0 * frame_rate_hz / slowest))
    if len(env) < 2 * max_lag or min_lag + 2 > max_lag:
        return 0.0
    ac = autocorrelation(env - env.mean())
    if ac[0] <= 0:
        return 0.0
    lags = np.arange(min_lag, max_lag + 1)
    bpms = 60.0 * frame_rate_hz / lags
    strength = np.maximum(ac[lags] / ac[0], 0.0)
    score = np.log1p(1e6 * strength) - 0.5 * ((np.log2(bpms) - np.log2(prior_bpm)) / prior_octaves) ** 2
    if previous_bpm > 0:
        score += STICKINESS * np.exp(-0.5 * (np.log2(bpms / previous_bpm) / 0.02) ** 2)
    score[(bpms < slowest) | (bpms > fastest)] = -np.inf
    best = int(np.argmax(score))
    if strength[best] < MIN_PULSE:
        return 0.0
    lag = float(lags[best])
    left, mid, right = ac[lags[best] - 1], ac[lags[best]], ac[lags[best] + 1]
    curvature = left - 2 * mid + right
    if curvature < 0:  # a true local maximum: move to the parabola's vertex (within ±0.5)
        lag += float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))
    return 60.0 * frame_rate_hz / lag


def beat_phase(onset_env: np.ndarray, period_frames: float, resolution: int = 64) -> float:
    """Position 0..1 of the envelope's last frame within the beat: 0 on a beat, 0.5 halfway.

    Tries `resolution` offsets of a comb of beats spaced `period_frames` apart, ending at the
    newest frame, and keeps the one whose teeth land on the most onset strength. Recent beats
    weigh more so the phase follows a drifting player.
    """
    env = np.asarray(onset_env, dtype=np.float64)
    if period_frames <= 1 or len(env) < period_frames + 1:
        return 0.0
    n_beats = int((len(env) - 1) // period_frames)
    elapsed = np.arange(resolution) * (period_frames / resolution)  # frames since the last beat
    positions = (len(env) - 1) - elapsed[:, None] - period_frames * np.arange(n_beats)[None, :]
    positions = np.clip(positions, 0.0, len(env) - 1.0)
    # Linear interpolation between frames: the comb rarely lands on whole frames.
    below = np.floor(positions).astype(int)
    above = np.minimum(below + 1, len(env) - 1)
    frac = positions - below
    values = env[below] * (1 - frac) + env[above] * frac
    weights = 0.8 ** np.arange(n_beats)
    score = values @ weights
    return float(elapsed[int(np.argmax(score))] / period_frames)
