"""Presets: the whole live state saved as TOML in presets/ and recalled whole. Recall is all or
nothing: every value is checked first, so a preset with one bad value changes nothing and says which
value and why; a file that is not valid TOML is refused with its line. Names are plain words
(letters, digits, - and _): a preset name from OSC can never reach outside the presets folder.

    [preset]
    model = "realnvp-faces"      # a live recall switches to this model
    [session]                    # how the run was started: used by `run --preset` for every
    audio_in = "default"         # option not given on the command line; a live recall reports
    camera = ""                  # differences (devices are not reopened mid-set)
    outs = ["ndi:vjbridge"]
    midi_map = "generic"
    [params]                     # every live parameter, the latent walk and knobs included
    smoothing = 0.3
    walk = "magellan"

`PresetMorph` glides from the current values to a preset's over N beats; `PresetWatcher` re-applies
a preset when its file changes on disk (an editor's save), refusing a broken save with its line.
"""
from __future__ import annotations

import logging
import math
import os
import re
import threading
from pathlib import Path
from typing import Callable

from bridge.errors import ConfigError, ControlError
from bridge.morph.latent import ease_in_out
from bridge.params import ParamStore

log = logging.getLogger(__name__)

PRESETS_DIR = Path(__file__).resolve().parents[2] / "presets"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def presets_dir() -> Path:
    return Path(os.environ.get("VJBRIDGE_PRESETS", PRESETS_DIR)).expanduser()


def preset_path(name: str) -> Path:
    if not isinstance(name, str) or not NAME.match(name):
        raise ControlError(f"preset name {name!r} must be letters, digits, - or _ (at most 64)")
    return presets_dir() / f"{name}.toml"


