"""Presets: the live parameters (and the model and walk they were made with) saved as TOML in
presets/ and recalled whole. Recall is all or nothing: every value is checked first, so a preset
with one bad value changes nothing and says which value and why; a file that is not valid TOML is
refused with its line. Names are plain words (letters, digits, - and _): a preset name from OSC can
never reach outside the presets folder.

    [preset]                     # what it was made with (informative; the model is not swapped)
    model = "realnvp-faces"
    walk = "magellan"
    [params]
    smoothing = 0.3
    freeze = false
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

from bridge.errors import ConfigError, ControlError
from bridge.params import ParamStore

PRESETS_DIR = Path(__file__).resolve().parents[2] / "presets"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def presets_dir() -> Path:
    return Path(os.environ.get("VJBRIDGE_PRESETS", PRESETS_DIR)).expanduser()


def preset_path(name: str) -> Path:
    if not isinstance(name, str) or not NAME.match(name):
        raise ControlError(f"preset name {name!r} must be letters, digits, - or _ (at most 64)")
    return presets_dir() / f"{name}.toml"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ControlError(f"cannot save {value!r} in a preset")
        return repr(float(value)) if isinstance(value, float) else str(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def save_preset(name: str, store: ParamStore, info: dict | None = None) -> Path:
    """Write presets/NAME.toml from the store's values (and `info`: model, walk, ...)."""
    path = preset_path(name)
    lines = ["# vjbridge preset", "[preset]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in sorted((info or {}).items()) if v is not None]
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
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: [params] must be a table")
    return data


def apply_preset(name: str, store: ParamStore) -> tuple[dict, list[str]]:
    """Recall a preset into the store, all or nothing; returns (its [preset] table, notes)."""
    data = read_preset(name)
    params = data.get("params", {})
    checked, notes = {}, []
    for key, value in params.items():
        try:
            accepted, note = store.declared(key).check(value)
        except ControlError as e:
            raise ControlError(f"{preset_path(name)}: {e}; nothing was changed") from None
        checked[key] = accepted
        if note:
            notes.append(note)
    for key, value in checked.items():
        store.set(key, value)
    return dict(data.get("preset", {})), notes
