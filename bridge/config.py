"""Settings checks shared by the live and offline paths (presets arrive with the control issue)."""
from __future__ import annotations

import json

from bridge.errors import ConfigError

MAX_FPS = 240.0


def check_fps(fps: float) -> float:
    """The frame rate, or a one-line ConfigError naming the option."""
    if not 0 < fps <= MAX_FPS:
        raise ConfigError(f"--fps must be in (0, {MAX_FPS:g}], got {fps:g}")
    return fps


def parse_key_values(pairs: list[str] | None, option: str) -> dict:
    """KEY=VALUE strings -> dict; VALUE is read as JSON when it parses (numbers, lists, true)."""
    values = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} wants KEY=VALUE, got '{pair}'")
        try:
            values[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            values[key.strip()] = value
    return values
