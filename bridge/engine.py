"""The live loop: snapshot -> condition -> generate -> post -> send, at a fixed rate.

Two threads. The generation thread waits for a tick, reads every audio sample that arrived
since its last look (so streaming analysis sees each sample once) and the newest camera frame,
and makes a picture. The output thread keeps the frame rate: at each deadline it sends the
newest finished picture; if none finished since the last tick it re-sends the last good one and
counts a miss. A slow model lowers the picture's rate, never the output's.

`FramePipeline` is the part both the live engine and the offline renderer share.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from bridge import clock
from bridge.analysis import AnalysisConfig, StreamingAnalyzer
from bridge.degrade import DegradeController, DegradeSettings, ScaledPix2Pix, levels_for
from bridge.errors import GeneratorUnavailable
from bridge.generators.base import Generator, Snapshot
from bridge.runtime import (Runner, recompile_room_once_compiling, release_openmp_workers, resolve_frame, to_rgba,
                            to_rgba_async)

log = logging.getLogger(__name__)

LEAD_WINDOW = 30  # generation times (frames) the lead time is judged on
LEAD_MARGIN_S = 0.003  # slack for thread wake-up and the sinks


class FramePipeline:
    """Audio samples + newest image in, RGBA frame (and generated sound) out.

    Owns the streaming analysis state, the latent walk of latent families (`navigator`), the
    mel-to-audio voice of families that make sound, and idle mode. `make_frame(snapshot, dt)`
    returns the frame; the sound made for those `dt` seconds is left in `last_sound`.
    With a ParamStore (`params`) the latent comes from a `LatentControl` (`control`: live walk
    choice, anchor jumps on the beat, direction knobs; bridge.morph.control), which also takes
    the store's queued triggers each frame; without one, straight from the walk.
    With `degrade` (scales, bridge.degrade.parse_degrade) it also holds a Runner per lower
    internal resolution, all warmed by `warmup`; `level` (0 = full) picks the one used."""

    def __init__(self, model: Generator, runner: Runner | None = None, smoothing: float = 0.0,
                 output_size: int | None = None, walk: str | None = None,
                 walk_params: dict | None = None, seed: int = 0, idle=None,
                 sound_rate: int | None = None, params=None, degrade: tuple[float, ...] | None = None,
                 upscaler=None):
        self.model = model
        self.upscaler = upscaler  # bridge.upscale.Upscaler: the output's size and fit, or None
        self.runner = runner or Runner(model, runtime="reference")
        self.levels, self.degrade_note = levels_for(model, degrade)
        self.level_runners = [self.runner] + [self._level_runner(i, level.size)
                                              for i, level in enumerate(self.levels[1:], 1)]
        self.level = 0  # index into levels; the engine's DegradeController sets it
        # per level, how often its runner was replaced (`use_runner`) or changed how it plays (a
        # thread trial cut short): the engine's degradation measures those levels afresh
        self.runner_versions = [0] * len(self.levels)
        if degrade:
            (log.info if len(self.levels) > 1 else log.warning)("degradation: %s", self.degrade_note)
        overrides = getattr(model.config, "analysis", {}) or {}
        self.analysis_config = AnalysisConfig(**overrides)
        self.analyzer = StreamingAnalyzer(self.analysis_config)
        self.smoothing = float(smoothing)
        self.output_size = output_size
        self.idle = idle  # bridge.idle.IdleMode or None
        self.params = params  # bridge.params.ParamStore or None: live smoothing and brightness
        self.control = None  # bridge.morph.control.LatentControl, with a ParamStore
        self._navigator = None
        if params is not None:
            from bridge.morph.control import LatentControl
            self.control = LatentControl(model, params, walk=walk, walk_params=walk_params, seed=seed)
        else:
            self._navigator = model.navigator(walk, seed=seed, **(walk_params or {}))
        self.voice = None
        if model.makes_sound:
            from bridge.sinks.voice import MelVoice
            self.voice = MelVoice.for_model(model, out_rate=sound_rate)
        self.last_sound: np.ndarray | None = None
        self._sound_due = 0.0
        self._previous: torch.Tensor | None = None
        self._warm_inputs: tuple | None = None  # (snapshot, latent) `warmup` ran on

    def _level_runner(self, index: int, size: int, base=None, threads: int | None = None):
        """The runner for degradation level `index` (internal size `size`), made like `base`
        (the pipeline's own runner by default): its runtime, device, thread count (unless
        `threads` is given), compiled or not."""
        base = base or self.runner
        at_level = getattr(base, "at_level", None)  # an isolated worker holds its own levels
        if at_level is not None:
            return at_level(index, size)
        runtime = getattr(base, "level_runtime", None) or base.info.runtime
        runner = Runner(ScaledPix2Pix(self.model, size), runtime=runtime, device=str(base.device),
                        compile=getattr(base, "compile", True))
        runner.use_threads(threads or getattr(base, "level_threads", None))  # warmed, then played, at it
        return runner

    def close(self) -> None:
        """Let go of what outlives the pipeline by itself (an isolated worker process)."""
        closing = getattr(self.runner, "close", None)
        if closing is not None:
            closing()

    @property
    def navigator(self):
        """The walk moving the latent now (the live control may switch it), or None."""
        return self.control.navigator if self.control is not None else self._navigator

    @property
    def sample_rate(self) -> int:
        return self.analysis_config.sample_rate

    @property
    def sound_rate(self) -> int | None:
        """Sample rate of the generated sound, or None for families that make none."""
        return self.voice.out_rate if self.voice is not None else None

    def feed_audio(self, samples: np.ndarray) -> None:
        if samples.size:
            self.analyzer.feed(samples)

    def listen_with(self, analyzer: StreamingAnalyzer) -> None:
        """Play on from `analyzer` (a model switched in takes over the playing one's: its history,
        levels and tempo, where its own would start from silence), and from no earlier picture
        (one kept warm would smooth toward the last it made, however long ago)."""
        self.analyzer = analyzer
        self._previous = None

    def snapshot(self, audio_time: float | None, image: np.ndarray | None = None,
                 image_time: float | None = None) -> Snapshot:
        features = self.analyzer.snapshot(audio_time or 0.0)
        return Snapshot(audio=features, image=image, audio_time=audio_time, image_time=image_time)

    def warmup(self, runs: int = 3, between=None) -> None:
        """Compile and warm the runner on silence (and the walk's first latent). `between`, if
        given, is called before each level's (and each candidate's) compile; it may raise to stop
        there (a compile itself cannot be stopped once going)."""
        snapshot = self.snapshot(None)
        if self.control is not None:  # the kind of latent the control will give, store untouched
            latent = self.control.warmup_latent(snapshot.audio)
        else:
            latent = self.navigator.step(snapshot.audio, 0.0) if self.navigator is not None else None
        self._warm_inputs = (snapshot, latent)  # kept for `use_runner`, which must not move the walk
        self._warm(self.level_runners, runs, between)
        if self.navigator is not None:
            self.navigator.reset()

    def _warm(self, level_runners: list, runs: int, between=None, playing=None) -> None:
        snapshot, latent = self._warm_inputs
        for level_runner in level_runners:  # every level compiled now: a switch never stalls
            # --runtime auto: each runtime it will try, with the condition that one takes
            for runner in getattr(level_runner, "candidates", [level_runner]):
                if playing is not None and getattr(runner, "runner", runner) is playing:
                    continue  # warm, and called by the playing thread meanwhile
                if between is not None:
                    between()
                runner.warmup(self.condition(snapshot, runner), latent, runs=runs)

    def use_runner(self, runner, runs: int = 3, between=None, level_threads: int | None = None,
                   levels: list[int] | None = None) -> None:
        """Play `runner` (the same network made another way: the compiled one of a pipeline that
        started playing uncompiled) from the next frame on, at every degradation level: the levels are
        made like it (at `level_threads`, if given) and everything is warmed here, on the calling
        thread, on the inputs `warmup` used (the playing pipeline's walk and analysis are left
        alone); the frames made meanwhile use the runners there were. `between`: as for `warmup`.
        `levels`: only these (indices; 0 is `runner` itself), the others left as they are."""
        if self._warm_inputs is None:
            raise RuntimeError("use_runner replaces the runner of a warmed pipeline: call warmup() first")
        indices = range(len(self.levels)) if levels is None else sorted(set(levels))
        made = {i: runner if i == 0 else self._level_runner(i, self.levels[i].size, base=runner, threads=level_threads)
                for i in indices}
        self._warm(list(made.values()), runs, between)
        # the generation thread reads `level_runners` once a frame: one assignment swaps them all
        self.level_runners = [made.get(i, current) for i, current in enumerate(self.level_runners)]
        if 0 in made:
            self.runner = runner
        for i in made:
            self.runner_versions[i] += 1

    def use_lead_runner(self, runner, playing, runs: int = 3, between=None) -> None:
        """Play `runner` at the full size from the next frame on, the degraded levels kept: at a
        run's start, --threads auto's trial around `playing`, the compiled runner playing now,
        which is one of its candidates; the others are warmed here as in `use_runner`."""
        if self._warm_inputs is None:
            raise RuntimeError("use_lead_runner replaces the runner of a warmed pipeline: call warmup() first")
        self._warm([runner], runs, between, playing=playing)
        self.level_runners = [runner] + self.level_runners[1:]
        self.runner = runner
        self.runner_versions[0] += 1

    def costs_changed(self) -> None:
        """What every level costs changed though its runner did not (a compile that shared the
        cores with it ended): the engine's degradation measures them all afresh, as after a
        runner change. A cost measured beside a compile would otherwise stand: a wide U-Net's
        1/2, tried while its other levels compiled, too slow there, kept it at 1/4 all set."""
        self.runner_versions = [v + 1 for v in self.runner_versions]

    def cut_trials(self, why: str) -> None:
        """The set stepped down from full size while --threads auto's trial played there: the
        trial is decided now (AutoRunner.cut_short), and what full size costs is measured afresh."""
        cut_short = getattr(self.level_runners[0], "cut_short", None)
        if cut_short is not None and cut_short(why):
            self.runner_versions[0] += 1

    def condition(self, snapshot: Snapshot, runner):
        """What `runner` is given: what the picture is drawn from (a tensor or a tuple) when it
        draws it itself on its device (the optimized runtime, for pictures that have a drawer
        there), else the picture drawn here."""
        if getattr(runner, "draws_condition", False):
            params = self.model.condition_params(snapshot)
            if params is not None:
                return params
        return self.model.condition(snapshot)

    def make_frame(self, snapshot: Snapshot, dt: float = 0.0, pending: bool = False):
        """The RGBA frame for `snapshot`, `dt` seconds after the last. `pending`: on CUDA, return a
        PendingFrame whose copy to the host is still running (the live engine resolves it at the
        deadline); otherwise an array."""
        return self.finish(self.picture(snapshot, dt), pending)

    def finish(self, picture: torch.Tensor, pending: bool = False):
        """A finished picture -> the output's RGBA frame: upscaled to the output size (`upscaler`,
        bridge.upscale, any aspect) or resized square (`output_size`), then uint8 RGBA."""
        if self.upscaler is not None:
            return self.upscaler.rgba(picture, pending)
        if self.output_size and self.output_size != picture.shape[-1]:
            picture = torch.nn.functional.interpolate(picture, size=(self.output_size,) * 2,
                                                      mode="bicubic", align_corners=False)
        return to_rgba_async(picture) if pending else to_rgba(picture)

    def picture(self, snapshot: Snapshot, dt: float = 0.0, post: bool = True) -> torch.Tensor:
        """The picture (1, 3, H, W) in [-1, 1] at the model's size: walk, network and voice, then
        (`post`) temporal smoothing and brightness. A mix blends its models' pictures without
        `post` and applies it once to the blend."""
        if self.idle is not None and snapshot.image is not None:
            snapshot = self.idle.apply(snapshot)
        if self.control is not None:
            latent = self.control.step(snapshot.audio, dt)
        else:
            latent = self.navigator.step(snapshot.audio, dt) if self.navigator is not None else None
        runner = self.level_runners[self.level]
        out = runner(self.condition(snapshot, runner), latent)
        if self.voice is not None:
            picture, mel_db = out
            # Carry the fraction, so sound and pictures never drift apart over a long set.
            self._sound_due += dt * self.voice.out_rate
            samples = int(self._sound_due)
            self._sound_due -= samples
            self.last_sound = self.voice.render(mel_db[0].float().cpu().numpy(), samples)
        else:
            picture = out
        return self.post(picture, dt) if post else picture

    def post(self, picture: torch.Tensor, dt: float) -> torch.Tensor:
        """Temporal smoothing and brightness (live parameters with a ParamStore)."""
        smoothing = self.params.smoothed("smoothing", dt) if self.params is not None else self.smoothing
        if smoothing > 0.0 and self._previous is not None and self._previous.shape == picture.shape:
            # Temporal smoothing: an exponential moving average of the pictures.
            picture = torch.lerp(picture, self._previous, smoothing)
        self._previous = picture
        if self.params is not None:
            gain = self.params.smoothed("brightness", dt)
            if gain != 1.0:  # scale light, not the [-1, 1] code: black stays black
                picture = (picture + 1.0) * gain - 1.0
        return picture


@dataclass
class EngineStats:
    window: int = 300
    sent: int = 0
    generated: int = 0
    missed: int = 0  # ticks without a fresh picture: `repeated` + `stalled`
    repeated: int = 0  # the picture was late: the last good frame went out again on time
    stalled: int = 0  # output ticks lost: the machine stalled for more than a frame
    errors: int = 0
    degrade: str = "off"  # the degradation level in use ("full", "3/4", ...), or off
    degrade_changes: int = 0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=300))
    generate_ms: deque = field(default_factory=lambda: deque(maxlen=300))
    send_times: deque = field(default_factory=lambda: deque(maxlen=300))

    @staticmethod
    def _pct(values, q: float) -> float | None:
        """The q-th percentile in ms, rounded; None while there is nothing to take it of (before
        the first frame, or just after a switch or a level change cleared the model's times):
        null in JSON, where NaN is not JSON, and `--` in the status line."""
        values = list(values)  # one C call: the generation thread may append meanwhile
        return round(float(np.percentile(np.asarray(values, float), q)), 2) if values else None

    @property
    def fps(self) -> float:
        times = list(self.send_times)
        if len(times) < 2 or times[-1] == times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def summary(self) -> dict:
        return {
            "fps": round(self.fps, 2),
            "sent": self.sent,
            "generated": self.generated,
            "missed": self.missed,
            "repeated": self.repeated,
            "stalled": self.stalled,
            "errors": self.errors,
            "latency_ms_p50": self._pct(self.latencies_ms, 50),
            "latency_ms_p95": self._pct(self.latencies_ms, 95),
            "generate_ms_p50": self._pct(self.generate_ms, 50),
            "generate_ms_p95": self._pct(self.generate_ms, 95),
            "degrade": self.degrade,
        }


class Engine:
    """With `degrade` (True or DegradeSettings) a DegradeController watches each generation's
    time against the period and moves the pipeline between its levels (bridge.degrade)."""

    def __init__(self, pipeline: FramePipeline, sinks: list, fps: float = 30.0,
                 audio_source=None, video_source=None, sink_audio_rate: int | None = None,
                 degrade: bool | DegradeSettings = False):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self._degrade_settings = degrade if isinstance(degrade, DegradeSettings) else (
            DegradeSettings() if degrade else None)
        self.degrade: DegradeController | None = None
        self.pipeline = pipeline
        self._next_pipeline: FramePipeline | None = None
        # The rate the audio-carrying sinks were opened with: after a model switch, sound at
        # another rate is not sent to them (None: send whatever the pipeline gives).
        self.sink_audio_rate = sink_audio_rate
        self.sinks = list(sinks)
        self.period = 1.0 / fps
        self.fps = fps
        self.audio = audio_source
        self.video = video_source
        self.stats = EngineStats()
        self._audio_pos = 0
        self._tick = threading.Condition()
        self._tick_count = 0
        self._latest: tuple[int, np.ndarray, float, np.ndarray] | None = None
        self._sent_id = 0
        self._frozen: tuple | None = None  # the frame held while the freeze parameter is on
        self._stop = threading.Event()
        self._stop_requested = False  # set by request_stop (a signal handler): no lock involved
        self._last_error = ""
        self._start_degrade()

    def _start_degrade(self) -> None:
        """A controller for the pipeline in use (again after a model switch: its own levels)."""
        if self._degrade_settings is None:
            return
        self.pipeline.level = 0
        self.degrade = DegradeController(self.pipeline.levels, self._degrade_settings)
        self._runners_seen = list(self.pipeline.runner_versions)
        self.stats.degrade = self.degrade.name

    def set_fps(self, fps: float) -> None:
        """Change the output rate live (the next deadline on); the degradation follows it."""
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps, self.period = fps, 1.0 / fps

    # --- generation thread --------------------------------------------------------------------
    def _read_inputs(self) -> tuple[Snapshot, np.ndarray]:
        new_audio = np.zeros(0, dtype=np.float32)
        audio_time = None
        if self.audio is not None:
            new_audio, self._audio_pos, audio_time = self.audio.ring.read_since(self._audio_pos)
            self.pipeline.feed_audio(new_audio)
        image = image_time = None
        if self.video is not None:
            latest = self.video.read_latest()
            if latest is not None:
                image, image_time = latest
        return self.pipeline.snapshot(audio_time, image, image_time), new_audio

    def _generate_loop(self) -> None:
        # this thread's own compile settings, once something is compiled in the process (a
        # compiled runner comes after): before each frame until then, an Event's flag read
        room = recompile_room_once_compiling()
        seen = made = 0
        previous_start = None
        while not self._stop.is_set():
            with self._tick:
                self._tick.wait_for(lambda: self._tick_count > seen or self._stop.is_set(), timeout=0.5)
                seen = self._tick_count
            if self._stop.is_set():
                break
            if not room:
                room = recompile_room_once_compiling()
            if self._next_pipeline is not None:  # a model switch lands between two frames
                self.pipeline, self._next_pipeline = self._next_pipeline, None
                self.stats.generate_ms.clear()  # the new model's own times set the lead time
                self._start_degrade()
            started = clock.now()
            # The time this picture stands for: walks move by it, and the sound made with it
            # lasts it (capped, so a stall does not queue seconds of sound).
            dt = self.period if previous_start is None else min(started - previous_start, 0.25)
            previous_start = started
            try:
                snapshot, new_audio = self._read_inputs()
                frame = self.pipeline.make_frame(snapshot, dt, pending=True)
            except GeneratorUnavailable:
                continue  # an isolated worker restarting: the last good frame goes out, a repeat
            except Exception as e:  # a bad frame must never stop the show: keep the last good one
                self.stats.errors += 1
                message = f"generation failed: {type(e).__name__}: {e}"
                if message != self._last_error:
                    log.error(message)
                    self._last_error = message
                continue
            capture = snapshot.capture_time
            finished = clock.now()
            self.stats.generate_ms.append((finished - started) * 1000.0)
            self.stats.generated += 1
            if self.degrade is not None:
                self._degrade_step(finished - started, finished)
            made += 1
            # Sinks that carry audio get the generated sound of a sound model, else the music.
            pipeline = self.pipeline
            if pipeline.voice is not None:
                audio, rate = pipeline.last_sound, pipeline.sound_rate
            else:
                audio, rate = new_audio, pipeline.sample_rate
            if self.sink_audio_rate is not None and rate != self.sink_audio_rate:
                audio = None
            # One tuple, swapped in one assignment, so the output thread never sees half of it.
            self._latest = (made, frame, capture if capture is not None else started, audio)

    def _degrade_step(self, seconds: float, now: float) -> None:
        versions = list(self.pipeline.runner_versions)
        if versions != self._runners_seen:  # compiled runners took over: their costs are not known yet
            changed = [i for i, (v, seen) in enumerate(zip(versions, self._runners_seen)) if v != seen]
            self._runners_seen = versions
            self.degrade.forget_costs(now, levels=changed)
        level = self.degrade.observe(seconds, now, self.period)
        if level != self.pipeline.level:
            left_full = self.pipeline.level == 0
            self.pipeline.level = level
            if left_full:
                self.pipeline.cut_trials(f"the set stepped down to {self.degrade.name}")
            self.stats.degrade = self.degrade.name
            self.stats.degrade_changes += 1
            self.stats.generate_ms.clear()  # the lead time is judged on the new level's times
            log.info("degradation: level %s (%d px)", self.degrade.name, self.degrade.levels[level].size)

    # --- output thread ------------------------------------------------------------------------
    def _send(self, frame: np.ndarray, capture_time: float, audio: np.ndarray | None) -> None:
        for sink in self.sinks:
            try:
                sink.send(frame, capture_time, audio=audio)
            except Exception as e:
                self.stats.errors += 1
                log.error("sink %s failed: %s", getattr(sink, "name", sink), e)
        sent_at = clock.now()
        self.stats.sent += 1
        self.stats.send_times.append(sent_at)
        self.stats.latencies_ms.append((sent_at - capture_time) * 1000.0)

    def _lead_time(self) -> float:
        """How long before a deadline its picture is started: the slowest recent generation plus
        a margin, so the picture is finished just in time and made from the newest audio (the
        latency is then about the model's time, not the model's time plus a frame). Never more
        than a period: a model slower than the frame rate simply starts again at once."""
        recent = list(self.stats.generate_ms)[-LEAD_WINDOW:]
        if not recent:
            return self.period
        return min(self.period, max(recent) / 1000.0 + LEAD_MARGIN_S)

    def _wait_until(self, t: float) -> None:
        delay = t - clock.now()
        if delay > 0:
            self._stop.wait(delay)

    def run(self, duration: float | None = None, on_second=None) -> dict:
        """Run until `stop()` or `duration` seconds; returns the stats summary."""
        worker = threading.Thread(target=self._generate_loop, name="vjbridge-generate", daemon=True)
        worker.start()
        # This thread built the models and warmed them: its OpenMP workers, left waiting, would
        # slow the network's own (see release_openmp_workers); let go of now and once a second
        # (anything a callback ran in parallel meanwhile).
        release_openmp_workers()
        start = clock.now()
        deadline = start + self.period
        next_report = start + 1.0
        try:
            while not (self._stop.is_set() or self._stop_requested):
                if duration is not None and clock.now() - start >= duration:
                    break
                self._wait_until(deadline - self._lead_time())
                with self._tick:
                    self._tick_count += 1
                    self._tick.notify()
                self._wait_until(deadline)
                behind = clock.now() - deadline
                if behind > self.period:
                    # We fell more than a whole frame behind (machine stalled): re-anchor, count it.
                    lost = int(behind / self.period)
                    self.stats.missed += lost
                    self.stats.stalled += lost
                    deadline = clock.now()
                self._output_tick()
                deadline += self.period
                if clock.now() >= next_report:
                    next_report += 1.0
                    if on_second is not None:
                        on_second(self.stats)
                    release_openmp_workers()
        finally:
            self._stop.set()
            with self._tick:
                self._tick.notify_all()
            worker.join(timeout=5.0)
        return self.stats.summary()

    def _output_tick(self) -> None:
        latest = self._latest
        if latest is None:
            return  # nothing made yet (model warming up): no frame to repeat either
        frame_id, frame, capture, audio = latest
        frame = resolve_frame(frame)  # a GPU frame's copy to the host ends here, if not already
        # Sound belongs to the newest finished picture: it goes out once, even while the picture
        # is held or blacked out (a recording keeps its music through a freeze).
        fresh = frame_id != self._sent_id
        self._sent_id = frame_id
        audio = audio if fresh else None
        params = self.pipeline.params
        if params is not None and params.get("blackout"):
            black = np.zeros_like(frame)
            black[..., 3] = 255
            self._send(black, capture, audio)
            return
        if params is not None and params.get("freeze"):
            held = self._frozen or (frame, capture)
            self._frozen = held
            self._send(held[0], held[1], audio)  # held on purpose: not a miss
            return
        self._frozen = None
        if not fresh:
            self.stats.missed += 1  # the model did not finish in time: repeat the last good frame
            self.stats.repeated += 1
        self._send(frame, capture, audio)

    def swap_pipeline(self, pipeline: FramePipeline) -> None:
        """Use `pipeline` (built and warmed elsewhere) from the next frame on."""
        self._next_pipeline = pipeline

    @property
    def swapping(self) -> bool:
        return self._next_pipeline is not None

    def stop(self) -> None:
        self._stop.set()

    def request_stop(self) -> None:
        """End `run` at the output loop's next wake-up (within a frame), from a signal handler.

        It sets a plain flag and takes no lock: a handler runs on the main thread between any two
        bytecodes, possibly while that thread is inside threading's own code, where `stop()` (an
        Event's lock) could wait on itself, and where a KeyboardInterrupt raised instead can leave
        a lock taken and never given back."""
        self._stop_requested = True
