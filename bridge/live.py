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
from bridge.params import ParamStore
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
    mode: str | None = None  # a family's live mode (vae_associator: camera, sound, both)
    mix: float | None = None  # vae_associator "both": how much the sound moves the picture
    walk: str | None = None  # a latent family's walk (see `vjbridge models`); None: its default
    walk_params: dict = field(default_factory=dict)
    seed: int = 0
    idle_after: float | None = None  # seconds of nobody before idle mode; None: off
    idle_detector: str = "motion"
    osc_port: int | None = None  # None: no OSC
    osc_host: str = "127.0.0.1"  # listen on loopback unless the user opens it
    osc_reply: str | None = None  # HOST:PORT for heartbeat, fps, latency, parameter feedback
    osc_allow: list[str] = field(default_factory=list)  # sender addresses allowed (empty: all)
    preset: str | None = None  # presets/NAME.toml recalled at start

    def __post_init__(self):
        check_fps(self.fps)
        if self.size is not None and not 16 <= self.size <= 4096:
            raise ConfigError(f"--size must be 16..4096 pixels, got {self.size}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ConfigError(f"--smoothing must be in [0, 1), got {self.smoothing:g}")
        if not self.outs:
            raise ConfigError("give at least one --out")
        if self.mix is not None and not 0.0 <= self.mix <= 1.0:
            raise ConfigError(f"--mix must be in [0, 1], got {self.mix:g}")
        if self.osc_port is not None and not 0 <= self.osc_port < 65536:
            raise ConfigError(f"--osc-port must be 0..65535, got {self.osc_port}")


def default_mode(model, has_audio: bool, has_image: bool) -> str | None:
    """A family with live modes picks the one its inputs allow: both when both are there."""
    if not model.modes:
        return None
    if has_image and has_audio and "both" in model.modes:
        return "both"
    if has_image and "camera" in model.modes:
        return "camera"
    return "sound" if "sound" in model.modes else model.modes[0]


def prepare_model(model, mode: str | None, mix: float | None, has_audio: bool, has_image: bool,
                  image_option: str | None = None) -> None:
    """Set a family's live mode (before the runner copies and compiles it) and check its inputs."""
    if model.modes:
        model.set_mode(mode or default_mode(model, has_audio, has_image),
                       **({"mix": mix} if mix is not None else {}))
    elif mode is not None or mix is not None:
        raise ConfigError(f"model family '{model.family}' has no live modes: drop --mode/--mix")
    if image_option:
        model.check_inputs(has_audio=has_audio, has_image=has_image, image_option=image_option)
    else:
        model.check_inputs(has_audio=has_audio, has_image=has_image)


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
            prepare_model(self.model, settings.mode, settings.mix, has_audio=settings.audio_in is not None,
                          has_image=settings.camera is not None)
            idle = None
            if settings.idle_after is not None:
                from bridge.idle import IdleMode, IdleSettings
                if "image" not in self.model.inputs:
                    raise ConfigError("--idle watches the camera: start with --camera and a model "
                                      "that uses it")
                idle = IdleMode(self.model.idle_images(),
                                IdleSettings(after_s=settings.idle_after, detector=settings.idle_detector))
            runner = Runner(self.model, runtime=settings.runtime, device=settings.device)
            self.params = ParamStore()
            self.params.set("smoothing", settings.smoothing)
            if settings.preset:
                from bridge.control.presets import apply_preset
                for note in apply_preset(settings.preset, self.params)[1]:
                    log.warning(note)
            self.pipeline = FramePipeline(self.model, runner=runner, smoothing=settings.smoothing,
                                          output_size=settings.size, walk=settings.walk,
                                          walk_params=settings.walk_params, seed=settings.seed,
                                          idle=idle, params=self.params)
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
            sound_rate = self.pipeline.sound_rate
            for spec in settings.outs:
                # A model that makes sound sends it with its pictures (NDI, recordings, the sound
                # output); otherwise recordings and the sound output carry the music, and live
                # picture outputs only the picture.
                kind = spec.strip().lower().split(":", 1)[0]
                if sound_rate is not None and kind in ("file", "ndi", "sound"):
                    audio_rate = sound_rate
                else:  # `sound` then plays the music through, like a monitor
                    audio_rate = self.pipeline.sample_rate if kind in ("file", "sound") else None
                sink = open_sink(spec, size, size, settings.fps, audio_rate=audio_rate)
                self._opened.append(sink)
                self.sinks.append(sink)
            self.engine = Engine(self.pipeline, self.sinks, fps=settings.fps,
                                 audio_source=self.audio, video_source=self.video)
            self.osc = None
            if settings.osc_port is not None:
                from bridge.control.osc import OscControl, parse_host_port
                reply = parse_host_port(settings.osc_reply) if settings.osc_reply else None
                self.osc = OscControl(self.params, host=settings.osc_host, port=settings.osc_port,
                                      reply=reply, allow=settings.osc_allow, status=self._status)
                self.osc.start()
                self._opened.append(self.osc)
        except BaseException:
            self.close()
            raise

    def _status(self) -> dict:
        s = self.engine.stats.summary()
        return {"fps": s["fps"], "latency_ms": s["latency_ms_p50"], "model": self.settings.model}

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

