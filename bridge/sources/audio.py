"""The audio sources' public face: pick a source from one string, and re-export the kinds.

    with open_audio_source("loop.flac") as src:      # or "default", "3", "Scarlett",
        window, t = src.ring.latest(1024)             # "silence", "http://host:8000/live"
"""
from __future__ import annotations

import os

from bridge.errors import SourceError
from bridge.sources.audio_base import DEFAULT_BLOCK, DEFAULT_SAMPLE_RATE, AudioSource, Silence
from bridge.sources.audio_file import AudioFile
from bridge.sources.audio_stream import AudioStream
from bridge.sources.base import is_url, looks_like_path
from bridge.sources.decode import decode_audio
from bridge.sources.line_in import LineIn, list_audio_devices

__all__ = ["AudioSource", "AudioFile", "AudioStream", "LineIn", "Silence",
           "open_audio_source", "list_audio_devices", "decode_audio", "looks_like_path", "is_url"]


def open_audio_source(spec: str, sample_rate: int = DEFAULT_SAMPLE_RATE, block: int = DEFAULT_BLOCK,
                      channel: int | None = None, loop: bool = True) -> AudioSource:
    """An audio source for `spec`, NOT yet opened: call `open()` or use it in a `with`.

    Returning it unopened lets the caller attach it (and its ring) before capture starts;
    device and file errors (DeviceError / SourceError) are raised by `open()`.

    spec: "silence" | "default" (default input) | device index ("3") | device name
    substring | existing file path | URL with a scheme ("scheme://...").
    """
    spec = str(spec).strip()
    if not spec:
        raise SourceError("empty audio source; use 'silence', 'default', a device, a file or a URL")
    if spec.lower() == "silence":
        return Silence(sample_rate, block)
    if is_url(spec):
        return AudioStream(spec, sample_rate, block, channel=channel)
    path = os.path.expanduser(spec)
    if os.path.isfile(path):
        return AudioFile(path, sample_rate, block, loop=loop, channel=channel)
    if looks_like_path(spec):
        raise SourceError(f"no such audio file: {path}")
    return LineIn(None if spec.lower() == "default" else spec, sample_rate, block, channel=channel)
