"""A JACK server of our own (dummy driver, no sound card) for MIDI tests through python-rtmidi.

Use from any test module:

    from tests.helpers.jack import jack_server  # noqa: F401  (pytest finds the fixture)

    def test_something(jack_server):
        out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="tester")
        out.open_virtual_port("ctl")       # a MidiIn on the same server lists "tester:ctl"

The fixture (one per test session) points libjack at a server with its own name through
$JACK_DEFAULT_SERVER (read whenever a client opens, so set before rtmidi opens anything), so a
JACK server the user or another run keeps as the default is never touched. A server with that name
that already runs is reused and left running; one started here is stopped at the end. JACK's dummy
driver prints XRun warnings: harmless. Skips when jackd is missing (a failure under
VJBRIDGE_STRICT_TESTS=1, see tests/conftest.py).
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass

import pytest

SERVER_NAME = "vjbridge-test"
START_WAIT_S = 10.0


def jack_answers(server: str) -> bool:
    """Can a client connect to the JACK server `server`? (jack_lsp never starts one here.)"""
    env = dict(os.environ, JACK_DEFAULT_SERVER=server, JACK_NO_START_SERVER="1")
    try:
        return subprocess.run(["jack_lsp"], env=env, capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _die_with_parent() -> None:
    """(Linux) jackd gets SIGTERM when the test run dies, even in a crash that skips teardown."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class JackServer:
    name: str
    process: subprocess.Popen | None  # None: it was running already (not ours to stop)
    log_path: str


def start_jack(name: str = SERVER_NAME) -> JackServer:
    if jack_answers(name):
        return JackServer(name, None, "")
    log = tempfile.NamedTemporaryFile(prefix="vjb-jackd-", suffix=".log", delete=False)
    # --sync: a cycle waits for every client, late or not. In the default asynchronous mode a
    # client the loaded test machine schedules late reads its peer's buffer of the cycle before:
    # events arrive twice or never, which would make the tests flaky, not the bridge wrong.
    process = subprocess.Popen(["jackd", "-n", name, "--no-realtime", "--sync", "--timeout", "2000",
                                "-d", "dummy", "-r", "48000", "-p", "256"],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               preexec_fn=_die_with_parent)
    deadline = time.monotonic() + START_WAIT_S
    while not jack_answers(name):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_jack(JackServer(name, process, log.name))
            with open(log.name, errors="replace") as f:
                raise RuntimeError(f"jackd -n {name} did not start: {f.read()[-300:]}")
        time.sleep(0.1)
    return JackServer(name, process, log.name)


def stop_jack(server: JackServer) -> None:
    if server.process is not None and server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(5)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(5)
    if server.log_path:
        try:
            os.unlink(server.log_path)
        except OSError:
            pass


@pytest.fixture(scope="session")
def jack_server():
    if shutil.which("jackd") is None or shutil.which("jack_lsp") is None:
        pytest.skip("jackd is not installed (apt install jackd2)")
    previous = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    server = start_jack()
    os.environ["JACK_DEFAULT_SERVER"] = server.name
    os.environ["JACK_NO_START_SERVER"] = "1"  # a client that misses our server must fail, not start one
    try:
        yield server
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        stop_jack(server)
