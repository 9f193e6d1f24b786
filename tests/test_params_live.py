"""Parameters reach the live output: blackout sends black at full rate, freeze holds one picture
while the music goes on, brightness scales light; the engine keeps its rate throughout."""
from __future__ import annotations

import threading
import time

import numpy as np

from bridge.engine import Engine, FramePipeline
from bridge.params import ParamStore
from bridge.runtime import Runner
from bridge.sources.audio import open_audio_source
from tests.helpers.streams import AMEN
from tests.test_engine import RecordingSink, tiny_model


def run_with(changes: list[tuple[float, str, object]], seconds: float = 3.0):
    model = tiny_model()
    params = ParamStore()
    pipeline = FramePipeline(model, runner=Runner(model, runtime="reference"), params=params)
    sink = RecordingSink(32, 32, 30)
    marks = []

    def control():
        start = time.monotonic()
        for at, name, value in changes:
            time.sleep(max(0.0, at - (time.monotonic() - start)))
            params.set(name, value)
            marks.append(len(sink.frames))

    with open_audio_source(str(AMEN), sample_rate=pipeline.sample_rate) as audio:
        thread = threading.Thread(target=control)
        thread.start()
        stats = Engine(pipeline, [sink], fps=30, audio_source=audio).run(duration=seconds)
        thread.join()
    return stats, sink.frames, marks


def test_blackout_and_freeze_keep_the_rate():
    stats, frames, (black_on, black_off, freeze_on, freeze_off) = run_with(
        [(0.6, "blackout", True), (1.2, "blackout", False), (1.8, "freeze", True), (2.5, "freeze", False)])
    assert stats["fps"] >= 28.0
    black = frames[black_on + 2:black_off - 1]
    assert black and all(f[..., :3].max() == 0 and f[..., 3].min() == 255 for f in black)
    held = frames[freeze_on + 2:freeze_off - 1]
    assert len(held) > 10 and all(np.array_equal(f, held[0]) for f in held)
    moving = frames[5:black_on]
    assert any(not np.array_equal(a, b) for a, b in zip(moving, moving[1:]))  # amen moves it


def test_brightness_zero_fades_to_black():
    _, frames, (mark,) = run_with([(0.5, "brightness", 0.0)], seconds=2.0)
    assert frames[5][..., :3].mean() > 5
    assert frames[-1][..., :3].max() <= 2  # glided down to black within the smoothing time
