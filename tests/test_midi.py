"""MIDI through a real JACK server (dummy driver) and python-rtmidi virtual ports: a controller's
virtual output plays a real ParamStore (and so the picture); learn, soft takeover, 14-bit, relative
encoders, pads, program change, clock, feedback to LED rings, hot-plug, and garbage that never
raises. Mapping files give one-line errors with the file and line."""
from __future__ import annotations

import time
import uuid

import pytest
import rtmidi
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.control.midi import MidiControl, list_ports
from bridge.control.midi_mapping import (CCBinding, MidiMapping, NoteBinding, load_mapping, mapping_to_toml,
                                         parse_mapping, save_mapping_file)
from bridge.control.presets import save_preset
from bridge.errors import ConfigError, ControlError, DeviceError
from bridge.params import CORE_PARAMS, CORE_TRIGGERS, Param, ParamStore, Trigger

JACK = rtmidi.API_UNIX_JACK
# The core declaration plus an int and a choice parameter and an int trigger, to play every kind.
PARAMS = CORE_PARAMS + (Param("level", "int", 0, 0, 10), Param("look", "choice", "a", choices=("a", "b", "c")))
TRIGGERS = CORE_TRIGGERS + (Trigger("reset"), Trigger("anchor", arg="int", low=0, high=7))


def store() -> ParamStore:
    return ParamStore(PARAMS, TRIGGERS)


