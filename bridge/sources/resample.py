"""Streaming sample-rate conversion for inputs that cannot run at the analysis rate (a Windows
WASAPI device fixed at 48 kHz, say). Linear interpolation: cheap enough for an audio callback,
and the analysis only needs the spectrum's shape, not hi-fi."""
from __future__ import annotations

import numpy as np


class LinearResampler:
    """Feed blocks at `source_rate`, get blocks at `target_rate`; continuous across blocks."""

    def __init__(self, source_rate: float, target_rate: float):
        if source_rate <= 0 or target_rate <= 0:
            raise ValueError(f"rates must be positive, got {source_rate} -> {target_rate}")
        self.step = float(source_rate) / float(target_rate)  # source samples per output sample
        self._previous = np.zeros(0, dtype=np.float32)  # last sample of the previous block
        self._position = 0.0  # next output position, counted from the start of _previous

    def __call__(self, block: np.ndarray) -> np.ndarray:
        x = np.concatenate([self._previous, np.asarray(block, dtype=np.float32).reshape(-1)])
        if x.size == 0:
            return x
        last = len(x) - 1
        if last < self._position:
            self._position -= last
            self._previous = x[-1:]
            return np.zeros(0, dtype=np.float32)
        n = int(np.floor((last - self._position) / self.step)) + 1
        where = self._position + self.step * np.arange(n)
        left = np.minimum(where.astype(np.int64), last)
        right = np.minimum(left + 1, last)
        frac = (where - left).astype(np.float32)
        out = x[left] * (1.0 - frac) + x[right] * frac
        self._position = where[-1] + self.step - last
        self._previous = x[-1:]
        return out.astype(np.float32, copy=False)
