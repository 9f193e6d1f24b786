"""NDI for real, on loopback: an NdiSink is discovered by a cyndilib Finder in another process
and a Receiver there gets frames of the right size, colours and audio."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("cyndilib")

from bridge.clock import now  # noqa: E402
from bridge.sinks import ThreadedSink, open_sink  # noqa: E402
from bridge.sinks.ndi import NdiSink  # noqa: E402
from tests.helpers.ndi import NdiReceiverProcess, receive_ndi  # noqa: E402,F401

W, H = 96, 64
QUADRANTS = {  # (row slice, col slice) → RGBA; saturated so NDI's 4:2:2 codec keeps them apart
    "red": ((slice(0, H // 2), slice(0, W // 2)), (255, 0, 0, 255)),
    "green": ((slice(0, H // 2), slice(W // 2, W)), (0, 255, 0, 255)),
    "blue": ((slice(H // 2, H), slice(0, W // 2)), (0, 0, 255, 255)),
    "white": ((slice(H // 2, H), slice(W // 2, W)), (255, 255, 255, 255)),
}


def pattern() -> np.ndarray:
    img = np.zeros((H, W, 4), np.uint8)
    for (rows, cols), rgba in QUADRANTS.values():
        img[rows, cols] = rgba
    return img


def assert_pattern(received: np.ndarray) -> None:
    assert received.shape == (H, W, 4) and received.dtype == np.uint8
    for name, ((rows, cols), rgba) in QUADRANTS.items():
        # the quadrant's interior, away from edges where chroma subsampling blends colours
        r, c = slice(rows.start + 4, rows.stop - 4), slice(cols.start + 4, cols.stop - 4)
        mean = received[r, c, :3].reshape(-1, 3).mean(axis=0)
        assert np.abs(mean - rgba[:3]).max() < 24, f"{name}: got {mean}, sent {rgba[:3]}"


def test_ndi_sink_is_discovered_and_received_on_loopback():
    img = pattern()
    tone = (0.25 * np.sin(2 * np.pi * 440 * np.arange(1600) / 48000)).astype(np.float32)
    sink = open_sink("ndi:vjb-test-video", W, H, 30, audio_rate=48000)
    try:
        assert isinstance(sink, ThreadedSink) and isinstance(sink.inner, NdiSink)
        cap = receive_ndi("vjb-test-video", pump=lambda: sink.send(img, now(), tone),
                          n_frames=3, timeout_s=20, want_audio=True)
    finally:
        sink.close()
    assert cap.source_name.endswith("(vjb-test-video)")
    assert cap.fourcc in ("RGBA", "RGBX")
    assert cap.frame_rate == pytest.approx(30.0)
    assert len(cap.frames) >= 3
    assert_pattern(cap.frames[-1])
    # audio went out alongside: mono at 48 kHz, the tone's amplitude survives (float path)
    assert cap.audio_sample_rate == 48000 and cap.audio_channels == 1
    assert cap.audio.size >= 1600
    assert np.abs(cap.audio).max() == pytest.approx(0.25, abs=0.01)
    assert sink.sent > 0 and sink.status.state.value == "closed"


def test_ndi_bgra_sender_still_arrives_as_the_same_colours(ndi_receiver):
    # also exercises the fixture form of the helper, with the caller pumping frames itself
    img = pattern()
    sink = NdiSink("vjb-test-bgra", pixel_format="BGRA").open(W, H, 30)
    try:
        rx = ndi_receiver("vjb-test-bgra", n_frames=2, timeout_s=20)
        deadline = time.monotonic() + 30
        while not rx.done() and time.monotonic() < deadline:
            sink.send(img, now())
            time.sleep(1 / 30)
        cap = rx.result(timeout_s=5)
    finally:
        sink.close()
    assert_pattern(cap.frames[-1])


def test_ndi_helper_fails_fast_and_clearly_when_no_sender_exists():
    t = time.monotonic()
    with pytest.raises(AssertionError, match="no NDI source named 'vjb-nobody'"):
        with NdiReceiverProcess("vjb-nobody", timeout_s=1.5) as rx:
            rx.result()
    assert time.monotonic() - t < 15
