"""Line-in through the real PortAudio -> ALSA -> PulseAudio path, fed by a null sink."""
from __future__ import annotations

import time

import numpy as np
import pytest

from bridge import clock
from bridge.errors import DeviceError
from bridge.sources.audio import LineIn, list_audio_devices
from bridge.sources.base import State
from tests.helpers.streams import AMEN, wait_for


def rms(src: LineIn, seconds: float = 0.1) -> float:
    window, _ = src.ring.latest(int(src.sample_rate * seconds))
    return float(np.sqrt(np.mean(window ** 2)))


def test_line_in_captures_what_plays_into_the_sink(pulse_null_sink):
    with LineIn("default") as src:
        # The ALSA->Pulse bridge takes about a second before the first callback.
        assert wait_for(lambda: src.ring.written > src.sample_rate // 4, timeout=8.0), src.status
        assert src.status.state is State.OK
        assert rms(src, 0.2) < 1e-3  # nothing playing yet: the monitor is silent
        player = pulse_null_sink.play(AMEN, loops=4)
        try:
            assert wait_for(lambda: rms(src) > 0.02, timeout=6.0), rms(src)
            _, t1 = src.ring.latest(1)
            n1 = src.ring.written
            time.sleep(0.3)
            _, t2 = src.ring.latest(1)
            assert t2 > t1 and abs(t2 - clock.now()) < 0.5
            assert src.ring.written - n1 > 0.15 * src.sample_rate
        finally:
            player.terminate()
            player.wait(5)
    assert src.status.state is State.CLOSED


def test_unknown_device_lists_the_inputs(pulse_null_sink):
    # With Pulse up, PortAudio sees its "pulse" and "default" inputs, so the list is not empty.
    inputs = [d for d in list_audio_devices() if d["max_input_channels"] > 0]
    assert inputs
    with pytest.raises(DeviceError) as err:
        LineIn("no such card xyz").open()
    message = str(err.value)
    assert "no such card xyz" in message and "\n" not in message
    for d in inputs:
        assert f"{d['index']}: {d['name']}" in message
    with pytest.raises(DeviceError, match="inputs:"):
        LineIn(987).open()


def test_list_audio_devices_has_the_documented_keys():
    for d in list_audio_devices():
        assert set(d) == {"index", "name", "max_input_channels", "max_output_channels",
                          "default_sample_rate"}


def test_device_at_another_rate_is_converted_to_the_analysis_rate(pulse_null_sink, tmp_path):
    """A device that only runs at 48 kHz (common on Windows): captured at 48 kHz, converted to
    44.1 kHz in the callback; a played 1 kHz tone still reads as 1 kHz."""
    import subprocess
    tone = tmp_path / "tone.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "sine=frequency=1000:sample_rate=48000:duration=6", str(tone)], check=True)
    with LineIn("default", device_rate=48_000) as src:
        assert wait_for(lambda: src.ring.written > src.sample_rate // 4, timeout=8.0), src.status
        player = pulse_null_sink.play(tone)
        try:
            assert wait_for(lambda: rms(src) > 0.05, timeout=6.0), rms(src)
            time.sleep(0.5)
            n1, t1 = src.ring.written, time.monotonic()
            time.sleep(1.0)
            rate = (src.ring.written - n1) / (time.monotonic() - t1)
            window, _ = src.ring.latest(8192)
        finally:
            player.terminate()
            player.wait(5)
    assert rate == pytest.approx(44_100, rel=0.1)  # samples arrive at the analysis rate
    spectrum = np.abs(np.fft.rfft(window * np.hanning(window.size)))
    peak_hz = np.argmax(spectrum) * 44_100 / window.size
    assert peak_hz == pytest.approx(1000, abs=15)
