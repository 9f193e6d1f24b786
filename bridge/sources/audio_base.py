"""The audio source base, the real-time pacer, and the `Silence` source."""
from __future__ import annotations

import threading
from typing import Iterable, Iterator

import numpy as np

from bridge import clock
from bridge.sources.base import AudioRing, State, Status
from bridge.sources.threaded import ThreadedSource

DEFAULT_SAMPLE_RATE = 44_100
DEFAULT_BLOCK = 512
# A source that has written nothing for this long is reported LOST (lazily, by `status`),
# because a stuck driver or thread cannot report on itself.
STALE_AFTER_S = 1.0


class AudioSource(ThreadedSource):
    """Audio from somewhere, written by its own thread into `ring` (mono float32 at
    `sample_rate`, each block stamped with the `clock.now()` capture time of its last sample).

    Use `open()` / `close()` or `with source:`. `close()` is idempotent and joins the thread.
    Subclasses write `_start()` (and maybe `_stop()`), see `ThreadedSource`, and send every
    captured block through `_write(block, capture_time)`.
    """

    kind = "audio"

    def __init__(self, sample_rate: int = DEFAULT_SAMPLE_RATE, block: int = DEFAULT_BLOCK,
                 ring_seconds: float = 12.0):
        super().__init__()
        if block <= 0:
            raise ValueError(f"block must be positive, got {block}")
        self.sample_rate = int(sample_rate)
        self.block = int(block)
        self.ring = AudioRing(self.sample_rate, ring_seconds)
        self._last_write: float | None = None

    @property
    def status(self) -> Status:
        st = self._status
        if st.state is State.OK and self._last_write is not None:
            idle = clock.now() - self._last_write
            if idle > STALE_AFTER_S:
                return Status(State.LOST, f"no audio for {idle:.1f} s from {self.describe()}")
        return st

    def _write(self, block: np.ndarray, capture_time: float | None = None) -> None:
        now = clock.now()
        self.ring.write(block, now if capture_time is None else capture_time)
        self._last_write = now


class Pacer:
    """Holds a writer back so samples leave at the real rate, measured on the one clock.

    `wait(n)` returns when the `n` samples about to be written would have been captured
    live (the time of their last sample). If the writer fell behind by more than
    `max_lag_s` (a starved thread, a slow disk) the schedule restarts from now instead of
    bursting to catch up, so readers never see a flood of stale audio.
    """

    def __init__(self, sample_rate: int, stopping: threading.Event, max_lag_s: float = 0.25):
        self.sample_rate = sample_rate
        self.stopping = stopping
        self.max_lag_s = max_lag_s
        self.restart()

    def restart(self) -> None:
        self._t0 = clock.now()
        self._due = 0  # samples scheduled since t0

    def wait(self, n: int) -> bool:
        """Sleep until `n` more samples are due; False when the source is stopping."""
        self._due += n
        delay = self._t0 + self._due / self.sample_rate - clock.now()
        if delay > 0:
            return not self.stopping.wait(delay)
        if -delay > self.max_lag_s:
            self.restart()
        return not self.stopping.is_set()


def rechunk(chunks: Iterable[np.ndarray], block: int) -> Iterator[np.ndarray]:
    """Cut a stream of arbitrary-length arrays into arrays of exactly `block` samples;
    the tail (shorter) comes last."""
    pending: list[np.ndarray] = []
    size = 0
    for chunk in chunks:
        pending.append(chunk)
        size += chunk.size
        if size < block:
            continue
        joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
        cut = (size // block) * block
        for start in range(0, cut, block):
            yield joined[start:start + block]
        rest = joined[cut:]
        pending, size = ([rest], rest.size) if rest.size else ([], 0)
    if size:
        yield np.concatenate(pending)


class Silence(AudioSource):
    """Zeros at the real rate, so the whole bridge runs (and tests run) without audio."""

    kind = "silence"

    def _start(self) -> None:
        self._spawn(self._run, "silence")

    def _run(self) -> None:
        pacer = Pacer(self.sample_rate, self._stopping)
        zeros = np.zeros(self.block, dtype=np.float32)
        self._set(State.OK)
        while pacer.wait(self.block):
            self._write(zeros)
