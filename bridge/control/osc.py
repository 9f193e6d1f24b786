"""OSC in and out (UDP, python-osc for the wire format): validate, clamp, write params; never
touch a model or a device, never block the engine, never let an exception out.

In, under /vjbridge/:
  /vjbridge/param/<name> VALUE    write a declared parameter (bridge.params); out of range: clamped
  /vjbridge/trigger/<name> [N]    fire a declared trigger (next anchor, anchor N, reset, freeze...)
  /vjbridge/model NAME            switch model (loaded and warmed off the engine's threads; one
                                  kept warm, --keep-warm, swaps in at the next frame)
  /vjbridge/model/cue NAME        load and warm a model now, ready for a switch to it later
  /vjbridge/preset/load NAME      recall presets/NAME.toml (all or nothing; watched for edits)
  /vjbridge/preset/save NAME      save the whole state as presets/NAME.toml
  /vjbridge/preset/morph NAME B   glide to presets/NAME.toml over B beats
  /vjbridge/midi/learn NAME       bind the next MIDI control moved to parameter/trigger NAME
  /vjbridge/midi/save NAME        save the MIDI mapping (learned bindings too) as presets/midi/NAME.toml
  /vjbridge/query                 reply with every parameter's value and the model
Out, to --osc-reply HOST:PORT:
  /vjbridge/heartbeat N, /vjbridge/fps F, /vjbridge/latency_ms F, /vjbridge/model NAME   every second
  /vjbridge/degrade LEVEL         every second: off, or the level run --degrade is at (full, 3/4...)
  /vjbridge/status/<part> STATE REASON   every second and within 0.1 s of a change, for each
                                  source and sink ("audio", "camera", "out/ndi", ...): STATE
                                  is ok, starting, lost, reconnecting, ended or closed; REASON
                                  says why ("" when ok)
  /vjbridge/param/<name> VALUE    whenever a parameter changes (from anyone)
  /vjbridge/trigger/<name> [N]    whenever a trigger fires (from anyone)
  /vjbridge/error "message"       for a refused command or an undecodable packet (at most
                                  ERRORS_PER_S a second; the next one says how many were held back)
  /vjbridge/midi/learned "note"   when MIDI learn has bound a control
  /vjbridge/model/cued NAME       when a cued model is ready (a switch to it lands at the next frame)

Two traps in python-osc are avoided by not using its server: its decoder lets UnicodeDecodeError
escape on packets such as b'/\x80\x00\x00', and its dispatcher sleeps until a bundle's timetag
(a bundle stamped next year would stall the handler thread). Here every packet is decoded inside
a catch-all, and bundles are unpacked and applied at once, whatever their timetag.

A flood of bad packets must not become a flood of log lines or replies (writing them would cost
the engine its frame rate): refusals are logged at most LOG_PER_S lines a second and replied at
most ERRORS_PER_S a second; what is held back is counted and said with the next line let through.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Callable

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.parsing import osc_types

from bridge.errors import ConfigError, ControlError, DeviceError
from bridge.params import ParamStore

log = logging.getLogger(__name__)

PREFIX = "/vjbridge"
MAX_PACKET = 65_507  # the largest UDP payload
HEARTBEAT_S = 1.0
STATE_POLL_S = 0.1  # a part's state change (lost, reconnecting, ok...) goes out within this
LOG_PER_S = 5  # refusal lines written to the log per second, at most
ERRORS_PER_S = 50  # /vjbridge/error replies per second, at most
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class RateLimit:
    """At most `per_second` events pass in any one-second window; the rest are counted. `allow()`
    returns None for an event held back, else how many were held back since the last one passed
    (so the line let through can say so)."""

    def __init__(self, per_second: int, now: Callable[[], float] = time.monotonic):
        self.per_second = int(per_second)
        self.now = now
        self.held_back = 0  # in all
        self._window_start = float("-inf")
        self._passed = 0
        self._pending = 0  # held back since the last event let through
        self._lock = threading.Lock()

    def allow(self) -> int | None:
        with self._lock:
            t = self.now()
            if t - self._window_start >= 1.0:
                self._window_start, self._passed = t, 0
            if self._passed >= self.per_second:
                self.held_back += 1
                self._pending += 1
                return None
            self._passed += 1
            pending, self._pending = self._pending, 0
            return pending


def parse_host_port(text: str, option: str = "--osc-reply") -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not host or not 0 < number < 65536:
        raise ConfigError(f"{option} wants HOST:PORT (e.g. 127.0.0.1:9001), got '{text}'")
    return host, number


BUNDLE_TAG = b"#bundle\x00"


KNOWN_TYPE_TAGS = frozenset("ihfdsbrmtTFN[]")  # what python-osc's parser reads


def _check_type_tags(data: bytes) -> None:
    """Refuse a message with a type tag python-osc does not know: its parser would log a warning
    on the root logger for each such character (a flood of packets, a flood of log lines)."""
    _, index = osc_types.get_string(data, 0)
    if index < len(data):
        tags, _ = osc_types.get_string(data, index)
        unknown = set(tags[1:]) - KNOWN_TYPE_TAGS
        if unknown:
            raise ValueError(f"unknown OSC type tags {''.join(sorted(unknown))!r}")


def decode(data: bytes) -> list[tuple[str, list]]:
    """Every message in a packet as (address, args): bundles are unpacked here (timetags read
    past, never waited for), messages decoded by python-osc. Raises on anything malformed."""
    if not data.startswith(BUNDLE_TAG):
        _check_type_tags(data)
        message = OscMessage(data)
        return [(message.address, list(message.params))]
    out, at = [], len(BUNDLE_TAG) + 8  # tag, then the 8-byte timetag
    if len(data) < at:
        raise ValueError("bundle shorter than its header")
    while at < len(data):
        if at + 4 > len(data):
            raise ValueError("bundle element without a full size")
        size = int.from_bytes(data[at:at + 4], "big", signed=True)
        at += 4
        if size <= 0 or size % 4 or at + size > len(data):
            raise ValueError(f"bundle element of impossible size {size}")
        out += decode(data[at:at + size])
        at += size
    return out


class Actions:
    """What a command that is more than a parameter write does. This plain version works on the
    store alone; the live session (bridge.live.LiveSession) overrides it to switch models and
    recall whole states. Each method returns quickly (slow work goes to a thread) and raises
    ControlError/ConfigError to refuse."""

    def __init__(self, params: ParamStore):
        self.params = params
        self._morph = None  # the preset morph running, if any (a new one replaces it)

    def switch_model(self, name: str) -> None:
        raise ControlError("switching models needs a live session (vjbridge run)")

    def cue_model(self, name: str) -> None:
        raise ControlError("cueing models needs a live session (vjbridge run)")

    def preset_load(self, name: str) -> list[str]:
        from bridge.control.presets import apply_preset
        return apply_preset(name, self.params)[1]

    def preset_save(self, name: str) -> None:
        from bridge.control.presets import save_preset
        save_preset(name, self.params)

    def preset_morph(self, name: str, beats: float) -> None:
        from bridge.control.presets import PresetMorph, check_params, read_preset, tempo_of
        target, _ = check_params(name, read_preset(name), self.params)
        bpm = tempo_of(self.params, self.heard_tempo)
        if self._morph is not None:
            self._morph.cancel()
        self._morph = PresetMorph(self.params, target, beats * 60.0 / bpm).begin()

    def heard_tempo(self) -> float:
        """The beat tracker's tempo in bpm (0: none), used when no MIDI clock runs."""
        return 0.0

    def midi_learn(self, name: str) -> None:
        raise ControlError("MIDI learn needs MIDI input: start with --midi-in")

    def midi_save(self, name: str) -> None:
        raise ControlError("saving a MIDI mapping needs MIDI input: start with --midi-in")


