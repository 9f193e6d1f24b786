"""MIDI in and out (python-rtmidi; raw bytes parsed here): controllers play the declared parameters
and triggers (bridge.params), and only ever write into the store.

Mapping files (presets/midi/NAME.toml, $VJBRIDGE_PRESETS/midi when set) bind controls to
parameters and triggers: their format, parsing and checks are in bridge.control.midi_mapping.

Threads: no Python callback is given to rtmidi. A callback runs on the backend's thread (on JACK,
its realtime process thread) and needs the GIL there: the audio graph then waits on Python, and a
python-rtmidi call that waits for the next JACK cycle while holding the GIL (closing a port does)
deadlocks a server in sync mode. So rtmidi queues incoming messages in C, with their arrival
times, and one worker thread reads them every POLL_IN_S, parses, validates and writes into the
store; the knobs' state needs no locks and no exception ever reaches rtmidi. A poller thread opens
ports that appear and closes those that vanish (hot-plug). Feedback is queued to the worker too:
a listener never sends from the thread that changed the value (it may be the engine's).

Soft takeover: an absolute knob moves its parameter only once it passes (or comes within PICKUP
of) the current value; whenever anything else changes that parameter (OSC, a preset, another
knob), its knobs must pick it up again. Relative encoders move from the current value and need none.
"""
from __future__ import annotations

import fnmatch
import logging
import math
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bridge import clock
from bridge.control.midi_mapping import (CHANNEL_MODE_CC, MODES, TAKEOVERS, CCBinding, MidiMapping, NoteBinding,
                                         check_mapping, load_mapping, moved_by, name_hint, relative_ticks,
                                         save_mapping_file, share_of, value_at)
from bridge.errors import ConfigError, ControlError, DeviceError
from bridge.params import ControlEvent, ParamStore

log = logging.getLogger(__name__)

CLIENT = "vjbridge"  # our client name on the MIDI system: every port of ours starts with it
PICKUP = 3 / 127  # soft takeover: a knob this close to the value (share of the range) picks it up
POLL_IN_S = 0.002  # the worker reads the input queues this often (MIDI clock keeps its own times)
MAX_READ = 4096  # messages read from one port per round (rtmidi's queue holds 1024)
LEARN_PAIR_S = 0.05  # cc n+32 this soon after a learned cc n (n < 32): the control is 14-bit
# Backend names accepted besides rtmidi's own (alsa, jack, core, winmm)
API_ALIASES = {"coremidi": "core", "macos": "core", "mm": "winmm", "windows": "winmm", "windows-mm": "winmm"}


# --- backend ------------------------------------------------------------------------------------
def _rtmidi():
    try:
        import rtmidi
    except ImportError:
        raise DeviceError("MIDI needs python-rtmidi: pip install python-rtmidi") from None
    return rtmidi


def open_backend(api: str | None = None, client_name: str = CLIENT):
    """(rtmidi module, api number, port lister in, port lister out). `api` None: the system's
    default (rtmidi's choice), falling back to every other backend compiled in (on Linux without
    an ALSA sequencer, JACK); a name (alsa, jack, coremidi, winmm): that one only."""
    rtmidi = _rtmidi()
    compiled = [a for a in rtmidi.get_compiled_api() if a != rtmidi.API_RTMIDI_DUMMY]
    if api is None or api.strip().lower() in ("", "default", "auto"):
        candidates = [rtmidi.API_UNSPECIFIED] + compiled
    else:
        names = {rtmidi.get_api_name(a): a for a in compiled}
        key = API_ALIASES.get(api.strip().lower(), api.strip().lower())
        if key not in names:
            raise DeviceError(f"MIDI backend '{api}' is not available in this python-rtmidi "
                              f"(available: {', '.join(names) or 'none'})")
        candidates = [names[key]]
    reasons = []
    for candidate in candidates:
        try:
            lister_in = rtmidi.MidiIn(candidate, name=client_name)
            chosen = lister_in.get_current_api()
            return rtmidi, chosen, lister_in, rtmidi.MidiOut(chosen, name=client_name)
        except Exception as e:  # rtmidi.SystemError: no ALSA sequencer, no JACK server...
            if candidate != rtmidi.API_UNSPECIFIED:
                reasons.append(f"{rtmidi.get_api_display_name(candidate)}: {str(e).strip()}")
    raise DeviceError(f"no MIDI backend could start ({'; '.join(reasons) or 'none compiled in'})")


