"""Sink seam, the non-blocking wrapper, the factory, and the OS-bound outputs' refusals."""
from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from bridge.clock import now
from bridge.errors import BridgeError, ConfigError, SinkUnavailable
from bridge.sinks import SINK_SPECS, Sink, SinkSpec, ThreadedSink, build_sink, open_sink, \
    parse_sink_spec
from bridge.sinks.null import NullSink
from bridge.sources.base import State

W, H = 32, 24


def frame_with_id(i: int) -> np.ndarray:
    f = np.zeros((H, W, 4), np.uint8)
    f[0, 0, :2] = divmod(i, 256)  # the frame's number, readable back from the pixels
    f[..., 3] = 255
    return f


def id_of(frame: np.ndarray) -> int:
    return int(frame[0, 0, 0]) * 256 + int(frame[0, 0, 1])


class SlowSink(Sink):
    """Takes `delay_s` per frame, remembers which frames and how much audio it got."""
    kind = "slow"

    def __init__(self, delay_s: float = 0.02, fail_on: set[int] | None = None) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.fail_on = fail_on or set()
        self.ids: list[int] = []
        self.audio_samples = 0
        self.threads: set[str] = set()

    def _open(self, width, height, fps):
        self.threads.add(threading.current_thread().name)

    def _send(self, frame, capture_time, audio):
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        if id_of(frame) in self.fail_on:
            raise OSError("simulated network hiccup")
        self.ids.append(id_of(frame))
        if audio is not None:
            self.audio_samples += len(audio)

    def _close(self):
        self.threads.add(threading.current_thread().name)


# ---- base class ---------------------------------------------------------------------------
def test_null_sink_counts_and_close_is_idempotent():
    with open_sink("null", W, H, 30) as sink:
        assert isinstance(sink, NullSink) and sink.status.state == State.OK
        t = now()
        for i in range(5):
            sink.send(frame_with_id(i), t)
        assert (sink.sent, sink.dropped) == (5, 0)
        assert sink.last_capture_time == t and sink.last_latency_s >= 0
    assert sink.status.state == State.CLOSED
    sink.close()  # again: no error
    sink.send(frame_with_id(9), now())  # a late frame after close is dropped, not an error
    assert (sink.sent, sink.dropped) == (5, 1)


@pytest.mark.parametrize("bad", [
    np.zeros((H, W, 3), np.uint8),                         # RGB, not RGBA
    np.zeros((H, W, 4), np.float32),                       # wrong dtype
    np.zeros((H + 2, W, 4), np.uint8),                     # wrong size
    np.zeros((W, H, 4), np.uint8).transpose(1, 0, 2),      # right shape, not contiguous
])
def test_send_rejects_frames_that_are_not_contiguous_uint8_rgba(bad):
    with open_sink("null", W, H, 30) as sink:
        with pytest.raises(ValueError):
            sink.send(bad, now())
        assert sink.sent == 0


def test_send_before_open_and_bad_sizes_raise():
    sink = NullSink()
    with pytest.raises(RuntimeError):
        sink.send(frame_with_id(0), now())
    with pytest.raises(ValueError):
        sink.open(0, H, 30)
    with pytest.raises(ValueError):
        sink.open(W, H, 0)


# ---- ThreadedSink -------------------------------------------------------------------------
def test_slow_sink_drops_oldest_never_blocks_and_keeps_newest():
    inner = SlowSink(delay_s=0.02)
    sink = ThreadedSink(inner, queue_size=2).open(W, H, 30)
    frames = [frame_with_id(i) for i in range(100)]
    block = np.ones(480, np.float32)  # 10 ms at 48 kHz per frame
    worst = 0.0
    t_start = time.perf_counter()
    for f in frames:
        t = time.perf_counter()
        sink.send(f, now(), block)
        worst = max(worst, time.perf_counter() - t)
    total = time.perf_counter() - t_start
    assert sink.pending <= 2
    sink.close()  # drains what is queued
    # 100 frames through a 20 ms sink would take 2 s if send waited; it must not.
    assert total < 0.5, f"send blocked: {total:.3f} s for 100 frames"
    assert worst < 0.1
    assert sink.dropped > 0
    assert sink.sent == len(inner.ids) and sink.sent + sink.dropped == 100
    assert inner.ids[-1] == 99, "the newest frame must be the last one delivered"
    assert inner.ids == sorted(inner.ids)
    # audio of dropped frames is carried to the next frame, none is lost
    assert inner.audio_samples == 100 * len(block)
    # the wrapped sink lived on one worker thread, never the caller's
    assert inner.threads == {"sink-slow"}


def test_threaded_sink_copies_frames_so_callers_may_reuse_buffers():
    inner = SlowSink(delay_s=0.01)
    sink = ThreadedSink(inner).open(W, H, 30)
    buf = frame_with_id(7)
    sink.send(buf, now())
    buf[0, 0, :2] = (0, 8)  # caller overwrites its buffer at once
    sink.close()
    assert inner.ids == [7]


