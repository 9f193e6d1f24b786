"""Idle mode on real pictures: a still empty room goes idle after the set time and shows the stored
training pictures in turn; someone moving (or a face, for the face detector) brings it back."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data as skdata

from bridge.errors import ConfigError
from bridge.generators.base import Snapshot
from bridge.idle import IdleMode, IdleSettings, PresenceDetector

FPS = 30


def room(t: float, walker: bool) -> np.ndarray:
    """A still 'room' (the coffee photo); with `walker`, a dark figure crossing it."""
    picture = skdata.coffee().copy()
    if walker:
        x = int(40 + 200 * ((t * 0.8) % 1.0))
        picture[100:380, x:x + 90] = (20, 20, 30)
    return picture


def stored() -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 256, (3, 3, 16, 16), dtype=np.uint8))


def play(idle: IdleMode, seconds: float, start: float, walker: bool):
    shown = []
    for i in range(int(seconds * FPS)):
        t = start + i / FPS
        image = room(t, walker)
        out = idle.apply(Snapshot(image=image, image_time=t))
        shown.append((t, idle.idle, out.image is image))
    return shown


def test_goes_idle_after_the_set_time_cycles_pictures_and_comes_back():
    idle = IdleMode(stored(), IdleSettings(after_s=2.0, cycle_s=1.0))
    walking = play(idle, 3.0, 0.0, walker=True)
    assert not any(state for _, state, _ in walking)  # someone is there: never idle
    still = play(idle, 6.0, 3.0, walker=False)
    idle_times = [t for t, state, _ in still if state]
    assert idle_times and 1.9 <= idle_times[0] - 3.0 <= 3.5  # after_s since the last movement
    assert all(not camera for _, state, camera in still if state)  # idle shows stored pictures
    shown = {idle.apply(Snapshot(image=room(t, False), image_time=t)).image.tobytes()
             for t in np.arange(9.0, 12.0, 0.25)}
    assert len(shown) == 3  # every stored picture, in turn
    back = play(idle, 1.0, 12.0, walker=True)
    assert back[-1][1] is False and back[-1][2] is True  # someone stepped in: the camera again


def test_face_detector_sees_the_astronaut_not_the_coffee():
    detector = PresenceDetector(IdleSettings(detector="face"))
    assert detector.faces(skdata.astronaut()) >= 1
    assert detector.faces(skdata.coffee()) == 0


def test_bad_settings_and_models_without_pictures_are_clear_errors():
    with pytest.raises(ConfigError, match="detector"):
        IdleSettings(detector="radar")
    with pytest.raises(ConfigError, match="positive"):
        IdleSettings(after_s=0)
    with pytest.raises(ConfigError, match="training pictures"):
        IdleMode(None)


def test_no_camera_frame_passes_through():
    idle = IdleMode(stored(), IdleSettings(after_s=0.1))
    snap = Snapshot(image=None)
    assert idle.apply(snap) is snap
