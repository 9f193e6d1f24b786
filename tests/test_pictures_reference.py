"""The audio pictures stay the pictures the models were trained on: every representation, drawn
from two saved snapshots (quiet; just after a bass hit), matches what the plain float drawers
drew (tests/data/pictures_reference.npz, made by make_pictures_reference.py) within one level,
whatever was done since to draw them faster."""
import numpy as np
import pytest

from bridge.analysis import REPRESENTATIONS
from tests.data.make_pictures_reference import PATH, SIZES, rebuild


@pytest.fixture(scope="module")
def saved():
    return np.load(PATH)


@pytest.mark.parametrize("snapshot", [0, 1])
@pytest.mark.parametrize("name", REPRESENTATIONS)
def test_picture_matches_the_reference_drawing(saved, snapshot, name):
    features = rebuild({key: saved[f"{snapshot}/{key}"]
                        for key in ("scalars", "mel_db", "samples", "spectrogram_db", "history")})
    for size in SIZES:
        reference = saved[f"{snapshot}/{name}/{size}"]
        got = features.representation(name, size)
        assert got.shape == reference.shape and got.dtype == np.uint8 and got.flags.c_contiguous
        diff = np.abs(got.astype(int) - reference.astype(int))
        assert diff.max() <= 1, f"{name} {size}²: off by up to {diff.max()} levels"
        assert (diff > 0).mean() < 0.01, f"{name} {size}²: {(diff > 0).mean():.1%} of values moved"
