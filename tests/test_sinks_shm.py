"""Shared-memory output: a reader in another process sees the newest frame and its header."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bridge.clock import now
from bridge.errors import SinkUnavailable
from bridge.sinks import open_sink
from bridge.sinks.shm import HEADER_SIZE, SHM_MAGIC, ShmReader, ShmSink

W, H = 40, 30

READER = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from bridge.sinks.shm import ShmReader
    name, want = sys.argv[1], int(sys.argv[2])
    deadline = time.monotonic() + 20
    with ShmReader(name) as r:
        got = r.read()
        while (got is None or got[1].frame_count < want) and time.monotonic() < deadline:
            time.sleep(0.005)
            got = r.read()
        frame, head = got
        print(json.dumps(dict(count=head.frame_count, w=head.width, h=head.height,
                              c=head.channels, capture=head.capture_time,
                              write=head.write_time, pixel=frame[7, 11].tolist(),
                              checksum=int(frame.astype(np.int64).sum()))))
""")


def frame_for(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (H, W, 4), dtype=np.uint8)


def test_shm_round_trip_with_a_reader_in_another_process():
    name = f"vjb_test_{os.getpid()}"
    sink = open_sink(f"shm:{name}", W, H, 30)
    assert isinstance(sink, ShmSink)  # direct, not threaded: one memcpy per frame
    try:
        reader = subprocess.Popen([sys.executable, "-c", READER, name, "5"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        captures = []
        for i in range(5):
            captures.append(now())
            sink.send(frame_for(i), captures[-1])
        out, err = reader.communicate(timeout=30)
        assert reader.returncode == 0, err
        got = json.loads(out)
        last = frame_for(4)
        assert (got["count"], got["w"], got["h"], got["c"]) == (5, W, H, 4)
        assert got["pixel"] == last[7, 11].tolist()
        assert got["checksum"] == int(last.astype(np.int64).sum())
        assert got["capture"] == captures[-1] and got["write"] >= got["capture"]
        # the reader's exit must not have unlinked the writer's block (resource tracker)
        with ShmReader(name) as r:
            frame, head = r.read()
            assert head.frame_count == 5 and np.array_equal(frame, last)
    finally:
        sink.close()
    with pytest.raises(SinkUnavailable, match="no shared memory"):
        ShmReader(name)


def test_shm_header_layout_is_as_documented():
    name = f"vjb_hdr_{os.getpid()}"
    with open_sink(f"shm:{name}", W, H, 30) as sink:
        with ShmReader(name) as r:
            assert r.read() is None  # nothing written yet
            sink.send(frame_for(1), 12.5)
            raw = bytes(r._shm.buf[:HEADER_SIZE + 4])
    magic, version, header_size, w, h, c, _ = struct.unpack_from("<8sIIIIII", raw, 0)
    seq, count, capture = struct.unpack_from("<QQd", raw, 32)
    assert (magic, version, header_size, w, h, c) == (SHM_MAGIC, 1, 64, W, H, 4)
    assert seq == 2 and count == 1 and capture == 12.5
    assert list(raw[64:68]) == frame_for(1)[0, 0].tolist()


def test_shm_refuses_to_overwrite_a_foreign_block():
    from multiprocessing import shared_memory

    name = f"vjb_foreign_{os.getpid()}"
    foreign = shared_memory.SharedMemory(name=name, create=True, size=HEADER_SIZE + W * H * 4)
    try:
        with pytest.raises(SinkUnavailable, match="shm:another_name"):
            open_sink(f"shm:{name}", W, H, 30)
    finally:
        foreign.close()
        foreign.unlink()
