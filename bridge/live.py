"""Putting a live session together from plain settings: model, inputs, outputs, engine.
The CLI only parses arguments into `LiveSettings` and calls `LiveSession`."""
from __future__ import annotations

import contextlib
import faulthandler
import gc
import logging
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from bridge.config import check_fps
from bridge.control.osc import Actions
from bridge.control.presets import apply_preset
from bridge.degrade import parse_degrade
from bridge.engine import Engine, FramePipeline
from bridge.errors import ConfigError, ControlError, ModelLoadError
from bridge.generators.base import load_model
from bridge.params import ParamStore
from bridge.runtime import DEFAULT_THREADS, make_runner, parse_threads, set_threads

log = logging.getLogger(__name__)

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
STOP_SIGNALS = ("SIGINT", "SIGTERM")  # Ctrl-C, and what service managers and `kill` send
SLOW_CLOSE_S = 20.0  # closing taking longer than this prints where every thread is
# How long a thread may keep the GIL while another waits for it, during a model switch (Python's
# default is 5 ms; see `playing_thread_first`)
SWITCH_GIL_INTERVAL_S = 20e-6
MAX_WARM = 8  # models kept ready besides the one playing (--keep-warm, --preload)
# A switch to a model not kept warm (optimized runtime) plays it uncompiled at once, traced to
# TorchScript in a tenth of a second (bridge.runtime.TracedNetwork), while its compiled runner
# builds (seconds), which then takes over between two frames; the model a run starts with too
# (its first frame after ~1.7 s instead of 7-17 s). False: both wait for the compiled one
# (benchmarks/switch_probe.py compares both)
PLAY_WHILE_COMPILING = True
# --threads auto at a run's start: the count that leaves a core free compiles first and plays as
# soon as it is ready, the trial's other counts compile while it plays (False: all compiled
# first; see _compile_playing)
STAGED_TRIAL = True
# The compiler's modules (torch._inductor, torch._dynamo: 1.1-1.4 s to import on 2 cores)
# imported by the first compile, on the loader thread while the model plays traced. True: before
# the first frame, as the session is made (how runs started before the fifteenth session; see
# benchmarks/README.md)
IMPORT_COMPILER_FIRST = False
# What plays uncompiled compiles level by level, the level playing first (a mix: for each model),
# then the levels above it; False: model by model, full size first (see _compile_by_level)
PLAYING_LEVEL_FIRST = True


@contextlib.contextmanager
def stop_on_signals(request_stop):
    """While inside, Ctrl-C and SIGTERM call `request_stop()` instead of raising
    KeyboardInterrupt (or killing the process): the live loop then ends at its next frame and
    the outputs close in order. A KeyboardInterrupt lands between any two bytecodes of the main
    thread, inside threading's own Condition code too, and can leave a lock taken for good: a
    Ctrl-C that hangs the exit instead of ending the set. The previous handlers come back on
    leaving, so a second Ctrl-C while the outputs close interrupts as usual. Off the main thread
    (where Python cannot take signals) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for name in STOP_SIGNALS:
        number = getattr(signal, name, None)
        if number is None:
            continue
        try:
            previous[number] = signal.signal(number, lambda signum, frame: request_stop())
        except (OSError, ValueError):  # a signal this OS does not let us handle
            pass
    try:
        yield
    finally:
        for number, handler in previous.items():  # None: one set outside Python, not restorable
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)


class _HeldSetting:
    """A setting of the whole process that model loaders hold changed while they work: the first
    to enter saves it and changes it, the last to leave puts it back. Loaders can overlap: a
    closed session's finishes its current piece while the next session's starts, and each saving
    and putting back on its own left the changed value in place for good."""

    def __init__(self, get, change, put):
        self._get, self._change, self._put = get, change, put
        self._lock = threading.Lock()
        self._inside = 0
        self._saved = None

    @property
    def inside(self) -> bool:
        """Whether a loader holds the setting changed now."""
        return self._inside > 0

    @contextlib.contextmanager
    def held(self):
        with self._lock:
            if self._inside == 0:
                self._saved = self._get()
                self._change(self._saved)
            self._inside += 1
        try:
            yield
        finally:
            with self._lock:
                self._inside -= 1
                if self._inside == 0:
                    self._put(self._saved)


_switch_interval = _HeldSetting(sys.getswitchinterval,
                                lambda before: sys.setswitchinterval(min(before, SWITCH_GIL_INTERVAL_S)),
                                sys.setswitchinterval)


def playing_thread_first():
    """While inside, a thread holding the GIL hands it over after SWITCH_GIL_INTERVAL_S when
    another one waits, instead of Python's 5 ms. For a model switch: the new model compiles on a
    loader thread, which is Python holding the GIL nearly all the time, and the playing thread
    lets the GIL go around every kernel of its frame and waits to take it back each time. At 5 ms
    a wait, two switches on 2 cores repeated 89-104 frames; at 20 us, 7-12 (benchmarks/README.md).
    The interval is the whole process's: put back once the last loader inside leaves."""
    return _switch_interval.held()


HOLD_FULL_COLLECTIONS = True  # see full_collections_held
COLLECT_BETWEEN_COMPILES = True  # see collected_between_compiles


def _collected_at(threshold: tuple) -> None:
    gc.set_threshold(*threshold)
    if gc.get_count()[2]:  # something reached the old generation since the last full collection
        gc.collect()  # (none: `collected_between_compiles` just made one, and it walked the same)


# full collections after that many of the middle generation's: never
_full_collections = _HeldSetting(gc.get_threshold, lambda before: gc.set_threshold(*before[:2], 1 << 30),
                                 _collected_at)


def full_collections_held():
    """While inside (a compile on the loader thread as a model plays), the garbage collector
    makes no full collection of its own, and one is made on leaving. A full collection walks
    every tracked object holding the GIL, and a compile keeps tens of thousands alive (its
    graphs, IR, sympy expressions), more as it goes: switched to mid-set, a full-32 flow's
    compile set off 7 of them, 27-130 ms each, and the output lost 8-11 ticks. The young
    generations are still collected (they walk only what is new); what the compile left is
    collected once, at the end. The threshold is the whole process's: put back, and the one
    collection made, once the last loader inside leaves."""
    return _full_collections.held() if HOLD_FULL_COLLECTIONS else contextlib.nullcontext()


def collected_between_compiles() -> None:
    """Inside `full_collections_held`, as one compile is over and before the next: what it left is
    collected now, one compile's at a time, rather than all at the end. The garbage is most of
    what a full collection walks then (a level's compile of pix2pix-pulse leaves 30,000-50,000
    objects; the compiled runners that live on, about 15,000 more) and, holding the GIL, the
    walk is the playing thread's wait. On 2 cores, `--degrade auto`: one model at 60 fps, one
    collection at the end of the start's compiles, 260-280 ms, and the output waited 119-132 ms
    twice in a row; one after each level, 32-76 ms each, the longest wait 71-73 ms. Four
    models mixed, 918-931 ms and 371-436 ms twice; 16 of 29-129 ms, 121-144 ms. A cold switch
    to it mid-set at 30 fps, 318-346 ms and 141-173 ms; 4 of 45-105 ms, 69-108 ms
    (benchmarks/README.md). The total is no smaller (each walks again what lives on, and they
    run beside the model playing), only the pieces. Nothing is frozen out of the collector's sight: a runner let go of later
    (the thread trial's other count, a model no longer kept warm) holds its frozen weights in
    cycles that only a collection frees."""
    if COLLECT_BETWEEN_COMPILES and _full_collections.inside:  # held only where HOLD_FULL_COLLECTIONS
        gc.collect()


