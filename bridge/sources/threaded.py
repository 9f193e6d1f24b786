"""Open/close, status and thread bookkeeping shared by audio and video sources.

A subclass writes two hooks (the pix2pix habit: the base docstring is the contract):
  `_start()`  begin capturing (threads via `_spawn`, or a driver callback); raise
              DeviceError / SourceError when it cannot start, so `open()` fails loudly.
  `_stop()`   undo what `_start` began that setting `_stopping` alone does not (optional).
Threads loop until `_stopping` is set and sleep with `_stopping.wait(s)` so close is prompt.
"""
from __future__ import annotations

import threading
from typing import Callable

from bridge.sources.base import State, Status

# How long `close()` waits for each thread. Readers may sit in a socket or driver read up
# to their own timeout; they are daemons, so shutdown never hangs past this.
JOIN_TIMEOUT_S = 5.0


class ThreadedSource:
    kind = "source"

    def __init__(self) -> None:
        self._status = Status(State.CLOSED, "not opened")
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def status(self) -> Status:
        return self._status

    def describe(self) -> str:
        """Where the data comes from, for messages."""
        return self.kind

    def open(self):
        """Start capturing; returns self. Opening an open source does nothing."""
        with self._lock:
            if self._status.state is not State.CLOSED:
                return self
            self._stopping = threading.Event()
            self._threads = []
            self._set(State.STARTING)
            try:
                self._start()
            except BaseException:
                self._stopping.set()
                self._set(State.CLOSED, "failed to open")
                raise
        return self

    def close(self) -> None:
        """Stop and join the threads. Idempotent."""
        with self._lock:
            if self._status.state is State.CLOSED:
                return
            self._stopping.set()
            self._stop()
            for t in self._threads:
                if t is not threading.current_thread():
                    t.join(JOIN_TIMEOUT_S)
            self._threads = []
            self._set(State.CLOSED)

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()} {self.status}>"

    def _start(self) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        pass

    def _set(self, state: State, reason: str = "") -> None:
        # A thread that outlived close() (stuck past the join timeout) must not undo CLOSED.
        if self._stopping.is_set() and state is not State.CLOSED:
            return
        self._status = Status(state, reason)

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        # Daemon: a thread stuck in a driver or socket must never keep the process alive.
        t = threading.Thread(target=target, name=f"vjbridge-{name}", daemon=True)
        self._threads.append(t)
        t.start()
