"""Mp4Writer / Mp4Sink: real libx264 + AAC through PyAV, checked with PyAV and ffprobe."""
from __future__ import annotations

import json
import shutil
import subprocess
import time

import av
import numpy as np
import pytest

from bridge.sinks import open_sink
from bridge.sinks.file import Mp4Writer

FPS, SR = 25, 44100


def gradient(i: int, w: int, h: int, channels: int = 4) -> np.ndarray:
    f = np.zeros((h, w, channels), np.uint8)
    f[..., 0] = (i * 10) % 256                        # red encodes the frame number
    f[..., 1] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    if channels == 4:
        f[..., 3] = 255
    return f


def probe(path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries",
         "stream=codec_name,codec_type,width,height,pix_fmt,nb_read_frames,duration,sample_rate"
         ",channels", "-of", "json", str(path)],
        check=True, capture_output=True, text=True).stdout
    return {s["codec_type"]: s for s in json.loads(out)["streams"]}


def test_mp4_writer_is_frame_exact_with_audio(tmp_path):
    path = tmp_path / "take.mp4"
    n = 50  # 2.0 s
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(2 * SR) / SR)).astype(np.float32)
    with Mp4Writer(path, 64, 48, FPS, audio_rate=SR) as w:
        per_frame = SR // FPS
        for i in range(n):
            w.write_video(gradient(i, 64, 48, channels=3 if i % 2 else 4))  # RGB and RGBA
            w.write_audio(tone[i * per_frame:(i + 1) * per_frame])  # 1764, not AAC's 1024
    assert w.frames_written == n and w.samples_written == n * per_frame

    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, v.width, v.height) == ("h264", 64, 48)
        assert v.codec_context.pix_fmt == "yuv420p"
        assert a.codec_context.name == "aac" and a.sample_rate == SR
        assert a.codec_context.channels == 1
        frames = list(c.decode(video=0))
    assert len(frames) == n
    # frame i sits at i / fps exactly, and its content is frame i (red = 10 i)
    assert [round(float(f.time) * FPS) for f in frames] == list(range(n))
    reds = [int(np.median(f.to_ndarray(format="rgb24")[..., 0])) for f in frames]
    assert all(abs(r - (i * 10) % 256) <= 3 for i, r in enumerate(reds)), reds

    if shutil.which("ffprobe"):
        s = probe(path)
        assert int(s["video"]["nb_read_frames"]) == n
        assert float(s["video"]["duration"]) == pytest.approx(n / FPS, abs=1e-3)
        assert float(s["audio"]["duration"]) == pytest.approx(n / FPS, abs=0.03)
        assert int(s["audio"]["channels"]) == 1


def test_mp4_writer_pads_odd_sizes_and_is_deterministic(tmp_path):
    def render(path):
        with Mp4Writer(path, 33, 21, 30) as w:
            for i in range(10):
                w.write_video(gradient(i, 33, 21))
        return path.read_bytes()

    first, second = render(tmp_path / "a.mp4"), render(tmp_path / "b.mp4")
    assert first == second
    with av.open(str(tmp_path / "a.mp4")) as c:
        v = c.streams.video[0]
        assert (v.width, v.height) == (34, 22)
        assert c.streams.audio == () or len(c.streams.audio) == 0


def test_mp4_writer_rejects_wrong_frames_and_going_back(tmp_path):
    with Mp4Writer(tmp_path / "x.mp4", 16, 16, 30) as w:
        with pytest.raises(ValueError):
            w.write_video(np.zeros((16, 16, 2), np.uint8))
        w.write_video(gradient(0, 16, 16), pts=5)
        with pytest.raises(ValueError):
            w.write_video(gradient(1, 16, 16), pts=5)
        with pytest.raises(ValueError):
            w.write_audio(np.zeros(10, np.float32))  # made without audio


def test_live_mp4_sink_places_frames_by_capture_time(tmp_path):
    path = tmp_path / "live.mp4"
    sink = open_sink(f"file:{path}", 32, 32, 20, audio_rate=16000)
    t0 = time.monotonic()
    block = np.zeros(800, np.float32)  # 50 ms of audio per frame
    for i in range(20):
        # frame 10 .. 19 arrive as if the engine skipped frame 10's slot: a gap at 0.5 s
        sink.send(gradient(i, 32, 32), t0 + (i + (i >= 10)) / 20, block)
        time.sleep(0.01)
    sink.close()
    assert sink.status.state.value == "closed"
    with av.open(str(path)) as c:
        times = [round(float(f.time) * 20) for f in c.decode(video=0)]
    assert times == sorted(set(times))  # strictly increasing
    assert len(times) == sink.sent and times[-1] == 20  # last frame kept its capture slot
    s = probe(path)
    assert float(s["audio"]["duration"]) == pytest.approx(20 * 0.05, abs=0.08)
