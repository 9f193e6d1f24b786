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
MORPH_PARAMS: tuple[Param, ...] = ()
MORPH_TRIGGERS: tuple[Trigger, ...] = (
    Trigger("reset", doc="return the latent walk to its start"),
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
        with getattr(self, "_lock", threading.Lock()):
            self.ticks = 0
            self.last_tick: float | None = None
            self.bpm = 0.0

    def tick(self, t: float | None = None) -> None:
        t = self._now() if t is None else t
        with self._lock:
            if self.last_tick is not None and t > self.last_tick:
                bpm = 60.0 / ((t - self.last_tick) * self.PPQ)
                # smooth the jitter of single ticks; a new tempo settles within about a beat
                self.bpm = bpm if self.bpm <= 0 else self.bpm + (bpm - self.bpm) * 0.1
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
        if trigger.toggles:
            self.set(trigger.toggles, not self.get(trigger.toggles), source=source)
        else:
            with self._lock:
                self._queued.append((name, arg))
        self._tell(ControlEvent("trigger", name, arg, source))

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
