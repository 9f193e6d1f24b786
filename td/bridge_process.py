"""Run the bridge for TouchDesigner: its command line, the process, its log, and a watchdog.

Standard library only and no TouchDesigner in it: TouchDesigner's own Python runs this as a DAT
module inside the vjbridge COMP (the extension is a thin adapter around it), and the tests run it
against a real `vjbridge run` on Linux.

- `LaunchSettings` -> `command_line()`: `python -m bridge run ...` with the OSC ports, outputs and
  audio input TouchDesigner expects.
- `BridgeProcess`: starts that command, keeps the newest log lines (a reader thread; the status
  line the bridge rewrites with '\\r' is kept apart), takes the OSC feedback (`feed`, from the OSC
  In DAT), and on every `poll()` (once a frame is fine) restarts the bridge when it died or when
  its heartbeat stopped for `restart_after_s` (a hung process is killed first). A bridge that
  refused its settings (exit code 2, one line saying why) is not restarted: that would only
  repeat the line.
- Remote: with `bridge_host` another machine, nothing is launched here; `remote_command_line()`
  is what to run there, and the watchdog only reports whether heartbeats arrive.

Every process started here is also stopped when this Python exits (atexit), so a bridge never
outlives TouchDesigner even if the project's own close callback did not run.
"""
import atexit
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

# No `from __future__ import annotations` in this file: TouchDesigner runs it as a DAT module that
# need not be in sys.modules, where dataclasses cannot resolve string annotations.

LOCAL_HOSTS = ("", "127.0.0.1", "localhost", "::1")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
EXIT_REFUSED = 2  # `vjbridge` exits 2 after a one-line refusal (bad model, output, device...)
TRANSPORTS = ("auto", "ndi", "none")


def default_python(repo_dir: str, platform: str = sys.platform) -> str:
    """The interpreter setup.ps1 / setup.sh install vjbridge into: <clone>/.venv."""
    if platform.startswith("win"):
        return os.path.join(repo_dir, ".venv", "Scripts", "python.exe")
    return os.path.join(repo_dir, ".venv", "bin", "python")


@dataclass
class LaunchSettings:
    python: str
    workdir: str = ""
    model: str = "pix2pix-pulse"
    audio_in: str = "default"  # anything `--audio-in` takes: device, file, URL, 'silence'
    camera: str = ""
    outs: tuple = ()  # `--out` specs, in order
    fps: float = 30.0
    size: int = 0  # 0: the model's own size
    runtime: str = "optimized"
    threads: str = "auto"  # torch threads of the network: auto (tried on the first frames) or a count
    keep_warm: int = 2  # models switched away from (or cued) kept loaded: switching back is at once
    device: str = "cpu"
    bridge_host: str = "127.0.0.1"  # where the bridge runs; any other machine: remote
    osc_port: int = 9000
    td_host: str = "127.0.0.1"  # this machine as the bridge reaches it (feedback, RTSP audio)
    reply_port: int = 9001
    preset: str = ""
    midi_in: str = ""
    extra_args: str = ""
    auto_restart: bool = True
    restart_after_s: float = 5.0  # no heartbeat for this long: restart
    startup_grace_s: float = 90.0  # the first heartbeat may wait for a model compile

    def __post_init__(self):
        self.outs = tuple(self.outs)
        for key in ("osc_port", "reply_port"):
            if not 0 < int(getattr(self, key)) < 65536:
                raise ValueError(f"{key} must be a UDP port 1..65535, got {getattr(self, key)}")
        if not 1.0 <= float(self.fps) <= 240.0:
            raise ValueError(f"fps must be 1..240, got {self.fps}")
        if int(self.size) and not 16 <= int(self.size) <= 4096:
            raise ValueError(f"size must be 0 (the model's) or 16..4096, got {self.size}")
        if float(self.restart_after_s) < 1.0 or float(self.startup_grace_s) < float(self.restart_after_s):
            raise ValueError("restart_after_s must be >= 1 and startup_grace_s >= restart_after_s")
        if not self.remote and not self.python:
            raise ValueError("python is empty: give the interpreter vjbridge is installed in")
        self.threads = str(self.threads).strip() or "auto"
        if self.threads != "auto" and not (self.threads.isdigit() and int(self.threads) >= 1):
            raise ValueError(f"threads must be auto or a count of at least 1, got {self.threads!r}")
        if not 0 <= int(self.keep_warm) <= 8:
            raise ValueError(f"keep_warm must be 0..8 models, got {self.keep_warm}")
        try:
            shlex.split(self.extra_args)
        except ValueError as e:
            raise ValueError(f"extra_args: {e}") from None

    @property
    def remote(self) -> bool:
        return self.bridge_host.strip().lower() not in LOCAL_HOSTS