_compiler_settled = False


def settling_network(seed: int | None = 0):
    """The tiny network `settle_compiler` compiles, with the same weights in every process:
    Inductor writes some of them into the C++ it builds, and other weights each process meant
    another library built each start (2.2-2.7 s of it on 2 cores). The set's own randomness goes
    on as it was. `seed` None: weights of a fresh random seed (start_probe's `random-settling`)."""
    import torch

    from bridge.generators.pix2pix import Pix2Pix, Pix2PixConfig
    with torch.random.fork_rng(devices=[]):
        torch.seed() if seed is None else torch.manual_seed(seed)
        return Pix2Pix(Pix2PixConfig(size=32, ngf=4, input="bands")).eval()


def settle_compiler(device: str = "cpu") -> None:
    """Once a process, on the loader thread, before the first compile made while a model plays.
    The compiler's modules are imported here and frozen at once (see below). Inductor finishes
    setting itself up on its first compile (pattern tables, sympy, its C++ builder: 140,000
    objects that live as long as the process), after `run` froze what lived at its start out of
    the garbage collector's sight: every full collection walked them again,
    holding the GIL 60-80 ms, during every later compile of the set (cold switches lost output
    ticks). So a tiny network is compiled first and what lives then is frozen too: the full
    collections of a cold switch measured 24-46 ms after, and its lost ticks 6 in 6 switches ->
    0 in 6. The cost: the first compile ends a few seconds later (the model plays traced
    meanwhile). `device`: the one the set compiles for."""
    global _compiler_settled
    if _compiler_settled:
        return
    _compiler_settled = True
    from bridge.runtime import Runner
    started = time.perf_counter()
    try:
        # The compiler's modules (200,000 objects; imported here, as the model plays, unless
        # IMPORT_COMPILER_FIRST), moved out of the collector's sight as soon as they are in, as
        # `run` does with what lives at its start: the full collections below and after the
        # compile walked them too, 100-140 ms holding the GIL instead of 50-70 (ticks lost).
        import torch._inductor.compile_fx  # noqa: F401
        gc.freeze()
        tiny = settling_network()
        FramePipeline(tiny, runner=Runner(tiny, device=device, compile=True)).warmup(runs=1)
    except Exception as e:  # only an optimisation: the real compile reports its own trouble
        log.info("compiler not set up ahead: %s", e)
        return
    del tiny
    gc.collect()  # the tiny network's own compile goes; the compiler's lasting objects stay
    gc.freeze()
    log.info("compiler set up in %.1f s", time.perf_counter() - started)


def bundle_stamp(name: str) -> tuple:
    """What tells that a bundle changed on disk (trained again, replaced): its config's and
    weights' sizes and modification times. A model kept warm whose stamp moved is loaded again."""
    from bridge.generators.base import CONFIG_FILE, WEIGHTS_FILE, find_bundle
    folder = find_bundle(name)
    stamp = []
    for file in (CONFIG_FILE, WEIGHTS_FILE):
        try:
            st = (Path(folder) / file).stat()
            stamp.append((file, st.st_size, st.st_mtime_ns))
        except OSError:  # missing: loading it says so, in its own words
            stamp.append((file, None, None))
    return tuple(stamp)


SETTLE_LIMIT_S = 300.0  # how long `run(settled_window=...)` waits for the model to settle


class SettledWindow:
    """Measures a run's seconds once its model has settled (`LiveSession.settled`), which is what
    the set plays like from then on: the start's seconds (the model uncompiled, then its compile
    and thread trial sharing the cores) took 2x the generation time of the settled bundled model
    on 2 cores. Called by the engine once a second: it notes when the model settled, clears the
    engine's times (fps and percentiles are then the window's), and asks the engine to stop
    `seconds` later. A model that has not settled within `limit` seconds is measured as it is."""

    def __init__(self, session: "LiveSession", seconds: float, limit: float = SETTLE_LIMIT_S):
        if seconds <= 0:
            raise ValueError(f"a settled window must be positive, got {seconds} s")
        self.session, self.seconds, self.limit = session, seconds, limit
        self.began = time.perf_counter()
        self.start: float | None = None
        self.end: float | None = None
        self.settle_s: float | None = None  # None: it did not settle within the limit
        self.before: dict = {}

    COUNTS = ("sent", "generated", "missed", "repeated", "stalled", "errors")

    def __call__(self, stats) -> None:
        now = time.perf_counter()
        if self.start is None:
            settled = self.session.settled
            if not settled and now - self.began < self.limit:
                return
            self.settle_s = round(now - self.began, 1) if settled else None
            self.before = {name: getattr(stats, name) for name in self.COUNTS}
            for times in (stats.latencies_ms, stats.generate_ms, stats.send_times):
                times.clear()  # deque.clear: one C call, beside the engine's appends
            self.start = now
        elif now - self.start > self.seconds - 0.5 and self.end is None:  # called each second: the nearest
            self.end = now
            self.session.engine.request_stop()

    def summary(self, stats) -> dict:
        """The engine's summary of the window: its counts and times alone (percentiles over its
        last 300 frames), `window_s` its length, `settle_s` how long settling took while the
        model played, and `settling` what the output counted meanwhile. A run stopped before the
        model settled gives the whole run's, with `settle_s` None and `window_s` 0."""
        summary = stats.summary()
        if self.start is None:
            return {**summary, "settle_s": None, "window_s": 0.0, "settling": {}}
        settling = {name: self.before[name] for name in ("sent", "repeated", "stalled", "errors")}
        summary.update({name: getattr(stats, name) - self.before[name] for name in self.COUNTS})
        end = self.end if self.end is not None else time.perf_counter()
        return {**summary, "settle_s": self.settle_s, "window_s": round(end - self.start, 1), "settling": settling}


class _Closing(Exception):
    """The session closed while the loader thread built or compiled a model: it stops at the
    next piece (a level, a thread count), and what it made is let go."""


class _Warm(NamedTuple):
    """A model built and warmed, not playing: switched away from, cued, or preloaded."""
    model: object
    pipeline: object  # its FramePipeline (the lead of a mix)
    stamp: tuple


def _lead(pipeline):
    return pipeline.pipelines[0] if hasattr(pipeline, "pipelines") else pipeline


def _playing(pipeline):
    """The runner a FramePipeline plays now: its degradation level's."""
    return pipeline.level_runners[pipeline.level]


