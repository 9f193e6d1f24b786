"""MIDI mapping files and the arithmetic between controller positions and parameter values:
parsed and checked here (every mistake one line naming the file, line and key), written back
by MIDI learn. The controller itself (ports, worker, soft takeover) is bridge.control.midi.

A mapping file, presets/midi/NAME.toml ($VJBRIDGE_PRESETS/midi when set), binds controls:

    [ports]
    in = "nanoKONTROL"          # ports whose name contains this (comma-separated; "*": all)
    out = "nanoKONTROL"         # feedback (LED rings, motor faders); left out: no feedback
    [[cc]]
    param = "brightness"
    number = 7
    channel = 1                 # 1..16 as controllers show it; left out: any channel
    mode = "absolute"           # or relative-twos, relative-binoffset, relative-signmag
    bits = 7                    # 14: MSB on cc NUMBER (0..31), LSB on cc NUMBER + 32
    takeover = "soft"           # soft: moves once it passes the value; jump: at once
    [[cc]]
    trigger = "reset"           # a button sending cc: fires when it goes to 64 or above
    number = 64
    [[note]]
    note = 36
    trigger = "freeze"          # (arg = N for triggers that take a number)
    [[note]]
    note = 37
    param = "blackout"          # a bool parameter
    action = "momentary"        # or toggle
    [program]
    presets = ["intro", "drop"] # program change 0 recalls "intro", 1 "drop"...
    # or: by_number = true, prefix = "", first = 1  -> program 0 recalls preset "1"
"""
from __future__ import annotations

import difflib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from bridge.control.presets import NAME, presets_dir
from bridge.errors import ConfigError, ControlError
from bridge.params import PARAMS, TRIGGERS, Param, ParamStore, Trigger

MODES = ("absolute", "relative-twos", "relative-binoffset", "relative-signmag")
TAKEOVERS = ("soft", "jump")
ACTIONS = ("toggle", "momentary")
CHANNEL_MODE_CC = 120  # cc 120..127 are channel mode messages (all notes off...), never bound


# --- mapping files ------------------------------------------------------------------------------
def mappings_dir() -> Path:
    return presets_dir() / "midi"


def mapping_path(name: str) -> Path:
    """presets/midi/NAME.toml; a path (with a / or ending in .toml) is taken as it is."""
    if isinstance(name, (str, os.PathLike)) and (os.sep in str(name) or "/" in str(name)
                                                 or str(name).endswith(".toml")):
        return Path(name).expanduser()
    if not isinstance(name, str) or not NAME.match(name):
        raise ControlError(f"MIDI mapping name {name!r} must be letters, digits, - or _ (at most 64)")
    return mappings_dir() / f"{name}.toml"


@dataclass(eq=False)  # compared by identity: each binding keeps its own knob state
class CCBinding:
    """A knob, fader, encoder or button sending control change `number`: it sets `param` or
    fires `trigger` (with `arg`)."""
    number: int
    param: str = ""
    trigger: str = ""
    arg: int | None = None
    channel: int | None = None  # 1..16; None: any channel
    mode: str = "absolute"
    bits: int = 7
    takeover: str = "soft"
    step: float | None = None  # relative: the move per tick (default: 1/127 of the range; 1 for int)

    @property
    def target(self) -> str:
        return self.param or self.trigger

    @property
    def relative(self) -> bool:
        return self.mode != "absolute"

    def describe(self) -> str:
        where = f"channel {self.channel}" if self.channel else "any channel"
        kind = f"{self.bits}-bit cc {self.number}" + (f"/{self.number + 32}" if self.bits == 14 else "")
        return f"{self.target} <- {kind} on {where}" + (f" ({self.mode})" if self.relative else "")


@dataclass(eq=False)
class NoteBinding:
    """A key or pad: fires `trigger` on press, or toggles / holds a bool `param`."""
    note: int
    param: str = ""
    trigger: str = ""
    arg: int | None = None
    channel: int | None = None
    action: str = "toggle"

    @property
    def target(self) -> str:
        return self.param or self.trigger

    def describe(self) -> str:
        where = f"channel {self.channel}" if self.channel else "any channel"
        return f"{self.target} <- note {self.note} on {where}" + (f" ({self.action})" if self.param else "")


@dataclass
class MidiMapping:
    cc: list[CCBinding] = field(default_factory=list)
    notes: list[NoteBinding] = field(default_factory=list)
    programs: list[str] = field(default_factory=list)  # program number (0..127) -> preset name
    programs_by_number: bool = False  # program p recalls preset f"{program_prefix}{p + program_first}"
    program_prefix: str = ""
    program_first: int = 1  # what the controller calls program 0 (most show 1)
    program_channel: int | None = None
    in_pattern: str | None = None
    out_pattern: str | None = None

    def preset_for(self, program: int) -> str | None:
        if self.programs_by_number:
            return f"{self.program_prefix}{program + self.program_first}"
        return self.programs[program] if program < len(self.programs) else None