def command_line(s: LaunchSettings) -> list:
    """argv of `python -m bridge run` for these settings."""
    argv = [s.python, "-m", "bridge", "run", "--model", s.model, "--audio-in", s.audio_in or "default"]
    if s.camera:
        argv += ["--camera", s.camera]
    for out in s.outs:
        argv += ["--out", out]
    argv += ["--fps", f"{float(s.fps):g}"]
    if int(s.size):
        argv += ["--size", str(int(s.size))]
    argv += ["--runtime", s.runtime, "--threads", s.threads, "--keep-warm", str(int(s.keep_warm)),
             "--device", s.device,
             # a local bridge listens on loopback only; a remote one must accept the network
             "--osc-host", "0.0.0.0" if s.remote else "127.0.0.1", "--osc-port", str(int(s.osc_port)),
             "--osc-reply", f"{s.td_host.strip() or '127.0.0.1'}:{int(s.reply_port)}"]
    if s.preset:
        argv += ["--preset", s.preset]
    if s.midi_in:
        argv += ["--midi-in", s.midi_in]
    return argv + shlex.split(s.extra_args)


def remote_command_line(s: LaunchSettings) -> str:
    """What to type on the bridge's machine (its own `python`, same options), as one line."""
    argv = ["python"] + command_line(s)[1:]
    return " ".join(shlex.quote(a) for a in argv)


@dataclass(frozen=True)
class Route:
    """How the picture reaches TouchDesigner."""
    kind: str  # spout, syphon, ndi, none
    out: str  # the bridge's `--out` spec ('' for none)
    switch_index: int  # input of the Switch TOP: 0 Syphon Spout In TOP, 1 NDI In TOP
    sender: str


