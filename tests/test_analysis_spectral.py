"""Pure spectral functions against librosa's definitions (librosa is a test dependency)."""
import numpy as np
import pytest

from bridge.analysis import spectral
from bridge.analysis.spectral import (
    fft_section_softmax, mel_filterbank, onset_strength_frame, power_to_db, stft_power_frames,
)
from tests.test_analysis import sample

librosa = pytest.importorskip("librosa")


@pytest.mark.parametrize("sr, n_fft, n_mels, fmin, fmax", [
    (44_100, 1_024, 128, 0.0, None),
    (22_050, 2_048, 40, 100.0, 8_000.0),
    (48_000, 512, 64, 30.0, 16_000.0),
])
def test_mel_filterbank_matches_librosa_slaney(sr, n_fft, n_mels, fmin, fmax):
    """Absolute difference below 1e-6 of the largest weight (float32 rounding only)."""
    ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    theirs = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert ours.shape == theirs.shape == (n_mels, 1 + n_fft // 2)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-6 * theirs.max())


def test_mel_scale_round_trip_and_break_point():
    hz = np.array([0.0, 500.0, 1_000.0, 4_000.0, 20_000.0])
    np.testing.assert_allclose(spectral.mel_to_hz(spectral.hz_to_mel(hz)), hz, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(spectral.hz_to_mel(hz), librosa.hz_to_mel(hz), rtol=1e-9)
    assert spectral.hz_to_mel(1_000.0) == pytest.approx(15.0)


def test_power_to_db_matches_librosa_with_and_without_top_db():
    power = np.abs(np.random.default_rng(0).standard_normal((16, 20))) ** 4
    power[0, 0] = 0.0  # exercises the amin floor
    for top_db in (80.0, None):
        np.testing.assert_allclose(power_to_db(power, top_db=top_db),
                                   librosa.power_to_db(power, ref=1.0, top_db=top_db), atol=1e-5)
    with pytest.raises(ValueError):
        power_to_db(power, top_db=-1.0)


def test_stft_power_frames_matches_librosa_no_centering():
    """Relative to the loudest bin, |difference| < 1e-5 (float32 FFT rounding)."""
    y = sample("loop_amen")[:44_100]
    ours = stft_power_frames(y, 1_024, 512)
    theirs = np.abs(librosa.stft(y, n_fft=1_024, hop_length=512, center=False)) ** 2
    assert ours.shape == theirs.T.shape
    np.testing.assert_allclose(ours, theirs.T, atol=1e-5 * theirs.max())
    assert stft_power_frames(y[:1_000], 1_024, 512).shape == (0, 513)  # shorter than one frame


def test_onset_strength_frame_is_mean_positive_flux():
    previous = np.array([0.0, 10.0, -5.0, 3.0])
    current = np.array([6.0, 4.0, -1.0, 3.0])
    assert float(onset_strength_frame(previous, current)) == pytest.approx((6 + 0 + 4 + 0) / 4)
    # Columns of a (mels, frames) pair are independent frames.
    stacked = onset_strength_frame(np.stack([previous, current], 1), np.stack([current, previous], 1))
    assert stacked.shape == (2,) and stacked[1] == pytest.approx(6 / 4)


def test_fft_section_softmax_sums_to_one_and_follows_the_loud_section():
    spectrum = np.full(513, 1e-6)
    spectrum[300:320] = 1.0  # energy in the 5th of 8 sections (bins 1..513 split evenly)
    weights = fft_section_softmax(spectrum, sections=8, temperature=1.0)
    assert weights.shape == (8,) and weights.sum() == pytest.approx(1.0)
    assert int(np.argmax(weights)) == 4
    hotter = fft_section_softmax(spectrum, sections=8, temperature=10.0)
    assert hotter.max() < weights.max()  # higher temperature flattens
    batch = fft_section_softmax(np.stack([spectrum, spectrum[::-1]]), 8, 1.0)
    assert batch.shape == (2, 8) and np.allclose(batch.sum(axis=1), 1.0)
    assert np.all(np.isfinite(fft_section_softmax(np.zeros(513), 8, 0.01)))  # silence: uniform, no NaN
    with pytest.raises(ValueError):
        fft_section_softmax(spectrum, 8, 0.0)
