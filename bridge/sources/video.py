"""The video sources' public face: pick one from a string, and re-export the kinds.

    with open_video_source("clip.mp4") as cam:       # or "0", "C920", "rtsp://host/cam"
        latest = cam.read_latest()                    # (rgb HxWx3 uint8, capture_time) | None
"""
from __future__ import annotations

import os

from bridge.errors import SourceError
from bridge.sources.base import is_url, looks_like_path
from bridge.sources.camera import Camera, list_cameras
from bridge.sources.video_base import VideoSource
from bridge.sources.video_media import VideoFile, VideoStream

__all__ = ["VideoSource", "Camera", "VideoFile", "VideoStream", "open_video_source", "list_cameras"]


def open_video_source(spec: str | int, size: tuple[int, int] | None = None,
                      loop: bool = True) -> VideoSource:
    """A video source for `spec`, NOT yet opened (call `open()` or use `with`), matching
    `open_audio_source`; DeviceError / SourceError come from `open()`.

    spec: camera index (0 or "0") | camera name substring | existing file | URL ("scheme://").
    """
    if isinstance(spec, int):
        return Camera(spec, size)
    spec = str(spec).strip()
    if not spec:
        raise SourceError("empty video source; use a camera index or name, a file or a URL")
    if is_url(spec):
        return VideoStream(spec, size)
    path = os.path.expanduser(spec)
    if os.path.isfile(path):
        return VideoFile(path, size, loop=loop)
    if looks_like_path(spec):
        raise SourceError(f"no such video file: {path}")
    return Camera(spec, size)
