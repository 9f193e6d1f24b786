"""Streaming audio analysis: features and pictures of the newest audio, cheap enough per hop.

`StreamingAnalyzer.feed()` takes samples as they come; `snapshot()` returns `AudioFeatures`,
whose `representation(name, size)` draws one of REPRESENTATIONS on demand. Pure array functions
(librosa-compatible) live in `spectral` and `tempo`.
"""
from bridge.analysis.config import REPRESENTATIONS, AnalysisConfig
from bridge.analysis.features import AudioFeatures
from bridge.analysis.spectral import (
    fft_section_softmax, mel_filterbank, onset_strength_frame, power_to_db, stft_power_frames,
)
from bridge.analysis.streaming import StreamingAnalyzer
from bridge.analysis.tempo import beat_phase, estimate_tempo

__all__ = [
    "REPRESENTATIONS", "AnalysisConfig", "AudioFeatures", "StreamingAnalyzer",
    "fft_section_softmax", "mel_filterbank", "onset_strength_frame", "power_to_db",
    "stft_power_frames", "estimate_tempo", "beat_phase",
]
