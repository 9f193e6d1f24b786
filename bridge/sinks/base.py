"""The Sink seam: where finished frames leave the bridge.

A sink is opened once with the output size and rate, then fed one frame per engine tick:

    sink.open(width, height, fps)
    sink.send(frame, capture_time, audio=None)   # frame: uint8 RGBA (H, W, 4), C-contiguous
    sink.close()                                 # idempotent

`capture_time` is the `bridge.clock.now()` of the audio/image the frame was made from, so a
sink can report latency or time-stamp a recording. `audio` is the mono float32 samples that
arrived since the previous frame; only sinks that record or carry audio look at it.

A subclass writes `_open`, `_send` and `_close` (and may override `kind`). The base class
validates frames, counts `sent` / `dropped`, keeps `status`, and makes `close` idempotent.
Sinks that may be slow are wrapped in `ThreadedSink` (threaded.py) so the engine never waits.
"""
from __future__ import annotations

import abc
import logging
from typing import ClassVar

import numpy as np

from bridge.sources.base import State, Status

log = logging.getLogger(__name__)


def check_frame(frame: np.ndarray, width: int, height: int) -> None:
    """Raise ValueError unless `frame` is what every sink may assume: uint8 (H, W, 4), C-contiguous.

    Cheap (no pixel access); catching a wrong frame here names the culprit instead of letting a
    native library read past a buffer."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8 or frame.shape != (height, width, 4):
        raise ValueError(
            f"frame must be uint8 ({height}, {width}, 4), got {frame.dtype} {frame.shape}")
    if not frame.flags.c_contiguous:
        raise ValueError("frame must be C-contiguous (np.ascontiguousarray)")


def check_size(width: int, height: int, fps: float) -> None:
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"sink size must be positive, got {width}x{height}")
    if not fps > 0:
        raise ValueError(f"sink fps must be positive, got {fps}")


class Sink(abc.ABC):
    """One output. Subclasses must write:

    - `_open(width, height, fps)`: create the underlying sender/file/window once; raise
      `SinkUnavailable` (one line for a human) when the OS or library is missing.
    - `_send(frame, capture_time, audio)`: hand one validated frame to the output; return
      False when the frame was discarded on purpose (it is then counted as dropped), so that
      `sent + dropped` always equals the frames given to `send`.
    - `_close()`: release everything; called at most once.

    and may set `kind` (a short name used in logs and status lines).
    """

    kind: ClassVar[str] = "sink"

    def __init__(self) -> None:
        self.width = 0
        self.height = 0
        self.fps = 0.0
        self._sent = 0
        self._dropped = 0
        self._is_open = False
        self._is_closed = False
        self._status = Status(State.STARTING, "not opened")

    # -- counters and status -------------------------------------------------------------
    @property
    def sent(self) -> int:
        """Frames handed to the output."""
        return self._sent

    @property
    def dropped(self) -> int:
        """Frames given to `send` that never reached the output."""
        return self._dropped

    @property
    def status(self) -> Status:
        return self._status

    @property
    def is_open(self) -> bool:
        return self._is_open and not self._is_closed

    def _set_status(self, state: State, reason: str = "") -> None:
        self._status = Status(state, reason)

    # -- lifecycle -----------------------------------------------------------------------
    def open(self, width: int, height: int, fps: float) -> "Sink":
        if self._is_closed:
            raise RuntimeError(f"{self.kind} sink was closed; make a new one")
        if self._is_open:
            raise RuntimeError(f"{self.kind} sink is already open")
        check_size(width, height, fps)
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self._open(self.width, self.height, self.fps)
        self._is_open = True
        if self._status.state == State.STARTING:
            self._set_status(State.OK)
        return self

    def send(self, frame: np.ndarray, capture_time: float,
             audio: np.ndarray | None = None) -> None:
        if not self._is_open:
            raise RuntimeError(f"{self.kind} sink is not open")
        if self._is_closed:
            # Late frames after shutdown are expected (engine and sink stop in either order).
            self._dropped += 1
            return
        check_frame(frame, self.width, self.height)
        if self._send(frame, capture_time, audio) is False:
            self._dropped += 1
        else:
            self._sent += 1

    def close(self) -> None:
        if self._is_closed:
            return
        self._is_closed = True
        try:
            if self._is_open:
                self._close()
        finally:
            self._set_status(State.CLOSED)

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.width}x{self.height}@{self.fps:g} "
                f"{self.status} sent={self.sent} dropped={self.dropped}>")

    # -- what subclasses write -----------------------------------------------------------
    @abc.abstractmethod
    def _open(self, width: int, height: int, fps: float) -> None: ...

    @abc.abstractmethod
    def _send(self, frame: np.ndarray, capture_time: float,
              audio: np.ndarray | None) -> bool | None: ...

    @abc.abstractmethod
    def _close(self) -> None: ...
