"""Video from a file (paced by its timestamps, looped) or a URL (reconnecting), via PyAV."""
from __future__ import annotations

import os
from typing import Iterator

import av
import numpy as np

from bridge import clock
from bridge.errors import SourceError
from bridge.sources.base import State
from bridge.sources.decode import av_reason, open_input
from bridge.sources.video_base import VideoSource

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 1.0  # as for audio streams: a feed that comes back plays again within 2 s
MAX_LAG_S = 0.25  # further behind than this, re-anchor the schedule instead of rushing


def open_video(where: str, timeout: float | tuple[float, float] | None = None,
               options: dict[str, str] | None = None):
    container = open_input(where, timeout, options, stream="video")
    container.streams.video[0].thread_type = "AUTO"
    return container


class VideoFile(VideoSource):
    """A video file played at its own speed (frame timestamps against the one clock)."""

    kind = "video file"

    def __init__(self, path: str | os.PathLike, size: tuple[int, int] | None = None,
                 loop: bool = True):
        super().__init__(size)
        self.path = os.fspath(path)
        self.loop = loop

    def describe(self) -> str:
        return self.path

    def _start(self) -> None:
        open_video(self.path).close()  # fail in the caller's thread, with the reason
        self._spawn(self._run, "video-file")

    def _frames(self, container) -> Iterator[tuple[np.ndarray, float]]:
        """(rgb frame, seconds into the media) for every decoded frame."""
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        width, height = self.size if self.size else (None, None)
        for i, frame in enumerate(container.decode(stream)):
            t = frame.time if frame.time is not None else i / fps
            yield frame.to_ndarray(format="rgb24", width=width, height=height), t

    def _play(self, container) -> bool:
        """Publish one pass at real speed; False when stopping."""
        anchor = None
        for rgb, t in self._frames(container):
            if anchor is None:
                anchor = clock.now() - t
            delay = anchor + t - clock.now()
            if delay > 0:
                if self._stopping.wait(delay):
                    return False
            elif -delay > MAX_LAG_S:
                anchor = clock.now() - t
            if self._stopping.is_set():
                return False
            self._publish(rgb)
        return True

    def _run(self) -> None:
        try:
            while True:
                container = open_video(self.path)
                try:
                    if not self._play(container):
                        return
                finally:
                    container.close()
                if not self.loop:
                    self._set(State.ENDED, f"end of {self.path}")
                    return
        except (SourceError, av.FFmpegError, OSError, ValueError) as exc:
            self._set(State.LOST, f"{self.path}: {av_reason(exc)}")


class VideoStream(VideoFile):
    """A video URL (rtsp, http, udp, srt...): socket reads time out after `timeout_s`, and
    the reader reconnects with back-off (0.5 s, then every 1 s) while RECONNECTING."""

    kind = "video stream"
    detect_freeze = True

    def __init__(self, url: str, size: tuple[int, int] | None = None, timeout_s: float = 3.0,
                 options: dict[str, str] | None = None):
        super().__init__(url, size, loop=False)
        self.timeout_s = timeout_s
        self.options = dict(options or {})

    def _start(self) -> None:
        # Never fail here for a URL: the sender may simply not be up yet.
        self._spawn(self._run, "video-stream")

    def _run(self) -> None:
        backoff = BACKOFF_FIRST_S
        while not self._stopping.is_set():
            frames_before = self.frames
            try:
                container = open_video(self.path, (self.timeout_s, self.timeout_s), self.options)
                try:
                    if not self._play(container):
                        return
                finally:
                    container.close()
                reason = f"{self.path}: stream ended"
            except SourceError as exc:
                reason = str(exc)
            except (av.FFmpegError, OSError, ValueError) as exc:
                reason = f"{self.path}: {av_reason(exc)}"
            if self.frames > frames_before:
                backoff = BACKOFF_FIRST_S
            self._set(State.RECONNECTING, f"{reason}; retry in {backoff:g} s")
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX_S)
