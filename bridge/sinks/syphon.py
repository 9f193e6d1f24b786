"""Syphon output (macOS only; the `syphon` extra: syphon-python, built on PyObjC + Metal).

A `syphon.SyphonMetalServer(name)` owns a Metal device; `_open` makes one RGBA8 Metal texture
of the output size on that device, and each frame is copied into it
(`copy_image_to_mtl_texture`) and published with `publish_frame_texture`. Both objects are made
once and reused. TouchDesigner's Syphon Spout In TOP lists the server by name. (Not run in CI:
there is no macOS there.)
"""
from __future__ import annotations

import sys

import numpy as np

from bridge.errors import SinkUnavailable
from bridge.sinks.base import Sink

DEFAULT_SYPHON_NAME = "vjbridge"


def require_syphon() -> None:
    """Raise SinkUnavailable (one line) unless Syphon can work here."""
    if sys.platform != "darwin":
        raise SinkUnavailable("Syphon needs macOS; try --out ndi")
    try:
        import syphon  # noqa: F401
    except ImportError as exc:
        raise SinkUnavailable(
            f"Syphon needs syphon-python ({exc.name} is missing); "
            f"pip install vjbridge[syphon]") from None


class SyphonSink(Sink):
    """Publishes frames as the Syphon server `name` (Metal backend)."""

    kind = "syphon"

    def __init__(self, name: str = DEFAULT_SYPHON_NAME) -> None:
        require_syphon()
        super().__init__()
        self.name = name or DEFAULT_SYPHON_NAME
        self._server = None
        self._texture = None

    def _open(self, width: int, height: int, fps: float) -> None:
        import syphon
        from syphon.utils.raw import create_mtl_texture

        try:
            server = syphon.SyphonMetalServer(self.name)
        except Exception as exc:  # no Metal device (e.g. a VM)
            raise SinkUnavailable(f"Syphon server could not start: {exc}") from exc
        self._texture = create_mtl_texture(server.device, width, height)
        self._server = server

    def _send(self, frame: np.ndarray, capture_time: float,
              audio: np.ndarray | None) -> None:
        from syphon.utils.numpy import copy_image_to_mtl_texture

        copy_image_to_mtl_texture(frame, self._texture)
        # Metal's texture origin is top-left like our rows, so no flip.
        self._server.publish_frame_texture(self._texture, is_flipped=False)

    def _close(self) -> None:
        server, self._server = self._server, None
        self._texture = None
        if server is not None:
            server.stop()
