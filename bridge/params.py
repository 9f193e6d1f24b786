"""The live parameter store: every controllable value declared once, written through one API.

A `Param` says name, kind, range, default, smoothing, unit and doc; OSC addresses
(`/vjbridge/param/<name>`) come from it, and so will MIDI targets, presets and TouchDesigner's
parameter pages. `ParamStore.set(name, value)` is the only writer: it checks the kind, clamps a
number into its range (and says so), refuses the rest with a one-line reason, and never changes
anything on a refusal. Readers (the engine) call `get`, or `smoothed(name, dt)` for values that
glide instead of jumping. Listeners hear every accepted change (OSC feedback, recording).

Triggers are the one-shot commands (snap to anchor N, next anchor, reset, toggle freeze): declared
the same way (`Trigger`), fired with `ParamStore.trigger(name, arg)`. Toggles are applied at once
as parameter writes; the rest queue until the engine's next frame takes them (`take_triggers`).

`ParamStore.clock` is the external beat clock (MIDI clock) when one runs: `BeatClock`.
"""
from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable

from bridge.errors import ControlError

KINDS = ("float", "int", "bool", "choice")


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # float, int, bool, choice
    default: float | bool | str
    low: float = 0.0
    high: float = 1.0
    choices: tuple[str, ...] = ()
    smoothing_s: float = 0.0  # half-life of the glide toward a new value (0: at once)
    unit: str = ""
    doc: str = ""

    @property
    def address(self) -> str:
        return f"/vjbridge/param/{self.name}"

    def check(self, value) -> tuple[object, str]:
        """(accepted value, note) or ControlError. A number outside the range is clamped, and the
        note says so; anything of the wrong kind is refused."""
        if self.kind == "bool":
            if isinstance(value, bool):
                return value, ""
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                return value >= 0.5, ""
            raise ControlError(f"{self.address} wants true/false or a number, got {value!r}")
        if self.kind == "choice":
            if isinstance(value, str) and value in self.choices:
                return value, ""
            raise ControlError(f"{self.address} wants one of {', '.join(self.choices)}, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ControlError(f"{self.address} wants a number in [{self.low:g}, {self.high:g}], got {value!r}")
        if self.kind == "int":  # a knob sends fractions: the nearest whole number
            clamped = int(min(max(round(value), self.low), self.high))
            note = "" if clamped == value else f"{self.address}: {value:g} taken as {clamped}"
            return clamped, note
        clamped = min(max(float(value), self.low), self.high)
        note = "" if clamped == value else f"{self.address}: {value:g} clamped to {clamped:g}"
        return clamped, note


# The one declaration: picture controls here, latent controls (MORPH_PARAMS) below.
CORE_PARAMS: tuple[Param, ...] = (
    Param("smoothing", "float", 0.0, 0.0, 0.95, smoothing_s=0.05,
          doc="temporal smoothing of the picture: the share of the previous frame kept"),
    Param("brightness", "float", 1.0, 0.0, 2.0, smoothing_s=0.05, doc="output gain of the picture"),
    Param("freeze", "bool", False, doc="hold the current picture (the output keeps its rate)"),
    Param("blackout", "bool", False, doc="send black frames (the model keeps running)"),
) + tuple(
    Param(f"mix_{i}", "float", 1.0, 0.0, 1.0, smoothing_s=0.05,
          doc=f"with several --model: the weight of model {i} in the mix") for i in range(1, 5)
) + (
    Param("mix_mode", "choice", "mix", choices=("mix", "add", "screen", "lighten"),
          doc="with several --model: how they blend (mix: weighted average; add, screen, lighten: as "
              "layers of light)"),
)


@dataclass(frozen=True)
class Trigger:
    """A one-shot command. `arg`: "none" (fired bare) or "int" (a whole number in [low, high])."""
    name: str
    arg: str = "none"
    low: int = 0
    high: int = 0
    toggles: str = ""  # the bool parameter this trigger flips, applied at once (freeze, blackout)
    doc: str = ""

    @property
    def address(self) -> str:
        return f"/vjbridge/trigger/{self.name}"

    def check(self, value) -> int | None:
        if self.arg == "none":
            return None  # a bare trigger ignores whatever came with it (a button sends 1 or 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value != int(value) or not self.low <= value <= self.high:
            raise ControlError(f"{self.address} wants a whole number in [{self.low}, {self.high}], "
                               f"got {value!r}")
        return int(value)


CORE_TRIGGERS: tuple[Trigger, ...] = (
    Trigger("freeze", toggles="freeze", doc="toggle freeze"),
    Trigger("blackout", toggles="blackout", doc="toggle blackout"),
)


# The latent controls (bridge.morph reads them): which walk, knobs along principal directions,
# the anchor slerp knob, beat quantisation, and the triggers that jump between anchors.
MORPH_PARAMS: tuple[Param, ...] = (
    Param("walk", "choice", "auto",
          choices=("auto", "knob", "weighted", "magellan", "explore", "linger"),
          doc="how the latent moves: auto (the model's walk, or --walk), knob (morph between "
              "anchor_a and anchor_b), or a walk the model has (realnvp: weighted, magellan, "
              "explore; cvae: linger); another is refused"),
    Param("morph", "float", 0.0, 0.0, 1.0, smoothing_s=0.15,
          doc="walk knob: 0 shows anchor_a, 1 anchor_b, slerp between"),
    Param("anchor_a", "int", 0, 0, 127, doc="walk knob: the anchor at morph 0 (0 = the first)"),
    Param("anchor_b", "int", 1, 0, 127, doc="walk knob: the anchor at morph 1"),
    *(Param(f"direction_{i}", "float", 0.0, -1.0, 1.0, smoothing_s=0.25,
            doc=f"move along principal direction {i} of the training latents (1: 2 std)")
      for i in range(1, 9)),
    Param("quantise", "choice", "beat", choices=("off", "beat", "bar"),
          doc="anchor jumps land on the next beat or bar (MIDI clock, else the beat tracker; at "
              "once while neither has a tempo)"),
    Param("jump_beats", "float", 1.0, 0.0, 16.0, unit="beats",
          doc="ease of a jump or walk change, in beats (0: a cut)"),
    # The walks' own settings, live (bridge/morph/anchors.py and walks.py say what each does).
    Param("weighted_temperature", "float", 3.0, 0.1, 30.0, unit="dB",
          doc="weighted walk: low picks one anchor at a time, high blends them evenly"),
    Param("weighted_halflife_s", "float", 0.3, 0.0, 5.0, unit="s",
          doc="weighted walk: half-life of the weights at full level"),
    Param("weighted_baseline_halflife_s", "float", 4.0, 0.5, 60.0, unit="s",
          doc="weighted walk: how fast each section's usual loudness follows the music"),
    Param("weighted_surge", "float", 8.0, 0.0, 32.0, doc="weighted walk: extra speed on a hit"),
    Param("magellan_seconds_per_anchor", "float", 4.0, 0.25, 60.0, unit="s",
          doc="magellan walk: seconds from one anchor to the next at full level"),
    Param("magellan_idle_drift", "float", 0.0, 0.0, 1.0,
          doc="magellan walk: share of the full speed kept in silence"),
    Param("magellan_surge", "float", 3.0, 0.0, 32.0, doc="magellan walk: extra speed on a hit"),
    Param("explore_amount", "float", 0.6, 0.0, 1.0,
          doc="explore walk: how far a full hit morphs toward the target"),
    Param("explore_attack_s", "float", 0.01, 0.0, 1.0, unit="s",
          doc="explore walk: half-life of the morph's rise"),
    Param("explore_release_s", "float", 0.15, 0.0, 4.0, unit="s",
          doc="explore walk: half-life of the morph's fall back to the base"),
    Param("explore_level_share", "float", 0.25, 0.0, 1.0,
          doc="explore walk: how much plain loudness (besides kicks) morphs"),
    Param("explore_min_gap_s", "float", 0.2, 0.0, 8.0, unit="s",
          doc="explore walk: at least this long between two new targets"),
    Param("explore_base_every_bars", "int", 8, 0, 64, unit="bars",
          doc="explore walk: move the base every this many bars (0: never by time)"),
    Param("explore_strong_onset", "float", 4.0, 0.0, 16.0,
          doc="explore walk: an onset this many times the running mean moves the base (0: never)"),
    Param("explore_glide_s", "float", 1.0, 0.0, 16.0, unit="s",
          doc="explore walk: seconds the base takes to glide to its new anchor"),
    Param("linger_linger_s", "float", 4.0, 0.25, 60.0, unit="s",
          doc="linger walk: mean time at a target, at full level"),
    Param("linger_move_s", "float", 2.0, 0.1, 30.0, unit="s",
          doc="linger walk: duration of a move in quiet music"),
    Param("linger_rho", "float", 0.3, 0.0, 0.99,
          doc="linger walk: share of the jitter kept after one second"),
    Param("linger_sigma", "float", 0.15, 0.0, 1.0,
          doc="linger walk: jitter's spread at full level, in training-latent stds"),
    Param("linger_calm", "float", 0.3, 0.0, 1.0,
          doc="linger walk: share of jitter and linger clock left in silence"),
    Param("linger_spread", "float", 1.0, 0.0, 3.0,
          doc="linger walk: how far targets are drawn, in training-latent stds"),
    Param("linger_loud_speedup", "float", 2.0, 0.0, 8.0,
          doc="linger walk: moves run (1 + this * level) times faster"),
    Param("linger_onset_surge", "float", 4.0, 0.0, 16.0,
          doc="linger walk: extra move speed on an onset"),
    Param("linger_onset_push", "float", 0.5, 0.0, 2.0,
          doc="linger walk: jolt of a full onset, in latent stds"),
    Param("linger_trigger", "float", 0.5, 0.0, 1.0,
          doc="linger walk: onset or kick (0..1) that ends a linger early"),
    Param("linger_min_linger_s", "float", 1.0, 0.0, 16.0, unit="s",
          doc="linger walk: no early end before this long at a target"),
    Param("linger_path", "choice", "line", choices=("line", "slerp"),
          doc="linger walk: straight moves (line) or moves that keep the norm (slerp)"),
)
MORPH_TRIGGERS: tuple[Trigger, ...] = (
    Trigger("reset", doc="return the latent walk to its start"),
    Trigger("anchor", arg="int", low=0, high=127,
            doc="jump to anchor N (0 = the first) on the next beat or bar (quantise)"),
    Trigger("next_anchor", doc="jump to the next anchor (after the last, the first)"),
    Trigger("previous_anchor", doc="jump to the previous anchor"),
)

PARAMS: tuple[Param, ...] = CORE_PARAMS + MORPH_PARAMS
TRIGGERS: tuple[Trigger, ...] = CORE_TRIGGERS + MORPH_TRIGGERS


@dataclass(frozen=True)
class ControlEvent:
    """One accepted control event, as the recorder stores it."""
    kind: str  # "param" or "trigger"
    name: str
    value: object
    source: str  # who sent it: osc, midi, preset, cli, replay, ...


class BeatClock:
    """An external tempo (MIDI clock: 24 ticks per quarter note). `tick()` on every clock message;
    `position()` is (bpm, beats since start) while ticks keep coming, None once they stop."""

    PPQ = 24
    STALE_S = 0.5  # no tick for this long: the clock is gone (fall back to the beat tracker)

    def __init__(self, now: Callable[[], float] | None = None):
        from bridge import clock
        self._now = now or clock.now
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.ticks = 0
            self.last_tick: float | None = None
            self.bpm = 0.0
            self._times: deque = deque(maxlen=self.PPQ + 1)  # the last beat's tick times

    def tick(self, t: float | None = None) -> None:
        t = self._now() if t is None else t
        with self._lock:
            # The tempo from the span of up to a beat of ticks, not from single gaps: two ticks
            # that arrive in one driver cycle (a few µs apart) would read thousands of bpm.
            self._times.append(t)
            span = self._times[-1] - self._times[0]
            if len(self._times) >= 7 and span > 0:
                self.bpm = 60.0 * (len(self._times) - 1) / (span * self.PPQ)
            self.last_tick = t
            self.ticks += 1

    def position(self, t: float | None = None) -> tuple[float, float] | None:
        t = self._now() if t is None else t
        with self._lock:
            if self.last_tick is None or self.bpm <= 0 or t - self.last_tick > self.STALE_S:
                return None
            return self.bpm, self.ticks / self.PPQ + (t - self.last_tick) * self.bpm / 60.0


class ParamStore:
    def __init__(self, params: tuple[Param, ...] | None = None,
                 triggers: tuple[Trigger, ...] | None = None):
        params = PARAMS if params is None else params
        triggers = TRIGGERS if triggers is None else triggers
        self.params = {p.name: p for p in params}
        self.triggers = {t.name: t for t in triggers}
        self._values = {p.name: p.default for p in params}
        self._glide = {p.name: p.default for p in params if p.kind == "float"}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str, object], None]] = []
        self._event_listeners: list[Callable[[ControlEvent], None]] = []
        self._queued: list[tuple[str, int | None]] = []
        self._checks: list[Callable[[str, str, object], None]] = []
        self.clock = BeatClock()

    def declared(self, name: str) -> Param:
        try:
            return self.params[name]
        except KeyError:
            raise ControlError(f"no parameter '{name}'; known: {', '.join(self.params)}") from None

    def set(self, name: str, value, source: str = "api") -> str:
        """Write one value; returns a note ("" or what was clamped). ControlError on a refusal,
        with the store unchanged."""
        param = self.declared(name)
        accepted, note = param.check(value)
        self._run_checks("param", name, accepted)
        with self._lock:
            changed = self._values[name] != accepted
            self._values[name] = accepted
        if changed:
            self._tell(ControlEvent("param", name, accepted, source))
        return note

    def trigger(self, name: str, value=None, source: str = "api") -> None:
        """Fire a declared trigger. ControlError (nothing done) on an unknown one or a bad arg."""
        try:
            trigger = self.triggers[name]
        except KeyError:
            raise ControlError(f"no trigger '{name}'; known: {', '.join(self.triggers)}") from None
        arg = trigger.check(value)
        self._run_checks("trigger", name, arg)
        if trigger.toggles:
            self.set(trigger.toggles, not self.get(trigger.toggles), source=source)
        else:
            with self._lock:
                self._queued.append((name, arg))
        self._tell(ControlEvent("trigger", name, arg, source))

    def add_check(self, check: Callable[[str, str, object], None]) -> None:
        """`check(kind, name, value)` runs before a value or trigger is accepted and raises
        ControlError to refuse it (the model in use knows which walks and anchors it has)."""
        self._checks.append(check)

    def _run_checks(self, kind: str, name: str, value) -> None:
        for check in list(self._checks):
            check(kind, name, value)

    def take_triggers(self) -> list[tuple[str, int | None]]:
        """The queued triggers, oldest first, and an empty queue (the engine, once per frame)."""
        with self._lock:
            taken, self._queued = self._queued, []
        return taken

    def _tell(self, event: ControlEvent) -> None:
        listeners = list(self._listeners) if event.kind == "param" else []
        for listener in listeners:
            try:
                listener(event.name, event.value)
            except Exception:  # a broken listener must not undo or block a write
                pass
        for listener in list(self._event_listeners):
            try:
                listener(event)
            except Exception:
                pass

    def get(self, name: str):
        with self._lock:
            return self._values[self.declared(name).name]

    def smoothed(self, name: str, dt: float) -> float:
        """The value gliding toward its target with the parameter's half-life (float params)."""
        param = self.declared(name)
        target = float(self.get(name))
        if param.smoothing_s <= 0 or dt <= 0:
            self._glide[name] = target
            return target
        current = self._glide[name]
        current = target + (current - target) * 0.5 ** (dt / param.smoothing_s)
        self._glide[name] = current
        return current

    def values(self) -> dict:
        with self._lock:
            return dict(self._values)

    def listen(self, callback: Callable[[str, object], None]) -> None:
        """Hear every accepted parameter change as (name, value)."""
        self._listeners.append(callback)

    def watch(self, callback: Callable[[ControlEvent], None]) -> None:
        """Hear every accepted event, parameters and triggers, with its source (the recorder)."""
        self._event_listeners.append(callback)

    def unlisten(self, callback) -> None:
        """Stop hearing: `callback` (given to `listen` or `watch`) is called no more. A closed
        control (OSC, MIDI) must not hear a store that outlives it."""
        for listeners in (self._listeners, self._event_listeners):
            while callback in listeners:
                listeners.remove(callback)
