"""NullSink: discards frames and counts them (benchmarks, headless tests, --out null)."""
from __future__ import annotations

import numpy as np

from bridge import clock
from bridge.sinks.base import Sink


class NullSink(Sink):
    kind = "null"

    def __init__(self) -> None:
        super().__init__()
        self.last_capture_time: float | None = None
        self.last_latency_s: float | None = None  # send time − capture time of the last frame

    def _open(self, width: int, height: int, fps: float) -> None:
        pass

    def _send(self, frame: np.ndarray, capture_time: float,
              audio: np.ndarray | None) -> None:
        self.last_capture_time = capture_time
        self.last_latency_s = clock.now() - capture_time

    def _close(self) -> None:
        pass
