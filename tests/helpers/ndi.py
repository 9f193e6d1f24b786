"""Receive frames from a named NDI sender on loopback, for tests that need real NDI.

libndi reads its configuration once, when it initialises (cyndilib does that on import), and
with no LAN its discovery finds nothing. So the receiving side runs in a child process whose
environment has `NDI_CONFIG_DIR` pointing at a temp dir holding `ndi-config.v1.json` with

    {"ndi": {"networks": {"ips": "127.0.0.1", "discovery": ""}}}

("ips" are extra addresses the finder asks directly). Only the receiver needs it; the sender
may live in the test process (or in another process, e.g. the bridge CLI) with no config.
Every wait is bounded: the child gives up after `timeout_s` and is killed a little later.

Use (sender in the test process; keep sending while the child discovers and receives):

    from tests.helpers.ndi import receive_ndi
    cap = receive_ndi("my-sender", pump=lambda: sink.send(frame, now()), n_frames=3)
    cap.frames[-1]  # (H, W, 4) uint8 RGBA

or, when the sender is another process:

    with NdiReceiverProcess("my-sender", n_frames=3, config_dir=tmp_path) as rx:
        ...start the sender...
        cap = rx.result()

or the pytest fixture `ndi_receiver` (a factory: `ndi_receiver("name", n_frames=3)` returns a
started NdiReceiverProcess; import the fixture into a test module or conftest to use it).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

NDI_LOOPBACK_CONFIG = {"ndi": {"networks": {"ips": "127.0.0.1", "discovery": ""}}}
_EXIT_NOT_FOUND = 3
_EXIT_NO_FRAMES = 4


def write_ndi_config(directory: str | os.PathLike) -> Path:
    """Write `ndi-config.v1.json` (loopback discovery) into `directory`; return the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ndi-config.v1.json").write_text(json.dumps(NDI_LOOPBACK_CONFIG))
    return directory


@dataclass
class NdiCapture:
    """What the receiver got. `frames` are RGBA (H, W, 4) uint8, oldest first."""
    source_name: str
    frames: list[np.ndarray]
    fourcc: str
    frame_rate: float
    discovered_after_s: float
    audio: np.ndarray          # mono float32 (first channel), all samples received
    audio_sample_rate: int     # 0 when no audio arrived
    audio_channels: int


class NdiReceiverProcess:
    """A child process that finds `sender_name`, receives `n_frames` video frames (and any audio
    for `audio_s` seconds more when `want_audio`), then writes them to a file and exits."""

    def __init__(self, sender_name: str, n_frames: int = 3, timeout_s: float = 20.0,
                 config_dir: str | os.PathLike | None = None, want_audio: bool = False) -> None:
        self.sender_name = sender_name
        self.n_frames = int(n_frames)
        self.timeout_s = float(timeout_s)
        self.want_audio = want_audio
        self._tmp = tempfile.TemporaryDirectory(prefix="ndi-rx-")
        self.config_dir = write_ndi_config(config_dir or Path(self._tmp.name) / "cfg")
        self.out_path = Path(self._tmp.name) / "capture.npz"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "NdiReceiverProcess":
        env = dict(os.environ, NDI_CONFIG_DIR=str(self.config_dir))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--name", self.sender_name,
               "--frames", str(self.n_frames), "--timeout", str(self.timeout_s),
               "--out", str(self.out_path)]
        if self.want_audio:
            cmd.append("--audio")
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        return self

    def done(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def result(self, timeout_s: float | None = None) -> NdiCapture:
        """Wait for the child; raise AssertionError (with its stderr) unless it got frames."""
        assert self.proc is not None, "call start() first"
        wait = self.timeout_s + 15.0 if timeout_s is None else timeout_s
        try:
            out, err = self.proc.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"NDI receiver hung for {wait:g} s\n{err}") from None
        if self.proc.returncode != 0:
            raise AssertionError(
                f"NDI receiver for {self.sender_name!r} failed "
                f"(exit {self.proc.returncode}):\n{out}\n{err}")
        return _load_capture(self.out_path)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        self._tmp.cleanup()

    def __enter__(self) -> "NdiReceiverProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()


def receive_ndi(sender_name: str, pump: Callable[[], object], n_frames: int = 3,
                timeout_s: float = 20.0, rate_hz: float = 30.0,
                want_audio: bool = False) -> NdiCapture:
    """Run a receiver child for `sender_name` while calling `pump()` (send one frame) at
    `rate_hz` in this thread, until the child finishes; return what it received."""
    with NdiReceiverProcess(sender_name, n_frames, timeout_s, want_audio=want_audio) as rx:
        period = 1.0 / rate_hz
        deadline = time.monotonic() + timeout_s + 10.0
        while not rx.done() and time.monotonic() < deadline:
            pump()
            time.sleep(period)
        return rx.result(timeout_s=5.0)


