"""File outputs: an H.264/AAC MP4 (`Mp4Writer`, `Mp4Sink`) and a PNG sequence (`PngSink`).

`Mp4Writer` is the deterministic core the offline renderer uses directly: video frame i gets
pts i in time base 1/fps (frame-exact), audio pts come from the count of samples written, and
libx264 output depends only on the input (no wall clock anywhere). Video is yuv420p, which
needs even sizes: odd sizes are padded by one edge-replicated row/column, never cropped.
Audio is mono AAC at `audio_rate`, fed in 1,024-sample frames (AAC's frame size); the
remainder is flushed at close.

`Mp4Sink` is the live wrapper: frames arrive at wall-clock times and some may be dropped
upstream, so it places each frame at round((capture_time − first capture_time) × fps), never
earlier than the previous one + 1. The audio stream stays continuous (ThreadedSink hands
dropped frames' audio on), so picture and sound keep their sync in the file.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from bridge.errors import SinkUnavailable
from bridge.sinks.base import Sink

AAC_FRAME_SAMPLES = 1024


def _rate(fps: float | Fraction) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


class Mp4Writer:
    """Writes RGB/RGBA frames (and optional mono float32 audio) to an MP4 file."""

    def __init__(self, path: str | os.PathLike, width: int, height: int,
                 fps: float | Fraction, audio_rate: int | None = None,
                 crf: int = 18, preset: str = "veryfast") -> None:
        import av  # a core dependency; imported here so `import bridge.sinks` stays light

        self._av = av
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"video size must be positive, got {width}x{height}")
        self.rate = _rate(fps)
        self.audio_rate = int(audio_rate) if audio_rate else None
        self.frames_written = 0
        self.samples_written = 0  # samples encoded; up to 1,023 more wait until close()
        self._next_pts = 0
        self._pending_audio = np.zeros(0, np.float32)
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        try:
            video = self._container.add_stream("libx264", rate=self.rate)
            video.width = self.width + self.width % 2
            video.height = self.height + self.height % 2
            video.pix_fmt = "yuv420p"
            video.time_base = 1 / self.rate
            # Kept apart from the streams: the mp4 muxer rewrites stream time bases (e.g. to
            # 1/12800) once the header is written, and frames must stay in ours.
            self._video_tb = 1 / self.rate
            self._audio_tb = Fraction(1, self.audio_rate) if self.audio_rate else None
            video.options = {"crf": str(crf), "preset": preset}
            self._video = video
            self._audio = None
            if self.audio_rate:
                audio = self._container.add_stream("aac", rate=self.audio_rate)
                audio.layout = "mono"
                audio.time_base = Fraction(1, self.audio_rate)
                self._audio = audio
        except Exception:
            self._container.close()
            raise

    @property
    def next_pts(self) -> int:
        """The smallest pts the next video frame may have."""
        return self._next_pts

    @property
    def duration_s(self) -> float:
        return float(self._next_pts / self.rate)

    def write_video(self, frame: np.ndarray, pts: int | None = None) -> None:
        """Append one (H, W, 3) RGB or (H, W, 4) RGBA uint8 frame, at `pts` (frames; defaults
        to right after the previous frame; must increase)."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[:2] != (
                self.height, self.width) or frame.shape[2] not in (3, 4):
            raise ValueError(f"frame must be uint8 ({self.height}, {self.width}, 3|4), "
                             f"got {frame.dtype} {frame.shape}")
        pts = self._next_pts if pts is None else int(pts)
        if pts < self._next_pts:
            raise ValueError(f"video pts must increase: got {pts}, expected ≥ {self._next_pts}")
        if self.width % 2 or self.height % 2:
            frame = np.pad(frame, ((0, self.height % 2), (0, self.width % 2), (0, 0)), mode="edge")
        fmt = "rgba" if frame.shape[2] == 4 else "rgb24"
        vf = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format=fmt)
        vf.pts = pts
        vf.time_base = self._video_tb
        for packet in self._video.encode(vf):
            self._container.mux(packet)
        self._next_pts = pts + 1
        self.frames_written += 1

    def write_audio(self, samples: np.ndarray) -> None:
        """Append mono float32 samples (any block length) at the audio rate."""
        if self._audio is None:
            raise ValueError("this Mp4Writer was made without audio_rate")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        buf = np.concatenate([self._pending_audio, samples])
        whole = len(buf) - len(buf) % AAC_FRAME_SAMPLES
        for start in range(0, whole, AAC_FRAME_SAMPLES):
            self._encode_audio(buf[start:start + AAC_FRAME_SAMPLES])
        self._pending_audio = buf[whole:].copy()

    def _encode_audio(self, block: np.ndarray) -> None:
        af = self._av.AudioFrame.from_ndarray(np.ascontiguousarray(block[None, :]),
                                              format="fltp", layout="mono")
        af.sample_rate = self.audio_rate
        af.pts = self.samples_written
        af.time_base = self._audio_tb
        for packet in self._audio.encode(af):
            self._container.mux(packet)
        self.samples_written += len(block)

    def close(self) -> None:
        """Flush the encoders and finish the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._audio is not None and len(self._pending_audio):
                self._encode_audio(self._pending_audio)  # AAC allows a short last frame
                self._pending_audio = np.zeros(0, np.float32)
            for packet in self._video.encode(None):
                self._container.mux(packet)
            if self._audio is not None:
                for packet in self._audio.encode(None):
                    self._container.mux(packet)
        finally:
            self._container.close()

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Mp4Sink(Sink):
    """Live recording to `path` (.mp4), with audio when `audio_rate` is given."""

    kind = "file"

    def __init__(self, path: str | os.PathLike, audio_rate: int | None = None,
                 crf: int = 18, preset: str = "veryfast") -> None:
        super().__init__()
        self.path = Path(path)
        self.audio_rate = audio_rate
        self.crf, self.preset = crf, preset
        self._writer: Mp4Writer | None = None
        self._t0: float | None = None

    def _open(self, width: int, height: int, fps: float) -> None:
        try:
            self._writer = Mp4Writer(self.path, width, height, fps, self.audio_rate,
                                     crf=self.crf, preset=self.preset)
        except (OSError, ValueError) as exc:
            raise SinkUnavailable(f"cannot record to {self.path}: {exc}") from exc
        self._t0 = None

    def _send(self, frame: np.ndarray, capture_time: float,
              audio: np.ndarray | None) -> None:
        w = self._writer
        if self._t0 is None:
            self._t0 = capture_time
        w.write_video(frame, max(round((capture_time - self._t0) * float(w.rate)), w.next_pts))
        if audio is not None and w.audio_rate:
            w.write_audio(audio)

    def _close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()


class PngSink(Sink):
    """Writes frame_000000.png, frame_000001.png, ... (RGBA) into `directory`."""

    kind = "png"

    def __init__(self, directory: str | os.PathLike, compression: int = 1) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.compression = compression  # zlib level: 1 keeps up with a live rate
        self._index = 0

    def _open(self, width: int, height: int, fps: float) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkUnavailable(f"cannot write PNGs to {self.directory}: {exc}") from exc

    def path_for(self, index: int) -> Path:
        return self.directory / f"frame_{index:06d}.png"

    def _send(self, frame: np.ndarray, capture_time: float,
              audio: np.ndarray | None) -> None:
        import cv2

        path = self.path_for(self._index)
        bgra = cv2.cvtColor(frame, cv2.COLOR_RGBA2BGRA)  # OpenCV writes BGR(A) order
        if not cv2.imwrite(str(path), bgra, [cv2.IMWRITE_PNG_COMPRESSION, self.compression]):
            raise OSError(f"could not write {path}")
        self._index += 1

    def _close(self) -> None:
        pass
