"""AudioStream against a real ffmpeg HTTP server on loopback: receive, lose, recover."""
from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

from bridge.sources.audio import AudioStream
from bridge.sources.base import State
from tests.helpers.streams import AMEN, FfmpegAudioServer, free_port, wait_for


def rms(src: AudioStream, seconds: float = 0.2) -> float:
    window, _ = src.ring.latest(int(src.sample_rate * seconds))
    return float(np.sqrt(np.mean(window ** 2)))


@pytest.fixture
def server():
    srv = FfmpegAudioServer(AMEN, free_port()).start()
    yield srv
    srv.stop()


def test_stream_receives_reconnects_with_silence_and_recovers(server):
    with AudioStream(server.url, timeout_s=2.0) as src:
        assert wait_for(lambda: src.status.state is State.OK and rms(src) > 0.02, 10.0), src.status

        server.stop()
        assert wait_for(lambda: src.status.state is State.RECONNECTING, 10.0), src.status
        assert src.status.reason  # says why (stream ended / connection refused)
        assert server.url in src.status.reason
        assert wait_for(lambda: rms(src) == 0.0, 3.0)  # silence, not a frozen window
        before = src.ring.written
        time.sleep(0.5)
        fed = src.ring.written - before
        assert 0.3 * src.sample_rate < fed < 0.8 * src.sample_rate  # at about the real rate

        time.sleep(3.0)  # down long enough for the back-off to reach its longest wait
        server.start()
        back = time.monotonic()
        assert wait_for(lambda: src.status.state is State.OK and rms(src) > 0.02, 12.0), src.status
        took = time.monotonic() - back
        print(f"\nstream: heard again {took:.2f} s after the server was restarted (ffmpeg's own start included)")
        assert took < 2.0
        assert src.reconnects >= 1
    assert src.status.state is State.CLOSED


def test_stalled_server_times_out_into_reconnecting():
    # A server that accepts and then says nothing: only the socket timeout can notice.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/live.mp3"
    try:
        with AudioStream(url, timeout_s=0.5) as src:
            assert wait_for(lambda: src.status.state is State.RECONNECTING, 5.0), src.status
            assert "retry in" in src.status.reason
            before = src.ring.written
            assert wait_for(lambda: src.ring.written > before + src.sample_rate // 5, 2.0)
    finally:
        stop.set()
        thread.join(2)
        for conn in accepted:
            conn.close()
        listener.close()


@pytest.mark.parametrize("muxer, scheme", [("mpegts", "udp"), ("rtp_mpegts", "rtp")])
def test_udp_and_rtp_streams_are_received(muxer, scheme):
    """MPEG-TS over plain UDP and over RTP, pushed by ffmpeg to 127.0.0.1: the listener side
    (the bridge) binds the port, as it would for a sender on the LAN."""
    import subprocess
    port = free_port()
    url = f"{scheme}://127.0.0.1:{port}"
    with AudioStream(url, timeout_s=2.0) as src:
        sender = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(AMEN),
             "-c:a", "mp2", "-f", muxer, url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert wait_for(lambda: src.status.state is State.OK and rms(src) > 0.02, 15.0), src.status
        finally:
            sender.kill()
            sender.wait(5)


def test_srt_stream_is_received_through_the_ffmpeg_command():
    """PyAV's wheels are built without SRT; the stream source notices ('Protocol not found') and
    reads through the system ffmpeg instead. The bridge listens, an ffmpeg sender calls in."""
    import subprocess
    port = free_port()
    with AudioStream(f"srt://127.0.0.1:{port}?mode=listener", timeout_s=2.0) as src:
        sender = None
        try:
            deadline = time.monotonic() + 20.0
            while time.monotonic() < deadline and not (src.status.state is State.OK and rms(src) > 0.02):
                if sender is None or sender.poll() is not None:  # keep calling until the listener is up
                    sender = subprocess.Popen(
                        ["ffmpeg", "-nostdin", "-loglevel", "quiet", "-re", "-stream_loop", "-1",
                         "-i", str(AMEN), "-c:a", "mp2", "-f", "mpegts",
                         f"srt://127.0.0.1:{port}?mode=caller"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.3)
            assert src.status.state is State.OK and rms(src) > 0.02, src.status
        finally:
            if sender is not None:
                sender.kill()
                sender.wait(5)