TABLE_KEYS = {
    "cc": {"number", "param", "trigger", "arg", "channel", "mode", "bits", "takeover", "step"},
    "note": {"note", "param", "trigger", "arg", "channel", "action"},
    "program": {"presets", "by_number", "prefix", "first", "channel"},
    "ports": {"in", "out"},
}


def _line_of(text: str, table: str, index: int | None, key: str | None) -> int | None:
    """The line of `key` in the index-th [[table]] (or in [table]); else the table's header."""
    pattern = r"\s*\[\[\s*%s\s*\]\]" if index is not None else r"\s*\[\s*%s\s*\]"
    header = re.compile(pattern % re.escape(table))
    seen, inside, header_line = -1, False, None
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("["):
            if inside:
                break
            if header.match(line):
                seen += 1
                inside = index is None or seen == index
                header_line = number if inside else header_line
            continue
        if inside and key and re.match(r"\s*%s\s*=" % re.escape(key), line):
            return number
    return header_line


def name_hint(name, known) -> str:
    """ (did you mean ...?) for a misspelt name, else the names there are (the first 12)."""
    close = difflib.get_close_matches(str(name), list(known), n=3)
    if close:
        return f" (did you mean {' or '.join(close)}?)"
    names = list(known)
    return f"; known: {', '.join(names[:12])}" + (f" and {len(names) - 12} more" if len(names) > 12 else "")


