"""StreamingAnalyzer on real music against librosa's offline values, and its pictures.

Audio: Debian's CC0 sonic-pi-samples (/usr/share/sonic-pi/samples). The helpers at the top
are imported by the other tests/test_analysis_*.py files.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
import pytest

from bridge.analysis import REPRESENTATIONS, AnalysisConfig, AudioFeatures, StreamingAnalyzer

librosa = pytest.importorskip("librosa")

SAMPLES = Path("/usr/share/sonic-pi/samples")
SR = 44_100
HOP = 512
N_FFT = 1_024


@functools.lru_cache(maxsize=None)
def sample(name: str) -> np.ndarray:
    path = SAMPLES / f"{name}.flac"
    if not path.exists():
        pytest.skip(f"{path} missing (Debian package sonic-pi-samples)")
    y, _ = librosa.load(path, sr=SR, mono=True)
    y.setflags(write=False)
    return y


def looped(name: str, seconds: float) -> np.ndarray:
    """A loop repeated to `seconds`, the way Sonic Pi plays it."""
    y = sample(name)
    return np.tile(y, int(np.ceil(seconds * SR / len(y))))[: int(seconds * SR)]


def sequence(name: str, bpm: float, seconds: float, gain: float = 1.0) -> np.ndarray:
    """A one-shot sample struck every beat at `bpm`."""
    hit = sample(name) * gain
    out = np.zeros(int(seconds * SR), dtype=np.float32)
    for start in range(0, len(out) - len(hit), int(round(60.0 / bpm * SR))):
        out[start:start + len(hit)] += hit
    return out


def per_hop(y: np.ndarray, analyzer: StreamingAnalyzer | None = None) -> list[AudioFeatures]:
    """Feed one hop at a time and snapshot after each, as a live engine at the hop rate would.
    Snapshot i is taken after (i + 1)·HOP samples, when frame i - 1 is the newest."""
    analyzer = analyzer or StreamingAnalyzer()
    out = []
    for start in range(0, len(y) - HOP + 1, HOP):
        analyzer.feed(y[start:start + HOP])
        out.append(analyzer.snapshot(capture_time=start / SR))
    return out


def librosa_mel_power(y: np.ndarray) -> np.ndarray:
    return librosa.feature.melspectrogram(y=y, sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=128,
                                          center=False, power=2.0)


# -- against librosa -----------------------------------------------------------------------------

def test_mel_frames_match_librosa_melspectrogram():
    """Every streamed mel frame equals librosa.feature.melspectrogram(center=False, power=2.0):
    in dB (power_to_db, ref=1, top_db=None) within 0.01 dB wherever the power is above
    1e-8 of the file's maximum (below that float32 FFT rounding dominates), i.e. relative
    power tolerance ≈ 0.23 %."""
    y = sample("loop_amen")[: 2 * SR]
    expected_db = librosa.power_to_db(librosa_mel_power(y), top_db=None)  # (128, frames)
    analyzer = StreamingAnalyzer()
    streamed = []
    for start in range(0, len(y) - HOP + 1, HOP):
        analyzer.feed(y[start:start + HOP])
        if start + HOP >= N_FFT:
            streamed.append(analyzer.snapshot().mel_db[:, -1])
    streamed = np.stack(streamed, axis=1)
    assert streamed.shape == expected_db.shape
    loud = expected_db > expected_db.max() - 80
    assert loud.mean() > 0.5
    np.testing.assert_allclose(streamed[loud], expected_db[loud], atol=0.01)
    # mel_db holds the newest mel_frames frames, oldest first.
    np.testing.assert_allclose(analyzer.snapshot().mel_db, expected_db[:, -9:], atol=0.01)


def test_onset_strength_and_rms_match_librosa():
    """onset_strength equals librosa.onset.onset_strength(S=power_to_db(mel, top_db=None),
    center=False, lag=1, max_size=1) within 0.02 dB absolute; rms equals
    librosa.feature.rms(center=False, frame_length=n_fft, hop_length=hop), i.e. RMS over the
    newest n_fft-sample analysis frame, within 1e-5 relative (+1e-7 absolute)."""
    y = looped("loop_breakbeat", 3.0)
    log_mel = librosa.power_to_db(librosa_mel_power(y), top_db=None)
    expected_onset = librosa.onset.onset_strength(S=log_mel, sr=SR, hop_length=HOP, center=False)
    expected_rms = librosa.feature.rms(y=y, frame_length=N_FFT, hop_length=HOP, center=False)[0]
    snaps = per_hop(y)[1:]  # snapshot i + 1 has frame i as its newest
    onset = np.array([s.onset_strength for s in snaps])
    rms = np.array([s.rms for s in snaps])
    assert len(onset) == len(expected_onset)
    assert expected_onset.max() > 5.0  # a drum loop: the comparison covers real onsets
    np.testing.assert_allclose(onset, expected_onset, atol=0.02)
    np.testing.assert_allclose(rms, expected_rms, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loop", ["loop_amen", "loop_breakbeat", "loop_compus", "loop_safari"])
def test_tempo_matches_librosa_beat_track(loop):
    """After 12 s of a loop, tempo_bpm is within 5 % of librosa.beat.beat_track's tempo, or of
    half or double it (octave errors are the same pulse for visuals)."""
    y = looped(loop, 12.0)
    expected = float(np.atleast_1d(librosa.beat.beat_track(y=y, sr=SR, hop_length=HOP)[0])[0])
    analyzer = StreamingAnalyzer()
    analyzer.feed(y[: 2 * SR])
    assert analyzer.snapshot().tempo_bpm == 0.0  # too little audio yet
    analyzer.feed(y[2 * SR:])
    tempo = analyzer.snapshot().tempo_bpm
    ratios = [tempo / (expected * k) for k in (0.5, 1.0, 2.0)]
    assert min(abs(r - 1.0) for r in ratios) < 0.05, (tempo, expected)


def test_beat_phase_is_near_zero_on_librosa_beats():
    """At the frames where librosa.beat.beat_track puts beats (after 5 s, tempos agreeing),
    beat_phase clusters near 0: circular mean within ±0.15 of a beat, concentration > 0.7."""
    y = looped("loop_breakbeat", 12.0)
    expected, beats = librosa.beat.beat_track(y=y, sr=SR, hop_length=HOP)
    snaps = per_hop(y)
    assert abs(snaps[-1].tempo_bpm / float(np.atleast_1d(expected)[0]) - 1) < 0.05
    # librosa centres frames: its frame f is centred on sample f·HOP, which our snapshot sees
    # once N_FFT / 2 more samples have arrived (snapshot index f + 1).
    phases = np.array([snaps[f + 1].beat_phase for f in beats if f * HOP > 5 * SR and f + 1 < len(snaps)])
    assert len(phases) > 10
    resultant = np.mean(np.exp(2j * np.pi * phases))
    offset = (np.angle(resultant) / (2 * np.pi) + 0.5) % 1.0 - 0.5
    assert abs(resultant) > 0.7 and abs(offset) < 0.15, (abs(resultant), offset)


def test_onset_events_match_librosa_onset_detect():
    """Onset events vs librosa.onset.onset_detect on the same envelope: at least 80 % of
    librosa's onsets have one of ours within ±2 hops (our events come one hop late by design:
    a peak is confirmed by the next frame), and at least 70 % of ours match one of librosa's.
    The first second is left out: our threshold adapts from nothing."""
    y = looped("loop_amen", 8.0)
    log_mel = librosa.power_to_db(librosa_mel_power(y), top_db=None)
    envelope = librosa.onset.onset_strength(S=log_mel, sr=SR, hop_length=HOP, center=False)
    expected = librosa.onset.onset_detect(onset_envelope=envelope, sr=SR, hop_length=HOP)
    snaps = per_hop(y)
    # Snapshot i has frame i - 1 newest; an event there is the candidate frame i - 2.
    ours = np.array([i - 2 for i, s in enumerate(snaps) if s.onset])
    settle = int(SR / HOP)
    expected, ours = expected[expected > settle], ours[ours > settle]
    assert len(expected) > 20
    recall = np.mean([np.min(np.abs(ours - f)) <= 2 for f in expected])
    precision = np.mean([np.min(np.abs(expected - f)) <= 2 for f in ours])
    assert recall >= 0.8 and precision >= 0.7, (recall, precision)


def test_onset_flag_is_reported_once_per_snapshot():
    analyzer = StreamingAnalyzer()
    analyzer.feed(looped("loop_amen", 2.0))
    assert analyzer.snapshot().onset is True  # a drum loop has onsets in 2 s
    assert analyzer.snapshot().onset is False  # already reported, no new audio


# -- streaming mechanics ---------------------------------------------------------------------------

def test_odd_chunks_give_the_same_features_as_one_chunk():
    """Chunk sizes that split hops anywhere (1, 7, 333, 4 097, ... samples) give the same
    features as one big feed: floats within 1e-5 relative (batched FFT/BLAS rounding), the
    same onset decisions and pictures."""
    y = looped("loop_compus", 6.0)
    whole = StreamingAnalyzer()
    whole.feed(y)
    a = whole.snapshot()
    pieces = StreamingAnalyzer()
    rng = np.random.default_rng(3)
    start, onsets = 0, 0
    while start < len(y):
        size = int(rng.choice([0, 1, 7, 333, 511, 512, 513, 4_097, 20_000]))
        pieces.feed(y[start:start + size])
        start += size
        onsets += pieces.snapshot().onset
    b = pieces.snapshot()
    for name in ("rms", "level", "kick", "onset_strength", "tempo_bpm", "beat_phase"):
        assert getattr(b, name) == pytest.approx(getattr(a, name), rel=1e-5, abs=1e-6), name
    np.testing.assert_allclose(b.bands, a.bands, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.mel_db, a.mel_db, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(b.fft_softmax, a.fft_softmax, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b._render.history, a._render.history, rtol=1e-4, atol=1e-5)
    assert onsets > 10
    for name in REPRESENTATIONS:
        diff = np.abs(a.representation(name, 64).astype(int) - b.representation(name, 64).astype(int))
        assert diff.max() <= 2, name


def test_reset_forgets_everything():
    analyzer = StreamingAnalyzer()
    fresh = analyzer.snapshot()
    analyzer.feed(looped("loop_amen", 5.0))
    assert analyzer.snapshot().tempo_bpm > 0
    analyzer.reset()
    again = analyzer.snapshot()
    assert again.tempo_bpm == 0 and again.rms == 0 and again.level == 0 and again.onset is False
    np.testing.assert_array_equal(again.mel_db, fresh.mel_db)
    np.testing.assert_array_equal(again.representation("history", 32), fresh.representation("history", 32))


# -- pictures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quiet_and_loud() -> tuple[AudioFeatures, AudioFeatures]:
    """The same analyzer after 3 s of a soft pad, then after 3 s of a drum loop."""
    analyzer = StreamingAnalyzer()
    analyzer.feed(looped("ambi_soft_buzz", 3.0) * 0.05)
    quiet = analyzer.snapshot()
    analyzer.feed(looped("loop_amen", 3.0))
    return quiet, analyzer.snapshot()


@pytest.mark.parametrize("name", REPRESENTATIONS)
@pytest.mark.parametrize("size", [256, 512])
def test_every_representation_is_square_rgb_and_tells_quiet_from_loud(quiet_and_loud, name, size):
    quiet, loud = quiet_and_loud
    quiet_image, loud_image = quiet.representation(name, size), loud.representation(name, size)
    for image in (quiet_image, loud_image):
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
        assert image.flags.c_contiguous
    assert np.abs(quiet_image.astype(int) - loud_image.astype(int)).mean() > 3.0
    assert loud_image.std() > 10  # a picture, not a flat fill
    np.testing.assert_array_equal(loud.representation(name, size), loud_image)  # deterministic


def test_unknown_representation_names_the_valid_ones():
    features = AudioFeatures.silent()
    with pytest.raises(ValueError) as error:
        features.representation("spectrum", 64)
    for name in REPRESENTATIONS:
        assert name in str(error.value)
    with pytest.raises(ValueError):
        features.representation("mel", 0)


def test_hand_built_features_still_draw():
    """Snapshots built by other parts (warm-up, tests) have no history but must draw."""
    features = AudioFeatures.silent(AnalysisConfig())
    for name in REPRESENTATIONS:
        assert features.representation(name, 32).shape == (32, 32, 3)


def test_bands_picture_change_follows_onset_strength():
    """On a drum loop snapshotted at 30 fps, the mean absolute pixel change between
    consecutive `bands` pictures correlates with onset_strength: Pearson r >= 0.3."""
    y = looped("loop_amen", 8.0)
    analyzer = StreamingAnalyzer()
    step = SR // 30
    previous, change, strength = None, [], []
    for start in range(0, len(y), step):
        analyzer.feed(y[start:start + step])
        features = analyzer.snapshot()
        image = features.representation("bands", 128).astype(np.float32)
        if previous is not None:
            change.append(np.abs(image - previous).mean())
            strength.append(features.onset_strength)
        previous = image
    r = np.corrcoef(change, strength)[0, 1]
    assert r >= 0.3, r


def test_bands_picture_is_still_in_steady_sound():
    """A steady tone changes the bands picture far less than a drum loop does."""
    t = np.arange(4 * SR) / SR
    tone = (0.3 * np.sin(2 * np.pi * 110 * t) + 0.1 * np.sin(2 * np.pi * 1_500 * t)).astype(np.float32)

    def mean_change(y):
        analyzer, previous, changes = StreamingAnalyzer(), None, []
        for start in range(0, len(y), SR // 30):
            analyzer.feed(y[start:start + SR // 30])
            image = analyzer.snapshot().representation("bands", 96).astype(np.float32)
            if previous is not None and start > SR:
                changes.append(np.abs(image - previous).mean())
            previous = image
        return float(np.mean(changes))

    assert mean_change(tone) < 0.2 * mean_change(looped("loop_amen", 4.0))


def test_per_hop_cost_is_printed():
    """Not a timed assertion: prints the cost of feed(512 samples) + snapshot() (run with -s)."""
    y = looped("loop_amen", 10.0)
    analyzer = StreamingAnalyzer()
    analyzer.feed(y[: 2 * SR])  # warm caches and state
    hops = range(2 * SR, len(y) - HOP, HOP)
    started = time.perf_counter()
    for start in hops:
        analyzer.feed(y[start:start + HOP])
    feed_only = (time.perf_counter() - started) / len(hops)
    started = time.perf_counter()
    for start in hops:
        analyzer.feed(y[start:start + HOP])
        analyzer.snapshot()
    with_snapshot = (time.perf_counter() - started) / len(hops)
    features = analyzer.snapshot()
    started = time.perf_counter()
    for name in REPRESENTATIONS:
        features.representation(name, 256)
    draw_all = time.perf_counter() - started
    print(f"\nanalysis per 512-sample hop: feed {feed_only * 1e3:.3f} ms, feed+snapshot "
          f"{with_snapshot * 1e3:.3f} ms; all six 256x256 pictures {draw_all * 1e3:.1f} ms")
    assert feed_only > 0
