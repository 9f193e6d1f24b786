"""Video sources with real ffmpeg-made media; cameras only where the machine has none."""
from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest

from bridge import clock
from bridge.errors import DeviceError, SourceError
from bridge.sources.base import State
from bridge.sources.video import (Camera, VideoFile, VideoSource, VideoStream, list_cameras,
                                  open_video_source)
from tests.helpers.streams import free_port, make_test_video, wait_for


@pytest.fixture(scope="module")
def test_video(tmp_path_factory):
    return make_test_video(tmp_path_factory.mktemp("video") / "pattern.mp4",
                           width=160, height=120, fps=25, seconds=2.0)


def test_video_file_gives_newest_frames_at_real_speed(test_video):
    with open_video_source(str(test_video)) as src:
        assert isinstance(src, VideoFile)
        assert wait_for(lambda: src.read_latest() is not None, 3.0)
        t0, n0 = clock.now(), src.frames
        time.sleep(1.0)
        frame, captured = src.read_latest()
        rate = (src.frames - n0) / (clock.now() - t0)
        assert src.status.state is State.OK
    assert frame.shape == (120, 160, 3) and frame.dtype == np.uint8
    assert not frame.flags.writeable  # shared with every reader
    assert 18 <= rate <= 32, rate  # 25 fps, paced by the clock, not decoded flat out
    assert abs(clock.now() - captured) < 1.0
    assert frame.std() > 10  # a real test pattern, not a blank


def test_video_file_scales_and_ends_when_not_looping(test_video):
    with VideoFile(test_video, size=(64, 48), loop=False) as src:
        assert wait_for(lambda: src.status.state is State.ENDED, 5.0), src.status
        frame, _ = src.read_latest()
        assert frame.shape == (48, 64, 3)
        assert 45 <= src.frames <= 51  # every frame of 2 s at 25 fps, once


def test_frames_that_stop_changing_or_stop_coming_read_as_lost():
    class Frozen(VideoSource):
        detect_freeze = True

        def _start(self):
            self._spawn(self._run, "frozen")

        def _run(self):
            still = np.zeros((8, 8, 3), np.uint8)
            while not self._stopping.wait(0.02):
                self._publish(still.copy())

    with Frozen(stale_after_s=0.3) as src:
        assert wait_for(lambda: src.status.state is State.OK, 1.0)
        assert wait_for(lambda: src.status.state is State.LOST, 2.0)
        assert "unchanged" in src.status.reason
        src._stopping.set()  # the reader stops: frames stop coming
        assert wait_for(lambda: "no frame" in src.status.reason, 2.0), src.status


def test_missing_camera_is_device_error_listing_cameras():
    cams = list_cameras()
    missing = max([c["index"] for c in cams], default=-1) + 50
    with pytest.raises(DeviceError, match="cameras:") as err:
        Camera(missing).open()
    assert "\n" not in str(err.value)
    for cam in cams:
        assert f"{cam['index']}: {cam['name']}" in str(err.value)
    with pytest.raises(DeviceError, match="no camera 'no such webcam'"):
        open_video_source("no such webcam").open()


def test_corrupt_or_missing_video_file_is_source_error(tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00not a video" * 500)
    with pytest.raises(SourceError, match="clip.mp4"):
        open_video_source(str(bad)).open()
    with pytest.raises(SourceError, match="no such video file"):
        open_video_source(str(tmp_path / "gone.mov"))


def test_video_stream_from_ffmpeg_http_server():
    port = free_port()
    url = f"http://127.0.0.1:{port}/live.ts"
    server = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi",
         "-i", "testsrc=size=96x64:rate=25", "-f", "mpegts", "-listen", "1", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with open_video_source(url) as src:
            assert isinstance(src, VideoStream)
            assert wait_for(lambda: src.status.state is State.OK and src.frames > 5, 10.0), src.status
            frame, _ = src.read_latest()
            assert frame.shape == (64, 96, 3)
            server.kill()
            server.wait(5)
            assert wait_for(lambda: src.status.state in (State.RECONNECTING, State.LOST), 8.0)
    finally:
        if server.poll() is None:
            server.kill()
