"""`Camera` through OpenCV, and `list_cameras`."""
from __future__ import annotations

import glob
import logging
import os
import re
import sys
import threading

import cv2
import numpy as np

from bridge import clock
from bridge.errors import DeviceError
from bridge.sources.base import State, is_url
from bridge.sources.video_base import VideoSource

log = logging.getLogger(__name__)


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


# OpenCV can block in read() for as long as the driver likes (a stuck USB camera, a network
# camera whose stream died) or hand back the same frame forever. So reads happen on a reader
# thread and a watchdog judges them: no new frame for READ_TIMEOUT_S, or the same picture for
# FROZEN_AFTER_S, and the reader is abandoned (it lets go of its capture whenever its read returns)
# and a new capture is opened on a new reader.
READ_TIMEOUT_S = 1.0
FROZEN_AFTER_S = 2.0
OPEN_TIMEOUT_S = 3.0  # a capture still opening after this is stuck too
RETRY_EVERY_S = 0.25  # after a failed open: a camera plugged back in is found at once
MAX_STUCK_READERS = 2  # abandoned reads still inside the driver before we stop opening more
WATCH_EVERY_S = 0.05


class Camera(VideoSource):
    """A live camera through OpenCV: an index or a name (V4L2 on Linux, the OS's backend
    elsewhere), or a network camera's URL (rtsp://, http://, udp://, ... through OpenCV's FFMPEG
    backend, with its open and read timeouts set).

    Frames are read on a reader thread; a watchdog thread replaces a reader that stopped
    delivering (blocked in the driver, failing, or repeating one frame: timestamps and a pixel
    fingerprint tell) with a new capture, retrying every `RETRY_EVERY_S` until the camera is
    back. The status says RECONNECTING with the reason meanwhile; `read_latest()` never waits and
    keeps the last good frame. `reopens` counts recoveries, `lost_for_s` the last outage."""

    kind = "camera"
    detect_freeze = True

    def __init__(self, device: int | str = 0, size: tuple[int, int] | None = None,
                 fps: float | None = None, read_timeout_s: float = READ_TIMEOUT_S,
                 frozen_after_s: float = FROZEN_AFTER_S):
        super().__init__(size, stale_after_s=max(read_timeout_s, frozen_after_s))
        self.device = device
        self.fps = fps
        self.read_timeout_s = float(read_timeout_s)
        self.frozen_after_s = float(frozen_after_s)
        self.name = ""
        self.reopens = 0
        self.lost_for_s = 0.0
        self._index: int | None = None
        self._generation = 0  # the reader whose frames count; older ones are abandoned
        self._readers: list[threading.Thread] = []
        self._reader_started = 0.0
        self._reader_frames = 0  # frames the current reader published
        self._reader_done = threading.Event()
        self._lost_at: float | None = None

    def describe(self) -> str:
        return f"camera {self.name or self.device}"

    # --- captures ---------------------------------------------------------------------------------
    def _open_capture(self, index: int | None = None):
        if is_url(self.device):
            # OpenCV's own timeouts, so an abandoned reader returns (and frees its socket) soon
            # after the watchdog gave up on it; the read limit stays above the watchdog's.
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(OPEN_TIMEOUT_S * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(max(5.0, 3 * self.read_timeout_s) * 1000)]
            cap = cv2.VideoCapture(self.device, cv2.CAP_FFMPEG, params)
        else:
            cap = cv2.VideoCapture(self._index if index is None else index, _backend())
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
        if is_url(self.device):
            self.name = self.device
        else:
            info = find_camera(self.device)
            self.name, self._index = info["name"], info["index"]
        cap = self._open_capture()
        if cap is None:  # the first open fails loudly: a wrong camera stops the start
            if is_url(self.device):
                raise DeviceError(f"cannot open network camera {self.device}")
            raise DeviceError(f"cannot open camera {self.device!r} ({self.name}); "
                              f"cameras: {_cameras_text(list_cameras())}")
        self._start_reader(cap)
        self._spawn(self._watch, "camera-watchdog")

    def _to_rgb(self, bgr: np.ndarray) -> np.ndarray:
        if self.size and (bgr.shape[1], bgr.shape[0]) != tuple(self.size):
            bgr = cv2.resize(bgr, tuple(self.size), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    # --- readers ------------------------------------------------------------------------------------
    def _start_reader(self, cap=None) -> None:
        """A new reader (opening its own capture when `cap` is None); older readers stop counting."""
        self._generation += 1
        self._reader_started = clock.now()
        self._reader_frames = 0
        self._reader_done = threading.Event()
        # Not joined at close (a read stuck in a driver would hold it up): daemons, and each lets
        # go of its own capture when it can.
        reader = threading.Thread(target=self._read, args=(self._generation, cap, self._reader_done),
                                  name=f"vjbridge-camera-read-{self._generation}", daemon=True)
        self._readers = [t for t in self._readers if t.is_alive()] + [reader]
        reader.start()

    def _read(self, generation: int, cap, done: threading.Event) -> None:
        def current() -> bool:
            return generation == self._generation and not self._stopping.is_set()
        failures = 0
        try:
            if cap is None:
                cap = self._open_capture()
                if cap is None:
                    return
            last_stamp = None
            while current():
                ok, bgr = cap.read()
                if not current():
                    return  # abandoned while inside read(): publish nothing
                if not ok or bgr is None:
                    failures += 1
                    if failures >= 10:  # a capture that fails this often is dead: the watchdog reopens
                        return
                    self._stopping.wait(0.02)
                    continue
                failures = 0
                stamp = cap.get(cv2.CAP_PROP_POS_MSEC)
                if stamp > 0 and stamp == last_stamp:
                    continue  # the backend handed the same frame again: not news
                last_stamp = stamp
                self._publish(self._to_rgb(bgr))
                self._reader_frames += 1
                if self._lost_at is not None and self._reader_frames == 1:
                    self.lost_for_s = clock.now() - self._lost_at
                    self._lost_at = None
                    self.reopens += 1
                    log.warning("camera %s is back after %.1f s", self.name, self.lost_for_s)
        finally:
            if cap is not None:
                cap.release()
            done.set()

    # --- the watchdog -------------------------------------------------------------------------------
    def _trouble(self, now: float) -> str | None:
        """Why the current reader is no good, or None while it is."""
        if self._reader_done.is_set():
            return "the capture stopped delivering" if self._reader_frames else "cannot open it"
        if self._reader_frames == 0:
            waited = now - self._reader_started
            return f"still opening after {waited:.1f} s" if waited > OPEN_TIMEOUT_S + self.read_timeout_s else None
        last = self._last_frame_at or self._reader_started
        if now - last > self.read_timeout_s:
            return f"no frame for {now - last:.1f} s"
        if self._last_change_at is not None and now - self._last_change_at > self.frozen_after_s:
            return f"frame unchanged for {now - self._last_change_at:.1f} s"
        return None

    def _watch(self) -> None:
        next_try = 0.0
        while not self._stopping.wait(WATCH_EVERY_S):
            now = clock.now()
            why = self._trouble(now)
            if why is None:
                continue
            if self._lost_at is None:  # the reader that delivers again clears it (see _read)
                self._lost_at = now
                log.warning("camera %s lost (%s); reopening every %g s", self.name, why, RETRY_EVERY_S)
            if now < next_try:
                continue
            stuck = sum(t.is_alive() for t in self._readers[:-1])
            if not self._reader_done.is_set():
                stuck += 1  # the current reader is about to be abandoned, still inside the driver
            if stuck > MAX_STUCK_READERS:
                self._set(State.RECONNECTING, f"{self.describe()}: {why}; {stuck} reads stuck in the "
                                              "driver, waiting for one to return")
                next_try = now + RETRY_EVERY_S
                continue
            self._set(State.RECONNECTING, f"{self.describe()}: {why}; reopening")
            self._last_change_at = None
            self._start_reader()
            next_try = now + RETRY_EVERY_S
