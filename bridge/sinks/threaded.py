"""ThreadedSink: run any sink on its own thread so a slow output never stalls the engine.

The engine's `send` copies the frame into a queue of `queue_size` (default 2) and returns at
once. When the queue is full the OLDEST waiting frame is dropped and counted: a live visual
wants the newest picture, not a backlog. The audio of a dropped frame is not thrown away: it is
prepended to the next waiting frame's audio, so a recording or an NDI audio stream stays
continuous even when video frames are skipped.

The wrapped sink lives entirely on the worker thread: it is opened, fed and closed there. That
matters for outputs with thread affinity (an OpenGL context for Spout, an SDL window for the
preview), and it means the sender object is created once and reused for every frame.
An exception while sending marks the status `lost` (with the reason) and is counted as a drop;
the thread carries on, so a hiccup in one output never kills the bridge.
"""
from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass

import numpy as np

from bridge.errors import SinkUnavailable
from bridge.sinks.base import Sink
from bridge.sources.base import State, Status

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    frame: np.ndarray
    capture_time: float
    audio: np.ndarray | None


def _join_audio(first: np.ndarray | None, second: np.ndarray | None) -> np.ndarray | None:
    if first is None or first.size == 0:
        return second
    if second is None or second.size == 0:
        return first
    return np.concatenate([first, second])


class ThreadedSink(Sink):
    """Wraps `inner` so `send` never blocks; see the module docstring for the drop policy."""

    def __init__(self, inner: Sink, queue_size: int = 2,
                 open_timeout_s: float = 15.0, close_timeout_s: float = 10.0) -> None:
        super().__init__()
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        self.inner = inner
        self.queue_size = int(queue_size)
        self.open_timeout_s = open_timeout_s
        self.close_timeout_s = close_timeout_s
        self._queue: collections.deque[_Pending] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        self._queue_dropped = 0
        self._failed_sends = 0
        self._last_error: str | None = None

    @property  # type: ignore[override]
    def kind(self) -> str:
        return self.inner.kind

    @property
    def sent(self) -> int:
        return self.inner.sent

    @property
    def dropped(self) -> int:
        # late frames after close (base counter) + queue overflow + send failures + the
        # inner sink's own discards (e.g. a preview window the user closed)
        return self._dropped + self._queue_dropped + self._failed_sends + self.inner.dropped

    @property
    def pending(self) -> int:
        """Frames waiting in the queue (at most `queue_size`)."""
        return len(self._queue)

    @property
    def status(self) -> Status:
        if self._is_closed or not self._is_open:
            return self._status
        if self._last_error is not None:
            return Status(State.LOST, self._last_error)
        return self.inner.status

    def _open(self, width: int, height: int, fps: float) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(width, height, fps), name=f"sink-{self.kind}", daemon=True)
        self._thread.start()
        if not self._opened.wait(self.open_timeout_s):
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
            raise SinkUnavailable(
                f"{self.kind} output did not open within {self.open_timeout_s:g} s")
        if self._open_error is not None:
            self._thread.join(self.close_timeout_s)
            raise self._open_error

    def _send(self, frame: np.ndarray, capture_time: float,
              audio: np.ndarray | None) -> None:
        # Copies, because the caller may reuse its buffers as soon as we return.
        item = _Pending(frame.copy(), capture_time,
                        None if audio is None else np.array(audio, dtype=np.float32).reshape(-1))
        with self._cond:
            if len(self._queue) >= self.queue_size:
                oldest = self._queue.popleft()
                self._queue_dropped += 1
                heir = self._queue[0] if self._queue else item
                heir.audio = _join_audio(oldest.audio, heir.audio)
            self._queue.append(item)
            self._cond.notify()

    def _run(self, width: int, height: int, fps: float) -> None:
        try:
            self.inner.open(width, height, fps)
        except BaseException as exc:  # handed to the opener's thread and raised there
            self._open_error = exc
            self._opened.set()
            return
        self._opened.set()
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._stopping:
                        self._cond.wait()
                    if not self._queue:  # stopping and drained
                        break
                    item = self._queue.popleft()
                self._deliver(item)
        finally:
            try:
                self.inner.close()
            except Exception:
                log.exception("closing the %s output failed", self.kind)

    def _deliver(self, item: _Pending) -> None:
        try:
            self.inner.send(item.frame, item.capture_time, item.audio)
        except Exception as exc:
            self._failed_sends += 1
            if self._last_error is None or self._failed_sends % 100 == 1:
                log.warning("%s output failed to send a frame: %s", self.kind, exc)
            self._last_error = f"send failed: {type(exc).__name__}: {exc}"
        else:
            self._last_error = None

    def _close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            # The worker drains what is queued (so a recording ends on the last frame) and
            # then closes the inner sink on its own thread.
            self._thread.join(self.close_timeout_s)
            if self._thread.is_alive():
                log.warning("%s output did not stop within %g s; leaving it behind",
                            self.kind, self.close_timeout_s)
