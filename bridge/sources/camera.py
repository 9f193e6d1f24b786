"""`Camera` through OpenCV, and `list_cameras`."""
from __future__ import annotations

import glob
import os
import re
import sys

import cv2
import numpy as np

from bridge.errors import DeviceError
from bridge.sources.base import State
from bridge.sources.video_base import VideoSource

REOPEN_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)
FAILED_READS_BEFORE_REOPEN = 10


def list_cameras() -> list[dict]:
    """Cameras as {index, name, path}. On Linux from /sys/class/video4linux (no device is
    opened, so a busy camera is still listed); elsewhere OpenCV gives no names, so the
    first few indices that open are listed as "camera N"."""
    if sys.platform.startswith("linux"):
        cams = []
        for node in glob.glob("/sys/class/video4linux/video*"):
            m = re.search(r"video(\d+)$", node)
            if not m:
                continue
            try:
                with open(os.path.join(node, "name")) as f:
                    name = f.read().strip()
            except OSError:
                name = f"video{m.group(1)}"
            cams.append({"index": int(m.group(1)), "name": name, "path": f"/dev/video{m.group(1)}"})
        return sorted(cams, key=lambda c: c["index"])
    cams = []
    for index in range(4):
        cap = cv2.VideoCapture(index)
        if cap.isOpened():
            cams.append({"index": index, "name": f"camera {index}", "path": ""})
        cap.release()
    return cams


def _cameras_text(cams: list[dict]) -> str:
    return "; ".join(f"{c['index']}: {c['name']}" for c in cams) if cams else "none"


def find_camera(device: int | str) -> dict:
    """The camera for an index or a case-insensitive name substring; DeviceError listing
    the cameras otherwise."""
    cams = list_cameras()
    if isinstance(device, int) or str(device).strip().isdigit():
        index = int(device)
        found = [c for c in cams if c["index"] == index]
        if found or not sys.platform.startswith("linux"):
            return found[0] if found else {"index": index, "name": f"camera {index}", "path": ""}
    else:
        wanted = str(device).strip().lower()
        found = [c for c in cams if wanted in c["name"].lower()]
        if found:
            return found[0]
    raise DeviceError(f"no camera {device!r}; cameras: {_cameras_text(cams)}")


def _backend() -> int:
    return cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY


class Camera(VideoSource):
    """A live camera. OpenCV's read() can block for seconds on a stuck device, so it runs on
    the reader thread only; `status` turns LOST by itself when frames stop or freeze, and the
    reader reopens the device with back-off after repeated failed reads."""

    kind = "camera"
    detect_freeze = True

    def __init__(self, device: int | str = 0, size: tuple[int, int] | None = None,
                 fps: float | None = None):
        super().__init__(size)
        self.device = device
        self.fps = fps
        self.name = ""
        self._cap = None

    def describe(self) -> str:
        return f"camera {self.name or self.device}"

    def _open_capture(self, index: int):
        cap = cv2.VideoCapture(index, _backend())
        if not cap.isOpened():
            cap.release()
            return None
        if self.size:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        if self.fps:
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of old ones
        return cap

    def _start(self) -> None:
        info = find_camera(self.device)
        self.name = info["name"]
        cap = self._open_capture(info["index"])
        if cap is None:
            raise DeviceError(f"cannot open camera {self.device!r} ({info['name']}); "
                              f"cameras: {_cameras_text(list_cameras())}")
        self._spawn(lambda: self._run(cap, info["index"]), "camera")

    def _to_rgb(self, bgr: np.ndarray) -> np.ndarray:
        if self.size and (bgr.shape[1], bgr.shape[0]) != tuple(self.size):
            bgr = cv2.resize(bgr, tuple(self.size), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _run(self, cap, index: int) -> None:
        failures = 0
        attempt = 0
        try:
            while not self._stopping.is_set():
                if cap is None:
                    wait = REOPEN_BACKOFF_S[min(attempt, len(REOPEN_BACKOFF_S) - 1)]
                    self._set(State.RECONNECTING, f"camera {self.name} stopped; retry in {wait:g} s")
                    if self._stopping.wait(wait):
                        return
                    attempt += 1
                    cap = self._open_capture(index)
                    continue
                ok, bgr = cap.read()
                if ok and bgr is not None:
                    failures, attempt = 0, 0
                    self._publish(self._to_rgb(bgr))
                    continue
                failures += 1
                if failures >= FAILED_READS_BEFORE_REOPEN:
                    cap.release()
                    cap, failures = None, 0
                elif self._stopping.wait(0.05):
                    return
        finally:
            if cap is not None:
                cap.release()
