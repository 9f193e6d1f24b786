"""Record every control event of a set to a file, and play it back: live (`run --replay`, a
rehearsal) or offline (`render --replay`, the same frames every time).

The file is JSON Lines (UTF-8), written and flushed one line at a time, so a crash loses at most
the line being written. Line 1 is the header, then one line per accepted event, in order:

    {"vjbridge_recording": 1, "model": "pix2pix-pulse", "fps": 30.0, "seed": 0, "walk": null,
     "started": "2025-01-31T21:04:05.123+01:00", "params": {"smoothing": 0.0, "brightness": 1.0, ...}}
    {"t": 1.250034, "kind": "param", "name": "brightness", "value": 0.4, "source": "osc"}
    {"t": 2.5, "kind": "param", "name": "freeze", "value": true, "source": "midi"}
    {"t": 2.5, "kind": "trigger", "name": "freeze", "value": true, "source": "midi"}
    {"t": 3.0, "kind": "trigger", "name": "reset", "value": null, "source": "osc"}

`t` is seconds since the recording's zero (`Recorder.start(t0)`, on bridge.clock), rounded to a
microsecond; `params` holds every parameter's value when recording began, and a replay starts by
writing them. A toggle trigger (freeze, blackout) writes its parameter and then is announced: the
recorder writes both lines, and gives the trigger's line the value the toggle set, so replaying it
sets that value (a no-op after its parameter line) instead of toggling a second time; a toggle
line with null (written by hand) toggles. Writes by a running preset morph (source "morph") are
not recorded by default: they happen every 1/60 s.

Loading is strict (JSON only, never pickle): every line is checked against the parameter
declaration, and the first bad one is refused as `ConfigError("file:line: why")`.
"""
from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from bridge import clock
from bridge.errors import ConfigError, ControlError, SourceError
from bridge.params import ControlEvent, ParamStore

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
HEADER_KEY = "vjbridge_recording"
EVENT_KEYS = ("t", "kind", "name", "value", "source")
REPLAY_SOURCE = "replay"


