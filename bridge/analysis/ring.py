"""Fixed-size history of rows (one per analysis frame), oldest dropped first."""
from __future__ import annotations

import numpy as np


class FrameRing:
    """`capacity` rows of `width` values; push many at once, read back oldest-first copies.

    Reads copy, so a snapshot keeps its own history while the analyzer keeps writing.
    """

    def __init__(self, capacity: int, width: int, fill: float = 0.0, dtype=np.float32):
        self._rows = np.full((capacity, width), fill, dtype=dtype)
        self._fill = fill
        self._next = 0  # row the next push writes
        self.count = 0  # rows ever pushed (saturates nowhere; only compared with capacity)

    @property
    def capacity(self) -> int:
        return self._rows.shape[0]

    def push(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=self._rows.dtype).reshape(-1, self._rows.shape[1])
        if len(rows) >= self.capacity:
            self._rows[:] = rows[-self.capacity:]
            self._next = 0
        else:
            end = self._next + len(rows)
            if end <= self.capacity:
                self._rows[self._next:end] = rows
            else:
                split = self.capacity - self._next
                self._rows[self._next:] = rows[:split]
                self._rows[: end - self.capacity] = rows[split:]
            self._next = end % self.capacity
        self.count += len(rows)

    def latest(self, n: int | None = None) -> np.ndarray:
        """The newest `n` rows (all by default), oldest first, as a new array."""
        n = self.capacity if n is None else min(n, self.capacity)
        start = self._next - n
        if start >= 0:
            return self._rows[start:self._next].copy()
        return np.concatenate((self._rows[start:], self._rows[: self._next]))

    def clear(self) -> None:
        self._rows.fill(self._fill)
        self._next = 0
        self.count = 0
