"""What every source and sink shares: a status a human can read, and the audio ring buffer.

Sources run on their own thread and keep only the newest data. The engine never waits on them:
it asks for the newest window (audio) or the newest frame (video) and gets it at once.
"""
from __future__ import annotations

import enum
import re
import threading
from dataclasses import dataclass

import numpy as np

from bridge import clock

# "name.ext" or anything with a path separator reads as a file the user meant to give,
# so a typo gives "no such file" rather than "no such sound card" (or camera).
_FILE_LIKE = re.compile(r"(^[.~]|[/\\]|\.[A-Za-z0-9]{2,5}$)")


def looks_like_path(spec: str) -> bool:
    return bool(_FILE_LIKE.search(spec))


def is_url(spec) -> bool:
    """A source given as a URL with a scheme ("scheme://..."), read by ffmpeg (or OpenCV)."""
    return isinstance(spec, str) and "://" in spec


class State(str, enum.Enum):
    OK = "ok"
    STARTING = "starting"
    LOST = "lost"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    CLOSED = "closed"


@dataclass(frozen=True)
class Status:
    state: State
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.state.value}" + (f" ({self.reason})" if self.reason else "")


class AudioRing:
    """Mono float32 ring buffer of the newest `seconds` of audio, with capture times.

    Writers (one audio thread) call `write(block, capture_time)` where `capture_time` is
    `clock.now()` at which the *last* sample of the block was captured. Readers get the
    newest `n` samples plus the capture time of the newest one, or every sample written
    since a position they remember (`read_since`), which is how streaming analysis sees
    each sample exactly once.
    """

    def __init__(self, sample_rate: int, seconds: float = 12.0):
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = int(sample_rate)
        self.capacity = int(round(seconds * sample_rate))
        self._buf = np.zeros(self.capacity, dtype=np.float32)
        self._written = 0  # total samples ever written
        self._last_capture = clock.now()
        self._lock = threading.Lock()

    @property
    def written(self) -> int:
        return self._written

    def write(self, block: np.ndarray, capture_time: float | None = None) -> None:
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        if capture_time is None:
            capture_time = clock.now()
        n = block.size
        if n == 0:
            return
        if n >= self.capacity:
            block = block[-self.capacity:]
            skipped = n - self.capacity
            n = self.capacity
        else:
            skipped = 0
        with self._lock:
            start = (self._written + skipped) % self.capacity
            first = min(n, self.capacity - start)
            self._buf[start:start + first] = block[:first]
            if first < n:
                self._buf[:n - first] = block[first:]
            self._written += skipped + n
            self._last_capture = capture_time

    def latest(self, n: int) -> tuple[np.ndarray, float]:
        """The newest `n` samples (zero-padded at the front when fewer exist) and the
        capture time of the newest sample."""
        n = int(n)
        out = np.zeros(n, dtype=np.float32)
        with self._lock:
            avail = min(n, self._written, self.capacity)
            self._copy_tail(out[n - avail:], avail)
            t = self._last_capture
        return out, t

    def read_since(self, position: int) -> tuple[np.ndarray, int, float]:
        """Samples written after absolute `position`: (samples, new_position, capture_time).

        If the reader fell more than the capacity behind, the oldest samples are gone and
        it gets the newest `capacity` samples (the position jumps accordingly)."""
        with self._lock:
            position = max(int(position), self._written - self.capacity)
            n = self._written - position
            out = np.empty(max(n, 0), dtype=np.float32)
            self._copy_tail(out, n)
            return out, self._written, self._last_capture

    def _copy_tail(self, out: np.ndarray, n: int) -> None:
        if n <= 0:
            return
        end = self._written % self.capacity
        start = (end - n) % self.capacity
        if start < end:
            out[:] = self._buf[start:end]
        else:
            first = self.capacity - start
            out[:first] = self._buf[start:]
            out[first:] = self._buf[:end]
