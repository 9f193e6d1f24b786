"""Preview window through pygame with SDL's dummy video driver (no screen needed)."""
from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from bridge.clock import now
from bridge.errors import SinkUnavailable
from bridge.sinks import ThreadedSink, open_sink
from bridge.sources.base import State

W, H = 48, 32


@pytest.fixture
def dummy_sdl(monkeypatch):
    pytest.importorskip("pygame")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    yield


def frame(rgba) -> np.ndarray:
    f = np.empty((H, W, 4), np.uint8)
    f[...] = rgba
    return f


def test_window_shows_frames_scaled(dummy_sdl):
    from bridge.sinks.window import WindowSink
    import pygame

    sink = WindowSink(scale=2.0).open(W, H, 30)
    try:
        f = frame((200, 40, 10, 255))
        f[:H // 2, :W // 2] = (0, 0, 250, 255)
        sink.send(f, now())
        screen = pygame.display.get_surface()
        assert screen.get_size() == (2 * W, 2 * H)
        assert tuple(screen.get_at((2, 2)))[:3] == (0, 0, 250)             # top-left stays
        assert tuple(screen.get_at((2 * W - 2, 2 * H - 2)))[:3] == (200, 40, 10)
        assert sink.sent == 1
    finally:
        sink.close()


def test_closing_the_window_does_not_stop_the_bridge(dummy_sdl):
    import pygame

    sink = open_sink("window", W, H, 30)
    assert isinstance(sink, ThreadedSink)
    try:
        for _ in range(3):
            sink.send(frame((1, 2, 3, 255)), now())
            time.sleep(0.02)
        deadline = time.monotonic() + 5
        while sink.sent < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sink.sent >= 1 and sink.status.state == State.OK
        pygame.event.post(pygame.event.Event(pygame.QUIT))  # the user clicks the close box
        deadline = time.monotonic() + 5
        while sink.status.state != State.CLOSED and time.monotonic() < deadline:
            sink.send(frame((1, 2, 3, 255)), now())  # the engine keeps going, never raises
            time.sleep(0.02)
        assert sink.status.state == State.CLOSED and "window closed" in sink.status.reason
        sent = sink.sent
        for _ in range(3):
            sink.send(frame((1, 2, 3, 255)), now())
        sink.close()
        assert sink.sent == sent and sink.dropped >= 3
    finally:
        sink.close()


def test_missing_pygame_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pygame", None)
    with pytest.raises(SinkUnavailable, match="pip install pygame"):
        open_sink("window", W, H, 30)