SESSION_KEYS = {"audio_in": str, "camera": str, "outs": list, "midi_map": str, "fps": float}


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ControlError(f"cannot save {value!r} in a preset")
        return repr(float(value)) if isinstance(value, float) else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def save_preset(name: str, store: ParamStore, info: dict | None = None,
                session: dict | None = None) -> Path:
    """Write presets/NAME.toml: `info` ([preset]: model...), `session` (inputs, outputs, MIDI
    mapping) and every parameter's value."""
    path = preset_path(name)
    lines = ["# vjbridge preset", "[preset]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in sorted((info or {}).items()) if v is not None]
    if session:
        lines += ["", "[session]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in sorted(session.items()) if v is not None]
    lines += ["", "[params]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in store.values().items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)  # a crash mid-write leaves the old preset, never half a file
    return path


def read_preset(name: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    path = preset_path(name)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in presets_dir().glob("*.toml"))) or "none"
        raise ControlError(f"no preset '{name}' in {presets_dir()}; available: {known}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    for table in ("preset", "session", "params"):
        if not isinstance(data.get(table, {}), dict):
            raise ConfigError(f"{path}: [{table}] must be a table")
    for key, value in data.get("session", {}).items():
        kind = SESSION_KEYS.get(key)
        if kind is None:
            raise ConfigError(f"{path}: [session] has no key '{key}'; known: {', '.join(SESSION_KEYS)}")
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{path}: [session] {key} must be {'a list of strings' if kind is list else kind.__name__}, "
                              f"got {value!r}")
    model = data.get("preset", {}).get("model")
    if model is not None and not isinstance(model, str):
        raise ConfigError(f"{path}: [preset] model must be a name, got {model!r}")
    return data


def check_params(name: str, data: dict, store: ParamStore) -> tuple[dict, list[str]]:
    """Every [params] value checked against the declaration: (accepted values, notes), or
    ControlError naming the first bad one (nothing is applied by this)."""
    checked, notes = {}, []
    for key, value in data.get("params", {}).items():
        try:
            accepted, note = store.declared(key).check(value)
        except ControlError as e:
            raise ControlError(f"{preset_path(name)}: {e}; nothing was changed") from None
        checked[key] = accepted
        if note:
            notes.append(note)
    return checked, notes


def apply_preset(name: str, store: ParamStore, source: str = "preset") -> tuple[dict, list[str]]:
    """Recall a preset's parameters into the store, all or nothing; returns (its [preset] table,
    notes). The model and session are the caller's (see bridge.live.LiveSession.recall)."""
    data = read_preset(name)
    checked, notes = check_params(name, data, store)
    for key, value in checked.items():
        store.set(key, value, source=source)
    return dict(data.get("preset", {})), notes


def tempo_of(store: ParamStore, fallback: Callable[[], float] | None = None) -> float:
    """Beats per minute for beat-timed moves: the MIDI clock, else the beat tracker, else 120."""
    position = store.clock.position()
    if position is not None:
        return position[0]
    bpm = fallback() if fallback is not None else 0.0
    return bpm if bpm and 30.0 <= bpm <= 300.0 else 120.0


class PresetMorph:
    """Glide from the current values to a preset's over `beats` beats (at the tempo when it
    starts). Float parameters ease along; int, bool and choice values switch at the end. A
    parameter someone else moves during the glide (a knob, OSC) is left to them from then on."""

    TICK_S = 1 / 60

    def __init__(self, store: ParamStore, target: dict, seconds: float):
        self.store = store
        self.seconds = max(float(seconds), 0.0)
        self.start = {k: store.get(k) for k in target}
        self.target = dict(target)
        self._stop = threading.Event()
        self._taken: set[str] = set()
        store.watch(self._heard)
        self.thread = threading.Thread(target=self._run, name="vjbridge-preset-morph", daemon=True)

    def _heard(self, event) -> None:
        if event.kind == "param" and event.source != "morph" and event.name in self.target \
                and not self._stop.is_set():
            self._taken.add(event.name)

    def values_at(self, share: float) -> dict:
        t = ease_in_out(share)
        out = {}
        for key, goal in self.target.items():
            if self.store.declared(key).kind == "float":
                out[key] = self.start[key] + (goal - self.start[key]) * t
            elif share >= 1.0:
                out[key] = goal
        return out

    def _run(self) -> None:
        from bridge import clock
        began = clock.now()
        while True:
            share = 1.0 if self.seconds <= 0 else min((clock.now() - began) / self.seconds, 1.0)
            for key, value in self.values_at(share).items():
                if key not in self._taken:
                    try:
                        self.store.set(key, value, source="morph")
                    except ControlError as e:  # checked before the start; a race must not stop it
                        log.warning("preset morph: %s", e)
            if share >= 1.0 or self._stop.wait(self.TICK_S):
                break
        self._stop.set()

    def begin(self) -> "PresetMorph":
        self.thread.start()
        return self

    def cancel(self) -> None:
        self._stop.set()

    @property
    def done(self) -> bool:
        return self._stop.is_set()


class PresetWatcher:
    """Re-apply a preset when its file changes on disk. `on_change(name)` does the applying; its
    errors (a half-saved or broken file) are passed to `on_error` and the live state stays."""

    def __init__(self, name: str, on_change: Callable[[str], None],
                 on_error: Callable[[str], None] = log.error, poll_s: float = 0.5):
        self.name = name
        self.path = preset_path(name)
        self.on_change, self.on_error = on_change, on_error
        self.poll_s = poll_s
        self._stamp = self._read_stamp()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="vjbridge-preset-watch", daemon=True)
        self.thread.start()

    def _read_stamp(self):
        try:
            st = self.path.stat()
            return st.st_mtime_ns, st.st_size
        except OSError:
            return None

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            stamp = self._read_stamp()
            if stamp is None or stamp == self._stamp:
                continue
            self._stamp = stamp
            try:
                self.on_change(self.name)
            except (ConfigError, ControlError) as e:
                self.on_error(f"preset {self.name} changed on disk but was not applied: {e}")
            except Exception as e:  # never let the watcher die
                self.on_error(f"preset {self.name}: {type(e).__name__}: {e}")

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2.0)
