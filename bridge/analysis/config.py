"""Settings for streaming analysis. Defaults are the seeds' numbers (see shared/DESIGN.md)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from bridge.errors import ConfigError

# Names accepted by AudioFeatures.representation(); generators store one of these in their bundle.
REPRESENTATIONS: tuple[str, ...] = (
    "mel", "spectrogram", "waveform", "history", "bands", "bands_history",
)


@dataclass(frozen=True)
class AnalysisConfig:
    sample_rate: int = 44_100  # seed 000
    n_fft: int = 1_024  # seed 000
    hop: int = 512  # seed 000
    n_mels: int = 128  # seed 000
    mel_frames: int = 9  # seed 000: 9 frames ≈ 100 ms
    spectrogram_seconds: float = 1.5  # seed 003: 1.5 s -> 256x256 image
    history_seconds: float = 10.0  # seed 001: 10-second rolling history image
    band_edges_hz: tuple[float, float] = (250.0, 4_000.0)  # low < 250 <= mid < 4000 <= high
    kick_hz: tuple[float, float] = (40.0, 130.0)
    fft_sections: int = 8  # seed 004: FFT split in n sections -> softmax
    softmax_temperature: float = 1.0  # seed 004
    tempo_range_bpm: tuple[float, float] = (60.0, 200.0)

    # Adaptive normalisation: a peak follower halves over `gain_halflife_s` so a quiet song
    # fills the picture after a few seconds, while one loud hit does not dim everything for long.
    gain_halflife_s: float = 3.0
    # Below this linear amplitude nothing is boosted: silence must stay dark, not show hiss.
    gain_floor: float = 1e-3
    band_floor_share: float = 0.1  # bands are not boosted beyond 0.1 of the overall level peak
    onset_baseline_halflife_s: float = 0.5  # pictures show onset strength above this running mean
    # Bands/level/kick fall back with this half-life (rise is instant): short, so visuals pulse.
    release_halflife_s: float = 0.08
    # Display range of the mel / spectrogram pictures, below an adaptive dB ceiling that follows
    # the loudest bin and never drops below noise at `gain_floor` (so silence stays black).
    image_db_range: float = 80.0

    # Onset peak picking (librosa.onset.onset_detect's windows, made causal; see onsets.py).
    onset_pre_max_s: float = 0.03
    onset_pre_avg_s: float = 0.10
    onset_delta: float = 0.07  # as a fraction of the running maximum onset strength
    onset_min_gap_s: float = 0.03

    # Kick: a rise of the 40-130 Hz band by this many dB within a few hops, not closer than the gap.
    kick_rise_db: float = 9.0
    kick_min_ratio: float = 0.5  # of the band's own adaptive peak: ignore rumble far below the kicks
    kick_min_share: float = 0.4  # of the full-band adaptive RMS peak: hats, snares, drones stay below
    kick_min_gap_s: float = 0.1

    # Tempo: autocorrelate this much onset envelope every `tempo_update_s` (librosa: ac_size=8 s,
    # start_bpm=120, std_bpm=1 octave).
    tempo_window_s: float = 8.0
    tempo_update_s: float = 0.5
    tempo_prior_bpm: float = 120.0
    tempo_prior_octaves: float = 1.0
    tempo_min_audio_s: float = 3.0  # report 0 bpm until this much audio has been heard

    waveform_samples: int = 2_048  # the waveform picture's window (≈46 ms: a few bass cycles)
    bands_history_seconds: float = 4.0

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.hop <= 0 or self.n_fft <= 0:
            raise ConfigError("sample_rate, n_fft and hop must be positive")
        if self.hop > self.n_fft:
            raise ConfigError(f"hop ({self.hop}) must not exceed n_fft ({self.n_fft})")
        if self.n_mels <= 0 or self.mel_frames <= 0 or self.fft_sections <= 0:
            raise ConfigError("n_mels, mel_frames and fft_sections must be positive")
        if self.fft_sections > self.n_fft // 2:
            raise ConfigError(f"fft_sections ({self.fft_sections}) exceeds the FFT bins")
        if self.softmax_temperature <= 0:
            raise ConfigError("softmax_temperature must be positive")
        nyquist = self.sample_rate / 2
        low, high = self.band_edges_hz
        if not 0 < low < high < nyquist:
            raise ConfigError(f"band_edges_hz must rise within (0, {nyquist}) Hz, got {self.band_edges_hz}")
        if not 0 <= self.kick_hz[0] < self.kick_hz[1] < nyquist:
            raise ConfigError(f"kick_hz must rise within [0, {nyquist}) Hz, got {self.kick_hz}")
        slow, fast = self.tempo_range_bpm
        if not 0 < slow < fast:
            raise ConfigError(f"tempo_range_bpm must rise and be positive, got {self.tempo_range_bpm}")
        if fast / 60.0 * 2 > self.frame_rate_hz:
            raise ConfigError(f"tempo {fast} bpm is too fast for a {self.frame_rate_hz:.1f} Hz frame rate")
        for name in ("spectrogram_seconds", "history_seconds", "gain_halflife_s",
                     "release_halflife_s", "tempo_window_s", "tempo_update_s",
                     "bands_history_seconds", "image_db_range"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.waveform_samples < 2:
            raise ConfigError("waveform_samples must be at least 2")

    @property
    def frame_rate_hz(self) -> float:
        """Analysis frames (hops) per second."""
        return self.sample_rate / self.hop

    def seconds_to_frames(self, seconds: float) -> int:
        """At least one frame, so a short setting never turns a window into nothing."""
        return max(1, int(math.ceil(seconds * self.frame_rate_hz)))

    def halflife_decay(self, seconds: float) -> float:
        """Per-hop multiplier that halves a value in `seconds`."""
        return 0.5 ** (1.0 / (seconds * self.frame_rate_hz))
