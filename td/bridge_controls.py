"""The bridge's live controls as TouchDesigner sees them, read from td/protocol.json.

Standard library only: TouchDesigner's own Python runs this (as a DAT module inside the vjbridge
COMP), and so do the build script and the tests. The build script turns every entry into a
custom parameter; the extension turns a parameter change into an OSC message and the bridge's
feedback back into a parameter value. Entries are handled by their kind alone (float, int, bool,
choice; triggers with no argument or a whole number), so a parameter added to bridge/params.py
reaches TouchDesigner with `vjbridge protocol --write` and a rebuild, and no change here.

TouchDesigner's rule for custom parameter names: one capital letter, then lower-case letters and
digits, no underscores (https://docs.derivative.ca/Custom_Parameters). So 'beat_quantise' is
'Beatquantise'; a trigger gets 'Trig' in front ('Trigreset'), and a trigger that takes a number
gets a second, Int parameter holding it ('Trigjumparg').
"""
import json
import math
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

# No `from __future__ import annotations` in this file: TouchDesigner runs it as a DAT module that
# need not be in sys.modules, where dataclasses cannot resolve string annotations.

KINDS = ("float", "int", "bool", "choice")
TRIGGER_ARGS = ("none", "int")
TD_PAR_NAME = re.compile(r"^[A-Z][a-z0-9]*$")
TRIGGER_PREFIX = "Trig"
ARG_SUFFIX = "arg"


class ProtocolError(ValueError):
    """td/protocol.json is not what this side understands; the message names the entry."""


def td_par_name(name: str, prefix: str = "") -> str:
    """'beat_quantise' -> 'Beatquantise'; with prefix 'Trig': 'Trigbeatquantise'."""
    joined = re.sub(r"[^0-9a-zA-Z]", "", name).lower()
    candidate = (prefix + joined) if prefix else joined[:1].upper() + joined[1:]
    if not TD_PAR_NAME.match(candidate):
        raise ProtocolError(f"'{name}' cannot be a TouchDesigner parameter name (it would be "
                            f"'{candidate}'; names start with a letter)")
    return candidate


@dataclass(frozen=True)
class Control:
    """One live control: a parameter (float, int, bool, choice) or a trigger."""
    kind: str  # float, int, bool, choice, or trigger
    name: str  # the bridge's name
    par: str  # the TouchDesigner custom parameter name
    address: str
    default: object = None
    low: Optional[float] = None
    high: Optional[float] = None
    choices: Tuple[str, ...] = ()
    arg: str = "none"  # triggers: none, or int (then `arg_par` holds the number)
    arg_par: str = ""
    doc: str = ""

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")

    def message(self, value=None) -> Tuple[str, list]:
        """(address, args) for TouchDesigner's OSC Out DAT: sendOSC(address, args). Values are
        coerced to what the bridge's declaration wants, so a menu index or a toggle's 0/1 arrives
        as the right OSC type."""
        if self.kind == "trigger":
            return self.address, ([] if self.arg == "none" else [int(round(float(value)))])
        if self.kind == "float":
            return self.address, [float(value)]
        if self.kind == "int":
            return self.address, [int(round(float(value)))]
        if self.kind == "bool":
            return self.address, [bool(value)]
        return self.address, [str(value)]

    def value_from(self, args: list):
        """A feedback message's args as this parameter's value; None when they are not one."""
        if self.kind == "trigger" or len(args) != 1:
            return None
        value = args[0]
        if self.kind == "choice":
            return value if isinstance(value, str) and value in self.choices else None
        if isinstance(value, str):
            return None
        if self.kind == "bool":
            return bool(value)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return int(round(value)) if self.kind == "int" else float(value)