def _one_name(address: str, args: list) -> str:
    if len(args) != 1 or not isinstance(args[0], str):
        raise ControlError(f"{address} wants one name")
    return args[0]


class OscControl:
    def __init__(self, params: ParamStore, host: str = "127.0.0.1", port: int = 9000,
                 reply: tuple[str, int] | None = None, allow: list[str] | None = None,
                 status: Callable[[], dict] | None = None, actions: Actions | None = None,
                 parts: Callable[[], dict] | None = None):
        """`status()`: the once-a-second report (fps, latency_ms, model, degrade, parts);
        `parts()`: only the sources' and sinks' Status by name, polled for changes ten times a
        second (default: read from `status()`)."""
        self.params = params
        self.actions = actions or Actions(params)
        self.host, self.port = host, int(port)
        self.reply = reply
        self.allow = set(allow or [])
        self.status = status or (lambda: {})
        self.parts = parts or (lambda: (self.status() or {}).get("parts") or {})
        self.received = self.refused = self.ignored = 0
        self._sock: socket.socket | None = None
        self._out: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._beats = 0
        self._sent_states: dict[str, tuple[str, str]] = {}  # part -> (state, reason) last sent
        self.log_limit = RateLimit(LOG_PER_S)
        self.error_limit = RateLimit(ERRORS_PER_S)

    # --- life ------------------------------------------------------------------------------
    @property
    def exposed(self) -> bool:
        """True when other machines can reach the listener (not bound to loopback)."""
        return self.host not in LOOPBACK

    def start(self) -> "OscControl":
        if self.exposed:
            allowed = ", ".join(sorted(self.allow)) if self.allow else "ANY sender (add --osc-allow IP)"
            log.warning("OSC listens on %s:%s, open to the network: accepting %s", self.host, self.port,
                        allowed)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            raise DeviceError(f"cannot listen for OSC on {self.host}:{self.port}: {e.strerror or e}") from None
        sock.settimeout(0.2)
        self._sock = sock
        self.port = sock.getsockname()[1]
        if self.reply is not None:
            self._out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.params.listen(self._echo_param)
            self.params.watch(self._echo_trigger)
        for target, name in ((self._listen, "vjbridge-osc-in"), (self._heartbeat, "vjbridge-osc-beat")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _echo_param(self, name: str, value) -> None:
        self.send(f"{PREFIX}/param/{name}", value)

    def close(self) -> None:
        self._stop.set()
        for callback in (self._echo_param, self._echo_trigger):  # the store may outlive us
            self.params.unlisten(callback)
        for thread in self._threads:
            thread.join(timeout=2.0)
        for s in (self._sock, self._out):
            if s is not None:
                s.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # --- in --------------------------------------------------------------------------------
    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self._sock.recvfrom(MAX_PACKET)
            except socket.timeout:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            self.handle_packet(data, sender[0])

    def handle_packet(self, data: bytes, sender: str = "127.0.0.1") -> None:
        """Decode and apply one packet; nothing escapes."""
        if self.allow and sender not in self.allow:
            self.ignored += 1
            return
        try:
            messages = decode(data)
        except Exception as e:  # malformed bytes of any kind, incl. python-osc's UnicodeDecodeError
            self.refused += 1
            self._refuse(f"undecodable OSC packet ({len(data)} bytes): {type(e).__name__}")
            return
        for address, args in messages:
            self.received += 1
            try:
                self.handle(address, args)
            except (ControlError, ConfigError) as e:
                self.refused += 1
                self._refuse(str(e))
            except Exception as e:  # a bug in a handler must not take the OSC thread down
                self.refused += 1
                self._refuse(f"{address[:80]!r}: {type(e).__name__}: {e}", level=logging.ERROR)

    def _refuse(self, message: str, level: int = logging.INFO) -> None:
        """Say why something was refused: in the log and over OSC, each rate-limited."""
        held = self.log_limit.allow()
        if held is not None:
            log.log(level, "OSC: %s%s", message[:200], f" ({held} more held back)" if held else "")
        held = self.error_limit.allow()
        if held is not None:
            self.send(f"{PREFIX}/error", message + (f" ({held} more held back)" if held else ""))

    def handle(self, address: str, args: list) -> None:
        """One message: validate and write params. Raises ControlError on a refusal."""
        if address.startswith(f"{PREFIX}/param/"):
            name = address[len(f"{PREFIX}/param/"):]
            if len(args) != 1:
                raise ControlError(f"{address} wants one value, got {len(args)}")
            note = self.params.set(name, args[0], source="osc")
            if note:
                self._refuse(note)
        elif address.startswith(f"{PREFIX}/trigger/"):
            name = address[len(f"{PREFIX}/trigger/"):]
            if len(args) > 1:
                raise ControlError(f"{address} wants at most one value, got {len(args)}")
            self.params.trigger(name, args[0] if args else None, source="osc")
        elif address == f"{PREFIX}/preset/load":
            for note in self.actions.preset_load(_one_name(address, args)):
                self._refuse(note)
        elif address == f"{PREFIX}/preset/save":
            self.actions.preset_save(_one_name(address, args))
        elif address == f"{PREFIX}/preset/morph":
            if len(args) != 2 or not isinstance(args[0], str) or isinstance(args[1], (bool, str)) \
                    or not isinstance(args[1], (int, float)) or not 0 <= args[1] <= 256:
                raise ControlError(f"{address} wants a preset name and 0..256 beats, got {args!r}")
            self.actions.preset_morph(args[0], float(args[1]))
        elif address == f"{PREFIX}/model":
            self.actions.switch_model(_one_name(address, args))
        elif address == f"{PREFIX}/model/cue":
            self.actions.cue_model(_one_name(address, args))
        elif address == f"{PREFIX}/midi/learn":
            self.actions.midi_learn(_one_name(address, args))
        elif address == f"{PREFIX}/midi/save":
            self.actions.midi_save(_one_name(address, args))
        elif address == f"{PREFIX}/query":
            for name, value in self.params.values().items():
                self.send(f"{PREFIX}/param/{name}", value)
            self._send_status()
        else:
            raise ControlError(f"unknown OSC address {address!r} (vjbridge listens under {PREFIX}/)")

    # --- out -------------------------------------------------------------------------------
    def send(self, address: str, *args) -> None:
        if self._out is None or self.reply is None:
            return
        try:
            builder = OscMessageBuilder(address=address)
            for a in args:
                builder.add_arg(a if not isinstance(a, float) else float(a))
            self._out.sendto(builder.build().dgram, self.reply)
        except Exception as e:  # a full buffer or unreachable peer must not stop anything
            log.debug("OSC reply %s failed: %s", address, e)

    def _echo_trigger(self, event) -> None:
        """A fired trigger goes back out (a controller can flash the button it belongs to)."""
        if event.kind == "trigger":
            self.send(f"{PREFIX}/trigger/{event.name}", *([] if event.value is None else [event.value]))

    def _send_status(self) -> None:
        status = self.status() or {}
        for key in ("fps", "latency_ms"):
            if status.get(key) is not None:  # no latency yet before the first frame
                self.send(f"{PREFIX}/{key}", float(status[key]))
        if "model" in status:
            self.send(f"{PREFIX}/model", str(status["model"]))
        if "degrade" in status:
            self.send(f"{PREFIX}/degrade", str(status["degrade"]))
        self._send_parts(status.get("parts") or {}, changed_only=False)

    def _send_parts(self, parts: dict, changed_only: bool) -> None:
        """/vjbridge/status/<part> for each source and sink (`changed_only`: those whose state
        or reason differs from what was last sent: a worker replaced in half a second still
        shows as reconnecting, not only at the next whole second)."""
        for part, state in parts.items():
            now = (state.state.value, state.reason)
            if changed_only and self._sent_states.get(part) == now:
                continue
            self._sent_states[part] = now
            self.send(f"{PREFIX}/status/{part}", *now)

    def _heartbeat(self) -> None:
        next_beat = time.monotonic() + HEARTBEAT_S
        while not self._stop.wait(STATE_POLL_S):
            beat = time.monotonic() >= next_beat
            if beat:
                next_beat = max(next_beat + HEARTBEAT_S, time.monotonic())
                self._beats += 1
                self.send(f"{PREFIX}/heartbeat", self._beats)
            try:
                if beat:
                    self._send_status()
                else:
                    self._send_parts(self.parts(), changed_only=True)
            except Exception as e:
                log.debug("OSC status failed: %s", e)