def ours(port: str, client_name: str = CLIENT) -> bool:
    """Our own ports (the inputs and outputs this bridge opened) show up in the port lists too:
    they must never be opened, or feedback would loop back in."""
    return port.startswith(client_name)


def list_ports(api: str | None = None) -> dict:
    """Every MIDI port there is (for `vjbridge midi ports`): {"api", "in": [...], "out": [...]}."""
    rtmidi, chosen, lister_in, lister_out = open_backend(api)
    try:
        return {"api": rtmidi.get_api_display_name(chosen),
                "in": [p for p in lister_in.get_ports() if not ours(p)],
                "out": [p for p in lister_out.get_ports() if not ours(p)]}
    finally:
        lister_in.delete()
        lister_out.delete()


class PortPattern:
    """Which ports to open: "*" or "" -> every port; otherwise comma-separated parts of a name,
    case-insensitive, each a plain substring or a glob (* ?). None -> no port."""

    def __init__(self, text: str | None):
        self.text = text
        self.parts = None if text is None else [p.strip().lower() for p in text.split(",") if p.strip()]

    def matches(self, port: str) -> bool:
        if self.parts is None:
            return False
        if not self.parts or "*" in self.parts:
            return True
        name = port.lower()
        return any(fnmatch.fnmatchcase(name, p) if any(c in p for c in "*?[") else p in name
                   for p in self.parts)


class _PortClock:
    """When a message really arrived: the backend's delta times are taken on its own thread as the
    message comes in, so clock ticks keep their spacing however late the worker reads them. The smallest
    delay seen is the best guess of the offset; it may creep up slowly (a backend clock a little
    slower than ours must not leave the ticks ever further behind)."""

    DRIFT = 1e-3

    def __init__(self):
        self.elapsed: float | None = None
        self.offset = math.inf

    def __call__(self, delta: float) -> float:
        now = clock.now()
        delta = max(float(delta), 0.0) if self.elapsed is not None else 0.0
        self.elapsed = delta if self.elapsed is None else self.elapsed + delta
        self.offset = min(self.offset + self.DRIFT * delta, now - self.elapsed)
        return self.offset + self.elapsed


@dataclass
class _Knob:
    """What a bound control remembers between messages (worker thread only)."""
    engaged: bool = False  # soft takeover: it has passed the value and now moves it
    last: float | None = None  # its last position (share of travel), even while it did not move it
    msb: int | None = None  # 14-bit: the coarse half, waiting for its LSB
    seen_lsb: bool = False  # 14-bit: has this control ever sent an LSB?
    pressed: bool = False  # a cc button: fire once per press


