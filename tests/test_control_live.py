"""The bigger control commands on a live session, over real UDP: triggers, model switching while
the output keeps its rate, whole-state presets (save, recall, morph over beats, hot reload), the
beat clock, and `run --preset` filling in the options not given."""
from __future__ import annotations

import threading
import time

import pytest
from pythonosc.udp_client import SimpleUDPClient

from bridge.control.osc import OscControl
from bridge.control.presets import PresetMorph, PresetWatcher, apply_preset, read_preset
from bridge.errors import ConfigError, ControlError
from bridge.params import CORE_PARAMS, BeatClock, ParamStore, Trigger


def wait_until(check, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return False


def test_triggers_over_osc_toggle_queue_and_refuse(inbox):
    store = ParamStore(CORE_PARAMS, (Trigger("freeze", toggles="freeze"), Trigger("jump", "int", 0, 7)))
    with OscControl(store, port=0, reply=("127.0.0.1", inbox.port)) as osc:
        c = SimpleUDPClient("127.0.0.1", osc.port)
        c.send_message("/vjbridge/trigger/freeze", [])
        assert wait_until(lambda: store.get("freeze") is True)
        c.send_message("/vjbridge/trigger/jump", 3)
        c.send_message("/vjbridge/trigger/jump", 9)  # out of range: refused, nothing queued
        c.send_message("/vjbridge/trigger/jump", 2.5)
        c.send_message("/vjbridge/trigger/nothing", [])
        assert wait_until(lambda: len(inbox.wait_for("/vjbridge/error", 0.1)) >= 3)
        assert store.take_triggers() == [("jump", 3)]
        assert store.take_triggers() == []
        errors = " ".join(a[0] for a in inbox.wait_for("/vjbridge/error"))
        assert "whole number in [0, 7]" in errors and "no trigger 'nothing'" in errors


def test_beat_clock_follows_24_ticks_per_beat_and_goes_stale():
    now = [0.0]
    clock = BeatClock(now=lambda: now[0])
    assert clock.position() is None
    for i in range(48):  # two beats at 120 bpm: a tick every 1/48 s
        now[0] = i / 48.0
        clock.tick()
    bpm, beats = clock.position()
    assert bpm == pytest.approx(120.0, rel=1e-3) and beats == pytest.approx(2.0, abs=0.05)
    now[0] += 1.0
    assert clock.position() is None  # the clock stopped: fall back to the beat tracker


def test_model_switch_keeps_the_output_rate_and_refuses_bad_names(tiny_models, inbox):
    from bridge.live import LiveSession, LiveSettings

    settings = LiveSettings(model="tiny-a", audio_in="silence", outs=["null"], fps=30, runtime="reference",
                            osc_port=0, osc_reply=f"127.0.0.1:{inbox.port}")
    with LiveSession(settings) as session:
        first_pipeline = session.engine.pipeline
        result = {}
        runner = threading.Thread(target=lambda: result.update(session.run(duration=5.0, status_stream=None)))
        runner.start()
        c = SimpleUDPClient("127.0.0.1", session.osc.port)
        time.sleep(1.0)
        c.send_message("/vjbridge/model", "nope")
        c.send_message("/vjbridge/model", "../tiny-b")
        c.send_message("/vjbridge/model", "tiny-b")
        assert wait_until(lambda: ["tiny-b"] in inbox.wait_for("/vjbridge/model", 0.1), 4.0)
        runner.join(10)
    assert session.model_name == "tiny-b" and session.engine.pipeline is not first_pipeline
    assert session.engine.pipeline.model is session.model
    errors = " ".join(a[0] for a in inbox.wait_for("/vjbridge/error"))
    assert "model 'nope' not found" in errors and "wants a bundle name" in errors
    assert result["fps"] >= 28.0 and result["errors"] == 0
    assert "model tiny-b" in session.status_line(session.engine.stats)


def test_whole_state_preset_saved_and_recalled_live(tiny_models, inbox):
    from bridge.live import LiveSession, LiveSettings

    settings = LiveSettings(model="tiny-a", audio_in="silence", outs=["null"], fps=30, runtime="reference",
                            osc_port=0, osc_reply=f"127.0.0.1:{inbox.port}")
    with LiveSession(settings) as session:
        c = SimpleUDPClient("127.0.0.1", session.osc.port)
        c.send_message("/vjbridge/param/brightness", 1.25)
        c.send_message("/vjbridge/preset/save", "set-one")
        path = tiny_models / "presets" / "set-one.toml"
        assert wait_until(path.exists)
        data = read_preset("set-one")
        assert data["preset"]["model"] == "tiny-a" and data["params"]["brightness"] == 1.25
        assert data["session"]["outs"] == ["null"] and data["session"]["audio_in"] == "silence"
        # Another state: another model and other outputs; recalling it switches the model,
        # applies the parameters, and says that the outputs only change at the next start.
        path.with_name("set-two.toml").write_text(
            '[preset]\nmodel = "tiny-b"\n[session]\nouts = ["ndi:stage"]\n[params]\nbrightness = 0.5\n')
        c.send_message("/vjbridge/preset/load", "set-two")
        assert wait_until(lambda: session.model_name == "tiny-b")
        assert session.params.get("brightness") == 0.5
        notes = " ".join(a[0] for a in inbox.wait_for("/vjbridge/error"))
        assert "outs ['ndi:stage'] differs" in notes and "--preset set-two" in notes
        # A recalled preset is watched: saving it again in an editor re-applies it.
        time.sleep(0.05)
        path.with_name("set-two.toml").write_text('[preset]\nmodel = "tiny-b"\n[params]\nbrightness = 0.75\n')
        assert wait_until(lambda: session.params.get("brightness") == 0.75, 3.0)


def test_preset_morph_glides_floats_switches_the_rest_at_the_end_and_yields_to_a_knob():
    store = ParamStore()
    target = {"brightness": 2.0, "smoothing": 0.5, "freeze": True}
    seen = []
    store.watch(lambda e: seen.append((e.name, e.value, e.source)))
    morph = PresetMorph(store, target, seconds=0.6).begin()
    time.sleep(0.3)
    middle = store.get("brightness")
    assert 1.05 < middle < 1.95 and store.get("freeze") is False
    store.set("smoothing", 0.1, source="osc")  # a performer moves it: the morph lets go of it
    assert wait_until(lambda: morph.done, 3.0)
    assert store.get("brightness") == 2.0 and store.get("freeze") is True
    assert store.get("smoothing") == 0.1
    brightness = [v for n, v, s in seen if n == "brightness"]
    assert brightness == sorted(brightness) and len(brightness) > 5  # a glide, not a jump


def test_edited_preset_is_reapplied_and_a_broken_edit_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("VJBRIDGE_PRESETS", str(tmp_path))
    (tmp_path / "live.toml").write_text("[params]\nbrightness = 1.5\n")
    store = ParamStore()
    apply_preset("live", store)
    errors = []
    watcher = PresetWatcher("live", on_change=lambda n: apply_preset(n, store), on_error=errors.append,
                            poll_s=0.05)
    try:
        time.sleep(0.1)
        (tmp_path / "live.toml").write_text("[params]\nbrightness = 0.5\nsmoothing = 0.25\n")
        assert wait_until(lambda: store.get("smoothing") == 0.25)
        before = store.values()
        (tmp_path / "live.toml").write_text("[params]\nbrightness = 1.0\nsmoothing = = 0.3\n")
        assert wait_until(lambda: errors)
        assert "line 3" in errors[0] and store.values() == before
    finally:
        watcher.close()


def test_run_preset_fills_the_options_not_given(tmp_path, monkeypatch):
    from bridge.cli import build_parser, run_settings

    monkeypatch.setenv("VJBRIDGE_PRESETS", str(tmp_path))
    (tmp_path / "club.toml").write_text(
        '[preset]\nmodel = "realnvp-faces"\n[session]\naudio_in = "silence"\nouts = ["null", "ndi:club"]\n'
        'fps = 25\nmidi_map = "generic"\n')
    args = build_parser().parse_args(["run", "--preset", "club", "--fps", "50"])
    settings = run_settings(args)
    assert settings.model == "realnvp-faces" and settings.audio_in == "silence"
    assert settings.outs == ["null", "ndi:club"] and settings.midi_map == "generic"
    assert settings.fps == 50.0  # the command line wins
    (tmp_path / "odd.toml").write_text('[session]\nouts = "null"\n')
    with pytest.raises(ConfigError, match=r"odd.toml: \[session\] outs must be a list of strings"):
        run_settings(build_parser().parse_args(["run", "--preset", "odd"]))
    with pytest.raises(ControlError, match="no preset 'missing'"):
        run_settings(build_parser().parse_args(["run", "--preset", "missing"]))


def test_the_model_in_use_refuses_what_it_cannot_do_before_the_store_changes(inbox):
    from bridge.live import LiveSession, LiveSettings

    settings = LiveSettings(model="realnvp-faces", audio_in="silence", outs=["null"], fps=30,
                            runtime="reference", osc_port=0, osc_reply=f"127.0.0.1:{inbox.port}")
    with LiveSession(settings) as session:
        c = SimpleUDPClient("127.0.0.1", session.osc.port)
        before = session.params.values()
        c.send_message("/vjbridge/param/walk", "linger")  # a cvae walk: realnvp has none such
        c.send_message("/vjbridge/trigger/anchor", 99)  # realnvp-faces has 8 anchors
        c.send_message("/vjbridge/param/walk", "magellan")
        c.send_message("/vjbridge/trigger/anchor", 3)
        assert wait_until(lambda: session.params.get("walk") == "magellan")
        errors = " ".join(a[0] for a in inbox.wait_for("/vjbridge/error"))
        assert "has no walk 'linger'" in errors and "8 anchors" in errors
        assert session.params.take_triggers() == [("anchor", 3)]
        assert {k: v for k, v in session.params.values().items() if k != "walk"} == \
            {k: v for k, v in before.items() if k != "walk"}
        line = session.status_line(session.engine.stats)
        assert "walk" in line and "model realnvp-faces" in line


def test_live_session_learns_a_midi_knob_armed_over_osc(jack_server, tiny_models, inbox):
    """`run --midi-in PATTERN --osc-port P`: /vjbridge/midi/learn arms, a real knob on a JACK port
    is bound (and said so over OSC), then plays the parameter; the status names the port."""
    from bridge.live import LiveSession, LiveSettings
    from tests.test_midi import Controller, cc

    controller = Controller()
    try:
        settings = LiveSettings(model="tiny-a", audio_in="silence", outs=["null"], fps=30,
                                runtime="reference", osc_port=0, osc_reply=f"127.0.0.1:{inbox.port}",
                                midi_in=f"{controller.name}:ctl", midi_api="jack")
        with LiveSession(settings) as session:
            assert any(f"{controller.name}:ctl" in line for line in session.describe())
            c = SimpleUDPClient("127.0.0.1", session.osc.port)
            c.send_message("/vjbridge/midi/learn", "brightness")
            assert wait_until(lambda: session.midi.armed == "brightness")
            controller.send(cc(14, 64))
            learned = inbox.wait_for("/vjbridge/midi/learned")
            assert learned and "cc 14" in learned[0][0]
            for value in (66, 90, 127):  # soft takeover: picks up near 1.0 (64/127 of 0..2)
                controller.send(cc(14, value))
                time.sleep(0.05)
            assert wait_until(lambda: session.params.get("brightness") == 2.0)
            c.send_message("/vjbridge/midi/save", "my-knobs")
            assert wait_until((tiny_models / "presets" / "midi" / "my-knobs.toml").exists)
            assert "midi 1 in" in session.status_line(session.engine.stats)
    finally:
        controller.close()
