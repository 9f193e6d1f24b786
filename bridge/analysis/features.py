"""AudioFeatures: what one snapshot of the analysis hands to the rest of the bridge."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bridge.analysis import pictures
from bridge.analysis.config import REPRESENTATIONS, AnalysisConfig


@dataclass(frozen=True, eq=False)
class RenderData:
    """Copies of the recent history that the pictures need. Taken at snapshot time so drawing
    can happen later (or never) without racing the analyzer."""

    samples: np.ndarray  # (waveform_samples,) float32, newest last
    spectrogram_db: np.ndarray  # (frames, 1 + n_fft // 2) STFT power in dB, oldest first
    spectrogram_ceiling_db: float  # top of the picture's dB range (adaptive)
    mel_ceiling_db: float
    history: np.ndarray  # (frames, 6): level, low, mid, high, kick, onset (all 0..1), oldest first
    bands_history_frames: int  # how many of the newest history rows the bands_history picture shows
    waveform_gain: float  # multiplies samples so the adaptive peak reaches the picture's edge
    onset_norm: float  # newest onset strength above its baseline / running maximum, 0..1


# eq=False: the arrays make field-wise == ambiguous; snapshots are compared by identity.
@dataclass(frozen=True, eq=False)
class AudioFeatures:
    capture_time: float  # passed through from snapshot()
    rms: float  # RMS of the newest analysis frame (n_fft samples), linear amplitude
    level: float  # 0..1 loudness with adaptive gain (for visuals)
    bands: tuple[float, float, float]  # low, mid, high in 0..1 (adaptive normalisation, short decay)
    kick: float  # 0..1, jumps on a kick and decays
    onset_strength: float  # newest spectral-flux onset strength (dB, librosa definition)
    onset: bool  # an onset event was detected since the previous snapshot()
    tempo_bpm: float  # current tempo estimate (0.0 until enough audio)
    beat_phase: float  # 0..1 position within the current beat
    fft_softmax: np.ndarray  # (fft_sections,) softmax(section energies / temperature), sums to 1
    mel_db: np.ndarray  # (n_mels, mel_frames) newest log-mel frames in dB (ref=1.0), oldest first
    _render: RenderData | None = field(default=None, repr=False)

    @classmethod
    def silent(cls, config: AnalysisConfig = AnalysisConfig(), capture_time: float = 0.0) -> AudioFeatures:
        """What silence looks like: for warming up models before any audio has arrived."""
        return cls(
            capture_time=capture_time, rms=0.0, level=0.0, bands=(0.0, 0.0, 0.0), kick=0.0,
            onset_strength=0.0, onset=False, tempo_bpm=0.0, beat_phase=0.0,
            fft_softmax=np.full(config.fft_sections, 1.0 / config.fft_sections),
            mel_db=np.full((config.n_mels, config.mel_frames), -100.0, dtype=np.float32),
        )

    def representation(self, name: str, size: int) -> np.ndarray:
        """uint8 RGB image (size, size, 3) of the named representation (see REPRESENTATIONS)."""
        if name not in REPRESENTATIONS:
            raise ValueError(f"unknown representation {name!r}; choose one of {', '.join(REPRESENTATIONS)}")
        if int(size) != size or size < 2:
            raise ValueError(f"size must be an integer of at least 2, got {size!r}")
        return pictures.draw(name, self, int(size))
