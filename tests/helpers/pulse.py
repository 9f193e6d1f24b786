"""A real PulseAudio null sink to play sound into and capture back through PortAudio.

Use from any test module:

    from tests.helpers.pulse import pulse_null_sink  # noqa: F401  (pytest finds the fixture)

    def test_something(pulse_null_sink):
        proc = pulse_null_sink.play("/path/to/sound.flac")   # any format ffmpeg reads
        ...  # LineIn("default") / "pulse" now hears it: the sink's monitor is the default source

The fixture starts a PulseAudio daemon only if none answers, loads its own null sink (a
unique name, so a daemon shared with other runs is not disturbed), makes the sink's monitor
the default source, and undoes all of that at the end. Skips when PulseAudio is missing.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

START_WAIT_S = 10.0


def _run(*args: str, timeout: float = 5.0) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def pulse_answers() -> bool:
    try:
        return _run("pactl", "info", timeout=3.0).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _wait_until(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def start_pulse() -> bool:
    """Start a user daemon if none answers; True when this call started it.

    As root PulseAudio warns that it is 'not intended to be run as root' and runs anyway
    in per-user mode, which is what we want (no --system: that needs a pulse user and
    refuses native clients from other users)."""
    if pulse_answers():
        return False
    res = _run("pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "-n",
               "--load=module-native-protocol-unix", "--load=module-null-sink sink_name=vjb_idle",
               timeout=START_WAIT_S)
    if not _wait_until(pulse_answers, START_WAIT_S):
        raise RuntimeError(f"pulseaudio did not start: {res.stderr.strip()[-300:]}")
    return True


def stop_pulse() -> None:
    _run("pulseaudio", "--kill")
    _wait_until(lambda: not pulse_answers(), 5.0)


def _default_source() -> str:
    res = _run("pactl", "get-default-source")
    return res.stdout.strip() if res.returncode == 0 else ""


@dataclass
class NullSink:
    """A loaded null sink. `play(path)` plays any file into it (converted to wav by ffmpeg
    first, because paplay reads only what libsndfile reads) and returns the paplay process."""

    name: str
    module_id: str
    workdir: Path
    players: list[subprocess.Popen] = field(default_factory=list)

    @property
    def monitor(self) -> str:
        return f"{self.name}.monitor"

    def play(self, path: str | os.PathLike, loops: int = 1) -> subprocess.Popen:
        wav = self.workdir / f"{Path(path).stem}-x{loops}.wav"
        if not wav.exists():
            subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
                            "-stream_loop", str(loops - 1), "-i", os.fspath(path), os.fspath(wav)],
                           check=True, timeout=30)
        proc = subprocess.Popen(["paplay", "-d", self.name, os.fspath(wav)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.players.append(proc)
        return proc

    def stop_playing(self) -> None:
        for proc in self.players:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(3)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.players.clear()


@pytest.fixture(scope="session")
def pulse_null_sink():
    for tool in ("pulseaudio", "pactl", "paplay", "ffmpeg"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    started = start_pulse()
    name = f"vjb_{uuid.uuid4().hex[:8]}"
    previous_source = _default_source()
    res = _run("pactl", "load-module", "module-null-sink", f"sink_name={name}")
    if res.returncode != 0:
        if started:
            stop_pulse()
        raise RuntimeError(f"cannot load a null sink: {res.stderr.strip()}")
    sink = NullSink(name, res.stdout.strip(), Path(tempfile.mkdtemp(prefix="vjb-pulse-")))
    _run("pactl", "set-default-source", sink.monitor)
    try:
        yield sink
    finally:
        sink.stop_playing()
        if previous_source and not started:
            _run("pactl", "set-default-source", previous_source)
        _run("pactl", "unload-module", sink.module_id)
        if started:
            stop_pulse()
        shutil.rmtree(sink.workdir, ignore_errors=True)


class PrivatePulse:
    """A PulseAudio daemon of one test's own (its own runtime folder), with a null sink whose
    monitor is the default source: a sound device that can be pulled out (`stop()`: the daemon
    dies, every stream on it with it, as when a USB interface is unplugged) and plugged back in
    (`start()`). Point this process's PortAudio at it with `env` (PULSE_SERVER) before opening."""

    def __init__(self, workdir: Path):
        self.runtime = Path(tempfile.mkdtemp(prefix="vjb-pa-"))
        self.workdir = workdir
        self.env = dict(os.environ, PULSE_RUNTIME_PATH=str(self.runtime), PULSE_STATE_PATH=str(self.runtime))
        self.server = f"unix:{self.runtime}/native"
        self.player: subprocess.Popen | None = None

    def answers(self) -> bool:
        return subprocess.run(["pactl", "info"], env=self.env, capture_output=True, timeout=3).returncode == 0

    def start(self) -> "PrivatePulse":
        subprocess.run(["pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "-n",
                        "--load=module-native-protocol-unix", "--load=module-null-sink sink_name=dev"],
                       env=self.env, capture_output=True, timeout=START_WAIT_S)
        if not _wait_until(self.answers, START_WAIT_S):
            raise RuntimeError("the private pulseaudio did not start")
        subprocess.run(["pactl", "set-default-source", "dev.monitor"], env=self.env, capture_output=True, timeout=5)
        return self

    def play(self, path: str | os.PathLike, loops: int = 20) -> None:
        wav = self.workdir / f"{Path(path).stem}-x{loops}.wav"
        if not wav.exists():
            subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-stream_loop", str(loops - 1),
                            "-i", os.fspath(path), os.fspath(wav)], check=True, timeout=60)
        self.player = subprocess.Popen(["paplay", "-d", "dev", os.fspath(wav)], env=self.env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.player is not None and self.player.poll() is None:
            self.player.kill()
            self.player.wait(3)
        subprocess.run(["pulseaudio", "--kill"], env=self.env, capture_output=True, timeout=5)
        _wait_until(lambda: not self.answers(), 5.0)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.runtime, ignore_errors=True)