class _Checker:
    """Checks one mapping against the declaration; the first bad value raises a one-line
    ConfigError naming the file, its line, the entry, the key and why."""

    def __init__(self, where: str, text: str, params: dict[str, Param], triggers: dict[str, Trigger]):
        self.where, self.text, self.params, self.triggers = where, text, params, triggers

    def fail(self, table: str, index: int | None, key: str | None, why: str):
        line = _line_of(self.text, table, index, key) if self.text else None
        at = f"{self.where}:{line}" if line else self.where
        entry = f"[[{table}]] #{index + 1}" if index is not None else f"[{table}]"
        raise ConfigError(f"{at}: {entry}{' ' + key if key else ''}: {why}")

    def whole(self, table, index, entry, key, low, high, default=None, required=False):
        value = entry.get(key, default)
        if value is None and not required:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(table, index, key, f"wants a whole number {low}..{high}, got {value!r}")
        return value

    def choice(self, table, index, entry, key, choices, default):
        value = entry.get(key, default)
        if value not in choices:
            self.fail(table, index, key, f"wants one of {', '.join(map(str, choices))}, got {value!r}")
        return value

    def unknown_keys(self, table, index, entry):
        if not isinstance(entry, dict):
            self.fail(table, index, None, f"must be a table, got {entry!r}")
        for key in entry:
            if key not in TABLE_KEYS[table]:
                self.fail(table, index, key, f"unknown key; known: {', '.join(sorted(TABLE_KEYS[table]))}")

    def target(self, table, index, entry) -> tuple[str, str, int | None]:
        """(param, trigger, arg): exactly one of param/trigger, each declared, arg valid."""
        param, trigger = entry.get("param", ""), entry.get("trigger", "")
        if bool(param) == bool(trigger):
            self.fail(table, index, None, "needs exactly one of param = NAME or trigger = NAME")
        if param:
            if param not in self.params:
                self.fail(table, index, "param", f"no parameter {param!r}{name_hint(param, self.params)}")
            if "arg" in entry:
                self.fail(table, index, "arg", "only triggers take an arg")
            return param, "", None
        if trigger not in self.triggers:
            self.fail(table, index, "trigger", f"no trigger {trigger!r}{name_hint(trigger, self.triggers)}")
        declared = self.triggers[trigger]
        arg = entry.get("arg")
        if declared.arg == "none" and arg is not None:
            self.fail(table, index, "arg", f"trigger {trigger!r} takes no number")
        try:
            return "", trigger, declared.check(arg)
        except ControlError as e:
            why = str(e)
        self.fail(table, index, "arg", why)

    def cc(self, index, entry) -> CCBinding:
        self.unknown_keys("cc", index, entry)
        param, trigger, arg = self.target("cc", index, entry)
        number = self.whole("cc", index, entry, "number", 0, 127, required=True)
        channel = self.whole("cc", index, entry, "channel", 1, 16)
        mode = self.choice("cc", index, entry, "mode", MODES, "absolute")
        bits = self.choice("cc", index, entry, "bits", (7, 14), 7)
        takeover = self.choice("cc", index, entry, "takeover", TAKEOVERS, "soft")
        step = entry.get("step")
        if trigger and (mode != "absolute" or bits != 7):
            self.fail("cc", index, "mode" if mode != "absolute" else "bits",
                      "a trigger button is a 7-bit absolute cc")
        if bits == 14 and (mode != "absolute" or number >= 32):
            self.fail("cc", index, "bits", "14-bit needs an absolute cc 0..31 (its LSB is cc number + 32)")
        if step is not None:
            if mode == "absolute":
                self.fail("cc", index, "step", "only relative encoders take a step")
            if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step) \
                    or step <= 0:
                self.fail("cc", index, "step", f"wants a positive number, got {step!r}")
            step = float(step)
        return CCBinding(number, param, trigger, arg, channel, mode, bits, takeover, step)

    def note(self, index, entry) -> NoteBinding:
        self.unknown_keys("note", index, entry)
        param, trigger, arg = self.target("note", index, entry)
        note = self.whole("note", index, entry, "note", 0, 127, required=True)
        channel = self.whole("note", index, entry, "channel", 1, 16)
        action = self.choice("note", index, entry, "action", ACTIONS, "toggle")
        if param and self.params[param].kind != "bool":
            self.fail("note", index, "param", f"a note toggles or holds a bool parameter; {param!r} "
                                              f"is {self.params[param].kind} (bind a cc)")
        if trigger and "action" in entry:
            self.fail("note", index, "action", "a trigger fires on press; action is for bool parameters")
        return NoteBinding(note, param, trigger, arg, channel, action)

    def program(self, mapping: MidiMapping, entry) -> None:
        self.unknown_keys("program", None, entry)
        names = entry.get("presets", [])
        by_number = entry.get("by_number", False)
        if not isinstance(by_number, bool):
            self.fail("program", None, "by_number", f"wants true or false, got {by_number!r}")
        if not isinstance(names, list) or len(names) > 128:
            self.fail("program", None, "presets", "wants a list of at most 128 preset names")
        for name in names:
            if not isinstance(name, str) or not NAME.match(name):
                self.fail("program", None, "presets", f"{name!r} is not a preset name "
                                                      "(letters, digits, - or _)")
        if by_number and names:
            self.fail("program", None, "by_number", "use either presets = [...] or by_number = true")
        prefix = entry.get("prefix", "")
        if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z0-9_-]{0,32}", prefix):
            self.fail("program", None, "prefix", f"wants letters, digits, - or _, got {prefix!r}")
        mapping.programs, mapping.programs_by_number, mapping.program_prefix = list(names), by_number, prefix
        mapping.program_first = self.whole("program", None, entry, "first", 0, 1, default=1)
        mapping.program_channel = self.whole("program", None, entry, "channel", 1, 16)

    def ports(self, mapping: MidiMapping, entry) -> None:
        self.unknown_keys("ports", None, entry)
        for key in ("in", "out"):
            if key in entry and not isinstance(entry[key], str):
                self.fail("ports", None, key, f"wants a port name pattern, got {entry[key]!r}")
        mapping.in_pattern, mapping.out_pattern = entry.get("in"), entry.get("out")

    def mapping(self, data: dict) -> MidiMapping:
        for table in data:
            if table not in TABLE_KEYS:
                raise ConfigError(f"{self.where}: no table [{table}] in a MIDI mapping; "
                                  f"known: {', '.join(TABLE_KEYS)}")
        for table in ("cc", "note"):
            if not isinstance(data.get(table, []), list):
                self.fail(table, None, None, f"write each binding as [[{table}]]")
        mapping = MidiMapping(cc=[self.cc(i, e) for i, e in enumerate(data.get("cc", []))],
                              notes=[self.note(i, e) for i, e in enumerate(data.get("note", []))])
        for table, read in (("program", self.program), ("ports", self.ports)):
            if table in data:
                if not isinstance(data[table], dict):
                    self.fail(table, None, None, "must be a table")
                read(mapping, data[table])
        lsb = {(b.channel, b.number + 32): b for b in mapping.cc if b.bits == 14}
        for i, b in enumerate(mapping.cc):
            other = lsb.get((b.channel, b.number))
            if other is not None:
                self.fail("cc", i, "number", f"cc {b.number} is the LSB of 14-bit cc {other.number} "
                                             f"({other.target})")
        return mapping


