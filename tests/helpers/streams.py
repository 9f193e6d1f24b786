"""Real media on loopback for source tests: a free port, an ffmpeg audio server that can be
killed and restarted, a test-pattern video, and a bounded wait."""
from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SAMPLES = Path("/usr/share/sonic-pi/samples")
AMEN = SAMPLES / "loop_amen.flac"
COMPUS = SAMPLES / "loop_compus.flac"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], bool], timeout: float, every: float = 0.05) -> bool:
    """Poll `check` until it is true or `timeout` seconds pass; returns the last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return check()


@dataclass
class FfmpegAudioServer:
    """ffmpeg serving `source` (looped forever, at real speed) as mp3 over its own HTTP
    server mode on 127.0.0.1. `start()` / `stop()` can be called again and again."""

    source: Path
    port: int
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mp3"

    def start(self) -> "FfmpegAudioServer":
        self.proc = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
             "-i", str(self.source), "-f", "mp3", "-listen", "1", self.url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


def make_test_video(path: Path, width: int = 160, height: int = 120, fps: int = 25,
                    seconds: float = 2.0) -> Path:
    """A small moving test pattern (ffmpeg's lavfi testsrc) as an mp4."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"testsrc=size={width}x{height}:rate={fps}:duration={seconds}",
                    "-pix_fmt", "yuv420p", str(path)], check=True, timeout=30)
    return path
