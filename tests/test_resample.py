"""Streaming linear resampling: right rate, right pitch, seamless across blocks."""
import numpy as np
import pytest

from bridge.sources.resample import LinearResampler


def sine(freq, rate, seconds):
    t = np.arange(int(rate * seconds)) / rate
    return np.sin(2 * np.pi * freq * t).astype(np.float32)


@pytest.mark.parametrize("source, target", [(48_000, 44_100), (22_050, 44_100), (44_100, 44_100)])
def test_pitch_and_length_are_kept(source, target):
    out = LinearResampler(source, target)(sine(440.0, source, 2.0))
    assert abs(out.size - 2.0 * target) <= 2
    n = min(out.size, int(2.0 * target))
    expected = sine(440.0, target, 2.0)
    # linear interpolation of a 440 Hz sine: error well under 1 % of full scale
    assert np.abs(out[:n] - expected[:n]).max() < 0.01


def test_blocks_of_any_size_give_the_same_stream():
    x = sine(997.0, 48_000, 1.0)
    whole = LinearResampler(48_000, 44_100)(x)
    resampler = LinearResampler(48_000, 44_100)
    rng = np.random.default_rng(0)
    pieces, start = [], 0
    while start < x.size:
        n = int(rng.integers(1, 700))
        pieces.append(resampler(x[start:start + n]))
        start += n
    joined = np.concatenate(pieces)
    assert joined.size == whole.size
    assert np.allclose(joined, whole, atol=1e-6)


def test_bad_rates_are_refused():
    with pytest.raises(ValueError):
        LinearResampler(0, 44_100)
