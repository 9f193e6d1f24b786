"""NDI output through cyndilib (the `ndi` extra; its wheels ship libndi).

One `cyndilib.Sender` is built in `_open` with one `VideoSendFrame` (RGBA or BGRA, the output
size and frame rate) and, when an audio rate is given, one mono float32 `AudioSendFrame`; both
are reused for every frame. Video goes out with `write_video_async` (libndi compresses while
we prepare the next frame); when a frame carries audio, `write_video_and_audio` sends both.

Neither stream is clocked by libndi (`clock_video=False`, `clock_audio=False`): the engine
already runs at a fixed rate, and a second clock would make the sender thread sleep and
build latency.

Receivers see the source as "HOSTNAME (name)". On a machine without a LAN (or in tests), NDI
discovery needs `NDI_CONFIG_DIR` pointing at an `ndi-config.v1.json` that lists 127.0.0.1; see
tests/helpers/ndi.py.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from bridge.errors import SinkUnavailable
from bridge.sinks.base import Sink

DEFAULT_NDI_NAME = "vjbridge"


def fps_fraction(fps: float) -> Fraction:
    """29.97 → 30000/1001, 30.0 → 30/1: the exact rates video tools expect."""
    return Fraction(fps).limit_denominator(1001)


def _import_cyndilib():
    try:
        import cyndilib
    except ImportError as exc:
        raise SinkUnavailable(
            f"NDI needs cyndilib ({exc}); pip install vjbridge[ndi]") from None
    return cyndilib


class NdiSink(Sink):
    """Publishes frames as an NDI source called `name`.

    `pixel_format` is "RGBA" (no conversion) or "BGRA" (channels swapped here, for receivers
    that only take BGRA). `audio_rate` enables a mono audio stream at that sample rate.
    """

    kind = "ndi"

    def __init__(self, name: str = DEFAULT_NDI_NAME, audio_rate: int | None = None,
                 pixel_format: str = "RGBA") -> None:
        super().__init__()
        if pixel_format not in ("RGBA", "BGRA"):
            raise ValueError(f"pixel_format must be RGBA or BGRA, got {pixel_format!r}")
        if audio_rate is not None and audio_rate <= 0:
            raise ValueError(f"audio_rate must be positive, got {audio_rate}")
        self.name = name or DEFAULT_NDI_NAME
        self.audio_rate = audio_rate
        self.pixel_format = pixel_format
        self._sender = None
        self._max_audio = 0
        self._bgra: np.ndarray | None = None

    @property
    def source_name(self) -> str:
        """The full name receivers see ("HOST (name)"), once open."""
        return self._sender.name if self._sender is not None else self.name

    def connections(self) -> int:
        """Receivers connected right now (0 when closed)."""
        if self._sender is None:
            return 0
        return int(self._sender.get_num_connections(0))

    def _open(self, width: int, height: int, fps: float) -> None:
        ndi = _import_cyndilib()
        video = ndi.VideoSendFrame()
        video.set_resolution(width, height)
        video.set_fourcc(ndi.FourCC.RGBA if self.pixel_format == "RGBA" else ndi.FourCC.BGRA)
        video.set_frame_rate(fps_fraction(fps))
        sender = ndi.Sender(self.name, clock_video=False, clock_audio=False)
        sender.set_video_frame(video)
        if self.audio_rate:
            # Room for a few frames' worth of samples; longer blocks are split in _send.
            self._max_audio = max(1024, int(np.ceil(4 * self.audio_rate / fps)))
            audio = ndi.AudioSendFrame(self._max_audio)
            audio.sample_rate = int(self.audio_rate)
            audio.num_channels = 1
            sender.set_audio_frame(audio)
        try:
            sender.open()
        except Exception as exc:
            raise SinkUnavailable(f"NDI sender {self.name!r} could not start: {exc}") from exc
        self._sender = sender
        if self.pixel_format == "BGRA":
            self._bgra = np.empty((height, width, 4), np.uint8)

    def _send(self, frame: np.ndarray, capture_time: float,
              audio: np.ndarray | None) -> None:
        sender = self._sender
        if self._bgra is not None:
            self._bgra[..., 0] = frame[..., 2]
            self._bgra[..., 1] = frame[..., 1]
            self._bgra[..., 2] = frame[..., 0]
            self._bgra[..., 3] = frame[..., 3]
            frame = self._bgra
        pixels = frame.reshape(-1)
        if not self.audio_rate or audio is None or np.size(audio) == 0:
            sender.write_video_async(pixels)
            return
        # NDI takes planar float32 (channels, samples); mono is one plane.
        planes = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(1, -1))
        n = planes.shape[1]
        head = planes[:, :min(n, self._max_audio)]
        sender.write_video_and_audio(pixels, np.ascontiguousarray(head))
        for start in range(self._max_audio, n, self._max_audio):
            sender.write_audio(np.ascontiguousarray(planes[:, start:start + self._max_audio]))

    def _close(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.close()
