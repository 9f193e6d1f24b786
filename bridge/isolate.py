"""`run --isolate`: the generator's network runs in a worker process, so a crash there (a driver
fault, an out-of-memory kill, `kill -9`) never takes the show down.

The live process keeps everything else (inputs, analysis, the walk, control, post-processing,
outputs) and its own copy of the model for `condition()` and the walks. Each tick it sends the
conditioning and the latent to the worker and waits for the picture. When the worker dies or
stops answering, the call fails at once, the engine re-sends the last good frame (as for any
generation error), and a new worker is started and warmed on a thread; until it is ready every
call fails fast with `GeneratorUnavailable`, which the engine counts as a repeated frame.

Nothing is pickled across the boundary: each message is a JSON header followed by the raw bytes
of the tensors it names (see `pack`), on the worker's stdin/stdout pipes. The worker loads the
same safetensors bundle the live process did (its path, from our own `find_bundle`).

    iso = IsolatedGenerator(bundle, runtime="optimized", device="cpu", sizes=[192, 128])
    runner = iso.runner()             # Runner-like: runner(cond, latent) -> picture
    runner.at_level(1, 192)           # the same worker at a degradation level's size
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from bridge.errors import BridgeError, GeneratorUnavailable, ModelLoadError
from bridge.runtime import RunnerInfo, join_note
from bridge.sources.base import State, Status

log = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0  # loading, compiling and warming a big model on a slow machine
MIN_CALL_TIMEOUT_S = 2.0  # a call slower than this (and 10x the recent slowest) is a hung worker
RESTART_WAIT_S = (0.0, 0.5, 1.0, 2.0, 4.0)  # between failed restarts: a model that cannot start
HEADER = struct.Struct("<I")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "int64": torch.int64, "uint8": torch.uint8}


class WorkerLost(BridgeError, RuntimeError):
    """The worker died, hung or broke the protocol."""


# --- the wire format ------------------------------------------------------------------------------
def pack(tree) -> tuple[object, list[bytes]]:
    """None, a tensor, or a (nested) tuple of them -> (a JSON-able spec, raw buffers in order)."""
    buffers: list[bytes] = []

    def walk(x):
        if x is None:
            return None
        if isinstance(x, (tuple, list)):
            return {"tuple": [walk(t) for t in x]}
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"cannot send a {type(x).__name__} to the generator worker")
        dtype = str(x.dtype).replace("torch.", "")
        if dtype not in DTYPES:
            raise TypeError(f"cannot send a {dtype} tensor to the generator worker")
        with torch.inference_mode():  # the runner's outputs are inference tensors
            t = x.detach().to("cpu").contiguous()
            raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        buffers.append(raw)
        return {"shape": list(t.shape), "dtype": dtype, "nbytes": len(raw)}

    return walk(tree), buffers


def unpack(spec, buffers: list[bytes]):
    """The inverse of `pack`; the spec is checked against the bytes that came with it."""
    it = iter(buffers)

    def walk(s):
        if s is None:
            return None
        if "tuple" in s:
            return tuple(walk(t) for t in s["tuple"])
        dtype = DTYPES[s["dtype"]]
        raw = next(it)
        shape = [int(n) for n in s["shape"]]
        expected = int(np.prod(shape, dtype=np.int64)) * torch.empty(0, dtype=dtype).element_size()
        if len(raw) != expected:
            raise WorkerLost(f"tensor of {shape} {s['dtype']} came with {len(raw)} bytes")
        if not raw:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(bytearray(raw), dtype=dtype).reshape(shape)

    return walk(spec)


def _sizes(spec) -> list[int]:
    if spec is None:
        return []
    if "tuple" in spec:
        return [n for s in spec["tuple"] for n in _sizes(s)]
    return [int(spec["nbytes"])]


class Channel:
    """Messages over two pipe file descriptors, every read and write bounded by a deadline."""

    def __init__(self, read_fd: int, write_fd: int, blocking: bool = False):
        self.read_fd, self.write_fd = read_fd, write_fd
        if not blocking:  # the live side: a stuck worker must never block us past the deadline
            for fd in (read_fd, write_fd):
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self.blocking = blocking

    def send(self, header: dict, payload=None, deadline: float | None = None) -> None:
        spec, buffers = pack(payload)
        head = json.dumps({**header, "payload": spec}).encode()
        self._write(HEADER.pack(len(head)) + head, deadline)
        for raw in buffers:
            self._write(raw, deadline)

    def receive(self, deadline: float | None = None) -> tuple[dict, object]:
        (n,) = HEADER.unpack(self._read(HEADER.size, deadline))
        if n > 1 << 20:
            raise WorkerLost(f"a message header of {n} bytes")
        try:
            header = json.loads(self._read(n, deadline))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise WorkerLost(f"unreadable message header ({e})") from None
        buffers = [self._read(size, deadline) for size in _sizes(header.get("payload"))]
        return header, unpack(header.get("payload"), buffers)

    def _wait(self, fd: int, writing: bool, deadline: float | None) -> None:
        if self.blocking:
            return
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise WorkerLost("the generator worker did not answer in time")
        r, w, _ = select.select([] if writing else [fd], [fd] if writing else [], [], remaining)
        if not (r or w):
            raise WorkerLost("the generator worker did not answer in time")

    def _write(self, data: bytes, deadline: float | None) -> None:
        view = memoryview(data)
        while view:
            self._wait(self.write_fd, True, deadline)
            try:
                n = os.write(self.write_fd, view)
            except BlockingIOError:
                continue
            except (BrokenPipeError, OSError) as e:
                raise WorkerLost(f"the generator worker is gone ({type(e).__name__})") from None
            view = view[n:]

    def _read(self, n: int, deadline: float | None) -> bytes:
        chunks, got = [], 0
        while got < n:
            self._wait(self.read_fd, False, deadline)
            try:
                chunk = os.read(self.read_fd, min(n - got, 1 << 20))
            except BlockingIOError:
                continue
            except OSError as e:
                raise WorkerLost(f"the generator worker is gone ({type(e).__name__})") from None
            if not chunk:
                raise WorkerLost("the generator worker is gone (its pipe closed)")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)


# --- the live side ----------------------------------------------------------------------------------
class IsolatedGenerator:
    """One worker process running a bundle's network, restarted whenever it dies or hangs.

    `sizes`: the internal resolutions of the degradation levels below full (pix2pix), each a
    Runner of its own inside the worker. `mode`/`mix`: the family's live mode, set in the worker
    as it was in the live process. `status` is ok / reconnecting (with why) / closed, and
    `restarts` counts new workers."""

    def __init__(self, bundle: str | Path, runtime: str = "optimized", device: str = "cpu",
                 sizes: list[int] | None = None, mode: str | None = None, mix: float | None = None,
                 threads: int | None = None, start_timeout_s: float = START_TIMEOUT_S):
        self.spec = {"bundle": str(Path(bundle).resolve()), "runtime": runtime, "device": device,
                     "sizes": [int(s) for s in sizes or []], "mode": mode, "mix": mix,
                     "threads": int(threads or torch.get_num_threads())}
        self.device = device
        self.start_timeout_s = start_timeout_s
        self.restarts = 0
        self.info: dict = {}
        self.last_exit = ""
        self._lock = threading.Lock()  # one call on the worker at a time
        self._proc: subprocess.Popen | None = None
        self._channel: Channel | None = None
        self._times = deque(maxlen=30)
        self._warm: dict[int, tuple] = {}  # level -> (cond, latent, runs) to warm a new worker with
        self._status = Status(State.STARTING, "starting the generator worker")
        self._closed = threading.Event()
        self._restarting = False
        self._down_since = 0.0
        self._start()  # the first start fails loudly: a model that cannot load stops the run
        self._status = Status(State.OK, f"worker pid {self.pid}")

    # -- process ---------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def status(self) -> Status:
        return self._status

    def _start(self) -> None:
        """Start a worker, send it the spec and wait for it to load; ModelLoadError if it cannot."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen([sys.executable, "-m", "bridge.isolate"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=env, close_fds=True)
        channel = Channel(proc.stdout.fileno(), proc.stdin.fileno())
        deadline = time.monotonic() + self.start_timeout_s
        try:
            channel.send({"op": "init", **self.spec}, deadline=deadline)
            header, _ = channel.receive(deadline)
        except WorkerLost as e:
            self._kill(proc)
            raise ModelLoadError(f"generator worker for {self.spec['bundle']} did not start: {e}"
                                 f"{self._exit_text(proc)}") from None
        if header.get("op") != "ready":
            self._kill(proc)
            raise ModelLoadError(header.get("message") or f"generator worker: unexpected {header}")
        self.info = header.get("info", {})
        self._proc, self._channel = proc, channel

    @staticmethod
    def _exit_text(proc: subprocess.Popen) -> str:
        code = proc.poll()
        if code is None:
            return ""
        if code < 0:
            try:
                return f" (killed by {signal.Signals(-code).name})"
            except ValueError:
                return f" (killed by signal {-code})"
        return f" (exit code {code})"

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            pass

    # -- calls -------------------------------------------------------------------------------------
    def call(self, level: int, cond, latent, timeout_s: float | None = None, warm: bool = False):
        if self._closed.is_set():
            raise GeneratorUnavailable("the generator worker is closed")
        if not self._lock.acquire(timeout=0.0 if not warm else self.start_timeout_s):
            raise GeneratorUnavailable("generator worker restarting")
        try:
            if self._channel is None or self._restarting:
                raise GeneratorUnavailable("generator worker restarting")
            if timeout_s is None:
                recent = max(self._times) if self._times else 0.0
                timeout_s = max(MIN_CALL_TIMEOUT_S, 10.0 * recent)
            started = time.monotonic()
            try:
                out = self._exchange(level, cond, latent, started + timeout_s)
            except WorkerLost as e:
                self._lost(str(e))
                raise WorkerLost(f"{e}{self.last_exit}; restarting it, the last good frame plays") from None
            if not warm:
                self._times.append(time.monotonic() - started)
            return out
        finally:
            self._lock.release()

    def _exchange(self, level: int, cond, latent, deadline: float):
        """One picture from the worker (held lock). WorkerLost when it is gone or late; the
        network's own error (the worker itself is fine) as a RuntimeError."""
        self._channel.send({"op": "run", "level": level}, (cond, latent), deadline=deadline)
        header, out = self._channel.receive(deadline)
        if header.get("op") == "error":
            raise RuntimeError(header.get("message", "the generator failed"))
        return out

    def warmup(self, level: int, cond, latent, runs: int) -> None:
        """Warm (compile) a level on these inputs, and remember them to warm a restarted worker."""
        self._warm[level] = (cond, latent, runs)
        for _ in range(runs):
            self.call(level, cond, latent, timeout_s=self.start_timeout_s, warm=True)

    def _lost(self, why: str) -> None:
        """Called holding the lock: kill what is left of the worker and restart on a thread."""
        proc, self._proc, self._channel = self._proc, None, None
        if proc is not None:
            try:  # a dead worker is reaped at once; one still running after that was hung
                proc.wait(0.2)
                self.last_exit = self._exit_text(proc)
            except subprocess.TimeoutExpired:
                self.last_exit = " (hung: killed it)"
            self._kill(proc)
        self._down_since = time.monotonic()
        self._restarting = True
        self._status = Status(State.RECONNECTING, f"worker lost: {why}{self.last_exit}; restarting")
        log.error("generator worker lost: %s%s; restarting it", why, self.last_exit)
        threading.Thread(target=self._restart, name="vjbridge-isolate-restart", daemon=True).start()

    def _restart(self) -> None:
        attempt = 0
        while not self._closed.is_set():
            if self._closed.wait(RESTART_WAIT_S[min(attempt, len(RESTART_WAIT_S) - 1)]):
                return
            attempt += 1
            try:
                self._start()
                with self._lock:  # calls fail fast meanwhile: the lock is taken without waiting
                    for level, (cond, latent, runs) in sorted(self._warm.items()):  # as before
                        for _ in range(runs):
                            self._exchange(level, cond, latent, time.monotonic() + self.start_timeout_s)
                    self._restarting = False
                self.restarts += 1
                self._times.clear()
                took = time.monotonic() - self._down_since
                self._status = Status(State.OK, f"worker pid {self.pid}, restarted after {took:.1f} s")
                log.warning("generator worker restarted (pid %s) after %.1f s", self.pid, took)
                return
            except Exception as e:  # try again: the show goes on with the last good frame
                if self._proc is not None:
                    self._kill(self._proc)
                self._proc = self._channel = None
                self._restarting = True
                self._status = Status(State.RECONNECTING, f"worker restart failed: {e}")
                log.error("generator worker restart failed: %s", e)

    def runner(self, model=None) -> "IsolatedRunner":
        return IsolatedRunner(self, 0, model)

    def close(self) -> None:
        """Ask the worker to quit, then make sure it has. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            proc, channel, self._proc, self._channel = self._proc, self._channel, None, None
            if proc is not None:
                try:
                    channel.send({"op": "quit"}, deadline=time.monotonic() + 1.0)
                    proc.wait(2.0)
                except (WorkerLost, subprocess.TimeoutExpired):
                    pass
                self._kill(proc)
        self._status = Status(State.CLOSED)


class IsolatedRunner:
    """What the pipeline calls instead of a `Runner` (same call, warmup, info and device)."""

    def __init__(self, iso: IsolatedGenerator, level: int, model=None):
        self.iso, self.level, self.model = iso, level, model
        self.device = torch.device(iso.device)
        info = {k: v for k, v in iso.info.items() if k in RunnerInfo.__dataclass_fields__}
        self.info = RunnerInfo(**{**asdict(RunnerInfo(runtime=iso.spec["runtime"], device=iso.device)), **info})
        self.info.note = join_note(self.info.note, "isolated in a worker process")

    @property
    def draws_condition(self) -> bool:
        """Whether the worker's runner draws the picture itself: then the pipeline sends what it
        is drawn from (a few numbers or arrays, not a float picture) through the pipe."""
        return self.info.draws_condition

    def __call__(self, cond, latent: torch.Tensor | None = None):
        return self.iso.call(self.level, cond, latent)

    def warmup(self, cond, latent: torch.Tensor | None = None, runs: int = 3) -> None:
        self.iso.warmup(self.level, cond, latent, runs)

    def at_level(self, index: int, size: int) -> "IsolatedRunner":
        sizes = self.iso.spec["sizes"]
        if not 1 <= index <= len(sizes) or sizes[index - 1] != size:
            raise ValueError(f"the worker has no degradation level {index} at {size} px (it has {sizes})")
        return IsolatedRunner(self.iso, index, self.model)

    def close(self) -> None:
        self.iso.close()


# --- the worker side --------------------------------------------------------------------------------
def _build(spec: dict):
    from bridge.degrade import ScaledPix2Pix
    from bridge.generators.base import load_model
    from bridge.runtime import Runner

    torch.set_num_threads(max(1, int(spec.get("threads") or 1)))
    model = load_model(spec["bundle"], device=spec["device"])
    if spec.get("mode"):
        model.set_mode(spec["mode"], **({"mix": spec["mix"]} if spec.get("mix") is not None else {}))
    runners = [Runner(model, runtime=spec["runtime"], device=spec["device"])]
    for size in spec.get("sizes", []):
        runners.append(Runner(ScaledPix2Pix(model, size), runtime=spec["runtime"], device=spec["device"]))
    return runners


def worker_main() -> int:
    """The worker: protocol on the stdin/stdout it was given; anything printed goes to stderr."""
    proto_out = os.dup(1)
    os.dup2(2, 1)  # a stray print in a library must not corrupt the protocol
    sys.stdout = sys.stderr
    channel = Channel(0, proto_out, blocking=True)
    try:
        header, _ = channel.receive()
    except WorkerLost:
        return 1
    try:
        runners = _build(header)
    except Exception as e:  # tell the live side why, in one line, and stop
        channel.send({"op": "error", "message": f"{type(e).__name__}: {e}" if not isinstance(e, BridgeError)
                      else str(e)})
        return 1
    info = asdict(runners[0].info)
    channel.send({"op": "ready", "info": info, "pid": os.getpid()})
    while True:
        try:
            header, payload = channel.receive()
        except WorkerLost:
            return 0  # the live side went away
        if header.get("op") == "quit":
            return 0
        try:
            level = int(header.get("level", 0))
            cond, latent = payload
            out = runners[level](cond, latent)
            channel.send({"op": "out"}, out)
        except WorkerLost:
            return 0
        except Exception as e:
            channel.send({"op": "error", "message": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the live process; it closes us
    from bridge.memory import keep_freed_memory
    keep_freed_memory()  # as the live process does: its per-frame tensors reused (bridge.memory)
    sys.exit(worker_main())