def wait_until(check, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


class Controller:
    """A hardware controller stand-in: a virtual output port ("NAME:ctl") to play from, and a
    virtual input port ("NAME-fb:leds") that collects what the bridge sends back. (Read by polling,
    like the bridge does: a Python callback on JACK's thread can deadlock a sync-mode server.)"""

    def __init__(self, name: str | None = None, leds: bool = False):
        self.name = name or unique("ctl")
        self.out = rtmidi.MidiOut(JACK, name=self.name)
        self.out.open_virtual_port("ctl")
        self._received: list[list[int]] = []
        self.leds = None
        if leds:
            self.leds = rtmidi.MidiIn(JACK, name=f"{self.name}-fb")  # JACK renames a second same-named client
            self.leds.open_virtual_port("leds")

    @property
    def received(self) -> list[list[int]]:
        """Everything the bridge sent back so far (read from the port's queue)."""
        while self.leds is not None and (event := self.leds.get_message()) is not None:
            self._received.append(event[0])
        return self._received

    def send(self, *messages, gap: float = 0.0) -> None:
        for message in messages:
            self.out.send_message(message)
            if gap:
                time.sleep(gap)

    def close(self) -> None:
        for port in (self.leds, self.out):
            if port is not None:
                port.close_port()
                port.delete()
        self.leds = self.out = None


@pytest.fixture
def rig(jack_server):
    """make(mapping, **kw) -> (controller, MidiControl on that controller's ports, started)."""
    made = []

    def make(mapping=None, params=None, leds=False, **kw):
        controller = Controller(leds=leds)
        kw.setdefault("in_pattern", f"{controller.name}:ctl")
        if leds:
            kw.setdefault("out_pattern", f"{controller.name}-fb:leds")
        midi = MidiControl(params or store(), mapping=mapping, api="jack", **kw).start()
        made.append((controller, midi))
        assert midi.ports()["in"] == [f"{controller.name}:ctl"]
        return controller, midi

    yield make
    for controller, midi in made:
        midi.close()
        controller.close()


def settle(midi: MidiControl, received: int, timeout: float = 2.0) -> None:
    assert wait_until(lambda: midi.received >= received, timeout), (midi.received, received, midi.last_error)


def cc(number: int, value: int, channel: int = 1) -> list[int]:
    return [0xB0 | (channel - 1), number, value]


# --- the whole way: a knob changes the parameter and the picture ------------------------------
def test_cc_sweep_changes_the_parameter_and_the_picture(rig):
    from bridge.engine import FramePipeline
    from bridge.runtime import Runner
    from tests.test_engine import tiny_model

    params = ParamStore()  # the real declaration, as the live bridge has it
    controller, midi = rig(MidiMapping(cc=[CCBinding(7, param="brightness", channel=1)]), params=params)
    model = tiny_model()
    pipeline = FramePipeline(model, runner=Runner(model, runtime="reference"), params=params)

    def picture_mean() -> float:
        return float(pipeline.make_frame(pipeline.snapshot(None), dt=1.0)[..., :3].mean())

    normal = picture_mean()
    seen = []
    params.listen(lambda name, value: seen.append(value))
    controller.send(*[cc(7, v) for v in range(0, 128)])  # from the bottom: held until it passes 1.0
    settle(midi, 128)
    assert midi.held > 0 and seen and seen == sorted(seen)
    assert min(seen) == pytest.approx(1.0, abs=0.05)  # picked up near 1.0
    assert params.get("brightness") == 2.0
    bright = picture_mean()
    controller.send(*[cc(7, v) for v in range(127, -1, -1)])
    settle(midi, 256)
    assert params.get("brightness") == 0.0, (midi.received, midi.held, midi.errors, midi.last_error, seen[-4:])
    assert bright > normal + 5 and picture_mean() == 0.0  # brighter, then black
    assert midi.errors == 0, midi.last_error


# --- learn -------------------------------------------------------------------------------------
def test_learn_binds_the_next_control_and_saves_it(rig, tmp_path, monkeypatch):
    monkeypatch.setenv("VJBRIDGE_PRESETS", str(tmp_path))
    controller, midi = rig()
    params = midi.store
    with pytest.raises(ControlError, match="did you mean smoothing"):
        midi.arm("smoothin")
    midi.arm("smoothing", takeover="jump")
    assert midi.armed == "smoothing" and "learning smoothing" in midi.status
    controller.send(cc(21, 100, channel=3))
    assert midi.learn_event.wait(2.0)
    assert midi.armed is None and midi.learned == ["smoothing <- 7-bit cc 21 on channel 3"]
    assert params.get("smoothing") == 0.0  # the learning move only binds
    controller.send(cc(21, 127, channel=3), cc(21, 127, channel=4))  # another channel: not bound
    settle(midi, 3)
    assert params.get("smoothing") == 0.95

    midi.arm("trigger/reset")  # a pad for a trigger
    controller.send([0x90, 40, 100])
    assert midi.learn_event.wait(2.0)
    controller.send([0x80, 40, 0], [0x90, 40, 90])
    settle(midi, 6)
    assert params.take_triggers() == [("reset", None)]

    midi.arm("brightness")  # a 14-bit knob sends its LSB (cc n + 32) right behind the MSB
    controller.send(cc(2, 64), cc(34, 5))
    assert midi.learn_event.wait(2.0) and wait_until(lambda: "14-bit" in midi.learned[-1])

    path = midi.save_mapping("learned")
    assert path == tmp_path / "midi" / "learned.toml"
    again = load_mapping("learned", params)
    assert mapping_to_toml(again) == mapping_to_toml(midi.mapping)
    assert [(b.param, b.number, b.channel, b.bits, b.takeover) for b in again.cc] == \
        [("smoothing", 21, 3, 7, "jump"), ("brightness", 2, 1, 14, "soft")]
    assert [(n.trigger, n.note) for n in again.notes] == [("reset", 40)]


# --- soft takeover -----------------------------------------------------------------------------
def test_soft_takeover_holds_until_the_knob_passes_the_value(rig):
    controller, midi = rig(MidiMapping(cc=[CCBinding(7, param="brightness"), CCBinding(8, param="smoothing",
                                                                                        takeover="jump")]))
    params = midi.store
    controller.send(cc(7, 10), cc(7, 30), cc(7, 50))  # brightness 1.0 sits at 63.5 of 127
    settle(midi, 3)
    assert params.get("brightness") == 1.0 and midi.held == 3
    controller.send(cc(7, 80))  # jumped over the value: picked up
    settle(midi, 4)
    assert params.get("brightness") == pytest.approx(80 / 127 * 2)

    params.set("brightness", 0.2, source="osc")  # someone else moved it: the knob lets go
    controller.send(cc(7, 90), cc(7, 20))  # 0.2 sits at 12.7: neither reached nor passed
    settle(midi, 6)
    assert params.get("brightness") == 0.2
    controller.send(cc(7, 10))  # passed it
    settle(midi, 7)
    assert params.get("brightness") == pytest.approx(10 / 127 * 2)
    controller.send(cc(7, 11))  # and follows from there
    settle(midi, 8)
    assert params.get("brightness") == pytest.approx(11 / 127 * 2)

    controller.send(cc(8, 127))  # takeover = "jump": at once
    settle(midi, 9)
    assert params.get("smoothing") == 0.95


# --- kinds of controls -------------------------------------------------------------------------
def test_14bit_cc_resolves_finer_than_7bit(rig):
    controller, midi = rig(MidiMapping(cc=[CCBinding(3, param="brightness", bits=14, takeover="jump")]))
    params = midi.store
    values = []
    params.listen(lambda name, value: values.append(value))
    controller.send(cc(3, 100), cc(35, 77))
    settle(midi, 2)
    assert values == [pytest.approx((100 * 128 + 77) / 16383 * 2)]  # once per pair, not per byte
    controller.send(cc(3, 100), cc(35, 78))
    settle(midi, 4)
    assert 0 < values[-1] - values[-2] < 2 / 127 / 50  # a 14-bit step, far below a 7-bit one
    controller.send(cc(3, 127), cc(35, 127))
    settle(midi, 6)
    assert params.get("brightness") == 2.0


def test_relative_encoders_and_value_kinds(rig):
    mapping = MidiMapping(cc=[
        CCBinding(10, param="brightness", mode="relative-twos", step=0.1),
        CCBinding(11, param="brightness", mode="relative-binoffset", step=0.1),
        CCBinding(12, param="brightness", mode="relative-signmag", step=0.1),
        CCBinding(13, param="level", mode="relative-twos"),
        CCBinding(20, param="level", takeover="jump"),
        CCBinding(21, param="look", takeover="jump"),
        CCBinding(22, param="freeze", takeover="jump"),
    ])
    controller, midi = rig(mapping)
    params = midi.store
    steps = [(cc(10, 1), 1.1), (cc(10, 127), 1.0), (cc(10, 3), 1.3), (cc(11, 66), 1.5), (cc(11, 63), 1.4),
             (cc(12, 2), 1.6), (cc(12, 0x41), 1.5), (cc(10, 64), 0.0)]  # two's complement 64 = -64
    for n, (message, expected) in enumerate(steps, 1):
        controller.send(message)
        settle(midi, n)
        assert params.get("brightness") == pytest.approx(expected), message
    controller.send(cc(13, 3), cc(13, 127))  # int: one per tick
    settle(midi, len(steps) + 2)
    assert params.get("level") == 2
    n = len(steps) + 2
    for message, name, expected in [(cc(20, 63), "level", 5), (cc(20, 64), "level", 5), (cc(20, 70), "level", 6),
                                    (cc(21, 0), "look", "a"), (cc(21, 50), "look", "b"), (cc(21, 127), "look", "c"),
                                    (cc(22, 64), "freeze", True), (cc(22, 63), "freeze", False)]:
        controller.send(message)
        n += 1
        settle(midi, n)
        assert params.get(name) == expected, message
    assert midi.errors == 0, midi.last_error


def test_notes_and_pads_fire_triggers_and_play_bool_params(rig):
    mapping = MidiMapping(notes=[NoteBinding(36, trigger="reset"), NoteBinding(37, trigger="anchor", arg=5),
                                 NoteBinding(38, param="freeze"), NoteBinding(39, param="blackout", action="momentary"),
                                 NoteBinding(40, trigger="blackout", channel=10)],
                          cc=[CCBinding(64, trigger="reset")])
    controller, midi = rig(mapping)
    params = midi.store
    controller.send([0x90, 36, 100], [0x80, 36, 0], [0x90, 37, 1], [0x90, 37, 0])
    settle(midi, 4)
    assert params.take_triggers() == [("reset", None), ("anchor", 5)]
    controller.send([0x90, 38, 127], [0x80, 38, 0])  # toggle on press
    settle(midi, 6)
    assert params.get("freeze") is True
    controller.send([0x90, 39, 127])  # momentary: held...
    settle(midi, 7)
    assert params.get("blackout") is True
    controller.send([0x90, 39, 0])  # ...released (note on with velocity 0 is a note off)
    settle(midi, 8)
    assert params.get("blackout") is False
    controller.send([0x90, 40, 127], [0x99, 40, 127])  # channel 1: not bound; channel 10: toggles
    settle(midi, 10)
    assert params.get("blackout") is True
    controller.send(cc(64, 127), cc(64, 127), cc(64, 0), cc(64, 100))  # a cc button: once per press
    settle(midi, 14)
    assert params.take_triggers() == [("reset", None), ("reset", None)]


def test_program_change_recalls_presets(rig, tmp_path, monkeypatch):
    monkeypatch.setenv("VJBRIDGE_PRESETS", str(tmp_path))
    for name, brightness in (("intro", 0.5), ("drop", 1.5), ("3", 0.25)):
        preset = store()
        preset.set("brightness", brightness)
        save_preset(name, preset)
    controller, midi = rig(MidiMapping(programs=["intro", "drop"], cc=[CCBinding(7, param="brightness")]))
    params = midi.store
    controller.send([0xC0, 1])
    settle(midi, 1)
    assert params.get("brightness") == 1.5
    controller.send([0xC0, 0])
    settle(midi, 2)
    assert params.get("brightness") == 0.5
    controller.send([0xC0, 5])  # no preset for program 5: ignored
    settle(midi, 3)
    assert params.get("brightness") == 0.5 and midi.errors == 0

    controller2, by_number = rig(MidiMapping(programs_by_number=True), params=params)
    controller2.send([0xC5, 2], [0xC5, 9])  # program 2 is "3" (counting from 1); "10" does not exist
    settle(by_number, 2)
    assert params.get("brightness") == 0.25
    assert by_number.errors == 1 and "no preset '10'" in by_number.last_error


def test_midi_clock_sets_the_tempo(rig):
    controller, midi = rig()
    params = midi.store
    period = 60.0 / (120 * 24)  # 120 bpm, 24 ticks per beat
    controller.send([0xFA])
    start = time.perf_counter()
    for n in range(96):  # four beats, on absolute deadlines
        time.sleep(max(0.0, start + n * period - time.perf_counter()))
        controller.send([0xF8])
    settle(midi, 97)
    position = params.clock.position()
    assert position is not None
    bpm, beats = position
    assert bpm == pytest.approx(120, rel=0.05)
    assert beats == pytest.approx(4.0, abs=0.3)
    controller.send([0xFC])  # stop
    settle(midi, 98)
    assert params.clock.position() is None and params.clock.ticks == 0


# --- out ---------------------------------------------------------------------------------------
def test_feedback_follows_values_but_never_echoes_the_sender(rig):
    mapping = MidiMapping(cc=[CCBinding(7, param="brightness", channel=2, takeover="jump"),
                              CCBinding(8, param="brightness", channel=2),
                              CCBinding(3, param="smoothing", bits=14),
                              CCBinding(16, param="brightness", mode="relative-twos", step=0.1)],
                          notes=[NoteBinding(38, param="freeze")])
    controller, midi = rig(mapping, leds=True)
    assert midi.ports()["out"] == [f"{controller.name}-fb:leds"]
    # an output that opens is shown every bound value at once
    assert wait_until(lambda: len(controller.received) >= 6)
    assert [0xB1, 7, 64] in controller.received and [0x90, 38, 0] in controller.received
    controller.received.clear()

    params = midi.store
    params.set("brightness", 0.5, source="osc")
    params.set("smoothing", 0.95, source="osc")
    params.set("freeze", True, source="osc")
    expected = [[0xB1, 7, 32], [0xB1, 8, 32], [0xB0, 16, 32], [0xB0, 3, 127], [0xB0, 35, 127], [0x90, 38, 127]]
    assert wait_until(lambda: sorted(controller.received) == sorted(expected)), controller.received

    controller.received.clear()
    controller.send(cc(7, 127, channel=2))  # the fader itself: its twin and the ring follow, it does not
    assert wait_until(lambda: len(controller.received) >= 2)
    time.sleep(0.1)
    assert sorted(controller.received) == [[0xB0, 16, 127], [0xB1, 8, 127]]
    controller.received.clear()
    controller.send(cc(16, 127))  # an encoder's own ring does follow it
    assert wait_until(lambda: [0xB0, 16, 121] in controller.received)  # 1.9 of 2


def test_hot_plug_opens_new_ports_and_survives_vanishing_ones(jack_server):
    name = unique("plug")
    midi = MidiControl(store(), MidiMapping(cc=[CCBinding(7, param="level", takeover="jump")]),
                       in_pattern=name, api="jack", poll_s=0.2).start()
    try:
        assert midi.ports() == {"in": [], "out": []} and midi.status == "in: none; out: none"
        controller = Controller(name)
        began = time.monotonic()
        assert wait_until(lambda: midi.ports()["in"] == [f"{name}:ctl"], 2.0)
        assert time.monotonic() - began < 2.0
        controller.send(cc(7, 127))
        assert wait_until(lambda: midi.store.get("level") == 10)
        controller.send(*[cc(7, v) for v in range(100)])  # pull the plug mid-stream
        controller.close()
        assert wait_until(lambda: midi.ports()["in"] == [], 2.0)
        again = Controller(name)  # plugged back in
        assert wait_until(lambda: midi.ports()["in"] == [f"{name}:ctl"], 2.0)
        again.send(cc(7, 0))
        assert wait_until(lambda: midi.store.get("level") == 0)
        again.close()
        assert midi.errors == 0, midi.last_error
    finally:
        midi.close()
        midi.close()  # idempotent


# --- garbage -------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.one_of(st.lists(st.integers(-300, 300), max_size=5), st.binary(max_size=5), st.none(), st.text(max_size=3)))
def test_any_message_is_handled_without_raising(message):
    mapping = MidiMapping(cc=[CCBinding(7, param="brightness", takeover="jump"),
                              CCBinding(3, param="look", bits=14, takeover="jump")],
                          notes=[NoteBinding(36, trigger="anchor", arg=1)], programs=["nowhere"])
    midi = MidiControl(store(), mapping)  # not started: handle() is the whole of what a message does
    midi.handle(message)
    assert midi.received == 1


def test_short_and_odd_messages_on_the_wire_change_nothing(rig):
    controller, midi = rig(MidiMapping(cc=[CCBinding(7, param="brightness", takeover="jump")]))
    # (an unterminated sysex, [0xF0, 1], makes rtmidi's JACK input swallow everything up to the next
    # 0xF7: that end byte is sent here, as a device finishing its sysex would)
    junk = [[0xB0], [0xB0, 7], [0x07, 100], [0x90, 60], [0xF0, 1, 2, 0xF7], [0xFE], [0xF0, 1], [0xB0, 7, 0x80],
            [0xF7], [0xE0, 0, 64], [0xD0, 5], [0xA0, 60, 1], [0xF2, 1, 2], [0xB0, 7, 0x80]]
    controller.send(*junk)
    controller.send(cc(7, 0))
    assert wait_until(lambda: midi.store.get("brightness") == 0.0), (midi.received, midi.last_error)
    assert midi.errors == 0 and midi.store.values() == {**store().values(), "brightness": 0.0}


# --- mapping files and backends -------------------------------------------------------------------
def test_mapping_files_round_trip_and_the_example_loads(tmp_path, monkeypatch):
    generic = load_mapping("generic")  # presets/midi/generic.toml, against the real declaration
    assert generic.cc and generic.notes and generic.programs_by_number
    monkeypatch.setenv("VJBRIDGE_PRESETS", str(tmp_path))
    mapping = MidiMapping(cc=[CCBinding(3, param="brightness", channel=16, bits=14, takeover="jump"),
                              CCBinding(9, param="level", mode="relative-signmag", step=2),
                              CCBinding(64, trigger="anchor", arg=7)],
                          notes=[NoteBinding(1, param="freeze", action="momentary")],
                          programs=["a", "b-2"], program_channel=4, in_pattern="nano, launch*", out_pattern="nano")
    path = save_mapping_file("mine", mapping)
    assert path == tmp_path / "midi" / "mine.toml"
    again = load_mapping("mine", store())
    assert mapping_to_toml(again) == mapping_to_toml(mapping)
    assert again.preset_for(1) == "b-2" and again.in_pattern == "nano, launch*"


@pytest.mark.parametrize("text, where", [
    ('[[cc]]\nparam = "brightnes"\nnumber = 7\n', r"bad\.toml:2: \[\[cc\]\] #1 param: no parameter 'brightnes' "
                                                   r"\(did you mean brightness\?\)"),
    ('[[cc]]\nparam = "level"\nnumber = 7\n\n[[cc]]\nparam = "look"\nnumber = 200\n',
     r"bad\.toml:7: \[\[cc\]\] #2 number: wants a whole number 0\.\.127, got 200"),
    ('[[note]]\nnote = 3\nparam = "brightness"\n', r"bad\.toml:3: .*bool parameter"),
    ('[[cc]]\nparam = "level"\nnumber = 3\nbits = 14\n[[cc]]\nparam = "look"\nnumber = 35\n',
     r"bad\.toml:7: .*LSB of 14-bit cc 3"),
    ('[[note]]\nnote = 1\ntrigger = "anchor"\n', r"bad\.toml:1: \[\[note\]\] #1 arg: .*whole number"),
    ('[[cc]]\nparam = "level"\nnumbr = 4\n', r"bad\.toml:3: .*numbr: unknown key"),
    ('[[cc]]\nparam = "level"\nnumber = 4\nmode = "relative"\n', r"bad\.toml:4: .*mode: wants one of absolute"),
    ('[program]\npresets = ["../etc"]\n', r"bad\.toml:2: \[program\] presets"),
    ('[knobs]\n', r"bad\.toml: no table \[knobs\]"),
    ('[[cc]\nparam = 1\n', r"bad\.toml: not valid TOML .*line 1"),
])
def test_mapping_errors_are_one_line_with_file_and_line(text, where):
    with pytest.raises(ConfigError, match=where) as error:
        parse_mapping(text, "bad.toml", PARAMS, TRIGGERS)
    assert "\n" not in str(error.value)


def test_missing_mapping_and_bad_backends_say_so(jack_server, tmp_path, monkeypatch):
    monkeypatch.setenv("VJBRIDGE_PRESETS", str(tmp_path))
    with pytest.raises(ConfigError, match="no MIDI mapping 'nope'.*available: none"):
        MidiControl(store(), mapping="nope")
    with pytest.raises(DeviceError, match=r"MIDI backend 'winmm' is not available .*\(available: .*jack"):
        MidiControl(store(), api="winmm").start()
    ports = list_ports("jack")
    assert ports["api"] == "Jack" and isinstance(ports["in"], list)
    assert not any(p.startswith("vjbridge") for p in ports["in"] + ports["out"])  # never our own
    monkeypatch.setenv("JACK_DEFAULT_SERVER", unique("no-such-server"))
    with pytest.raises(DeviceError, match="no MIDI backend could start.*JACK server not running") as error:
        MidiControl(store(), api="jack").start()
    assert "\n" not in str(error.value)
