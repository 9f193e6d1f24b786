"""Causal onset picking on a streaming onset-strength envelope.

librosa.onset.onset_detect picks peaks with windows that look 100 ms into the future and a
threshold relative to the whole file's maximum. Live we cannot wait, so:
  - a frame is a peak if it is >= the `pre_max` frames before it and >= the one frame after it,
    so every onset is reported exactly ONE hop late (11.6 ms at 44.1 kHz / 512);
  - it must exceed the mean of itself and the `pre_avg` frames before it by `delta` times a
    running maximum of the envelope (a decaying peak follower stands in for the global max);
  - it must come more than `min_gap` frames after the previous onset.
"""
from __future__ import annotations

from collections import deque


class OnsetPicker:
    def __init__(self, pre_max: int, pre_avg: int, delta: float, min_gap: int,
                 scale_decay: float, scale_floor: float):
        self.pre_max = max(1, pre_max)
        self.pre_avg = max(1, pre_avg)
        self.delta = delta
        self.min_gap = min_gap
        self.scale_decay = scale_decay  # per-frame multiplier of the running maximum
        self.scale_floor = scale_floor  # flux below this is noise, never scaled up
        self.reset()

    def reset(self) -> None:
        # values[-1] is the newest frame, values[-2] the candidate being judged.
        self._values: deque[float] = deque([0.0] * (max(self.pre_max, self.pre_avg) + 2),
                                           maxlen=max(self.pre_max, self.pre_avg) + 2)
        self.scale = self.scale_floor
        self._frames_since_onset = 1 << 30

    def push(self, value: float) -> bool:
        """Add the newest onset strength; True if the frame one hop ago was an onset."""
        values = self._values
        values.append(value)
        self.scale = max(value, self.scale * self.scale_decay, self.scale_floor)
        self._frames_since_onset += 1
        candidate = values[-2]
        if candidate < value:
            return False
        history = list(values)[:-1]  # ends with the candidate
        if candidate < max(history[-1 - self.pre_max:]):
            return False
        local_mean = sum(history[-1 - self.pre_avg:]) / (self.pre_avg + 1)
        if candidate < local_mean + self.delta * self.scale:
            return False
        # The candidate is one frame older than the newest, hence the -1.
        if self._frames_since_onset - 1 <= self.min_gap:
            return False
        self._frames_since_onset = 1
        return True
