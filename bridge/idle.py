"""Idle mode (seed 000's future work): when nobody is in front of the camera for a while, show
what the model learned from instead of an empty room, and come back the moment someone steps in.

`PresenceDetector` watches the real camera frames: "motion" (mean absolute change of a small grey
copy against a slowly adapting background, so a still person who just moved is still seen for
`after_s`) or "face" (OpenCV's bundled frontal-face Haar cascade). `IdleMode.apply(snapshot)`
returns the snapshot unchanged while someone is there; after `after_s` seconds of nobody it swaps
the camera image for the model's stored training pictures, one every `cycle_s` seconds. Time is
the image's capture time, so an offline render behaves like the live run.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from bridge.errors import ConfigError

DETECTORS = ("motion", "face")


@dataclass(frozen=True)
class IdleSettings:
    after_s: float = 10.0  # nobody for this long -> idle
    detector: str = "motion"
    cycle_s: float = 4.0  # each stored picture is shown this long
    motion_threshold: float = 0.03  # mean absolute change (0..1) of the grey 48x48 copy
    background_halflife_s: float = 2.0  # how fast the motion background forgets

    def __post_init__(self):
        if self.detector not in DETECTORS:
            raise ConfigError(f"idle detector must be one of {', '.join(DETECTORS)}, got {self.detector!r}")
        if self.after_s <= 0 or self.cycle_s <= 0 or self.background_halflife_s <= 0:
            raise ConfigError("idle after/cycle/background times must be positive seconds")
        if not 0.0 < self.motion_threshold < 1.0:
            raise ConfigError(f"idle motion threshold must be in (0, 1), got {self.motion_threshold:g}")


class PresenceDetector:
    SIDE = 48  # pixels of the grey copy motion is judged on: enough for a body, cheap

    def __init__(self, settings: IdleSettings):
        import cv2

        self.settings = settings
        self._background: np.ndarray | None = None
        self._last_time: float | None = None
        self._cascade = None
        if settings.detector == "face":
            if not hasattr(cv2, "CascadeClassifier"):
                raise ConfigError(f"OpenCV {cv2.__version__} has no face cascades (OpenCV 5 dropped "
                                  f"them; install opencv-python-headless<5) or use --idle-detector motion")
            path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
            self._cascade = cv2.CascadeClassifier(path)
            if self._cascade.empty():
                raise ConfigError(f"OpenCV's face cascade is missing ({path}); use --idle-detector motion")

    def motion(self, image: np.ndarray, t: float) -> float:
        """Mean absolute change 0..1 of this frame against the running background."""
        import cv2

        grey = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
        small = cv2.resize(grey, (self.SIDE, self.SIDE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        if self._background is None:
            self._background, self._last_time = small, t
            return 0.0
        change = float(np.abs(small - self._background).mean())
        dt = max(0.0, t - (self._last_time if self._last_time is not None else t))
        keep = 0.5 ** (dt / self.settings.background_halflife_s)
        self._background = keep * self._background + (1.0 - keep) * small
        self._last_time = t
        return change

    def faces(self, image: np.ndarray) -> int:
        import cv2

        grey = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
        scale = 240.0 / max(grey.shape)
        if scale < 1.0:
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found = self._cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=4, minSize=(20, 20))
        return len(found)

    def someone(self, image: np.ndarray, t: float) -> bool:
        if self._cascade is not None:
            return self.faces(image) > 0
        return self.motion(image, t) > self.settings.motion_threshold


class IdleMode:
    def __init__(self, images: torch.Tensor | None, settings: IdleSettings = IdleSettings()):
        if images is None or len(images) == 0:
            raise ConfigError("idle mode needs a model that stores training pictures (this one has none)")
        # (N, 3, H, W) uint8 -> list of (H, W, 3) RGB, as a camera would deliver them
        self.pictures = [np.ascontiguousarray(p.permute(1, 2, 0).numpy()) for p in images.to(torch.uint8)]
        self.settings = settings
        self.detector = PresenceDetector(settings)
        self._last_seen: float | None = None
        self._idle_since: float | None = None
        self.idle = False

    def apply(self, snapshot):
        if snapshot.image is None:
            return snapshot
        t = snapshot.image_time if snapshot.image_time is not None else 0.0
        if self._last_seen is None or self.detector.someone(snapshot.image, t):
            self._last_seen = t
        was_idle = self.idle
        self.idle = t - self._last_seen >= self.settings.after_s
        if not self.idle:
            self._idle_since = None
            return snapshot
        if not was_idle or self._idle_since is None:
            self._idle_since = t
        index = int((t - self._idle_since) // self.settings.cycle_s) % len(self.pictures)
        return dataclasses.replace(snapshot, image=self.pictures[index])
