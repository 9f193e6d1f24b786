"""Shared-memory output: the newest frame in a named block another process can map.

For readers on the same machine that want raw pixels with no codec and no network: a
TouchDesigner Script TOP (numpy `copyNumpyArray`), another Python process, a C++ plugin.
The block is `multiprocessing.shared_memory.SharedMemory(name)` (POSIX: /dev/shm/<name>;
Windows: a named file mapping). It holds one 64-byte header and then the pixels:

    offset  type       field
    0       8 bytes    magic b"VJBSHM\\x00\\x01"
    8       uint32     version (1)
    12      uint32     header_size (64): pixels start here
    16      uint32     width
    20      uint32     height
    24      uint32     channels (4, RGBA)
    28      uint32     reserved (0)
    32      uint64     write_seq: odd while a frame is being written, even when stable
    40      uint64     frame_count: frames completely written so far
    48      float64    capture_time: bridge.clock.now() seconds of the audio/image the frame
                       came from (time.monotonic; comparable between processes on one machine)
    56      float64    write_time: bridge.clock.now() seconds when the frame was written
    64      uint8[]    height × width × channels RGBA pixels, row-major, top row first

All fields are little-endian. To read without tearing (a seqlock): read write_seq; if odd,
retry; copy header and pixels; read write_seq again; if it changed, retry. `ShmReader` does
this. The writer never waits for readers, and a reader never blocks the writer.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from bridge import clock
from bridge.errors import SinkUnavailable
from bridge.sinks.base import Sink

DEFAULT_SHM_NAME = "vjbridge"
SHM_MAGIC = b"VJBSHM\x00\x01"
SHM_VERSION = 1
HEADER_SIZE = 64
_HEADER = struct.Struct("<8sIIIIII QQ dd")  # 64 bytes, layout in the module docstring
_SEQ = struct.Struct("<Q")
_SEQ_OFFSET = 32
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,30}$")  # macOS allows 31 chars with the slash
assert _HEADER.size == HEADER_SIZE


@dataclass(frozen=True)
class ShmHeader:
    version: int
    width: int
    height: int
    channels: int
    write_seq: int
    frame_count: int
    capture_time: float
    write_time: float


def check_shm_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(
            f"shared memory name must be 1-30 letters, digits, '_', '.' or '-', got {name!r}")
    return name


_CREATED_HERE: set[str] = set()  # blocks this process owns (and will unlink)


def _attach(name: str, own: bool = False) -> shared_memory.SharedMemory:
    """Map an existing block. Unless we `own` it, keep this process's resource tracker from
    unlinking it at exit: before Python 3.13 attaching registers the block too, so a reader
    exiting would delete the writer's block. (When the writer is in this same process its
    registration is shared, so it is left alone.)"""
    try:
        return shared_memory.SharedMemory(name=name, track=own)  # Python 3.13+
    except TypeError:
        shm = shared_memory.SharedMemory(name=name)
        if not own and name not in _CREATED_HERE:
            from multiprocessing import resource_tracker
            resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
        return shm


class ShmSink(Sink):
    """Writes each frame into the shared block `name` (created at open, unlinked at close)."""

    kind = "shm"

    def __init__(self, name: str = DEFAULT_SHM_NAME) -> None:
        super().__init__()
        self.name = check_shm_name(name or DEFAULT_SHM_NAME)
        self._shm: shared_memory.SharedMemory | None = None
        self._pixels: np.ndarray | None = None
        self._seq = 0

    def _open(self, width: int, height: int, fps: float) -> None:
        size = HEADER_SIZE + width * height * 4
        try:
            shm = shared_memory.SharedMemory(name=self.name, create=True, size=size)
        except FileExistsError:
            shm = self._reuse_stale(size)
        except OSError as exc:
            raise SinkUnavailable(f"shared memory {self.name!r} could not be made: {exc}") from exc
        _CREATED_HERE.add(self.name)
        self._shm = shm
        self._pixels = np.ndarray((height, width, 4), np.uint8, buffer=shm.buf,
                                  offset=HEADER_SIZE)
        self._seq = 0
        _HEADER.pack_into(shm.buf, 0, SHM_MAGIC, SHM_VERSION, HEADER_SIZE, width, height, 4, 0,
                          0, 0, 0.0, 0.0)

    def _reuse_stale(self, size: int) -> shared_memory.SharedMemory:
        """A block with our name exists: left by a crashed bridge (reuse it) or someone else's
        (refuse, rather than scribble over it)."""
        shm = _attach(self.name, own=True)
        if bytes(shm.buf[:8]) != SHM_MAGIC or shm.size < size:
            shm.close()
            raise SinkUnavailable(
                f"shared memory {self.name!r} already exists and is not a vjbridge block "
                f"of this size; try --out shm:another_name")
        return shm

    def _send(self, frame: np.ndarray, capture_time: float,
              audio: np.ndarray | None) -> None:
        buf = self._shm.buf
        self._seq += 1  # odd: readers retry
        _SEQ.pack_into(buf, _SEQ_OFFSET, self._seq)
        self._pixels[...] = frame
        frames_done = self._seq // 2 + 1
        struct.pack_into("<Qdd", buf, _SEQ_OFFSET + 8, frames_done, capture_time, clock.now())
        self._seq += 1  # even: stable
        _SEQ.pack_into(buf, _SEQ_OFFSET, self._seq)

    def _close(self) -> None:
        shm, self._shm = self._shm, None
        self._pixels = None  # drop the view first, or close() fails with exported pointers
        if shm is not None:
            shm.close()
            try:
                shm.unlink()
            except FileNotFoundError:
                pass
            _CREATED_HERE.discard(self.name)


class ShmReader:
    """Reads the newest frame from a ShmSink's block (any process on the machine)."""

    def __init__(self, name: str = DEFAULT_SHM_NAME) -> None:
        try:
            self._shm = _attach(check_shm_name(name))
        except FileNotFoundError:
            raise SinkUnavailable(f"no shared memory named {name!r}; is the bridge running "
                                  f"with --out shm:{name}?") from None
        magic, version, header_size = struct.unpack_from("<8sII", self._shm.buf, 0)
        if magic != SHM_MAGIC or version != SHM_VERSION:
            self._shm.close()
            raise SinkUnavailable(f"shared memory {name!r} is not a vjbridge v{SHM_VERSION} block")
        self.header_size = header_size

    def header(self) -> ShmHeader:
        f = _HEADER.unpack_from(self._shm.buf, 0)
        return ShmHeader(version=f[1], width=f[3], height=f[4], channels=f[5],
                         write_seq=f[7], frame_count=f[8], capture_time=f[9], write_time=f[10])

    def read(self, retries: int = 1000) -> tuple[np.ndarray, ShmHeader] | None:
        """A copy of the newest complete frame (H, W, 4) and its header, or None if no frame
        has been written yet. Retries while the writer is mid-frame."""
        buf = self._shm.buf
        for _ in range(retries):
            seq = _SEQ.unpack_from(buf, _SEQ_OFFSET)[0]
            if seq % 2:
                continue
            head = self.header()
            if head.frame_count == 0:
                return None
            n = head.width * head.height * head.channels
            pixels = np.frombuffer(buf, np.uint8, n, self.header_size).copy()
            if _SEQ.unpack_from(buf, _SEQ_OFFSET)[0] == seq:
                return pixels.reshape(head.height, head.width, head.channels), head
        raise TimeoutError("shared memory frame kept changing while being read")

    def close(self) -> None:
        if self._shm is not None:
            self._shm.close()
            self._shm = None

    def __enter__(self) -> "ShmReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