def test_threaded_sink_survives_send_errors_and_reports_lost():
    inner = SlowSink(delay_s=0.0, fail_on={1})
    sink = ThreadedSink(inner).open(W, H, 30)
    sink.send(frame_with_id(1), now())
    deadline = time.monotonic() + 5
    while sink.status.state != State.LOST and time.monotonic() < deadline:
        time.sleep(0.005)
    assert sink.status.state == State.LOST and "hiccup" in sink.status.reason
    sink.send(frame_with_id(2), now())
    deadline = time.monotonic() + 5
    while sink.sent < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert sink.status.state == State.OK  # recovered after a good frame
    sink.close()
    assert inner.ids == [2] and sink.dropped == 1
    assert sink.status.state == State.CLOSED


def test_threaded_sink_raises_open_errors_in_the_caller():
    class Broken(SlowSink):
        def _open(self, width, height, fps):
            raise SinkUnavailable("no such device; try --out null")

    with pytest.raises(SinkUnavailable, match="no such device"):
        ThreadedSink(Broken()).open(W, H, 30)


# ---- factory ------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,expected", [
    ("ndi", SinkSpec("ndi", "")),
    ("ndi:Stage Left", SinkSpec("ndi", "Stage Left")),
    ("NDI:main", SinkSpec("ndi", "main")),
    ("spout:td", SinkSpec("spout", "td")),
    ("syphon", SinkSpec("syphon", "")),
    ("shm:vj_1", SinkSpec("shm", "vj_1")),
    ("window", SinkSpec("window", "")),
    ("file:out/take.mp4", SinkSpec("file", "out/take.mp4")),
    (r"file:C:\clips\a.mp4", SinkSpec("file", r"C:\clips\a.mp4")),
    ("png:frames", SinkSpec("png", "frames")),
    ("null", SinkSpec("null", "")),
])
def test_parse_sink_spec(spec, expected):
    assert parse_sink_spec(spec) == expected


@pytest.mark.parametrize("spec", [
    "", "hdmi", "file:", "file:take.avi", "png:", "window:big", "null:x", "shm:bad/name",
])
def test_bad_specs_raise_config_error_listing_the_forms(spec):
    with pytest.raises(ConfigError) as info:
        parse_sink_spec(spec)
    msg = str(info.value)
    assert "\n" not in msg
    for form in ("ndi[:name]", "file:PATH.mp4", "png:DIR", "null"):
        assert form in msg
    assert isinstance(info.value, ValueError) and isinstance(info.value, BridgeError)


def test_sink_specs_help_mentions_every_kind():
    for kind in ("ndi", "spout", "syphon", "shm", "window", "file:", "png:", "null"):
        assert kind in SINK_SPECS


def test_build_sink_wraps_slow_kinds_only(tmp_path):
    assert isinstance(build_sink(f"png:{tmp_path}"), ThreadedSink)
    assert isinstance(build_sink("null"), NullSink)
    assert not isinstance(build_sink("shm:x"), ThreadedSink)
    assert isinstance(build_sink("null", threaded=True), ThreadedSink)


def test_png_sink_writes_numbered_rgba_files(tmp_path):
    import cv2

    out = tmp_path / "seq"
    # unthreaded, so no frame is dropped and the numbering is exactly 0, 1, 2
    with open_sink(f"png:{out}", W, H, 30, threaded=False) as sink:
        for i in range(3):
            f = frame_with_id(i)
            f[H // 2:, :, :] = (10, 20, 30, 128)
            sink.send(f, now())
    assert sorted(p.name for p in out.iterdir()) == [
        "frame_000000.png", "frame_000001.png", "frame_000002.png"]
    back = cv2.cvtColor(cv2.imread(str(out / "frame_000002.png"), cv2.IMREAD_UNCHANGED),
                        cv2.COLOR_BGRA2RGBA)
    assert back.shape == (H, W, 4) and id_of(back) == 2
    assert tuple(back[-1, -1]) == (10, 20, 30, 128)


# ---- outputs bound to another OS ----------------------------------------------------------
@pytest.mark.other_os
@pytest.mark.skipif(sys.platform == "win32", reason="Spout works on Windows")
def test_spout_off_windows_fails_with_one_line_naming_os_and_alternative():
    with pytest.raises(SinkUnavailable) as info:
        open_sink("spout:td", W, H, 30)
    assert str(info.value) == "Spout needs Windows; try --out ndi"


@pytest.mark.other_os
@pytest.mark.skipif(sys.platform == "darwin", reason="Syphon works on macOS")
def test_syphon_off_macos_fails_with_one_line_naming_os_and_alternative():
    with pytest.raises(SinkUnavailable) as info:
        open_sink("syphon", W, H, 30)
    assert str(info.value) == "Syphon needs macOS; try --out ndi"


def test_missing_library_names_the_pip_extra(monkeypatch):
    import bridge.sinks.spout as spout
    import bridge.sinks.syphon as syphon

    monkeypatch.setitem(sys.modules, "SpoutGL", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "syphon", None)
    monkeypatch.setattr(sys, "platform", "win32")  # both modules share `sys`
    with pytest.raises(SinkUnavailable, match=r"pip install vjbridge\[spout\]"):
        spout.SpoutSink()
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(SinkUnavailable, match=r"pip install vjbridge\[syphon\]"):
        syphon.SyphonSink()