def parse_mapping(text: str, where: str = "<mapping>", params: tuple[Param, ...] | None = None,
                  triggers: tuple[Trigger, ...] | None = None) -> MidiMapping:
    """A mapping from TOML text, checked against the declaration (PARAMS/TRIGGERS by default)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML ({e})") from None
    params = {p.name: p for p in (PARAMS if params is None else params)}
    triggers = {t.name: t for t in (TRIGGERS if triggers is None else triggers)}
    return _Checker(where, text, params, triggers).mapping(data)


def load_mapping(name: str, store: ParamStore | None = None) -> MidiMapping:
    """presets/midi/NAME.toml, checked against the store's declaration (or PARAMS/TRIGGERS)."""
    path = mapping_path(name)
    try:
        text = path.read_text()
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in mappings_dir().glob("*.toml"))) or "none"
        raise ConfigError(f"no MIDI mapping '{name}' ({path}); available: {known}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None
    if store is None:
        return parse_mapping(text, str(path))
    return parse_mapping(text, str(path), tuple(store.params.values()), tuple(store.triggers.values()))


def check_mapping(mapping: MidiMapping, store: ParamStore, where: str = "<mapping>") -> MidiMapping:
    """Check a mapping built in code against the store's declaration (via its TOML form)."""
    return parse_mapping(mapping_to_toml(mapping), where, tuple(store.params.values()),
                         tuple(store.triggers.values()))


def mapping_to_toml(mapping: MidiMapping) -> str:
    def value(v):  # TOML basic strings accept JSON's escapes
        return ("true" if v else "false") if isinstance(v, bool) else json.dumps(v)

    def table(header: str, pairs: list[tuple[str, object]]) -> list[str]:
        return ["", header] + [f"{k} = {value(v)}" for k, v in pairs if v is not None]

    lines = ["# vjbridge MIDI mapping (presets/midi); see bridge/control/midi.py for the format"]
    if mapping.in_pattern is not None or mapping.out_pattern is not None:
        lines += table("[ports]", [("in", mapping.in_pattern), ("out", mapping.out_pattern)])
    if mapping.programs or mapping.programs_by_number:
        pairs = [("presets", mapping.programs)] if mapping.programs else \
            [("by_number", True), ("prefix", mapping.program_prefix), ("first", mapping.program_first)]
        lines += table("[program]", pairs + [("channel", mapping.program_channel)])
    for b in mapping.cc:
        target = [("param", b.param)] if b.param else [("trigger", b.trigger), ("arg", b.arg)]
        lines += table("[[cc]]", target + [("number", b.number), ("channel", b.channel)] + (
            [] if b.trigger else [("mode", b.mode), ("bits", b.bits), ("takeover", b.takeover),
                                  ("step", None if b.step is None else float(b.step))]))
    for n in mapping.notes:
        target = [("param", n.param), ("action", n.action)] if n.param else \
            [("trigger", n.trigger), ("arg", n.arg)]
        lines += table("[[note]]", target + [("note", n.note), ("channel", n.channel)])
    return "\n".join(lines) + "\n"


def save_mapping_file(name: str, mapping: MidiMapping) -> Path:
    path = mapping_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(mapping_to_toml(mapping))
    os.replace(tmp, path)  # a crash mid-write leaves the old mapping, never half a file
    return path


# --- values <-> controller positions ------------------------------------------------------------
def value_at(param: Param, share: float):
    """The parameter value a control at `share` (0..1 of its travel) stands for."""
    if param.kind == "bool":
        return share >= 0.5
    if param.kind == "choice":
        return param.choices[min(int(share * len(param.choices)), len(param.choices) - 1)]
    value = param.low + share * (param.high - param.low)
    return int(round(value)) if param.kind == "int" else value


def share_of(param: Param, value) -> float:
    """Where `value` sits on a control's travel (0..1): the inverse of value_at."""
    if param.kind == "bool":
        return 1.0 if value else 0.0
    if param.kind == "choice":
        index = param.choices.index(value) if value in param.choices else 0
        return (index + 0.5) / len(param.choices)  # the middle of the value's stretch
    span = param.high - param.low
    return 0.0 if span <= 0 else min(max((float(value) - param.low) / span, 0.0), 1.0)


def relative_ticks(mode: str, value: int) -> int:
    """Encoder detents from one relative cc value (the three common encodings)."""
    if mode == "relative-twos":  # 1..63 up, 127..64 down (-1..-64)
        return value if value < 64 else value - 128
    if mode == "relative-binoffset":  # 65.. up, ..63 down, 64 = none
        return value - 64
    return -(value & 0x3F) if value & 0x40 else value & 0x3F  # relative-signmag: bit 6 is the sign


def moved_by(param: Param, current, ticks: int, step: float | None):
    if param.kind == "bool":
        return ticks > 0
    if param.kind == "choice":
        index = param.choices.index(current) if current in param.choices else 0
        return param.choices[min(max(index + ticks, 0), len(param.choices) - 1)]
    if param.kind == "int":
        return int(current) + ticks * int(step or 1)
    return float(current) + ticks * (step or (param.high - param.low) / 127)  # the store clamps