@dataclass(frozen=True)
class Protocol:
    prefix: str
    params: Tuple[Control, ...]
    triggers: Tuple[Control, ...]
    heartbeat_s: float = 1.0
    text: str = ""  # the JSON it was read from (the build keeps a copy in the COMP)

    @property
    def controls(self) -> Tuple[Control, ...]:
        return self.params + self.triggers

    def by_par(self) -> Dict[str, Control]:
        """TouchDesigner parameter name (both of an int trigger's) -> control."""
        out = {}
        for c in self.controls:
            out[c.par] = c
            if c.arg_par:
                out[c.arg_par] = c
        return out

    def by_address(self) -> Dict[str, Control]:
        return {c.address: c for c in self.params}

    def td_names(self) -> List[str]:
        names = []
        for c in self.controls:
            names += [c.par] + ([c.arg_par] if c.arg_par else [])
        return names

    def check_names(self, reserved=()) -> None:
        """Two controls (or a control and one of the COMP's own parameters) that would share a
        TouchDesigner name would silently replace each other: refuse."""
        seen = {name: "the vjbridge COMP's own parameters" for name in reserved}
        for c in self.controls:
            for name in [c.par] + ([c.arg_par] if c.arg_par else []):
                if name in seen:
                    raise ProtocolError(f"{c.kind} '{c.name}' would be TouchDesigner parameter "
                                        f"'{name}', already taken by {seen[name]}; rename it in "
                                        f"bridge/params.py")
                seen[name] = f"{c.kind} '{c.name}'"


def _number(entry: dict, key: str, where: str) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError(f"{where}: '{key}' must be a number, got {value!r}")
    return value


def _param(entry: dict, where: str) -> Control:
    kind = entry.get("type")
    if kind not in KINDS:
        raise ProtocolError(f"{where}: type must be one of {', '.join(KINDS)}, got {kind!r}")
    name = entry["name"]
    default = entry.get("default")
    low = high = None
    choices = ()
    if kind in ("float", "int"):
        low, high = _number(entry, "min", where), _number(entry, "max", where)
        default = _number(entry, "default", where)
        if not low <= default <= high:
            raise ProtocolError(f"{where}: default {default} outside [{low}, {high}]")
    elif kind == "bool":
        if not isinstance(default, bool):
            raise ProtocolError(f"{where}: a bool's default must be true or false, got {default!r}")
    else:
        choices = tuple(entry.get("choices") or ())
        if not choices or not all(isinstance(c, str) and c for c in choices):
            raise ProtocolError(f"{where}: a choice needs a list of names in 'choices'")
        if default not in choices:
            raise ProtocolError(f"{where}: default {default!r} is not one of {', '.join(choices)}")
    return Control(kind, name, td_par_name(name), entry["address"], default, low, high, choices,
                   doc=entry.get("doc", ""))


def _trigger(entry: dict, where: str) -> Control:
    arg = entry.get("arg", "none")
    if arg not in TRIGGER_ARGS:
        raise ProtocolError(f"{where}: arg must be one of {', '.join(TRIGGER_ARGS)}, got {arg!r}")
    par = td_par_name(entry["name"], TRIGGER_PREFIX)
    low = high = None
    arg_par = ""
    if arg == "int":
        low, high = int(_number(entry, "min", where)), int(_number(entry, "max", where))
        if low > high:
            raise ProtocolError(f"{where}: min {low} above max {high}")
        arg_par = par + ARG_SUFFIX
    return Control("trigger", entry["name"], par, entry["address"], low, low, high, arg=arg,
                   arg_par=arg_par, doc=entry.get("doc", ""))


def parse_protocol(text: str, where: str = "td/protocol.json") -> Protocol:
    """The controls in a protocol file's text. ProtocolError names the bad entry."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ProtocolError(f"{where} is not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ProtocolError(f"{where}: version {data.get('version') if isinstance(data, dict) else None!r}"
                            f" is not the version 1 this TouchDesigner side reads; rebuild from "
                            f"the same checkout as the bridge")
    osc = data.get("osc", {})
    prefix = osc.get("prefix", "/vjbridge")
    groups = []
    for key, make in (("params", _param), ("triggers", _trigger)):
        controls = []
        for i, entry in enumerate(data.get(key, [])):
            label = f"{where} {key}[{i}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) \
                    or not isinstance(entry.get("address"), str):
                raise ProtocolError(f"{label}: needs a name and an address")
            controls.append(make(entry, f"{label} '{entry['name']}'"))
        groups.append(tuple(controls))
    every_s = osc.get("out", {}).get("every_s", 1.0)
    protocol = Protocol(prefix, groups[0], groups[1], float(every_s), text)
    protocol.check_names()
    return protocol


def load_protocol(path: str) -> Protocol:
    with open(path, encoding="utf-8") as f:
        return parse_protocol(f.read(), where=str(path))
