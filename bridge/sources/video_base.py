"""`VideoSource`: the newest frame only, published by a reader thread, with a status that
notices a feed that stopped or froze even when the reader itself is stuck."""
from __future__ import annotations

import zlib

import numpy as np

from bridge import clock
from bridge.sources.base import State, Status
from bridge.sources.threaded import ThreadedSource

# A feed with no new frame (or, for live feeds, an unchanged one) for this long is LOST.
STALE_AFTER_S = 2.0


def fingerprint(frame: np.ndarray) -> int:
    """Cheap identity of a frame: a sparse pixel grid is enough to tell a frozen feed
    (the same buffer sent again and again) from a live one, where sensor noise moves pixels."""
    return zlib.crc32(np.ascontiguousarray(frame[::7, ::7]).tobytes())


class VideoSource(ThreadedSource):
    """Frames (RGB uint8, H x W x 3, read-only) from a camera, a file or a URL.

    `read_latest()` never waits: it returns the newest (frame, capture_time) or None before
    the first frame. `frames` counts frames published, so a caller can tell new from repeat.
    `size=(width, height)` scales frames on the reader thread; None keeps the native size.
    Subclasses write `_start()` (see `ThreadedSource`) and publish with `_publish(frame)`.
    Live feeds set `detect_freeze` so an unchanging picture is reported LOST as well.
    """

    kind = "video"
    detect_freeze = False

    def __init__(self, size: tuple[int, int] | None = None, stale_after_s: float = STALE_AFTER_S):
        super().__init__()
        self.size = size
        self.stale_after_s = stale_after_s
        self.frames = 0
        self._latest: tuple[np.ndarray, float] | None = None
        self._last_frame_at: float | None = None
        self._last_change_at: float | None = None
        self._last_print: int | None = None

    def read_latest(self) -> tuple[np.ndarray, float] | None:
        return self._latest

    @property
    def status(self) -> Status:
        st = self._status
        if st.state is not State.OK or self._last_frame_at is None:
            return st
        now = clock.now()
        if now - self._last_frame_at > self.stale_after_s:
            return Status(State.LOST, f"no frame for {now - self._last_frame_at:.1f} s "
                                      f"from {self.describe()}")
        if self.detect_freeze and now - self._last_change_at > self.stale_after_s:
            return Status(State.LOST, f"frame unchanged for {now - self._last_change_at:.1f} s "
                                      f"from {self.describe()}")
        return st

    def _publish(self, frame: np.ndarray, capture_time: float | None = None) -> None:
        now = clock.now()
        frame.flags.writeable = False  # shared with every reader: nobody may draw on it
        self._latest = (frame, now if capture_time is None else capture_time)  # one atomic swap
        self.frames += 1
        self._last_frame_at = now
        if self.detect_freeze:
            fp = fingerprint(frame)
            if fp != self._last_print or self._last_change_at is None:
                self._last_change_at = now
            self._last_print = fp
        if self._status.state is not State.OK:
            self._set(State.OK)