class _SlowCloseReport:
    """Prints every thread's stack if closing takes longer than `after_s` (then carries on
    waiting): a driver that never lets go shows up by name instead of as a silent hang."""

    def __init__(self, after_s: float = SLOW_CLOSE_S, stream=sys.stderr) -> None:
        self._done = threading.Event()
        self._after_s, self._stream = after_s, stream
        self._thread = threading.Thread(target=self._watch, name="vjbridge-close-watch", daemon=True)

    def _watch(self) -> None:
        if self._done.wait(self._after_s):
            return
        try:
            self._stream.write(f"\nvjbridge: closing has taken over {self._after_s:g} s; where each "
                               f"thread is:\n")
            self._stream.flush()
            faulthandler.dump_traceback(file=self._stream, all_threads=True)
        except (OSError, ValueError, AttributeError):  # no real file behind the stream
            log.warning("closing has taken over %g s", self._after_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(1.0)  # it wakes at once: closing leaves no thread of ours behind


@dataclass
class LiveSettings:
    model: str = "pix2pix-pulse"
    audio_in: str | None = "default"
    camera: str | None = None
    outs: list[str] = field(default_factory=lambda: ["window"])
    fps: float = 30.0
    size: int | None = None  # output size; None = the model's own
    runtime: str = "optimized"
    threads: int | str | None = "auto"  # torch threads of the network: a count, auto (tried live), None: torch's
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
    preset: str | None = None  # presets/NAME.toml recalled at start (and re-applied when edited)
    midi_in: str | None = None  # MIDI input port pattern ("" or "*": every port); None: no MIDI
    midi_out: str | None = None  # MIDI feedback port pattern (LED rings, motor faders)
    midi_map: str | None = None  # presets/midi/NAME.toml
    midi_api: str | None = None  # rtmidi backend (alsa, jack, ...); None: the system's
    record: str | None = None  # write every control event to this file
    replay: str | None = None  # play a recording's control events back
    degrade: str | None = None  # graceful degradation: 'auto', scales '1,0.75,0.5', or None/off
    isolate: bool = False  # run the generator's network in a worker process, restarted if it dies
    mix_models: list[str] = field(default_factory=list)  # more models played at once (bridge.mix)
    keep_warm: int = 2  # models switched away from (or cued) kept built and warmed: switching back is instant
    preload: list[str] = field(default_factory=list)  # models built at start, ready to switch to at once
    mix_mode: str | None = None  # how they blend: mix, add, screen, lighten (None: the parameter's default)
    out_size: str | None = None  # output resolution WxH, the picture upscaled to it (bridge.upscale)
    upscale: str = "bicubic"  # bilinear, bicubic, lanczos
    fit: str = "cover"  # cover (crop), contain (black bars), stretch

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
        parse_degrade(self.degrade)  # a bad --degrade fails here, with its one-line error
        self.threads = parse_threads(self.threads)
        if self.runtime == "auto" and self.isolate:
            raise ConfigError("--runtime auto chooses on live frames in this process: with --isolate "
                              "give --runtime optimized or int8")
        if len(self.mix_models) > 3:
            raise ConfigError(f"at most 4 --model at once, got {1 + len(self.mix_models)}")
        if isinstance(self.keep_warm, bool) or not isinstance(self.keep_warm, int) \
                or not 0 <= self.keep_warm <= MAX_WARM:
            raise ConfigError(f"--keep-warm must be 0..{MAX_WARM} models, got {self.keep_warm!r}")
        if len(self.preload) > MAX_WARM:
            raise ConfigError(f"at most {MAX_WARM} --preload, got {len(self.preload)}")
        for name in self.preload:
            if not MODEL_NAME.match(name):
                raise ConfigError(f"--preload wants a bundle name (see `vjbridge models`), got {name!r}")
        self.upscaler()  # a bad --out-size, --upscale or --fit fails here too

    def upscaler(self):
        """A new Upscaler to the --out-size frame (bridge.upscale), or None: the model's square."""
        if self.out_size is None:
            return None
        from bridge.upscale import Upscaler, parse_size
        return Upscaler(*parse_size(self.out_size), mode=self.upscale, fit=self.fit)


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


class LiveSession(Actions):
    """Owns everything a live run opens, and closes all of it, in reverse order, on exit. It is
    also what the control surfaces' bigger commands do (bridge.control.osc.Actions): switch the
    model, recall or save the whole state, morph between presets, arm MIDI learn."""

    def __init__(self, settings: LiveSettings):
        from bridge.sinks import open_sink
        from bridge.sources.audio import open_audio_source
        from bridge.sources.video import open_video_source

        self.settings = settings
        self.model_name = settings.model
        self._opened: list = []
        self._lock = threading.Lock()  # held while the loader thread switches or cues models
        self._queue_lock = threading.Lock()
        self._queued: list[tuple[str, str]] = []  # ("switch", "cue" or "compile", name) waiting for the loader
        self._warm: dict[str, _Warm] = {}  # models ready to switch to, least recently played first
        self._compiling: str | None = None  # the model playing uncompiled while its compiled runner builds
        self._closed = False  # a compile still to start then does not (it cannot be stopped once going)
        self._loader_thread: threading.Thread | None = None
        self._loading: str | None = None  # what the loader thread does now, for `still_loading`
        self.osc = self.midi = self.recorder = self.replayer = None
        self._watcher = self._morph = None
        self.messages: list[str] = []  # what the control surfaces were told went wrong (newest last)
        try:
            self.params = ParamStore()
            Actions.__init__(self, self.params)
            self.params.set("smoothing", settings.smoothing, source="cli")
            if settings.walk is not None and "walk" in self.params.params:
                self.params.set("walk", settings.walk, source="cli")
            self._stamp = bundle_stamp(settings.model)
            # played uncompiled from the first frame, compiled once `run` starts (`_compile_playing`)
            self._compile_at_start = self._plays_while_compiling()
            if self._compile_at_start and IMPORT_COMPILER_FIRST:
                import torch._inductor.compile_fx  # noqa: F401
            self.model, self.pipeline = self._build(settings.model, compile=not self._compile_at_start)
            # The model in use refuses what it cannot do (a walk it lacks, anchor 40 of 8) before
            # the store accepts it, so a refusal leaves the state as it was.
            self.params.add_check(self._check_for_model)
            if settings.preset:
                for note in apply_preset(settings.preset, self.params)[1]:
                    log.warning(note)
            self.audio = self.video = None
            if settings.audio_in is not None:
                self.audio = open_audio_source(settings.audio_in, sample_rate=self.pipeline.sample_rate,
                                               block=settings.block, channel=settings.channel)
                self._open(self.audio)
            if settings.camera is not None:
                self.video = open_video_source(settings.camera)
                self._open(self.video)
            self.size = settings.size or self.model.output_size
            for name in settings.preload:  # the set's models, built before it starts, at its size
                if name != settings.model:
                    self._keep(name, self._ready(name, bundle_stamp(name)))
            self.width = self.height = self.size
            upscaler = settings.upscaler()
            if upscaler is not None:
                self.width, self.height = upscaler.width, upscaler.height
            self.sinks = []
            self.sink_audio_rate = None
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
                self.sink_audio_rate = self.sink_audio_rate or audio_rate
                sink = open_sink(spec, self.width, self.height, settings.fps, audio_rate=audio_rate)
                self._opened.append(sink)
                self.sinks.append(sink)
            self.engine = Engine(self.pipeline, self.sinks, fps=settings.fps, audio_source=self.audio,
                                 video_source=self.video, sink_audio_rate=self.sink_audio_rate,
                                 degrade=parse_degrade(settings.degrade) is not None)
            self._open_control()
        except BaseException:
            self.close()
            raise

    # --- building -------------------------------------------------------------------------------
    def _build(self, name: str, output_size: int | None = None, ready: _Warm | None = None,
               compile: bool = True):
        """Load, prepare and warm a model and its pipeline (used at start and by a switch; `ready`:
        one kept warm; `compile=False`: uncompiled, see `_compile_playing`); with --model given
        more than once, the others join it in a MixPipeline (a switch replaces the first, the
        others play on; at the start they are built as the lead is, uncompiled where it is, and
        compiled after it, see `_compile_by_level`)."""
        model, pipeline = (ready.model, ready.pipeline) if ready is not None else \
            self._build_one(name, output_size, compile=compile)
        built = []  # pipelines made here: closed again (isolated workers) if the mix cannot be made
        try:
            if hasattr(self, "pipeline"):  # a switch: the new lead joins the others playing now
                others = getattr(self.pipeline, "pipelines", [])[1:]
            else:
                for other in self.settings.mix_models:
                    built.append(self._build_one(other, output_size, lead=False, compile=compile)[1])
                others = built
            if not others:
                return model, pipeline
            from bridge.mix import MixPipeline
            mix = MixPipeline([pipeline] + others, params=self.params)
            mix.warm_batch()
        except BaseException:
            for part in [pipeline] + built:
                part.close()
            raise
        if self.settings.mix_mode is not None:
            self.params.set("mix_mode", self.settings.mix_mode, source="cli")
        return model, mix

    def _build_one(self, name: str, output_size: int | None = None, lead: bool = True,
                   compile: bool = True):
        """One model's pipeline. Only the lead model of a mix follows the live parameters (walk,
        knobs, anchors, smoothing, brightness); the others walk on their own with the music. Each
        has the degradation levels (the mix steps down as one, bridge.mix).
        `compile=False`: its network uncompiled, traced (see `_compile_playing`)."""
        s = self.settings
        model = load_model(name, device=s.device)
        prepare_model(model, s.mode if name == s.model else None, s.mix if name == s.model else None,
                      has_audio=s.audio_in is not None, has_image=s.camera is not None)
        idle = None
        if s.idle_after is not None and "image" in model.inputs:
            from bridge.idle import IdleMode, IdleSettings
            idle = IdleMode(model.idle_images(), IdleSettings(after_s=s.idle_after, detector=s.idle_detector))
        elif s.idle_after is not None and name == s.model:
            raise ConfigError("--idle watches the camera: start with --camera and a model that uses it")
        runner = self._runner(name, model, compile)
        own_walk = name == s.model
        upscaler = s.upscaler() if lead else None  # a mix's frame is finished by its lead
        pipeline = FramePipeline(model, runner=runner, smoothing=s.smoothing,
                                 output_size=output_size or s.size,
                                 walk=s.walk if own_walk else None,
                                 walk_params=s.walk_params if own_walk else None, seed=s.seed,
                                 idle=idle, params=self.params if lead else None,
                                 sound_rate=getattr(self, "sink_audio_rate", None),
                                 degrade=parse_degrade(s.degrade), upscaler=upscaler)
        if pipeline.control is not None:
            pipeline.control.on_refusal = self.report  # told from the generation thread
        try:
            pipeline.warmup(between=self._check_open)
        except BaseException:
            pipeline.close()
            raise
        return model, pipeline

    def _runner(self, name: str, model, compile: bool = True,
                trial: bool | None = None, kept=None, threads: int | None = None,
                check_precision: bool = False):
        """The runner of one model's network, as the settings ask. `trial` (default: at start,
        not for a switch): with --threads auto, try the counts on the first live frames (`kept`:
        the compiled runner playing at one of them, see make_runner). `threads`: this count,
        whatever the settings say (the first compile of a staged trial). `check_precision`: see
        `_checked_precision_first`."""
        s = self.settings
        if s.isolate:
            return self._isolated_runner(name, model)
        if threads is not None:
            return make_runner(model, runtime=s.runtime, device=s.device, threads=threads, compile=compile)
        threads = s.threads
        trial = not hasattr(self, "pipeline") if trial is None else trial
        cpu_auto = threads == "auto" and s.device.split(":")[0] == "cpu"
        # a machine that cannot compile plays optimized traced for good: a count costs no compile
        from bridge.runtime import compiler_missing
        traced_only = cpu_auto and s.runtime == "optimized" and compiler_missing("cpu") is not None
        if cpu_auto and not compile:
            # played while its compiled runner builds: no trial, and a core left to that compile
            # (every model of a mix too: they all play at one count)
            threads = max(1, DEFAULT_THREADS - 1)
        elif cpu_auto and s.mix_models:
            # a mix: every model at every core, no trial. The trial times one network against
            # the frame, and a mix's frame holds them all (four pix2pix-pulse, 2 cores: the lead
            # 8.9 ms at one thread, under half the frame, so the trial kept one; a tick of the
            # four took 38 ms there, 32 at two); each count tried was one more compile of each
            # model; and one count for all, as switching it between two calls clears oneDNN's
            # prepared kernels
            threads = DEFAULT_THREADS
        elif cpu_auto and not trial and not traced_only:
            # a switch mid-set: dynamo compiles once per count, and each compile on the loader
            # thread holds back the playing one (measured: two switches repeated 177 frames
            # with a trial, 87 at one count), so the new model gets every core, no trial
            # (traced only, the trial costs nothing: the switch gets one as the start did)
            threads = DEFAULT_THREADS  # the most any trial offers
            log.info("%s %s %d threads, all the cores (the trial of counts runs at a run's start only)", name,
                     "compiles for" if s.runtime in ("optimized", "auto") else "plays at", threads)
        return make_runner(model, runtime=s.runtime, device=s.device, threads=threads, compile=compile,
                           kept=kept, check_precision=check_precision)

    def _isolated_runner(self, name: str, model):
        """The network in a worker process (`--isolate`), with the degradation levels' sizes."""
        from bridge.degrade import levels_for
        from bridge.generators.base import find_bundle
        from bridge.isolate import IsolatedGenerator
        s = self.settings
        levels, _ = levels_for(model, parse_degrade(s.degrade))
        if s.threads == "auto":  # the trial times calls in this process: the worker keeps torch's count
            log.info("--threads auto is chosen in this process: the isolated worker runs torch's "
                     "own count (give --threads N to set it)")
        iso = IsolatedGenerator(find_bundle(name), runtime=s.runtime, device=s.device,
                                sizes=[level.size for level in levels[1:]],
                                mode=getattr(model, "mode", None) if model.modes else None,
                                mix=getattr(model, "mix", None) if model.modes else None,
                                threads=s.threads if isinstance(s.threads, int) else None)
        return iso.runner(model)

    def _open_control(self) -> None:
        s = self.settings
        if s.record:
            from bridge.control.recorder import Recorder
            # A preset morph's glide is recorded too (60 writes a second while it runs), so a
            # replay glides as the set did.
            self.recorder = Recorder(self.params, s.record, info=self._info(), skip_sources=())
            self._opened.append(self.recorder)
        if s.replay:
            from bridge.control.recorder import Recording, Replayer
            recording = Recording.load(s.replay, self.params)
            for note in recording.differences(**self._info()):
                log.warning(note)
            self.replayer = Replayer(self.params, recording)
            self._opened.append(self.replayer)
        if s.midi_in is not None or s.midi_out is not None:
            from bridge.control.midi import MidiControl
            self.midi = MidiControl(self.params, mapping=s.midi_map, in_pattern=s.midi_in,
                                    out_pattern=s.midi_out, api=s.midi_api)
            self.midi.on_program = self.preset_load
            self.midi.start()
            self._opened.append(self.midi)
        if s.osc_port is not None:
            from bridge.control.osc import OscControl, parse_host_port
            reply = parse_host_port(s.osc_reply) if s.osc_reply else None
            self.osc = OscControl(self.params, host=s.osc_host, port=s.osc_port, reply=reply,
                                  allow=s.osc_allow, status=self._status, actions=self,
                                  parts=self.parts)
            self.osc.start()
            self._opened.append(self.osc)
            if self.midi is not None:
                self.midi.on_learned = lambda note: self.osc.send("/vjbridge/midi/learned", note)
        if s.preset:
            self._watch(s.preset)

    def _check_for_model(self, kind: str, name: str, value) -> None:
        control = self.pipeline.control
        if control is None:
            return
        if kind == "param":
            control.check(name, value)
        else:
            control.check_trigger(name, value)

    def _info(self) -> dict:
        s = self.settings
        return {"model": self.model_name, "fps": s.fps, "seed": s.seed, "walk": s.walk}

    # --- what the control surfaces ask for ----------------------------------------------------
    def report(self, message: str) -> None:
        """Tell the performer: the log, the OSC error feedback, and the status line."""
        log.error(message)
        self.messages = (self.messages + [message])[-20:]
        if self.osc is not None:
            self.osc.send("/vjbridge/error", message)

    @staticmethod
    def _checked_name(name: str, address: str = "/vjbridge/model") -> None:
        from bridge.generators.base import find_bundle
        if not MODEL_NAME.match(name):  # a name from the network never points at a folder
            raise ControlError(f"{address} wants a bundle name (see `vjbridge models`), got {name!r}")
        try:
            find_bundle(name)  # an unknown name is refused at once, with the list of known ones
        except ModelLoadError as e:
            raise ControlError(str(e)) from None

    def _capacity(self) -> int:
        """How many models are kept ready besides the one playing."""
        return max(self.settings.keep_warm, len(self.settings.preload))

    def _keep(self, name: str, warm: _Warm) -> None:
        """Keep a built model ready (the most recent last); past the capacity the least recently
        played or cued one is closed."""
        self._warm.pop(name, None)
        self._warm[name] = warm
        while len(self._warm) > self._capacity():
            oldest = next(iter(self._warm))
            log.info("model %s let go (--keep-warm %d)", oldest, self._capacity())
            self._warm.pop(oldest).pipeline.close()

    def _ready(self, name: str, stamp: tuple, compile: bool = True) -> _Warm:
        """`name` built and warmed: the one kept warm (taken out) if its bundle is as it was built
        from (`stamp`), else built now (`compile=False`: uncompiled, see `_compile_playing`)."""
        # a new thread starts at the count the playing one set last: build at torch's own
        set_threads(DEFAULT_THREADS)
        warm = self._warm.pop(name, None)
        if warm is not None and warm.stamp == stamp:
            return warm
        if warm is not None:
            log.info("model %s changed on disk since it was built: loading it again", name)
            warm.pipeline.close()
        return _Warm(*self._build_one(name, self.size, compile=compile), stamp)

    def switch_model(self, name: str) -> None:
        """Switch model: load and warm it on a thread, then swap it in between two frames; one
        kept warm (played before, cued, preloaded) swaps in at the next frame. A model that fails
        to load is reported; the current one keeps playing. The one playing, unchanged on disk,
        is not loaded again. Asked while another loads, it runs after (a later switch replaces it)."""
        self._checked_name(name)
        self._request("switch", name)

    def cue_model(self, name: str) -> None:
        """Build a model now, while the set plays, so that a switch to it later lands at the
        next frame; `/vjbridge/model/cued NAME` goes back when it is ready."""
        self._checked_name(name, "/vjbridge/model/cue")
        if self._capacity() == 0:
            raise ControlError(f"--keep-warm 0 keeps no model ready: /vjbridge/model/cue {name} needs "
                               "--keep-warm 1 or more")
        self._request("cue", name)

    def _request(self, kind: str, name: str) -> None:
        """Run a switch, a cue or the start's compile on the loader thread, one at a time. One asked
        for meanwhile waits its turn: a cue then a switch to it (pressed before the cue was ready)
        switches once it is; of switches waiting, only the last asked for is made."""
        with self._queue_lock:
            if self._closed:
                log.info("%s %s not started: the session is closed", kind, name)
                return
            if self._lock.acquire(blocking=False):
                # Not a daemon: Python ends a daemon thread by unwinding it where it next takes the
                # GIL, and in torch's C++ (a compile, a trace) that aborts the process ("terminate
                # called without an active exception"). Python waits for this one at exit; after
                # `close` it stops at the next piece (`_check_open`).
                self._loader_thread = threading.Thread(target=self._loader, args=((kind, name),),
                                                       name="vjbridge-model-load", daemon=False)
                self._loader_thread.start()
                return
            if (kind, name) in self._queued:
                return
            if kind == "switch":
                self._queued = [r for r in self._queued if r[0] != "switch"]
            if len(self._queued) > MAX_WARM:
                address = "/vjbridge/model" + ("/cue" if kind == "cue" else "")
                raise ControlError(f"{len(self._queued)} model loads waiting already; {address} {name} ignored")
            self._queued.append((kind, name))
            log.info("%s %s after the model loading now", kind, name)

    def _loader(self, request: tuple[str, str] | None) -> None:
        while request is not None:
            kind, name = request
            self._loading = {"switch": "the switch to ", "cue": "the cue of "}.get(kind, "the compile of ") + name
            try:
                self._check_open()
                {"switch": self._switch_now, "cue": self._cue_now, "compile": self._compile_start}[kind](name)
            except _Closing:
                log.info("%s of model %s stopped: the session closed", kind, name)
            except Exception as e:
                self.report(f"model {name} not loaded, {self.model_name} keeps playing: {e}" if kind == "switch"
                            else f"model {name} not cued: {e}" if kind == "cue" else f"model {name} not compiled: {e}")
            with self._queue_lock:
                request = self._queued.pop(0) if self._queued and not self._closed else None
                if request is None:
                    self._queued.clear()
                    self._loading = None
                    self._lock.release()
        if self._closed:
            self._close_late()

    def _close_late(self) -> None:
        """The loader ended after `close`: what it swapped in or kept warm meanwhile (an isolated
        worker process) is closed too. Closing twice does nothing."""
        for pipeline in [self.pipeline, *(warm.pipeline for warm in self._warm.values())]:
            try:
                pipeline.close()
            except Exception as e:
                log.warning("closing %s: %s", pipeline, e)
        self._warm = {}

    def _check_open(self) -> None:
        """Between the pieces of a build or a compile on the loader thread: stop there once the
        session is closed."""
        if self._closed:
            raise _Closing()

    def still_loading(self) -> str | None:
        """What the loader thread is still doing (a switch, a cue, a compile), if it is: after
        `close` it ends at its next piece, which Python waits for at exit (a compile can take
        seconds to get there). None when it is done."""
        thread = self._loader_thread
        return self._loading if thread is not None and thread.is_alive() else None

    def _switch_now(self, name: str) -> None:
        stamp = bundle_stamp(name)
        if name == self.model_name and stamp == self._stamp:
            log.info("model %s is playing already", name)
        else:
            self._switch(name, stamp)
        if self.osc is not None:
            self.osc.send("/vjbridge/model", name)

    def _cue_now(self, name: str) -> None:
        stamp = bundle_stamp(name)
        if not (name == self.model_name and stamp == self._stamp):
            with playing_thread_first():
                self._keep(name, self._ready(name, stamp))
            self._check_open()  # closed while it was built: `_close_late` closes what was kept
        log.info("model %s cued", name)
        if self.osc is not None:
            self.osc.send("/vjbridge/model/cued", name)

    def _plays_while_compiling(self) -> bool:
        """Whether models play traced while their compiled runner builds: not where this
        machine cannot compile (they play traced for good, built so at once)."""
        s = self.settings
        if not (PLAY_WHILE_COMPILING and s.runtime == "optimized" and not s.isolate):
            return False
        from bridge.runtime import compiler_missing
        return compiler_missing(s.device.split(":")[0]) is None

    def _switch(self, name: str, stamp: tuple) -> None:
        """On the loader thread, with the lock: build (or take warm) and swap in; one built
        uncompiled (see PLAY_WHILE_COMPILING) then gets its compiled runner while it plays."""
        with playing_thread_first():
            model, pipeline = self._build(name, output_size=self.size,
                                          ready=self._ready(name, stamp, compile=not self._plays_while_compiling()))
        if self._closed:  # closed while it was built: it never plays
            pipeline.close()
            raise _Closing()
        old = self.pipeline
        self._hand_over(old, pipeline)
        self.engine.swap_pipeline(pipeline)
        old_warm = _Warm(self.model, _lead(old), self._stamp)
        old_name = self.model_name
        self.model, self.pipeline, self.model_name, self._stamp = model, pipeline, name, stamp
        self._let_go(old_name, old_warm)
        self._compile_playing(name, model, _lead(pipeline))

    def _compile_start(self, name: str) -> None:
        """The model the run started with, compiled as it plays (with its thread trial)."""
        if name == self.model_name:
            self._compile_playing(name, self.model, _lead(self.pipeline), trial=True)

    def _compile_playing(self, name: str, model, pipeline, trial: bool = False) -> None:
        """The model just switched in, or the run started with, plays uncompiled (traced: 1.1-3x
        slower than compiled on the bundled ones, inside a frame at 30 fps on 2 cores, at one
        thread fewer with --threads auto); here, on the loader thread, its compiled runner
        builds and warms at every level (with `trial`, --threads auto's counts), then takes over
        between two frames; without a trial level by level, a mix's other models with it (see
        `_compile_by_level`). Should that fail, it plays on uncompiled. One built compiled (kept
        warm, or the runtime compiles nothing) has nothing to do here."""
        if self._closed or getattr(pipeline.runner, "compile", True):
            return
        self._compiling = name
        started = time.perf_counter()
        s = self.settings
        # --threads auto's trial at start, staged: compiled first for the most threads the trial
        # tries that leave a core free (the count the traced one plays at, 1 on 2 cores), which
        # plays as soon as it is ready (a heavy model plays traced far under the frame rate),
        # then the trial's other counts compile on the free core; the first is compiled level by
        # level, the level playing first (the degraded levels at every core, as the trial plays them)
        from bridge.runtime import thread_choices
        fewer = [count for count in thread_choices() if count < DEFAULT_THREADS]
        staged = (STAGED_TRIAL and trial and s.threads == "auto" and s.runtime == "optimized"
                  and s.device.split(":")[0] == "cpu" and bool(fewer) and not s.mix_models)
        try:
            with playing_thread_first(), full_collections_held():
                set_threads(DEFAULT_THREADS)  # as `_ready`: build at torch's own count
                self._checked_precision_first(name, model, pipeline)
                settle_compiler(s.device)
                self._check_open()
                if staged:
                    runner = self._runner(name, model, threads=max(fewer))
                    self._compile_by_level([(name, pipeline, runner)], level_threads=DEFAULT_THREADS)
                else:
                    runner = self._runner(name, model, trial=trial)
                    self._compile_by_level([(name, pipeline, runner)] + self._others_to_compile())
                log.info("model %s compiled in %.1f s while it played%s", name, time.perf_counter() - started,
                         " (and the mix's others)" if s.mix_models else "")
                if staged:
                    self._compiling = None
                    self._trial_around(name, model, pipeline, runner, started)
            # what the set measured beside these compiles, it measures again without them
            self.pipeline.costs_changed()
        except _Closing:
            raise
        except Exception as e:  # compiling is an optimisation: the traced one plays on
            self._report_uncompiled(name, e)
        finally:
            self._compiling = None

    def _report_uncompiled(self, model: str, e: Exception) -> None:
        """A compile made as a model plays failed: compiling is an optimisation, it plays on."""
        self.report(f"model {model} not compiled, it plays on uncompiled (slower): {type(e).__name__}: {e}")

    def _others_to_compile(self) -> list:
        """A mix's other models built uncompiled (at the start, with the lead), each with the
        compiled runner to make for it (all the cores, see `_runner`): [(name, pipeline, runner)].
        One whose runner cannot be made plays on uncompiled, reported."""
        parts = []
        for name, pipeline in zip(self.settings.mix_models, getattr(self.pipeline, "pipelines", [])[1:]):
            if getattr(pipeline.runner, "compile", True):
                continue  # compiled already (a switch keeps the others), or nothing to compile
            try:
                parts.append((name, pipeline, self._runner(name, pipeline.model)))
            except Exception as e:  # as the lead's compile: an optimisation
                self._report_uncompiled(f"{name} (mixed)", e)
        return parts

    def _compile_by_level(self, parts: list, level_threads: int | None = None) -> None:
        """Each of `parts` ([(name, pipeline, compiled runner)], the lead first: a model, or a
        mix's models, playing uncompiled) compiled one level at a time, each taking over from
        the next frame as it is ready: first the level the set plays at now, then those above
        it, nearest first, then those below; at each level the lead first, then the others (a
        model with fewer levels, a latent family's one, compiled where the mix's level has it play).
        A model played traced is slower, so degradation has often stepped down before its
        compile starts: four pix2pix-pulse mixed on 2 cores, traced at 1/4, 75-90 ms a tick;
        compiled there first, 35-40 ms beside the compiles still running (16 once they are
        done), from 50 s after the start: 1,108-1,187 frames repeated until all was compiled
        at 122-126 s, against 2,022-2,068 by 132-136 s model by model, full size first
        (benchmarks/README.md). Should another model's compile fail, it plays on as it was
        (the lead's is raised). `level_threads`: the degraded levels' count (see use_runner)."""
        playing = self.pipeline.level
        deepest = max(len(pipeline.levels) for _, pipeline, _ in parts) - 1
        order = [playing] + list(range(playing - 1, -1, -1)) + list(range(playing + 1, deepest + 1))
        if PLAYING_LEVEL_FIRST:
            steps = [(index, k) for index in order for k in range(len(parts))]
        else:  # model by model, full size first
            steps = [(index, k) for k in range(len(parts)) for index in range(deepest + 1)]
        failed: set[int] = set()
        done: set[tuple[int, int]] = set()
        for index, k in steps:
            name, pipeline, runner = parts[k]
            level = min(index, len(pipeline.levels) - 1)  # one with fewer levels plays its last below them
            if k in failed or (k, level) in done:
                continue
            done.add((k, level))
            try:
                pipeline.use_runner(runner, between=self._check_open, levels=[level], level_threads=level_threads)
            except _Closing:
                raise
            except Exception as e:
                if k == 0:
                    raise
                failed.add(k)
                self._report_uncompiled(f"{name} (mixed)", e)
            finally:
                collected_between_compiles()

    def _checked_precision_first(self, name: str, model, pipeline) -> None:
        """A family whose low precision is "checked" (a flow) plays traced in fp32 until its check
        has run, which its compile would do. So the check runs first, here (its probe decoded in
        both precisions: 0.1-2.5 s for the flows measured), and where the model keeps bf16 a
        traced runner in it plays on until the compiled one is ready, which reuses the verdict.
        Measured, one thread, a full-32 flow: 55 ms a frame traced in fp32, 28 in bf16."""
        info = getattr(pipeline.runner, "info", None)
        if model.low_precision != "checked" or info is None or info.autocast is not None:
            return  # no check to make, or built in its low precision already
        self._check_open()
        started = time.perf_counter()
        try:
            runner = self._runner(name, model, compile=False, check_precision=True)
            if not runner.info.autocast:
                return  # fp32 it stays: its compile says why
            pipeline.use_runner(runner, between=self._check_open)
        except _Closing:
            raise
        except Exception as e:  # an optimisation: the fp32 one plays on, and is compiled
            log.info("model %s: not played traced in low precision first (%s: %s)", name, type(e).__name__, e)
            return
        log.info("model %s plays traced in %s while it compiles (checked and ready in %.1f s)", name,
                 runner.info.autocast, time.perf_counter() - started)

    def _trial_around(self, name: str, model, pipeline, playing, started: float) -> None:
        """--threads auto's trial at a run's start, built while `playing` (compiled for a core
        fewer than all) plays: the other counts compile, then the trial takes the next frames."""
        try:
            pipeline.use_lead_runner(self._runner(name, model, trial=True, kept=playing), playing,
                                     between=self._check_open)
        except _Closing:
            raise
        except Exception as e:  # the trial is an optimisation: the compiled one plays on
            self.report(f"model {name}: thread trial not made, it plays on at {playing.threads} threads: "
                        f"{type(e).__name__}: {e}")
            return
        finally:
            collected_between_compiles()
        log.info("model %s: its thread trial starts, %.1f s after its compile did", name, time.perf_counter() - started)

    @staticmethod
    def _hand_over(old, new) -> None:
        """The model switched in listens on from the playing one's analysis (its 10 s history,
        levels, tempo), where its own would start from silence, if both analyse alike."""
        lead = _lead(new)
        if lead.analysis_config == _lead(old).analysis_config:
            analyzer = _lead(old).analyzer  # fed by the playing thread until the swap, then by the new one
        else:
            from bridge.analysis import StreamingAnalyzer
            analyzer = StreamingAnalyzer(lead.analysis_config)
        for part in getattr(new, "pipelines", [new]):
            part.listen_with(analyzer)

    def _let_go(self, name: str, warm: _Warm) -> None:
        """Keep a swapped-out model warm (or close it, its worker process too, if isolated) once
        the engine uses the new one; not before, or the last frames of the old model would fail.
        In a mix only the replaced lead goes: the others play on in the new mix."""
        for _ in range(200):
            if not self.engine.swapping:
                break
            threading.Event().wait(0.01)
        self._keep(name, warm)  # with --keep-warm 0, let go at once

    def preset_load(self, name: str) -> list[str]:
        """Recall a whole state: parameters (all or nothing), the model (switched off-thread), and
        a note for each session setting that differs (devices are not reopened mid-set)."""
        from bridge.control.presets import check_params, read_preset
        data = read_preset(name)
        checked, notes = check_params(name, data, self.params)
        wanted = data.get("preset", {}).get("model")
        if wanted and wanted != self.model_name:
            self.switch_model(wanted)
        for key, value in checked.items():
            self.params.set(key, value, source="preset")
        notes += self._session_differences(name, data.get("session", {}))
        self._watch(name)
        return notes

    def _session_differences(self, name: str, session: dict) -> list[str]:
        s, notes = self.settings, []
        now = {"audio_in": s.audio_in, "camera": s.camera, "outs": s.outs, "midi_map": s.midi_map,
               "fps": s.fps}
        for key, value in session.items():
            if key in now and value != now[key] and not (value == "" and now[key] is None):
                notes.append(f"preset {name}: {key} {value!r} differs from this run's "
                             f"{now[key]!r}; it applies when you start with --preset {name}")
        return notes

    def preset_save(self, name: str) -> None:
        from bridge.control.presets import save_preset
        s = self.settings
        save_preset(name, self.params, {"model": self.model_name},
                    {"audio_in": s.audio_in, "camera": s.camera or "", "outs": s.outs,
                     "midi_map": s.midi_map or "", "fps": float(s.fps)})

    def heard_tempo(self) -> float:
        return self.pipeline.analyzer.tempo_bpm

    def midi_learn(self, name: str) -> None:
        if self.midi is None:
            raise ControlError("MIDI learn needs MIDI: start with --midi-in PATTERN")
        self.midi.arm(name)

    def midi_save(self, name: str) -> None:
        if self.midi is None:
            raise ControlError("saving a MIDI mapping needs MIDI: start with --midi-in PATTERN")
        self.midi.save_mapping(name)

    def _watch(self, name: str) -> None:
        """Re-apply the recalled preset whenever its file is saved again (hot reload)."""
        from bridge.control.presets import PresetWatcher, apply_preset as apply
        if self._watcher is not None:
            if self._watcher.name == name:
                return
            self._watcher.close()
            self._opened.remove(self._watcher)
        self._watcher = PresetWatcher(name, on_change=lambda n: apply(n, self.params), on_error=self.report)
        self._opened.append(self._watcher)

    # --- running --------------------------------------------------------------------------------
    def _status(self) -> dict:
        s = self.engine.stats.summary()
        return {"fps": s["fps"], "latency_ms": s["latency_ms_p50"], "model": self.model_name,
                "degrade": s["degrade"], "parts": self.parts()}

    def parts(self) -> dict:
        """The status of every source and sink, by a short name: audio, camera, out/<kind>
        (out/<kind>2, ... when a kind is used twice). Sent over OSC as /vjbridge/status/<name>."""
        parts = {}
        if self.audio is not None:
            parts["audio"] = self.audio.status
        if self.video is not None:
            parts["camera"] = self.video.status
        iso = getattr(self.pipeline.runner, "iso", None)
        if iso is not None:  # --isolate: the worker process is a part that can be lost too
            parts["generator"] = iso.status
        for sink in self.sinks:
            kind = getattr(getattr(sink, "inner", sink), "kind", "sink")
            name, n = f"out/{kind}", 2
            while name in parts:
                name, n = f"out/{kind}{n}", n + 1
            parts[name] = sink.status
        return parts

    def _open(self, source) -> None:
        source.open()  # the factories return sources unopened
        self._opened.append(source)

    def describe(self) -> list[str]:
        """What a terminal user needs at start: where to send control, where feedback goes."""
        s, lines = self.settings, []
        if self.osc is not None:
            lines.append(f"OSC in on {self.osc.host}:{self.osc.port} (/vjbridge/param/<name>, "
                         f"/vjbridge/trigger/<name>), replies to {s.osc_reply or 'nobody (--osc-reply)'}")
            if self.osc.exposed:  # anyone on the network could drive the show
                allowed = ", ".join(sorted(self.osc.allow)) or "ANY sender: limit it with --osc-allow IP"
                lines.append(f"WARNING: OSC is open to the network on {self.osc.host}; accepting {allowed}")
        if self.midi is not None:
            lines.append(f"MIDI {self.midi.status}")
        if self.recorder is not None:
            lines.append(f"recording control events to {s.record}")
        if self.replayer is not None:
            lines.append(f"replaying control events from {s.replay}")
        return lines

    def _runner_status(self) -> str:
        lead = _lead(self.pipeline)  # a mix: its lead model's
        status = getattr(_playing(lead), "status", None)  # none for an isolated worker
        if status and self._compiling == self.model_name:
            status += ", compiling"  # played traced (or eager) until then
        return f" ({status})" if status else ""

    def status_line(self, stats) -> str:
        s = stats.summary()
        def ms(value) -> str:
            return "--" if value is None else f"{value:.0f}"
        parts = [f"fps {s['fps']:5.1f}", f"latency p50 {ms(s['latency_ms_p50'])} ms p95 {ms(s['latency_ms_p95'])} ms",
                 f"model {self.model_name} {ms(s['generate_ms_p50'])} ms" + self._runner_status(),
                 f"repeated {s['repeated']} stalled {s['stalled']}"]
        ready = list(self._warm)  # one C call: the loader thread may change it meanwhile
        if ready:
            parts.insert(3, "ready " + ", ".join(ready))  # a switch to these lands at the next frame
        if s.get("degrade", "off") != "off":
            parts.append(f"degrade {s['degrade']}")
        parts += [f"{name} {state}" for name, state in self.parts().items()]
        control = self.pipeline.control
        if control is not None and control.has_walk:
            c = control.status()
            parts.append(f"walk {c['mode']} anchor {c['anchor']}" +
                         (f" -> {c['pending']}" if c["pending"] is not None else ""))
        if self.midi is not None:
            parts.append(f"midi {self.midi.short_status}")
        if self.messages:
            parts.append(f"last error: {self.messages[-1][:60]}")
        return " | ".join(parts)

    @property
    def settled(self) -> bool:
        """Whether the model plays as it will go on playing: the compile made as it plays and
        --threads auto's trial are over, no switch or cue is loading, and a frame was made. The
        trial plays at full size only: a set held at a lower level is settled without it.
        Figures taken before are the start's: the model uncompiled, a compile sharing its cores."""
        if self._compile_at_start or self._lock.locked() or self.engine.stats.generated == 0:
            return False
        return getattr(_playing(_lead(self.pipeline)), "chosen", True) is not None  # an AutoRunner: its trial over

    def run(self, duration: float | None = None, status_stream=sys.stderr, settled_window: float | None = None,
            settle_limit: float = SETTLE_LIMIT_S) -> dict:
        """Play until `stop`, Ctrl-C or `duration` seconds; returns the engine's summary. With
        `settled_window`, play until the model has `settled` (at most `settle_limit` s), then that
        many seconds more, and return those seconds' figures alone (`SettledWindow.summary`)."""
        window = None if settled_window is None else SettledWindow(self, settled_window, settle_limit)

        def report(stats):
            if status_stream is not None:
                status_stream.write("\r" + self.status_line(stats) + "\033[K")
                status_stream.flush()
            if window is not None:  # after the line: the second it clears the times showed "fps 0.0"
                window(stats)
        from bridge import clock
        t0 = clock.now()  # recording and replay share the engine's start as their zero
        if self.recorder is not None:
            self.recorder.start(t0)
        if self.replayer is not None:
            self.replayer.start(t0)
        # Everything alive now (torch, the model, the program's start-up) moves out of the garbage
        # collector's sight: a full collection walks every tracked object holding the GIL, and
        # with a big heap that stalled the output past a frame while a switched model loaded.
        gc.collect()
        gc.freeze()
        if self._compile_at_start:  # once: the model started with plays uncompiled until then
            self._compile_at_start = False
            self._request("compile", self.model_name)
        try:
            with stop_on_signals(self.engine.request_stop):
                summary = self.engine.run(duration=duration, on_second=report)
            return summary if window is None else window.summary(self.engine.stats)
        finally:
            gc.unfreeze()  # what this run leaves behind is collectable again
            if status_stream is not None:
                status_stream.write("\n")

    def close(self) -> None:
        self._closed = True
        if self._morph is not None:
            self._morph.cancel()
        pipeline = getattr(self, "pipeline", None)
        for warm in list(getattr(self, "_warm", {}).values()):  # the loader may keep one meanwhile
            self._opened.append(warm.pipeline)
        self._warm = {}
        if pipeline is not None:
            self._opened.append(pipeline)  # closed first: an isolated worker must not outlive us
        with _SlowCloseReport():
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
