"""PyAV (ffmpeg) decoding shared by the file and stream sources, and `decode_audio` for
offline rendering. Everything leaves as mono float32 at the asked rate."""
from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import threading
from typing import Iterator

import av
import numpy as np

from bridge.errors import SourceError


def av_reason(exc: BaseException) -> str:
    """ffmpeg's reason in one line, without the errno noise PyAV puts around it."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(reason).split())


def open_input(where: str, timeout: float | tuple[float, float] | None = None,
               options: dict[str, str] | None = None, stream: str = "audio"):
    """Open a file or URL that must hold a `stream` ("audio" or "video") for reading; any
    failure is a one-line SourceError."""
    try:
        container = av.open(where, mode="r", timeout=timeout, options=options or {})
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise SourceError(f"cannot open {where}: {av_reason(exc)}") from None
    if not getattr(container.streams, stream):
        container.close()
        raise SourceError(f"cannot read {where}: no {stream} stream")
    return container


def mono_chunks(container, sample_rate: int, channel: int | None = None) -> Iterator[np.ndarray]:
    """Decode the first audio stream to mono float32 chunks at `sample_rate`.

    `channel` picks one input channel (0-based, clamped to what exists); None averages them.
    We keep the input layout through the resampler and downmix ourselves because ffmpeg's
    own stereo->mono matrix changes level by layout, and a plain mean is what a VJ expects.
    Raises av errors; callers turn them into SourceError or a reconnect.
    """
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="fltp", rate=sample_rate)

    def to_mono(frame) -> np.ndarray:
        planes = frame.to_ndarray()  # (channels, samples), planar float32
        if planes.ndim == 1:
            planes = planes[None, :]
        if channel is None:
            return planes.mean(axis=0, dtype=np.float32)
        return np.ascontiguousarray(planes[min(channel, planes.shape[0] - 1)], dtype=np.float32)

    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.InvalidDataError:
            continue  # a damaged packet: skip it, as the ffmpeg command line does
        for frame in frames:
            for out in resampler.resample(frame):
                yield to_mono(out)
    for out in resampler.resample(None):  # the resampler's delayed tail
        yield to_mono(out)


def decode_audio(path_or_url: str, sample_rate: int = 44_100) -> np.ndarray:
    """The whole file (or finite URL) as one mono float32 array at `sample_rate`, for
    offline rendering. SourceError (one line: where and why) when it cannot be read."""
    container = open_input(str(path_or_url))
    try:
        chunks = list(mono_chunks(container, sample_rate))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise SourceError(f"cannot decode {path_or_url}: {av_reason(exc)}") from None
    finally:
        container.close()
    if not chunks:
        raise SourceError(f"cannot decode {path_or_url}: no audio could be decoded")
    return np.concatenate(chunks)


FIRST_DATA_GRACE_S = 10.0


def ffmpeg_command_available() -> bool:
    # select() on a pipe is POSIX only; on Windows the PyAV path is the only one.
    return sys.platform != "win32" and shutil.which("ffmpeg") is not None


def ffmpeg_command_chunks(url: str, sample_rate: int, timeout_s: float,
                          stopping: threading.Event) -> Iterator[np.ndarray]:
    """Mono float32 chunks of `url` decoded by the `ffmpeg` command, for protocols PyAV's own
    ffmpeg was built without (SRT). A read that waits longer than `timeout_s` ends the stream
    with a SourceError, like PyAV's socket timeout would."""
    proc = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-analyzeduration", "500000", "-i", url, "-vn", "-ac", "1",
         "-ar", str(sample_rate), "-f", "f32le", "pipe:1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    fd = proc.stdout.fileno()
    leftover = b""
    # Before the first byte ffmpeg may be waiting for a caller (SRT listener) and probing the
    # stream: allow that more time than a stall in the middle of a stream.
    wait_s = timeout_s + FIRST_DATA_GRACE_S
    try:
        while not stopping.is_set():
            ready, _, _ = select.select([fd], [], [], wait_s)
            if not ready:
                raise SourceError(f"{url}: no data for {wait_s:g} s")
            wait_s = timeout_s
            data = os.read(fd, 16384)
            if not data:
                reason = proc.stderr.read().decode(errors="replace").strip().splitlines()
                raise SourceError(f"{url}: {reason[-1] if reason else 'stream ended'}")
            data = leftover + data
            usable = len(data) - len(data) % 4
            leftover = data[usable:]
            if usable:
                yield np.frombuffer(data[:usable], dtype="<f4").astype(np.float32)
    finally:
        proc.kill()
        proc.wait(5)