# --- recording ---------------------------------------------------------------------------------
class Recorder:
    """Write every event the store accepts to `path` as it happens (thread-safe: OSC, MIDI and
    preset threads call in at once). `info` fills the header (model, fps, seed, walk, and any other
    JSON-serialisable facts about the run). The recording's zero is when the recorder is made,
    until `start(t0)` sets it (the live engine's first frame); events before that are at t=0."""

    def __init__(self, store: ParamStore, path: str | Path, info: dict | None = None,
                 skip_sources: tuple[str, ...] = ("morph",)):
        self.store = store
        self.path = Path(path)
        self.skip_sources = tuple(skip_sources)
        self.written = 0
        self._lock = threading.Lock()
        self._t0 = clock.now()
        self._failed = False
        # A toggle trigger's parameter write and its announcement come on the writer's thread,
        # one right after the other: the last write per thread gives the trigger line its value.
        self._local = threading.local()
        info = dict(info or {})
        header = {HEADER_KEY: FORMAT_VERSION, "model": info.pop("model", None), "fps": info.pop("fps", None),
                  "seed": info.pop("seed", None), "walk": info.pop("walk", None),
                  "started": datetime.now().astimezone().isoformat(timespec="milliseconds"),
                  **info, "params": store.values()}
        try:
            line = json.dumps(header, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"recording header must be plain JSON values: {e}") from None
        try:
            self._file = open(self.path, "w", encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot write the recording {self.path}: {e.strerror or e}") from None
        self._write(line)
        store.watch(self._heard)  # the store has no unwatch: after close() this returns at once

    def start(self, t0: float | None = None) -> "Recorder":
        """Set the recording's zero (bridge.clock time; default now)."""
        self._t0 = clock.now() if t0 is None else float(t0)
        return self

    def _heard(self, event: ControlEvent) -> None:
        if self._file is None or event.source in self.skip_sources:
            return
        t = max(clock.now() - self._t0, 0.0)
        value = event.value
        previous = getattr(self._local, "previous", None)
        self._local.previous = (event.name, event.value) if event.kind == "param" else None
        trigger = self.store.triggers.get(event.name) if event.kind == "trigger" else None
        toggles = trigger.toggles if trigger is not None else ""
        if toggles:
            # No write just before: two toggles raced and this one changed nothing; the state is it.
            value = previous[1] if previous and previous[0] == toggles else self.store.get(toggles)
        record = {"t": round(t, 6), "kind": event.kind, "name": event.name, "value": value,
                  "source": event.source}
        try:
            line = json.dumps(record, allow_nan=False)
        except (TypeError, ValueError) as e:  # the store only accepts plain values; be safe anyway
            log.warning("recording: %s %s not written: %s", event.kind, event.name, e)
            return
        self._write(line)

    def _write(self, line: str) -> None:
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.write(line + "\n")
                self._file.flush()  # one line at a time: a crash loses at most this line
                self.written += 1
            except (OSError, ValueError) as e:  # a full disk must not stop the show
                if not self._failed:
                    log.error("recording to %s failed: %s", self.path, e)
                    self._failed = True

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError as e:
                    log.warning("closing the recording %s: %s", self.path, e)
                self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- loading -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecordedEvent:
    t: float  # seconds since the recording's zero
    kind: str  # "param" or "trigger"
    name: str
    value: object
    source: str  # who sent it when it was recorded
    line: int = 0  # where it is in the file (for messages)


class ReplayCursor:
    """Walks a recording's events in time order: `events_until(t)` returns the events not yet
    returned whose time is <= t."""

    def __init__(self, events: list[RecordedEvent]):
        self.events = events
        self.position = 0

    def events_until(self, t: float) -> list[RecordedEvent]:
        start = self.position
        while self.position < len(self.events) and self.events[self.position].t <= t:
            self.position += 1
        return self.events[start:self.position]

    @property
    def next_time(self) -> float | None:
        """The time of the next event, or None when every event has been returned."""
        return self.events[self.position].t if self.position < len(self.events) else None

    def rewind(self) -> None:
        self.position = 0


class Recording:
    """A loaded recording: `header` (line 1), `initial` (the parameter values at the start),
    `events` sorted by time (events at the same time keep the file's order)."""

    def __init__(self, header: dict, events: list[RecordedEvent], path: Path | None = None):
        self.header = header
        self.initial: dict = dict(header.get("params", {}))
        self.events = sorted(events, key=lambda e: e.t)
        self.path = path
        self._cursor = ReplayCursor(self.events)

    @property
    def duration(self) -> float:
        return self.events[-1].t if self.events else 0.0

    def differences(self, **run) -> list[str]:
        """How a replay's run differs from the recorded one, one line each, for the keys given
        (model, fps, seed, walk): the same events then make other pictures. Keys the header does
        not hold (or holds as null) are not compared."""
        notes = []
        for key, value in run.items():
            recorded = self.header.get(key)
            if recorded is not None and value is not None and recorded != value:
                notes.append(f"{self.path or 'the recording'} was made with {key} {recorded!r}, "
                             f"this run has {value!r}")
        return notes

    def cursor(self) -> ReplayCursor:
        """A cursor of its own (a replayer and a render can walk one recording at once)."""
        return ReplayCursor(self.events)

    def events_until(self, t: float) -> list[RecordedEvent]:
        """The recording's own cursor: events not yet returned with time <= t."""
        return self._cursor.events_until(t)

    def rewind(self) -> None:
        self._cursor.rewind()

    @classmethod
    def load(cls, path: str | Path, store: ParamStore | None = None) -> "Recording":
        """Read and check a recording against `store`'s declaration (default: every declared
        parameter and trigger). ConfigError "file:line: why" for the first bad line; SourceError
        when the file cannot be read."""
        path = Path(path)
        declaration = store if store is not None else ParamStore()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SourceError(f"no recording at {path}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SourceError(f"cannot read the recording {path}: {e}") from None
        lines = text.split("\n")
        header, events = None, []
        for number, raw in enumerate(lines, start=1):
            where = f"{path}:{number}"
            if not raw.strip():
                continue
            try:
                data = json.loads(raw, parse_constant=_refuse_constant)
            except ValueError as e:
                if number == len(lines) and header is not None:
                    # The last line, without its newline: the one a crash can cut short.
                    log.warning("%s: unfinished last line dropped (the recording was cut off)", where)
                    break
                raise ConfigError(f"{where}: not a JSON line ({e})") from None
            if header is None:
                header = _check_header(data, declaration, where)
            else:
                events.append(_check_event(data, declaration, where, number))
        if header is None:
            raise ConfigError(f"{path}:1: empty file, not a vjbridge recording")
        return cls(header, events, path)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number a recording can hold")


def _check_header(data, store: ParamStore, where: str) -> dict:
    if not isinstance(data, dict) or HEADER_KEY not in data:
        raise ConfigError(f"{where}: not a vjbridge recording (its first line has no '{HEADER_KEY}')")
    version = data[HEADER_KEY]
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise ConfigError(f"{where}: recording format {version!r} is not supported (this bridge "
                          f"reads {FORMAT_VERSION})")
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: 'params' must be a table of parameter values")
    for name, value in params.items():
        _check_param(store, name, value, where)
    return data


def _check_event(data, store: ParamStore, where: str, number: int) -> RecordedEvent:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: an event must be a JSON object, got {type(data).__name__}")
    missing = [k for k in EVENT_KEYS if k not in data]
    extra = sorted(set(data) - set(EVENT_KEYS))
    if missing or extra:
        what = (f"missing {', '.join(missing)}" if missing else "") + \
               ("; " if missing and extra else "") + (f"unknown key(s) {', '.join(extra)}" if extra else "")
        raise ConfigError(f"{where}: {what}")
    t, kind, name, value, source = (data[k] for k in EVENT_KEYS)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        raise ConfigError(f"{where}: t must be seconds >= 0, got {t!r}")
    if not isinstance(source, str) or not source:
        raise ConfigError(f"{where}: source must be a name (osc, midi, preset...), got {source!r}")
    if not isinstance(name, str):
        raise ConfigError(f"{where}: name must be a string, got {name!r}")
    if kind == "param":
        _check_param(store, name, value, where)
    elif kind == "trigger":
        trigger = store.triggers.get(name)
        if trigger is None:
            raise ConfigError(f"{where}: no trigger '{name}'; known: {', '.join(store.triggers)}")
        if trigger.toggles:
            if value is not None and not isinstance(value, bool):
                raise ConfigError(f"{where}: toggle {name} takes null (toggle) or the value it set "
                                  f"(true/false), got {value!r}")
        elif trigger.arg == "none":
            if value is not None:
                raise ConfigError(f"{where}: trigger {name} takes no value, got {value!r}")
        else:
            try:
                trigger.check(value)
            except ControlError as e:
                raise ConfigError(f"{where}: {e}") from None
    else:
        raise ConfigError(f"{where}: kind must be 'param' or 'trigger', got {kind!r}")
    return RecordedEvent(float(t), kind, name, value, source, number)


def _check_param(store: ParamStore, name, value, where: str) -> None:
    param = store.params.get(name) if isinstance(name, str) else None
    if param is None:
        raise ConfigError(f"{where}: no parameter {name!r}; known: {', '.join(store.params)}")
    try:
        accepted, _ = param.check(value)
    except ControlError as e:
        raise ConfigError(f"{where}: {e}") from None
    # The store only ever accepted in-range values of the right kind: anything else was edited.
    if accepted != value or (param.kind == "bool") != isinstance(value, bool):
        raise ConfigError(f"{where}: {name} = {value!r} is not a value the store accepts as is "
                          f"(kind {param.kind}, range [{param.low:g}, {param.high:g}])")


# --- playing back ------------------------------------------------------------------------------
def apply_event(store: ParamStore, event: RecordedEvent, source: str = REPLAY_SOURCE) -> bool:
    """Write one recorded event into the store; False (and a log line) when the store refuses it.
    A recorded toggle carries the value it set: set again (a no-op after its parameter's line),
    never toggled twice; a bare toggle (null) toggles."""
    try:
        trigger = store.triggers.get(event.name) if event.kind == "trigger" else None
        if event.kind == "param":
            store.set(event.name, event.value, source=source)
        elif trigger is not None and trigger.toggles and isinstance(event.value, bool):
            store.set(trigger.toggles, event.value, source=source)
        else:
            store.trigger(event.name, event.value, source=source)
        return True
    except ControlError as e:
        log.warning("replay: %s (line %d, t=%.3f s) skipped: %s", event.name, event.line, event.t, e)
        return False


def apply_initial(store: ParamStore, recording: Recording, source: str = REPLAY_SOURCE) -> list[str]:
    """Write the recording's starting values; returns the names the store refused (logged)."""
    refused = []
    for name, value in recording.initial.items():
        try:
            store.set(name, value, source=source)
        except ControlError as e:
            log.warning("replay: starting value of %s skipped: %s", name, e)
            refused.append(name)
    return refused


class Replayer:
    """Plays a recording into a live store at its times: `start(t0)` writes the starting values and
    runs a thread that applies each event when bridge.clock reaches t0 + t. Or, with
    `start(t0, thread=False)`, the caller calls `poll()` (e.g. once per frame). Refused events are
    logged and counted (`applied`, `refused`: events, not starting values), never raised."""

    def __init__(self, store: ParamStore, recording: Recording, on_done: Callable[[], None] | None = None):
        self.store = store
        self.recording = recording
        self.on_done = on_done
        self.applied = self.refused = 0
        self.t0: float | None = None
        self._cursor = recording.cursor()
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self.finished = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, t0: float | None = None, thread: bool = True) -> "Replayer":
        self.t0 = clock.now() if t0 is None else float(t0)
        apply_initial(self.store, self.recording)  # refusals logged; the counts are of events
        if thread:
            self._thread = threading.Thread(target=self._run, name="vjbridge-replay", daemon=True)
            self._thread.start()
        return self

    def poll(self, now: float | None = None) -> int:
        """Apply every event due by `now` (bridge.clock time); returns how many were applied."""
        if self.t0 is None:
            raise RuntimeError("Replayer.poll() before start()")
        now = clock.now() if now is None else now
        with self._poll_lock:
            due = self._cursor.events_until(now - self.t0)
            for event in due:
                if apply_event(self.store, event):
                    self.applied += 1
                else:
                    self.refused += 1
            if self._cursor.next_time is None and not self.finished.is_set():
                self.finished.set()
                if self.on_done is not None:
                    try:
                        self.on_done()
                    except Exception as e:
                        log.warning("replay on_done failed: %s", e)
        return len(due)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as e:  # whatever happens, the show goes on without the replay
                log.error("replay stopped: %s: %s", type(e).__name__, e)
                return
            next_t = self._cursor.next_time
            if next_t is None:
                return
            self._stop.wait(max(self.t0 + next_t - clock.now(), 0.0))

    @property
    def done(self) -> bool:
        return self.finished.is_set()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
