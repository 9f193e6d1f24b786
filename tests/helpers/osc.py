"""A real UDP socket that collects the OSC messages a bridge sends back."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from bridge.control.osc import decode


class Inbox:
    """A real UDP socket collecting OSC replies."""

    def __init__(self, keep: int | None = None):
        self.keep = keep  # keep only the newest this many messages (a long soak), or all
        self.count = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.messages: list[tuple[str, list]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            for message in decode(data):
                self.receive(message)

    def receive(self, message: tuple[str, list]) -> None:
        """One decoded message (runs on the socket's thread)."""
        self.messages.append(message)
        self.count += 1
        if self.keep is not None and len(self.messages) > 2 * self.keep:
            del self.messages[:-self.keep]

    def wait_for(self, address: str, timeout: float = 3.0) -> list:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = [args for a, args in self.messages if a == address]
            if found:
                return found
            time.sleep(0.02)
        return []

    def close(self):
        self._stop.set()
        self._thread.join(1)
        self.sock.close()


@pytest.fixture
def inbox():
    box = Inbox()
    yield box
    box.close()
