"""StreamingAnalyzer behaviours a VJ relies on: kicks only on kicks, silence stays dark, adaptive
gain, robustness to bad input; and the pure tempo functions on pulses of known period."""
import numpy as np
import pytest

from bridge.analysis import AnalysisConfig, StreamingAnalyzer, beat_phase, estimate_tempo
from bridge.errors import ConfigError
from tests.test_analysis import SR, looped, sequence


def kick_hits(y: np.ndarray) -> int:
    """Number of times `kick` jumped up, read from the snapshot's per-hop history."""
    analyzer = StreamingAnalyzer()
    analyzer.feed(y)
    kick = analyzer.snapshot()._render.history[:, 4]
    return int(np.sum(kick[1:] > kick[:-1] + 0.05))


def test_kick_fires_on_bass_drums_and_not_on_hats_or_drones():
    """8 s at 120 bpm of bd_haus -> 16 kicks (±1), also under a drone; hi-hats, a snare
    pattern and a drone alone give none."""
    assert abs(kick_hits(sequence("bd_haus", 120, 8.0)) - 16) <= 1
    assert abs(kick_hits(sequence("bd_haus", 120, 8.0) + 0.5 * looped("ambi_drone", 8.0)) - 16) <= 1
    assert kick_hits(sequence("drum_cymbal_closed", 240, 8.0)) == 0
    assert kick_hits(sequence("drum_snare_hard", 120, 8.0)) == 0
    assert kick_hits(looped("ambi_drone", 8.0)) == 0


def test_kick_jumps_then_decays():
    analyzer = StreamingAnalyzer()
    y = sequence("bd_haus", 60, 4.0)
    analyzer.feed(y[: 3 * SR + 2_048])  # just after the 4th hit
    hit = analyzer.snapshot().kick
    analyzer.feed(y[3 * SR + 2_048: 3 * SR + 2_048 + SR // 2])
    later = analyzer.snapshot().kick
    assert hit > 0.5 and later < 0.1 * hit


def test_silence_is_zero_and_dark():
    analyzer = StreamingAnalyzer()
    analyzer.feed(np.zeros(3 * SR, dtype=np.float32))
    features = analyzer.snapshot()
    assert features.rms == 0 and features.level == 0 and features.kick == 0
    assert features.bands == (0.0, 0.0, 0.0) and features.tempo_bpm == 0.0
    assert features.onset is False and features.onset_strength == 0.0
    np.testing.assert_allclose(features.mel_db, -100.0)
    assert features.fft_softmax.sum() == pytest.approx(1.0)
    for name in ("mel", "spectrogram", "bands_history"):
        assert features.representation(name, 64).mean() < 15, name


def test_level_adapts_to_a_quiet_input_but_not_instantly():
    """A 20 dB quieter copy of a loop starts dim after the loud one, then the adaptive gain
    brings it back up within a few seconds."""
    loud = looped("loop_breakbeat", 4.0)
    analyzer = StreamingAnalyzer()
    analyzer.feed(loud)
    levels_loud = analyzer._history.latest(86)[:, 0]
    analyzer.feed(loud[:SR // 2] * 0.1)
    levels_dim = analyzer._history.latest(43)[:, 0]
    analyzer.feed(np.tile(loud * 0.1, 3))
    levels_adapted = analyzer._history.latest(86)[:, 0]
    assert levels_dim.mean() < 0.3 * levels_loud.mean()
    assert levels_adapted.mean() > 0.7 * levels_loud.mean()


def test_bands_follow_the_spectrum():
    t = np.arange(2 * SR) / SR
    analyzer = StreamingAnalyzer()
    analyzer.feed((0.5 * np.sin(2 * np.pi * 80 * t)).astype(np.float32))
    assert analyzer.snapshot().bands[0] > 0.9
    analyzer.feed((0.5 * np.sin(2 * np.pi * 8_000 * t)).astype(np.float32))
    low, mid, high = analyzer.snapshot().bands
    assert high > 0.9 and low < 0.1
    assert int(np.argmax(analyzer.snapshot().fft_softmax)) == 2  # 8 kHz: 3rd of 8 sections of 2.76 kHz


def test_nan_and_inf_input_do_not_poison_the_state():
    analyzer = StreamingAnalyzer()
    y = looped("loop_amen", 2.0).copy()
    y[10_000:10_100] = np.nan
    y[20_000] = np.inf
    analyzer.feed(y)
    features = analyzer.snapshot()
    values = [features.rms, features.level, features.kick, features.onset_strength, *features.bands]
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(features.mel_db))
    for name in ("mel", "waveform", "bands"):
        features.representation(name, 32)


def test_feed_rejects_multichannel_and_accepts_column_vectors():
    analyzer = StreamingAnalyzer()
    with pytest.raises(ValueError):
        analyzer.feed(np.zeros((1_024, 2), dtype=np.float32))
    analyzer.feed(np.zeros((2_048, 1), dtype=np.float32))
    analyzer.feed(np.zeros(0, dtype=np.float32))
    assert analyzer.snapshot().mel_db.shape == (128, 9)


@pytest.mark.parametrize("changes", [
    {"hop": 2_048}, {"n_mels": 0}, {"band_edges_hz": (4_000.0, 250.0)}, {"softmax_temperature": 0.0},
    {"tempo_range_bpm": (200.0, 60.0)}, {"fft_sections": 10_000},
])
def test_bad_config_is_refused(changes):
    with pytest.raises(ConfigError):
        AnalysisConfig(**changes)


def test_other_configs_shape_the_outputs():
    config = AnalysisConfig(n_mels=40, mel_frames=5, fft_sections=4, sample_rate=22_050, hop=256, n_fft=512)
    analyzer = StreamingAnalyzer(config)
    analyzer.feed(np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1)
    features = analyzer.snapshot()
    assert features.mel_db.shape == (40, 5) and features.fft_softmax.shape == (4,)


# -- pure tempo functions ----------------------------------------------------------------------

def pulses(period_frames: float, frames: int, phase_frames: float = 0.0) -> np.ndarray:
    """An onset envelope with a spike every period (linearly shared between two frames)."""
    env = np.full(frames, 0.5)
    for position in np.arange(phase_frames, frames - 1, period_frames):
        below = int(position)
        env[below] += 10 * (1 - (position - below))
        env[below + 1] += 10 * (position - below)
    return env


@pytest.mark.parametrize("bpm", [75.0, 98.0, 128.0, 174.0])
def test_estimate_tempo_finds_the_pulse(bpm):
    rate = SR / 512
    env = pulses(60 * rate / bpm, int(8 * rate))
    assert estimate_tempo(env, rate) == pytest.approx(bpm, rel=0.01)


def test_estimate_tempo_gives_zero_without_a_pulse():
    rate = SR / 512
    noise = np.random.default_rng(1).random(int(8 * rate))
    assert estimate_tempo(noise, rate) == 0.0
    assert estimate_tempo(np.ones(int(8 * rate)), rate) == 0.0
    assert estimate_tempo(pulses(40, 100), rate) == 0.0  # shorter than two slow beats


@pytest.mark.parametrize("elapsed", [0.0, 0.25, 0.5, 0.8])
def test_beat_phase_reads_the_position_in_the_beat(elapsed):
    period, frames = 40.0, 400
    # The last pulse lies `elapsed` beats before the newest frame.
    last_pulse = (frames - 1) - elapsed * period
    env = pulses(period, frames, phase_frames=last_pulse % period)
    phase = beat_phase(env, period)
    assert min(abs(phase - elapsed), 1 - abs(phase - elapsed)) < 0.04, phase
