"""The live parameter store: every controllable value declared once, written through one API.

A `Param` says name, kind, range, default, smoothing, unit and doc; OSC addresses
(`/vjbridge/param/<name>`) come from it, and so will MIDI targets, presets and TouchDesigner's
parameter pages. `ParamStore.set(name, value)` is the only writer: it checks the kind, clamps a
number into its range (and says so), refuses the rest with a one-line reason, and never changes
anything on a refusal. Readers (the engine) call `get`, or `smoothed(name, dt)` for values that
glide instead of jumping. Listeners hear every accepted change (OSC feedback, recording).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable

from bridge.errors import ControlError

KINDS = ("float", "bool", "choice")


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # float, bool, choice
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
        clamped = min(max(float(value), self.low), self.high)
        note = "" if clamped == value else f"{self.address}: {value:g} clamped to {clamped:g}"
        return clamped, note


# The one declaration. Model-specific walk parameters are declared by each walk (bridge.morph).
PARAMS: tuple[Param, ...] = (
    Param("smoothing", "float", 0.0, 0.0, 0.95, smoothing_s=0.05,
          doc="temporal smoothing of the picture: the share of the previous frame kept"),
    Param("brightness", "float", 1.0, 0.0, 2.0, smoothing_s=0.05, doc="output gain of the picture"),
    Param("freeze", "bool", False, doc="hold the current picture (the output keeps its rate)"),
    Param("blackout", "bool", False, doc="send black frames (the model keeps running)"),
)


class ParamStore:
    def __init__(self, params: tuple[Param, ...] = PARAMS):
        self.params = {p.name: p for p in params}
        self._values = {p.name: p.default for p in params}
        self._glide = {p.name: p.default for p in params if p.kind == "float"}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str, object], None]] = []

    def declared(self, name: str) -> Param:
        try:
            return self.params[name]
        except KeyError:
            raise ControlError(f"no parameter '{name}'; known: {', '.join(self.params)}") from None

    def set(self, name: str, value) -> str:
        """Write one value; returns a note ("" or what was clamped). ControlError on a refusal,
        with the store unchanged."""
        param = self.declared(name)
        accepted, note = param.check(value)
        with self._lock:
            changed = self._values[name] != accepted
            self._values[name] = accepted
        if changed:
            for listener in list(self._listeners):
                try:
                    listener(name, accepted)
                except Exception:  # a broken listener must not undo or block a write
                    pass
        return note

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
        self._listeners.append(callback)
