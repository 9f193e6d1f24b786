"""Settings checks shared by the live and offline paths (presets arrive with the control issue)."""
from __future__ import annotations

from bridge.errors import ConfigError

MAX_FPS = 240.0


def check_fps(fps: float) -> float:
    """The frame rate, or a one-line ConfigError naming the option."""
    if not 0 < fps <= MAX_FPS:
        raise ConfigError(f"--fps must be in (0, {MAX_FPS:g}], got {fps:g}")
    return fps
