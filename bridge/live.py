"""Putting a live session together from plain settings: model, inputs, outputs, engine.
The CLI only parses arguments into `LiveSettings` and calls `LiveSession`."""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

from bridge.config import check_fps
from bridge.engine import Engine, FramePipeline
from bridge.errors import ConfigError
from bridge.generators.base import load_model
from bridge.runtime import Runner

log = logging.getLogger(__name__)


@dataclass
class LiveSettings:
    model: str = "pix2pix-pulse"
    audio_in: str | None = "default"
    camera: str | None = None
    outs: list[str] = field(default_factory=lambda: ["window"])
    fps: float = 30.0
    size: int | None = None  # output size; None = the model's own
    runtime: str = "optimized"
    device: str = "cpu"
    smoothing: float = 0.0
    block: int = 512
    channel: int | None = None

    def __post_init__(self):
        check_fps(self.fps)
        if self.size is not None and not 16 <= self.size <= 4096:
            raise ConfigError(f"--size must be 16..4096 pixels, got {self.size}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ConfigError(f"--smoothing must be in [0, 1), got {self.smoothing:g}")
        if not self.outs:
            raise ConfigError("give at least one --out")


class LiveSession:
    """Owns everything a live run opens, and closes all of it, in reverse order, on exit."""

    def __init__(self, settings: LiveSettings):
        from bridge.sinks import open_sink
        from bridge.sources.audio import open_audio_source
        from bridge.sources.video import open_video_source

        self.settings = settings
        self._opened: list = []
        try:
            self.model = load_model(settings.model, device=settings.device)
            self.model.check_inputs(has_audio=settings.audio_in is not None,
                                    has_image=settings.camera is not None)
            runner = Runner(self.model, runtime=settings.runtime, device=settings.device)
            self.pipeline = FramePipeline(self.model, runner=runner, smoothing=settings.smoothing,
                                          output_size=settings.size)
            self.pipeline.warmup()
            self.audio = self.video = None
            if settings.audio_in is not None:
                self.audio = open_audio_source(settings.audio_in, sample_rate=self.pipeline.sample_rate,
                                               block=settings.block, channel=settings.channel)
                self._open(self.audio)
            if settings.camera is not None:
                self.video = open_video_source(settings.camera)
                self._open(self.video)
            size = settings.size or self.model.output_size
            self.sinks = []
            for spec in settings.outs:
                # Recordings carry the music; live outputs carry only the picture (the
                # generated sound of later families will go out on NDI by its own choice).
                records = spec.strip().lower().startswith("file:")
                sink = open_sink(spec, size, size, settings.fps,
                                 audio_rate=self.pipeline.sample_rate if records else None)
                self._opened.append(sink)
                self.sinks.append(sink)
            self.engine = Engine(self.pipeline, self.sinks, fps=settings.fps,
                                 audio_source=self.audio, video_source=self.video)
        except BaseException:
            self.close()
            raise

    def _open(self, source) -> None:
        source.open()  # the factories return sources unopened
        self._opened.append(source)

    def status_line(self, stats) -> str:
        s = stats.summary()
        parts = [f"fps {s['fps']:5.1f}", f"latency p50 {s['latency_ms_p50']:.0f} ms p95 {s['latency_ms_p95']:.0f} ms",
                 f"model {self.settings.model} {s['generate_ms_p50']:.0f} ms", f"missed {s['missed']}"]
        if self.audio is not None:
            parts.append(f"audio {self.audio.status}")
        if self.video is not None:
            parts.append(f"camera {self.video.status}")
        return " | ".join(parts)

    def run(self, duration: float | None = None, status_stream=sys.stderr) -> dict:
        def report(stats):
            if status_stream is not None:
                status_stream.write("\r" + self.status_line(stats) + "\033[K")
                status_stream.flush()
        try:
            return self.engine.run(duration=duration, on_second=report)
        finally:
            if status_stream is not None:
                status_stream.write("\n")

    def close(self) -> None:
        while self._opened:
            thing = self._opened.pop()
            try:
                thing.close()
            except Exception as e:  # closing must finish for every other part
                log.warning("closing %s: %s", thing, e)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