# --- the controller -----------------------------------------------------------------------------
class MidiControl:
    """MIDI in (knobs, pads, program change, clock) -> the store; values -> MIDI out (feedback).

    `mapping`: a MidiMapping, a mapping name (presets/midi/NAME.toml) or None (learn from scratch).
    `in_pattern` / `out_pattern` (see PortPattern) override the mapping's [ports]; with neither,
    every input and no output. `on_program(preset_name)` recalls a preset on a program change
    (default: bridge.control.presets.apply_preset). `start()` opens the ports and the threads;
    `close()` stops everything (idempotent)."""

    def __init__(self, store: ParamStore, mapping: MidiMapping | str | None = None,
                 in_pattern: str | None = None, out_pattern: str | None = None,
                 api: str | None = None, poll_s: float = 1.0, client_name: str = CLIENT):
        if not poll_s > 0:
            raise ConfigError(f"MIDI port poll interval must be > 0 s, got {poll_s!r}")
        self.store = store
        if isinstance(mapping, str):
            mapping = load_mapping(mapping, store)
        elif mapping is not None:
            mapping = check_mapping(mapping, store)
        self.mapping = mapping or MidiMapping()
        self.in_ports = PortPattern(in_pattern if in_pattern is not None else (self.mapping.in_pattern or "*"))
        self.out_ports = PortPattern(out_pattern if out_pattern is not None else self.mapping.out_pattern)
        self.poll_s = float(poll_s)
        self.client_name = client_name
        self.api_name = api
        self.on_program: Callable[[str], object] = self._apply_preset
        self.on_learned: Callable[[str], None] | None = None
        self.received = self.ignored = self.held = self.errors = 0
        self.last_error = ""
        self.learned: list[str] = []  # "brightness <- 7-bit cc 7 on channel 1", newest last
        self.learn_event = threading.Event()  # set when a control was bound
        self._armed: tuple[tuple[str, str], str, str, int | None] | None = None  # ((kind, name), mode, takeover, arg)
        self._just_learned: tuple[CCBinding, int, float] | None = None
        self._knobs: dict[object, _Knob] = {}
        self._local = threading.local()  # .writer: the binding whose write is under way
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: dict[str, tuple[object, object]] = {}  # feedback: name -> (value, binding not to echo to)
        self._lock = threading.Lock()  # pending feedback and the mapping's index
        self._ports_lock = threading.Lock()
        self._inputs: dict[str, tuple[object, _PortClock]] = {}  # port name -> (rtmidi.MidiIn, its clock)
        self._outputs: dict[str, object] = {}  # port name -> rtmidi.MidiOut
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._started = False
        self._reindex()
        self.rtmidi = self.api = self._lister_in = self._lister_out = None

    # --- life ----------------------------------------------------------------------------------
    def start(self) -> "MidiControl":
        """Open the backend and the matching ports now; then the worker and the hot-plug poller."""
        if self._started:
            return self
        self.rtmidi, self.api, self._lister_in, self._lister_out = open_backend(self.api_name, self.client_name)
        self._started = True
        self.store.listen(self._heard_value)
        self.store.watch(self._heard_event)
        self._refresh_ports()
        for target, name in ((self._work, "vjbridge-midi"), (self._poll, "vjbridge-midi-ports")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for callback in (self._heard_value, self._heard_event):  # the store may outlive us
            self.store.unlisten(callback)
        for thread in self._threads:
            thread.join(timeout=2.0)
        with self._ports_lock:
            for name in list(self._inputs):
                self._close_input(name)
            for name in list(self._outputs):
                self._close_output(name)
        for lister in (self._lister_in, self._lister_out):
            if lister is not None:
                lister.delete()
        self._lister_in = self._lister_out = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # --- what the lead's status line shows ---------------------------------------------------
    def ports(self) -> dict[str, list[str]]:
        with self._ports_lock:
            return {"in": sorted(self._inputs), "out": sorted(self._outputs)}

    @property
    def status(self) -> str:
        """"in: X, Y; out: Z" (and what is being learned)."""
        ports, armed = self.ports(), self.armed
        text = f"in: {', '.join(ports['in']) or 'none'}; out: {', '.join(ports['out']) or 'none'}"
        return text + (f"; learning {armed}" if armed else "")

    @property
    def short_status(self) -> str:
        ports, armed = self.ports(), self.armed
        text = f"{len(ports['in'])} in/{len(ports['out'])} out"
        if armed:
            text += f", learning {armed}"
        return text + (f", {self.errors} errors" if self.errors else "")

    # --- learn ------------------------------------------------------------------------------------
    def arm(self, name: str, mode: str = "absolute", takeover: str = "soft", arg: int | None = None) -> None:
        """Bind the next control moved (a cc, or a note for triggers and bool params) to the
        parameter or trigger `name` ("param/NAME" or "trigger/NAME" where both exist, like
        freeze; a bare name means the parameter). ControlError for an unknown name or a bad arg."""
        kind, _, bare = name.rpartition("/") if isinstance(name, str) else ("", "", name)
        if kind not in ("", "param", "trigger") or not isinstance(bare, str):
            raise ControlError(f"MIDI learn wants NAME, param/NAME or trigger/NAME, got {name!r}")
        if kind == "trigger" or (kind == "" and bare not in self.store.params):
            if bare not in self.store.triggers:
                known = list(self.store.params) + list(self.store.triggers)
                raise ControlError(f"MIDI learn: no parameter or trigger {bare!r}{name_hint(bare, known)}")
            self.store.triggers[bare].check(arg)
            target = ("trigger", bare)
        elif bare in self.store.params:
            if arg is not None:
                raise ControlError(f"MIDI learn: {bare} is a parameter; only triggers take a number")
            target = ("param", bare)
        else:
            raise ControlError(f"MIDI learn: no parameter {bare!r}{name_hint(bare, self.store.params)}")
        if mode not in MODES or takeover not in TAKEOVERS:
            raise ControlError(f"MIDI learn: mode must be one of {', '.join(MODES)} and takeover "
                               f"one of {', '.join(TAKEOVERS)}")
        self.learn_event.clear()
        self._armed = (target, mode, takeover, arg)

    def disarm(self) -> None:
        self._armed = None

    @property
    def armed(self) -> str | None:
        armed = self._armed
        return armed[0][1] if armed else None

    def save_mapping(self, name: str) -> Path:
        """Write the mapping, learned bindings included, as presets/midi/NAME.toml."""
        with self._lock:
            return save_mapping_file(name, self.mapping)

    # --- the worker: read the inputs, send feedback ------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                name = self._queue.get(timeout=POLL_IN_S)  # feedback wakes it at once
            except queue.Empty:
                name = None
            try:
                if name:
                    self._send_feedback(name)
                self._read_inputs()
            except Exception as e:  # the worker must outlive any bug
                self._error(f"worker: {type(e).__name__}: {e}")

    def _read_inputs(self) -> None:
        batch = []
        with self._ports_lock:  # the poller must not close a port while we read it
            for port, (midi_in, stamp) in self._inputs.items():
                for _ in range(MAX_READ):
                    event = midi_in.get_message()
                    if event is None:
                        break
                    message, delta = event
                    batch.append((message, stamp(delta)))
        for message, t in batch:
            self.handle(message, t)

    def _error(self, message: str) -> None:
        self.errors += 1
        self.last_error = message
        log.debug("MIDI: %s", message)

    # --- in: parse and write (the worker thread) --------------------------------------------
    def handle(self, message, t: float | None = None) -> None:
        """One raw MIDI message (a list of byte values): validate, write into the store. Nothing
        escapes: a refusal or a bug is counted in `errors` with `last_error`."""
        try:
            if not self._dispatch(message, clock.now() if t is None else t):
                self.ignored += 1
        except (ControlError, ConfigError) as e:
            self._error(str(e))
        except Exception as e:
            self._error(f"{type(e).__name__}: {e} (message {message!r:.60})")
        self.received += 1  # counted once done, so a caller that sees the count sees the effect

    def _dispatch(self, message, t: float) -> bool:
        """True when the message meant something to us."""
        if not isinstance(message, (list, tuple, bytes, bytearray)) or not message \
                or not all(isinstance(b, int) and 0 <= b <= 255 for b in message):
            return False
        status = message[0]
        if status < 0x80:  # a data byte first: a broken message (rtmidi resolves running status)
            return False
        if status >= 0xF0:  # system messages: clock, start, stop; sysex and active sensing ignored
            if status == 0xF8:
                self.store.clock.tick(t)
            elif status in (0xFA, 0xFC):
                self.store.clock.reset()
            return status in (0xF8, 0xFA, 0xFC)
        kind, channel = status & 0xF0, status & 0x0F
        wanted = 1 if kind in (0xC0, 0xD0) else 2
        if len(message) < 1 + wanted or any(b >= 0x80 for b in message[1:1 + wanted]):
            return False
        if kind == 0xB0:
            return self._on_cc(channel, message[1], message[2], t)
        if kind in (0x80, 0x90):
            return self._on_note(channel, message[1], kind == 0x90 and message[2] > 0)
        if kind == 0xC0:
            return self._on_program(channel, message[1])
        return False  # aftertouch, pitch bend: not bound

    def _bindings(self, index: dict, channel: int, number: int) -> list:
        return index.get((channel + 1, number), []) + index.get((None, number), [])

    def _on_cc(self, channel: int, number: int, value: int, t: float) -> bool:
        if self._armed is not None and number < CHANNEL_MODE_CC:
            return self._learn_cc(channel, number, t)
        just = self._just_learned
        if just is not None and just[0].param and not just[0].relative and just[0].bits == 7 \
                and number == just[0].number + 32 < 64 and channel == just[1] and t - just[2] <= LEARN_PAIR_S:
            with self._lock:  # the LSB right behind a learned MSB: a 14-bit control
                just[0].bits = 14
                self._reindex()
            self.learned[-1] = just[0].describe()
            self._just_learned = None
            return True
        index, lsb_index = self._cc_index, self._lsb_index
        hits = self._bindings(index, channel, number)
        for binding in self._bindings(lsb_index, channel, number):
            knob = self._knob(binding)
            knob.seen_lsb = True
            if knob.msb is not None:
                self._absolute(binding, knob, ((knob.msb << 7) | value) / 16383)
        for binding in hits:
            knob = self._knob(binding)
            if binding.trigger:
                pressed = value >= 64
                if pressed and not knob.pressed:
                    self._write(binding, lambda: self.store.trigger(binding.trigger, binding.arg, source="midi"))
                knob.pressed = pressed
            elif binding.relative:
                self._relative(binding, relative_ticks(binding.mode, value))
            elif binding.bits == 14:  # the LSB right behind completes it: one write per pair
                if not knob.seen_lsb and knob.msb is not None:  # a second MSB and still no LSB:
                    self._absolute(binding, knob, value / 127)  # a controller that sends none
                knob.msb = value
            else:
                self._absolute(binding, knob, value / 127)
        return bool(hits) or bool(self._bindings(lsb_index, channel, number))

    def _absolute(self, binding: CCBinding, knob: _Knob, share: float) -> None:
        param = self.store.declared(binding.param)
        value = value_at(param, share)
        if binding.takeover == "soft" and not knob.engaged:
            current = self.store.get(param.name)
            at = share_of(param, current)
            crossed = knob.last is not None and (knob.last - at) * (share - at) <= 0
            knob.engaged = value == current or abs(share - at) <= PICKUP or crossed
        knob.last = share
        if not knob.engaged and binding.takeover == "soft":
            self.held += 1  # the knob is elsewhere: it waits until it passes the value
            return
        self._write(binding, lambda: self.store.set(param.name, value, source="midi"))

    def _relative(self, binding: CCBinding, ticks: int) -> None:
        if ticks == 0:
            return
        param = self.store.declared(binding.param)
        value = moved_by(param, self.store.get(param.name), ticks, binding.step)
        self._write(binding, lambda: self.store.set(param.name, value, source="midi"))

    def _on_note(self, channel: int, note: int, pressed: bool) -> bool:
        if self._armed is not None:
            return pressed and self._learn_note(channel, note)
        hits = self._bindings(self._note_index, channel, note)
        for binding in hits:
            if binding.trigger:
                if pressed:
                    self._write(binding, lambda: self.store.trigger(binding.trigger, binding.arg, source="midi"))
            elif binding.action == "momentary":
                self._write(binding, lambda: self.store.set(binding.param, pressed, source="midi"))
            elif pressed:
                self._write(binding, lambda: self.store.set(binding.param, not self.store.get(binding.param),
                                                             source="midi"))
        return bool(hits)

    def _on_program(self, channel: int, program: int) -> bool:
        m = self.mapping
        if m.program_channel is not None and m.program_channel != channel + 1:
            return False
        name = m.preset_for(program)
        if name is None:
            return False
        for note in self.on_program(name) or ():
            log.warning("MIDI program %d: %s", program, note)
        return True

    def _apply_preset(self, name: str) -> list[str]:
        from bridge.control.presets import apply_preset
        return apply_preset(name, self.store)[1]

    def _write(self, binding, write: Callable[[], object]) -> None:
        """Write on behalf of `binding`: its own knob stays engaged and gets no echo."""
        self._local.writer = binding
        try:
            write()
        finally:
            self._local.writer = None

    def _knob(self, binding) -> _Knob:
        knob = self._knobs.get(binding)
        if knob is None:
            knob = self._knobs[binding] = _Knob()
        return knob

    # --- learn (worker thread) -------------------------------------------------------------------
    def _learn_cc(self, channel: int, number: int, t: float) -> bool:
        (kind, name), mode, takeover, arg = self._armed
        if kind == "param":
            binding = CCBinding(number, param=name, channel=channel + 1, mode=mode, takeover=takeover)
        else:
            binding = CCBinding(number, trigger=name, arg=arg, channel=channel + 1)
        with self._lock:
            self.mapping.cc = [b for b in self.mapping.cc
                               if not (b.number == number and b.channel in (None, channel + 1))]
            self.mapping.cc.append(binding)
            self._reindex()
        self._just_learned = (binding, channel, t)
        self._learned(binding)
        return True

    def _learn_note(self, channel: int, note: int) -> bool:
        (kind, name), _, _, arg = self._armed
        if kind == "param":
            if self.store.params[name].kind != "bool":
                return False  # a pad cannot play a fader: keep waiting for a cc
            binding = NoteBinding(note, param=name, channel=channel + 1)
        else:
            binding = NoteBinding(note, trigger=name, arg=arg, channel=channel + 1)
        with self._lock:
            self.mapping.notes = [n for n in self.mapping.notes
                                  if not (n.note == note and n.channel in (None, channel + 1))]
            self.mapping.notes.append(binding)
            self._reindex()
        self._just_learned = None
        self._learned(binding)
        return True

    def _learned(self, binding) -> None:
        self._armed = None
        self.learned.append(binding.describe())
        log.info("MIDI learned %s", self.learned[-1])
        self.learn_event.set()
        if self.on_learned is not None:
            try:
                self.on_learned(self.learned[-1])
            except Exception as e:
                self._error(f"on_learned: {type(e).__name__}: {e}")

    def _reindex(self) -> None:
        """Look-up tables by (channel or None, number), rebuilt whole (readers on other threads
        see the old or the new one, never half of one). Called with self._lock held or alone."""
        cc, lsb, notes, by_param = {}, {}, {}, {}
        for b in self.mapping.cc:
            cc.setdefault((b.channel, b.number), []).append(b)
            if b.bits == 14:
                lsb.setdefault((b.channel, b.number + 32), []).append(b)
        for n in self.mapping.notes:
            notes.setdefault((n.channel, n.note), []).append(n)
        for b in list(self.mapping.cc) + list(self.mapping.notes):
            if b.param:
                by_param.setdefault(b.param, []).append(b)
        self._cc_index, self._lsb_index, self._note_index, self._by_param = cc, lsb, notes, by_param

    # --- soft takeover and feedback: store listeners (any thread) --------------------------------
    def _heard_event(self, event: ControlEvent) -> None:
        """A parameter changed by anyone but a knob itself: its knobs must pick it up again."""
        if self._closed or event.kind != "param":
            return
        writer = getattr(self._local, "writer", None)
        for binding in self._by_param.get(event.name, ()):
            if binding is not writer and binding in self._knobs:
                self._knobs[binding].engaged = False

    def _heard_value(self, name: str, value) -> None:
        if self._closed or name not in self._by_param:
            return
        writer = getattr(self._local, "writer", None)
        with self._lock:
            fresh = name not in self._pending
            self._pending[name] = (value, writer)
        if fresh:
            self._queue.put(name)  # the worker sends it: never from the writer's thread

    def _feedback_for(self, name: str, value, skip) -> list[list[int]]:
        param = self.store.params[name]
        messages = []
        for b in self._by_param.get(name, ()):
            if b is skip and not getattr(b, "relative", False):
                continue  # the control that sent it is there already (an encoder's ring is not)
            channel = (b.channel or 1) - 1
            if isinstance(b, NoteBinding):
                messages.append([0x90 | channel, b.note, 127 if value else 0])
            elif b.bits == 14:
                raw = round(share_of(param, value) * 16383)
                messages += [[0xB0 | channel, b.number, raw >> 7], [0xB0 | channel, b.number + 32, raw & 0x7F]]
            else:
                messages.append([0xB0 | channel, b.number, round(share_of(param, value) * 127)])
        return messages

    def _send_feedback(self, name: str) -> None:
        with self._lock:
            value, skip = self._pending.pop(name, (None, None))
        if value is None or not self._outputs:
            return
        try:
            messages = self._feedback_for(name, value, skip)
        except Exception as e:
            self._error(f"feedback {name}: {type(e).__name__}: {e}")
            return
        with self._ports_lock:
            for port, out in self._outputs.items():
                try:
                    for message in messages:
                        out.send_message(message)
                except Exception as e:
                    self._error(f"feedback to {port}: {type(e).__name__}: {e}")

    def _send_all_feedback(self) -> None:
        """A new output port: show it every bound value."""
        for name in list(self._by_param):
            self._heard_value(name, self.store.get(name))

    # --- ports and hot-plug (poller thread) ----------------------------------------------------
    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._refresh_ports()
            except Exception as e:
                self._error(f"port poll: {type(e).__name__}: {e}")

    def _refresh_ports(self) -> None:
        ins = [p for p in self._lister_in.get_ports() if not ours(p, self.client_name) and self.in_ports.matches(p)]
        outs = [p for p in self._lister_out.get_ports() if not ours(p, self.client_name) and self.out_ports.matches(p)]
        opened_out = False
        with self._ports_lock:
            if self._closed:
                return
            for name in [n for n in self._inputs if n not in ins]:
                self._close_input(name)
            for name in [n for n in self._outputs if n not in outs]:
                self._close_output(name)
            for name in ins:
                if name not in self._inputs:
                    self._open(name, self._open_input)
            for name in outs:
                if name not in self._outputs:
                    opened_out |= self._open(name, self._open_output)
        if opened_out:
            self._send_all_feedback()

    def _open(self, name: str, opener) -> bool:
        try:
            opener(name)
            log.info("MIDI opened %s", name)
            return True
        except Exception as e:  # it vanished between listing and opening, or the backend refused
            self._error(f"cannot open MIDI port {name}: {str(e).strip()}")
            return False

    def _open_input(self, name: str) -> None:
        midi_in = self.rtmidi.MidiIn(self.api, name=self.client_name)
        try:
            index = midi_in.get_ports().index(name)
            midi_in.ignore_types(sysex=True, timing=False, active_sense=True)  # clock in, the rest out
            midi_in.open_port(index, name="in")
        except Exception:
            midi_in.delete()
            raise
        self._inputs[name] = (midi_in, _PortClock())

    def _open_output(self, name: str) -> None:
        midi_out = self.rtmidi.MidiOut(self.api, name=self.client_name)
        try:
            midi_out.open_port(midi_out.get_ports().index(name), name="out")
        except Exception:
            midi_out.delete()
            raise
        self._outputs[name] = midi_out

    def _close_input(self, name: str) -> None:
        midi_in, _ = self._inputs.pop(name)
        try:
            midi_in.close_port()  # (no callback to cancel first: see "Threads" above)
            midi_in.delete()
        except Exception as e:
            self._error(f"closing {name}: {type(e).__name__}: {e}")
        log.info("MIDI closed %s", name)

    def _close_output(self, name: str) -> None:
        midi_out = self._outputs.pop(name)
        try:
            midi_out.close_port()
            midi_out.delete()
        except Exception as e:
            self._error(f"closing {name}: {type(e).__name__}: {e}")
