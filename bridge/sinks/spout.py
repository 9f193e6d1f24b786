"""Spout output (Windows only; the `spout` extra: SpoutGL, glfw, PyOpenGL).

Spout shares textures between OpenGL/DirectX apps on one Windows machine (TouchDesigner's
Spout In TOP reads them). SpoutGL needs a current OpenGL context, so `_open` makes a hidden
1×1 glfw window and keeps its context current on the thread that opened it. That is why this
sink must be opened, fed and closed on one thread: `ThreadedSink` does exactly that.

Frames go up with `sendImage(pixels, w, h, GL_RGBA, invert, 0)` (0: no host framebuffer).
Our rows are top-first; `invert=False` sends them as they are, as SpoutGL's own examples do
with numpy images. Should a receiver show the picture upside down, make the sink with
`invert=True` rather than flipping pixels here. (Not run in CI: there is no Windows there.)
"""
from __future__ import annotations

import sys

import numpy as np

from bridge.errors import SinkUnavailable
from bridge.sinks.base import Sink

DEFAULT_SPOUT_NAME = "vjbridge"
GL_RGBA = 0x1908  # the OpenGL enum; avoids importing PyOpenGL just for a constant


def require_spout() -> None:
    """Raise SinkUnavailable (one line) unless Spout can work here."""
    if sys.platform != "win32":
        raise SinkUnavailable("Spout needs Windows; try --out ndi")
    try:
        import glfw  # noqa: F401
        import SpoutGL  # noqa: F401
    except ImportError as exc:
        raise SinkUnavailable(
            f"Spout needs SpoutGL and glfw ({exc.name} is missing); "
            f"pip install vjbridge[spout]") from None


class SpoutSink(Sink):
    """Publishes frames as the Spout sender `name`."""

    kind = "spout"

    def __init__(self, name: str = DEFAULT_SPOUT_NAME, invert: bool = False) -> None:
        require_spout()  # fail at construction, before any thread or window exists
        super().__init__()
        self.name = name or DEFAULT_SPOUT_NAME
        self.invert = invert
        self._window = None
        self._sender = None

    def _open(self, width: int, height: int, fps: float) -> None:
        import glfw
        import SpoutGL

        if not glfw.init():
            raise SinkUnavailable("Spout could not start: glfw found no OpenGL driver")
        glfw.window_hint(glfw.VISIBLE, glfw.FALSE)
        window = glfw.create_window(1, 1, f"vjbridge spout {self.name}", None, None)
        if not window:
            glfw.terminate()
            raise SinkUnavailable("Spout could not start: no OpenGL context (hidden window)")
        glfw.make_context_current(window)
        sender = SpoutGL.SpoutSender()
        sender.setSenderName(self.name)
        self._window, self._sender = window, sender

    def _send(self, frame: np.ndarray, capture_time: float,
              audio: np.ndarray | None) -> bool:
        # sendImage returns False while the shared texture is (re)created; count it as a drop.
        return bool(self._sender.sendImage(frame, self.width, self.height, GL_RGBA, self.invert, 0))

    def _close(self) -> None:
        import glfw

        sender, self._sender = self._sender, None
        if sender is not None:
            sender.releaseSender()
        window, self._window = self._window, None
        if window is not None:
            glfw.destroy_window(window)
            glfw.terminate()
