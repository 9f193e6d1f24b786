"""Offline rendering: an audio file (and optionally a video) through a model into an mp4 with the
audio muxed in. Deterministic: the audio is fed to the same streaming analysis the live engine
uses, one frame's worth of samples per frame, with no clock involved.

The live parameters work here as they do live (a `ParamStore` the pipeline reads: smoothing,
brightness, the latent controls; freeze and blackout applied to the output as the engine does),
and a recorded set (`replay`) is played into them by frame time instead of the clock, so a
rehearsal renders to the same frames every time."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.config import check_fps
from bridge.engine import FramePipeline
from bridge.errors import ConfigError, InputMismatch
from bridge.generators.base import Generator
from bridge.params import ParamStore


@dataclass
class RenderResult:
    path: Path
    frames: int
    fps: float
    audio_seconds: float
    wall_seconds: float
    frame_ms_p50: float

    @property
    def speed(self) -> float:
        """How many times faster than real time the render ran."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    def summary(self) -> dict:
        return {"path": str(self.path), "frames": self.frames, "fps": self.fps,
                "audio_seconds": round(self.audio_seconds, 3), "wall_seconds": round(self.wall_seconds, 2),
                "speed_x_realtime": round(self.speed, 2), "frame_ms_p50": round(self.frame_ms_p50, 2)}


def _video_frames(path: str, fps: float):
    """Yield the video's frame nearest each output time i/fps, as RGB uint8, forever (last repeats)."""
    from bridge.sources.decode import open_input

    with open_input(str(path), stream="video") as container:
        stream = container.streams.video[0]
        i, last = 0, None
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base) if frame.pts is not None else i / fps
            last = frame.to_ndarray(format="rgb24")
            while i / fps <= t:
                yield last
                i += 1
    while last is not None:
        yield last


class OutputGate:
    """Freeze and blackout on the way out, as the live engine's output tick applies them: blackout
    sends black (alpha 255) while the model keeps running; freeze holds the picture from the
    frame it went on until it goes off (a blackout in between keeps the held picture)."""

    def __init__(self, params: ParamStore):
        self.params = params
        self.held: np.ndarray | None = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self.params.get("blackout"):
            black = np.zeros_like(frame)
            black[..., 3] = 255
            return black
        if self.params.get("freeze"):
            if self.held is None:
                self.held = frame
            return self.held
        self.held = None
        return frame


def render(model: Generator, audio_path: str | Path, out_path: str | Path, fps: float = 30.0,
           video_path: str | Path | None = None, seconds: float | None = None, runner=None,
           output_size: int | None = None, smoothing: float = 0.0, progress: bool = True,
           on_frame=None, walk: str | None = None, walk_params: dict | None = None,
           seed: int = 0, mux: str = "auto", params: ParamStore | None = None,
           replay=None) -> RenderResult:
    """`mux`: which sound goes into the mp4: "input" (the music), "generated" (a sound model's
    voice), or "auto" (generated when the model makes sound, else the input).

    `params`: the live parameters the frames are made with (default: a new store at the declared
    defaults; `smoothing`, when not 0, is written into it). `replay`: a recorded set (a
    `bridge.control.recorder.Recording`, or the path of one): its starting values are written
    first, then before frame i every event with t <= (i + 1) / fps (frame i stands for the audio
    up to that time). `on_frame(i, frame, snapshot)` sees each frame as it goes into the file."""
    from bridge.control.recorder import Recording, apply_event, apply_initial
    from bridge.sinks.file import Mp4Writer
    from bridge.sources.audio import decode_audio

    check_fps(fps)
    if seconds is not None and seconds <= 0:
        raise ConfigError(f"--seconds must be positive, got {seconds:g}")
    if "image" in model.inputs and video_path is None:
        raise InputMismatch(f"model family '{model.family}' needs an image input: give --video FILE")
    if mux not in ("auto", "input", "generated"):
        raise ConfigError(f"--mux must be auto, input or generated, got {mux!r}")
    if mux == "generated" and not model.makes_sound:
        raise ConfigError(f"--mux generated: model family '{model.family}' makes no sound")
    store = params if params is not None else ParamStore()
    if smoothing:
        low, high = store.declared("smoothing").low, store.declared("smoothing").high
        if not low <= smoothing <= high:
            raise ConfigError(f"--smoothing must be in [{low:g}, {high:g}], got {smoothing:g}")
        store.set("smoothing", smoothing, source="cli")
    if replay is not None and not isinstance(replay, Recording):
        replay = Recording.load(replay, store)
    cursor = None
    if replay is not None:
        apply_initial(store, replay)
        cursor = replay.cursor()
    for name, param in store.params.items():
        if param.kind == "float":  # offline there is no earlier value to glide from
            store.smoothed(name, 0.0)
    pipeline = FramePipeline(model, runner=runner, smoothing=smoothing, output_size=output_size,
                             walk=walk, walk_params=walk_params, seed=seed, params=store)
    gate = OutputGate(store)
    generated = pipeline.voice is not None and mux != "input"
    sr = pipeline.sample_rate
    audio = decode_audio(str(audio_path), sample_rate=sr)
    if seconds is not None:
        audio = audio[: int(round(seconds * sr))]
    n_frames = int(np.ceil(len(audio) * fps / sr))
    frames_in = _video_frames(str(video_path), fps) if video_path is not None else None
    size = output_size or model.output_size
    times_ms = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n_frames, unit="frame", desc="render", leave=False, disable=None)
    started = time.perf_counter()
    writer = Mp4Writer(str(out_path), size, size, fps,
                       audio_rate=pipeline.sound_rate if generated else sr)
    try:
        for i in range(n_frames):
            lo, hi = int(round(i * sr / fps)), int(round((i + 1) * sr / fps))
            chunk = audio[lo:hi]
            if cursor is not None:
                for event in cursor.events_until((i + 1) / fps):
                    apply_event(store, event)  # a refusal is logged and skipped, as live
            t0 = time.perf_counter()
            pipeline.feed_audio(chunk)
            image = next(frames_in) if frames_in is not None else None
            snapshot = pipeline.snapshot(hi / sr, image, hi / sr if image is not None else None)
            # The model runs through a freeze or blackout, as live: the walk and smoothing go on.
            frame = gate(pipeline.make_frame(snapshot, 1.0 / fps))
            times_ms.append((time.perf_counter() - t0) * 1000.0)
            writer.write_video(frame)
            sound = pipeline.last_sound if generated else chunk
            if sound is not None and sound.size:
                writer.write_audio(sound)
            if on_frame is not None:
                on_frame(i, frame, snapshot)
            if bar is not None:
                bar.update(1)
    finally:
        writer.close()
        if bar is not None:
            bar.close()
    return RenderResult(path=Path(out_path), frames=n_frames, fps=fps, audio_seconds=len(audio) / sr,
                        wall_seconds=time.perf_counter() - started,
                        frame_ms_p50=float(np.median(times_ms)) if times_ms else float("nan"))