def _load_capture(path: Path) -> NdiCapture:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        return NdiCapture(
            source_name=meta["source_name"], frames=list(data["frames"]),
            fourcc=meta["fourcc"], frame_rate=meta["frame_rate"],
            discovered_after_s=meta["discovered_after_s"], audio=data["audio"],
            audio_sample_rate=meta["audio_sample_rate"], audio_channels=meta["audio_channels"])


try:  # the fixture is optional so the child process does not need pytest's machinery
    import pytest

    @pytest.fixture
    def ndi_receiver():
        """Factory fixture: `ndi_receiver(name, n_frames=3, ...)` → started NdiReceiverProcess;
        every child is killed and cleaned up after the test."""
        started: list[NdiReceiverProcess] = []

        def start(sender_name: str, **kwargs) -> NdiReceiverProcess:
            rx = NdiReceiverProcess(sender_name, **kwargs).start()
            started.append(rx)
            return rx

        yield start
        for rx in started:
            rx.close()
except ImportError:  # pragma: no cover
    pass


# ---- the child process ----------------------------------------------------------------------
def _fourcc_text(code: int) -> str:
    return int(code).to_bytes(4, "little").decode("ascii", "replace")


def _child(name: str, n_frames: int, timeout_s: float, out: str, want_audio: bool) -> int:
    import cyndilib as ndi
    from cyndilib.receiver import ReceiveFrameType

    t0 = time.monotonic()
    deadline = t0 + timeout_s
    suffix = f"({name})"
    finder = ndi.Finder()
    finder.open()
    try:
        source_name = None
        while source_name is None and time.monotonic() < deadline:
            finder.wait_for_sources(0.2)
            source_name = next((s for s in finder.get_source_names() if s.endswith(suffix)), None)
        if source_name is None:
            print(f"no NDI source named {name!r} within {timeout_s:g} s; saw "
                  f"{finder.get_source_names()}", file=sys.stderr)
            return _EXIT_NOT_FOUND
        discovered = time.monotonic() - t0

        receiver = ndi.Receiver(color_format=ndi.RecvColorFormat.RGBX_RGBA,
                                bandwidth=ndi.RecvBandwidth.highest, recv_name="vjbridge-test")
        video = ndi.VideoRecvFrame()
        receiver.set_video_frame(video)
        audio_frame = ndi.AudioRecvFrame() if want_audio else None
        if audio_frame is not None:
            receiver.set_audio_frame(audio_frame)
        receiver.set_source(finder.get_source(source_name))

        frames: list[np.ndarray] = []
        audio_blocks: list[np.ndarray] = []
        sample_rate = channels = 0
        fourcc, rate = "", 0.0
        audio_until = None
        what = ReceiveFrameType.recv_video | (ReceiveFrameType.recv_audio if want_audio else 0)
        while time.monotonic() < deadline:
            got = receiver.receive(what, 100)
            if got & ReceiveFrameType.recv_video:
                w, h = video.get_resolution()
                stride = video.get_line_stride()
                raw = np.empty(video.get_data_size(), np.uint8)
                video.fill_p_data(raw)
                frames.append(raw[:h * stride].reshape(h, stride)[:, :w * 4]
                              .reshape(h, w, 4).copy())
                fourcc, rate = _fourcc_text(video.get_fourcc()), float(video.get_frame_rate())
            if audio_frame is not None and got & ReceiveFrameType.recv_audio:
                data, _ = audio_frame.get_all_read_data()
                if data.size:
                    audio_blocks.append(np.asarray(data[0], np.float32).copy())
                    sample_rate, channels = audio_frame.sample_rate, audio_frame.num_channels
            if len(frames) >= n_frames:
                if not want_audio:
                    break
                # keep listening a moment so audio that trails the video arrives too
                audio_until = audio_until or time.monotonic() + 1.0
                if time.monotonic() >= audio_until:
                    break
        receiver.disconnect()
        if len(frames) < n_frames:
            print(f"got {len(frames)} of {n_frames} frames from {source_name!r} in "
                  f"{timeout_s:g} s", file=sys.stderr)
            return _EXIT_NO_FRAMES
        meta = dict(source_name=source_name, fourcc=fourcc, frame_rate=rate,
                    discovered_after_s=discovered, audio_sample_rate=int(sample_rate),
                    audio_channels=int(channels))
        audio = np.concatenate(audio_blocks) if audio_blocks else np.zeros(0, np.float32)
        np.savez(out, frames=np.stack(frames), audio=audio, meta=json.dumps(meta))
        return 0
    finally:
        finder.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--audio", action="store_true")
    args = parser.parse_args()
    sys.exit(_child(args.name, args.frames, args.timeout, args.out, args.audio))
