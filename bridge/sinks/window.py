"""Preview window (pygame / SDL2; the `preview` extra: pip install pygame).

opencv-python-headless, which the bridge depends on, has no GUI, so the preview uses SDL
through pygame. The window is created, drawn and pumped for events on one thread: the sink's
own worker thread when wrapped in `ThreadedSink` (open_sink does that), so the engine never
waits on the display. Closing the window only closes the preview: the sink reports
`closed (window closed)`, counts later frames as dropped, and the bridge carries on.
(On macOS SDL wants the main thread for windows; the preview there is best effort.)
"""
from __future__ import annotations

import numpy as np

from bridge.errors import SinkUnavailable
from bridge.sinks.base import Sink
from bridge.sources.base import State


def _import_pygame():
    try:
        import os
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # no banner on stdout
        import pygame
    except ImportError:
        raise SinkUnavailable(
            "the preview window needs pygame; pip install pygame (or vjbridge[preview])") from None
    return pygame


class WindowSink(Sink):
    """Shows frames in a resizable window titled `title`, scaled by `scale` at first."""

    kind = "window"

    def __init__(self, title: str = "vjbridge preview", scale: float = 1.0) -> None:
        self._pg = _import_pygame()  # fail at construction with the install hint
        super().__init__()
        self.title = title
        self.scale = scale
        self._screen = None
        self.closed_by_user = False

    def _open(self, width: int, height: int, fps: float) -> None:
        pg = self._pg
        try:
            pg.display.init()
            size = (max(1, round(width * self.scale)), max(1, round(height * self.scale)))
            self._screen = pg.display.set_mode(size, pg.RESIZABLE)
        except pg.error as exc:
            raise SinkUnavailable(f"the preview window could not open: {exc}") from exc
        pg.display.set_caption(self.title)

    def _send(self, frame: np.ndarray, capture_time: float,
              audio: np.ndarray | None) -> bool:
        if self.closed_by_user:
            return False
        pg = self._pg
        for event in pg.event.get():
            if event.type == pg.QUIT:
                self._close_window()
                return False
        screen = pg.display.get_surface()
        image = pg.image.frombuffer(frame, (self.width, self.height), "RGBA")
        if screen.get_size() != image.get_size():
            image = pg.transform.scale(image, screen.get_size())
        screen.blit(image, (0, 0))
        pg.display.flip()
        return True

    def _close_window(self) -> None:
        self.closed_by_user = True
        self._screen = None
        self._pg.display.quit()
        self._set_status(State.CLOSED, "window closed")

    def _close(self) -> None:
        if self._screen is not None:
            self._screen = None
            self._pg.display.quit()
