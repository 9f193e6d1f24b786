"""Issue 7, part 2, line-in: the sound device goes away mid-set and comes back. PortAudio gives
no unplug event, so LineIn's watchdog notices the callbacks stopping, plays silence at the real
rate meanwhile, and reopens the device when it returns, while the output keeps its frame rate.

The device is real: a PulseAudio daemon of this test's own, reached by PortAudio through ALSA's
pulse plugin, killed (every stream on it dies, as with an unplugged USB interface: the callbacks
just stop) and started again, with real CC0 drums playing into it."""
from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from bridge import clock
from bridge.sources.base import State
from tests.helpers.pulse import PrivatePulse
from tests.helpers.streams import AMEN, wait_for
from tests.test_reliability import FPS, Running, live


def loud(source, seconds: float = 0.2) -> float:
    window, _ = source.ring.latest(int(source.sample_rate * seconds))
    return float(np.sqrt(np.mean(window ** 2)))


@pytest.fixture
def device(tmp_path, monkeypatch, pulse_null_sink):  # pulse_null_sink: skips cleanly without PulseAudio
    pulse = PrivatePulse(tmp_path).start()
    monkeypatch.setenv("PULSE_SERVER", pulse.server)  # this process's PortAudio talks to it only
    pulse.play(AMEN)
    yield pulse
    pulse.remove()


def test_line_in_survives_its_device_going_away_and_coming_back_while_the_output_keeps_its_rate(
        device, tiny_models, thread_exceptions, caplog):
    duration = 14.0
    threads_before = {t.name for t in threading.enumerate()}
    with live(None, osc_port=None, audio_in="pulse", isolate=False) as session:
        audio = session.audio
        run = Running(session, duration)
        assert audio.device_name == "pulse"  # ALSA's pulse plugin, on this test's own daemon
        assert wait_for(lambda: audio.status.state is State.OK and loud(audio) > 0.02, 5.0), audio.status

        device.stop()  # pulled out
        pulled = time.monotonic()
        assert wait_for(lambda: audio.status.state is State.RECONNECTING, 3.0), audio.status
        noticed = time.monotonic() - pulled
        assert "pulse" in audio.status.reason and "silence" in audio.status.reason
        assert "audio reconnecting" in session.status_line(session.engine.stats)
        assert wait_for(lambda: loud(audio) == 0.0, 1.0)  # silence, not the last loud moment frozen
        before, t0 = audio.ring.written, time.monotonic()
        time.sleep(1.0)
        rate = (audio.ring.written - before) / (time.monotonic() - t0)

        device.start()  # plugged back in
        device.play(AMEN)
        back, back_clock = time.monotonic(), clock.now()
        assert wait_for(lambda: audio.status.state is State.OK and loud(audio) > 0.02, 8.0), audio.status
        recovered = time.monotonic() - back
        reopened = audio.opened_at - back_clock
        result = run.join()
    print(f"\nline-in loss: noticed {noticed:.2f} s after the device went away; silence at {rate:.0f} "
          f"samples/s meanwhile; reopened {reopened:.2f} s and music heard again {recovered:.2f} s after the device "
          f"came back "
          f"(reopens {audio.reopens}, down {audio.lost_for_s:.1f} s); fps {result['fps']}, sent "
          f"{result['sent']}, repeated {result['repeated']}, stalled {result['stalled']}, errors {result['errors']}")
    assert noticed < 1.5
    assert 0.8 * audio.sample_rate < rate < 1.2 * audio.sample_rate  # the analysis sees time pass
    assert audio.reopens == 1 and audio.device_name == "pulse"
    assert reopened < 1.0  # found within a retry interval of its return
    # The music itself follows once the device streams: a freshly started PulseAudio takes ~1.9 s
    # before its first capture callback to any client (measured alone, outside the bridge).
    assert recovered < 3.0
    # the output never noticed: every tick sent, at the rate
    assert result["errors"] == 0 and result["stalled"] == 0
    assert result["sent"] >= FPS * duration * 0.95 and result["fps"] >= FPS * 0.95, result
    assert audio.status.state is State.CLOSED
    # The lost stream's release is left to finish on a thread of its own. It usually ends at
    # once, but PortAudio's stop can hang for good: when the server dies, libpulse's mainloop
    # thread (freeing the connection's shared memory) and PortAudio's capture thread (in
    # snd_pcm_status, through ALSA's pulse plugin) can deadlock on each other, and the stop joins
    # that capture thread. Seen once in about 170 pulls here (gdb showed those two threads) and
    # once in CI. So a release still running must be one blocked inside PyAudio's call, said in
    # the log, and nothing else of ours may be left.
    releasing = [t for t in threading.enumerate() if t.name == "vjbridge-line-in-release"]
    for thread in releasing:
        thread.join(10.0)
    stuck = [t for t in releasing if t.is_alive()]
    for thread in stuck:
        assert where(thread)[:2] == ["pyaudio", "close_portaudio"], where(thread)
    if stuck:
        assert "did not let go of the stream" in caplog.text
    assert len(stuck) <= 1  # only the stream lost with its server; the last one closes cleanly
    leaked = {t.name for t in threading.enumerate() if t not in stuck} - threads_before
    assert not [name for name in leaked if name.startswith("vjbridge-")], leaked
    assert not thread_exceptions


def where(thread: threading.Thread) -> list[str]:
    """`thread`'s Python stack now, innermost first: "pyaudio" for a frame of PyAudio's (a thread
    blocked in PortAudio shows the PyAudio method that called it), else the function's name."""
    frame, names = sys._current_frames().get(thread.ident), []
    while frame is not None:
        in_pyaudio = "pyaudio" in frame.f_code.co_filename.replace("\\", "/").split("/")
        name = "pyaudio" if in_pyaudio else frame.f_code.co_name
        if names[-1:] != [name]:
            names.append(name)
        frame = frame.f_back
    return names


def test_a_device_that_never_comes_back_keeps_the_silence_going_and_close_is_prompt(device):
    from bridge.sources.line_in import LineIn
    source = LineIn("pulse").open()
    try:
        assert wait_for(lambda: source.status.state is State.OK, 5.0), source.status
        device.stop()
        assert wait_for(lambda: source.status.state is State.RECONNECTING, 3.0), source.status
        time.sleep(1.5)  # several reopen attempts against no server at all
        before = source.ring.written
        time.sleep(0.5)
        assert source.ring.written - before > 0.3 * source.sample_rate
        assert source.reopens == 0 and source.status.state is State.RECONNECTING
    finally:
        began = time.monotonic()
        source.close()
        took = time.monotonic() - began
    assert took < 1.0 and source.status.state is State.CLOSED