def picture_route(transport: str, sender: str, remote: bool, platform: str = sys.platform) -> Route:
    """'auto': Spout on Windows, Syphon on macOS (GPU sharing on this machine); NDI when the
    bridge is on another machine or the OS has neither. 'ndi' forces NDI, 'none' sends nothing
    to TouchDesigner (other `--out`s only)."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    sender = sender.strip() or "vjbridge"
    if transport == "none":
        return Route("none", "", 0, sender)
    if transport == "auto" and not remote and (platform.startswith("win") or platform == "darwin"):
        kind = "spout" if platform.startswith("win") else "syphon"
        return Route(kind, f"{kind}:{sender}", 0, sender)
    return Route("ndi", f"ndi:{sender}", 1, sender)


def pick_source(names, sender: str, fallback: str = "") -> str:
    """The receiver's menu entry for `sender`: exact, then NDI's 'HOST (sender)', then an entry
    ending with it (Syphon lists 'App - server'). `fallback` when none is listed yet."""
    names = [n for n in (names or []) if n]
    for test in (lambda n: n == sender, lambda n: n.endswith(f"({sender})"),
                 lambda n: n.endswith(sender)):
        for name in names:
            if test(name):
                return name
    return fallback


def local_ndi_source(sender: str) -> str:
    """NDI names a source 'MACHINE (sender)'; the guess before the receiver has listed it."""
    return f"{socket.gethostname().upper()} ({sender})"


@dataclass
class Feedback:
    """What the bridge last said over OSC."""
    heartbeat: int = -1
    last_beat: Optional[float] = None  # clock time of the newest heartbeat
    fps: Optional[float] = None
    latency_ms: Optional[float] = None
    model: str = ""
    errors: deque = field(default_factory=lambda: deque(maxlen=20))
    params: dict = field(default_factory=dict)


class BridgeProcess:
    def __init__(self, settings: Optional[LaunchSettings] = None, clock: Callable[[], float] = time.monotonic,
                 env: Optional[dict] = None, log_lines: int = 200, prefix: str = "/vjbridge"):
        self.settings = settings
        self.clock = clock
        self.env = env
        self.prefix = prefix
        self.log = deque(maxlen=log_lines)
        self.log_version = 0  # bumped on every new line: readers copy only when it moved
        self.status_line = ""
        self.feedback = Feedback()
        self.state = "stopped"  # stopped, running, restarting, failed, remote
        self.reason = ""
        self.restarts = 0
        self.proc = None  # subprocess.Popen while launched
        self._lock = threading.Lock()
        self._started_at = 0.0
        self._beats_since_start = 0
        self._retry_at = None  # when a scheduled restart is due
        self._backoff_s = 1.0
        self._silent_exits = 0  # exits in a row without a single heartbeat
        self._reader = None  # the log reader thread

    # --- log -------------------------------------------------------------------------------
    def note(self, line: str) -> None:
        with self._lock:
            self.log.append(line)
            self.log_version += 1

    def log_text(self) -> str:
        with self._lock:
            return "\n".join(self.log)

    def _read(self, proc: subprocess.Popen) -> None:
        """Split the merged stdout/stderr on newlines and carriage returns; the bridge's
        live status line (rewritten in place with '\\r') is kept apart, not logged each second."""
        pending = b""
        while True:
            try:
                chunk = proc.stdout.read1(4096)
            except (OSError, ValueError):  # the pipe was closed under us (stop): nothing more to read
                break
            if not chunk:
                break
            pending += chunk
            parts = re.split(rb"[\r\n]", pending)
            pending = parts.pop()
            for raw in parts:
                self._line(raw)
        if pending:
            self._line(pending)

    def _line(self, raw: bytes) -> None:
        line = ANSI.sub("", raw.decode("utf-8", "replace")).rstrip()
        if not line:
            return
        if line.startswith("fps "):
            self.status_line = line
        else:
            self.note(line)

    # --- life ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.running else None

    def start(self) -> None:
        """Launch (or, remote, wait for heartbeats from) the bridge. Idempotent while running."""
        s = self.settings
        if s is None:
            raise ValueError("no launch settings yet")
        self._retry_at = None
        if s.remote:
            if self.running:  # it ran here before the settings said remote
                self._end(graceful=True)
            self.state, self.reason = "remote", f"the bridge runs on {s.bridge_host}"
            self._started_at, self._beats_since_start = self.clock(), 0
            self.note(f"remote bridge: start it on {s.bridge_host} with:")
            self.note("  " + remote_command_line(s))
            return
        if self.running:
            return
        self.restarts, self._backoff_s, self._silent_exits = 0, 1.0, 0  # counted from this Start
        self._launch()

    def _launch(self) -> None:
        argv = command_line(self.settings)
        env = dict(os.environ if self.env is None else self.env, PYTHONUNBUFFERED="1")
        kwargs = {}
        if sys.platform.startswith("win"):
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # no console pops up
        else:
            kwargs["start_new_session"] = True  # TouchDesigner's own signals stay its own
        self.note("$ " + " ".join(shlex.quote(a) for a in argv))
        try:
            proc = subprocess.Popen(argv, cwd=self.settings.workdir or None, env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, **kwargs)
        except OSError as e:
            self.state, self.reason = "failed", f"cannot start {argv[0]}: {e.strerror or e}"
            self.note(self.reason)
            return
        self.proc = proc
        _RUNNING.add(self)
        self._reader = threading.Thread(target=self._read, args=(proc,), name="vjbridge-log", daemon=True)
        self._reader.start()
        self._started_at = self.clock()
        self._beats_since_start = 0
        self.feedback.last_beat = None
        self.state, self.reason = "running", f"pid {proc.pid}"

    def stop(self, timeout_s: float = 3.0) -> None:
        """Stop on purpose (no restart): an interrupt first, so outputs close cleanly."""
        self._retry_at = None
        self._end(graceful=True, timeout_s=timeout_s)
        self.state, self.reason = "stopped", "stopped"
        _RUNNING.discard(self)

    def _end(self, graceful: bool, timeout_s: float = 3.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                if graceful and not sys.platform.startswith("win"):
                    proc.send_signal(signal.SIGINT)  # the bridge prints its summary and closes outputs
                else:
                    proc.kill()
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
            except OSError:
                pass
        if self._reader is not None:
            self._reader.join(timeout=1.0)
        if proc.stdout is not None:
            proc.stdout.close()

    # --- feedback --------------------------------------------------------------------------
    def feed(self, address: str, args: list) -> bool:
        """One OSC message from the bridge (TouchDesigner's OSC In DAT calls this). True when it
        is the first heartbeat of a new bridge process (started here, restarted, or a remote one
        whose count began again): the moment to send it TouchDesigner's parameter values."""
        fb, p = self.feedback, self.prefix
        first = args[0] if args else None
        if address == f"{p}/heartbeat":
            count = int(first) if isinstance(first, (int, float)) else fb.heartbeat + 1
            new = self._beats_since_start == 0 or count < fb.heartbeat
            fb.heartbeat, fb.last_beat = count, self.clock()
            self._beats_since_start += 1
            self._backoff_s, self._silent_exits = 1.0, 0  # alive again: a later failure retries at once
            return new
        elif address == f"{p}/fps" and isinstance(first, (int, float)):
            fb.fps = float(first)
        elif address == f"{p}/latency_ms" and isinstance(first, (int, float)):
            fb.latency_ms = float(first)
        elif address == f"{p}/model" and isinstance(first, str):
            fb.model = first
        elif address == f"{p}/model/cued" and isinstance(first, str):
            self.note(f"model {first} cued: switching to it plays it at once")
        elif address == f"{p}/error":
            message = " ".join(str(a) for a in args)
            fb.errors.append(message)
            self.note(f"bridge error: {message}")
        elif address.startswith(f"{p}/param/") and len(args) == 1:
            fb.params[address[len(f"{p}/param/"):]] = first
        return False

    def heartbeat_age(self, now: Optional[float] = None) -> Optional[float]:
        if self.feedback.last_beat is None:
            return None
        return (self.clock() if now is None else now) - self.feedback.last_beat

    # --- watchdog --------------------------------------------------------------------------
    def poll(self, now: Optional[float] = None) -> str:
        """Check on the bridge; restart it when it died or went silent. Returns what it did
        ('' when nothing)."""
        now = self.clock() if now is None else now
        s = self.settings
        if self.state == "remote":  # not ours to restart: say whether it is there
            age = self.heartbeat_age(now)
            silent = (now - self._started_at) if age is None else age
            self.reason = (f"alive on {s.bridge_host}" if silent <= s.restart_after_s and age is not None
                           else f"waiting for {s.bridge_host}" if silent <= s.restart_after_s
                           else f"no heartbeat from {s.bridge_host} for {silent:.0f} s (is it running there?)")
            return ""
        if self.state == "restarting":
            if self._retry_at is not None and now >= self._retry_at:
                self._retry_at = None
                self.restarts += 1
                self._launch()
                return "restarted"
            return ""
        if self.state != "running":
            return ""
        code = self.proc.poll() if self.proc is not None else None
        if code is not None:
            self._end(graceful=False)
            last = self.log[-1] if self.log else ""
            if code == EXIT_REFUSED:
                self.state, self.reason = "failed", f"the bridge refused to start: {last}"
                return "failed"
            if not self._beats_since_start:
                self._silent_exits += 1
                if self._silent_exits >= 3:  # e.g. vjbridge not installed in that Python
                    self.state, self.reason = "failed", f"the bridge exits before it starts: {last}"
                    return "failed"
            return self._schedule(now, f"the bridge exited with code {code}")
        age = self.heartbeat_age(now)
        limit = s.restart_after_s if age is not None else s.startup_grace_s
        silent = (now - self._started_at) if age is None else age
        if silent > limit:
            self._end(graceful=False, timeout_s=2.0)  # hung: no point in asking nicely
            return self._schedule(now, f"no heartbeat for {silent:.1f} s")
        return ""

    def _schedule(self, now: float, why: str) -> str:
        if not self.settings.auto_restart:
            self.state, self.reason = "stopped", why
            self.note(f"{why}; not restarting (auto restart is off)")
            return "stopped"
        delay = 0.0 if self.restarts == 0 or self._beats_since_start else self._backoff_s
        if not self._beats_since_start:  # died before saying anything: back off up to 30 s
            self._backoff_s = min(self._backoff_s * 2.0, 30.0)
        self.state, self.reason = "restarting", why
        self._retry_at = now + delay
        self.note(f"{why}; restarting" + (f" in {delay:.0f} s" if delay else ""))
        return "restarting"

    def restart(self) -> None:
        """Stop and start again with the current settings."""
        self.stop()
        self.start()

    def with_settings(self, settings: LaunchSettings) -> None:
        """New settings for the next (re)start; a running bridge keeps its own until then."""
        self.settings = replace(settings)

    def summary(self) -> dict:
        fb = self.feedback
        age = self.heartbeat_age()
        return {"state": self.state, "reason": self.reason, "pid": self.pid or "",
                "heartbeat": fb.heartbeat if fb.heartbeat >= 0 else "",
                "heartbeat_age_s": "" if age is None else f"{age:.1f}",
                "fps": "" if fb.fps is None else f"{fb.fps:.1f}",
                "latency_ms": "" if fb.latency_ms is None else f"{fb.latency_ms:.0f}",
                "model": fb.model, "restarts": self.restarts,
                "last_error": fb.errors[-1] if fb.errors else "", "status": self.status_line}


_RUNNING: set = set()
# One bridge per TouchDesigner component path. An extension is rebuilt whenever its DAT changes
# (and on some saves); the new instance takes the running bridge from here instead of losing it.
BRIDGES: dict = {}


@atexit.register
def _stop_all() -> None:
    for bridge in list(_RUNNING):
        try:
            bridge.stop(timeout_s=2.0)
        except Exception:
            pass
