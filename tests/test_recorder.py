"""Record and replay of control events: a set played over real OSC (UDP on loopback) is recorded
to a file, and the file renders the bundled demo audio to the same frames twice (and to other
frames than no replay); a damaged file is refused with its line; a live replay applies events at
about their times and skips the ones the store refuses."""
from __future__ import annotations

import hashlib
import json
import math
import threading
import time

import numpy as np
import pytest
import torch
from pythonosc.udp_client import SimpleUDPClient

from bridge import clock
from bridge.cli import DEMO_AUDIO
from bridge.control.osc import OscControl
from bridge.control.recorder import Recorder, Recording, Replayer
from bridge.errors import ConfigError, SourceError
from bridge.generators.base import load_model
from bridge.params import PARAMS, Param, ParamStore
from bridge.render import render
from bridge.runtime import Runner

FPS = 15.0
SECONDS = 2.0
# What the VJ does, seconds after recording starts: (when, address, value or None for a bare trigger)
PERFORMANCE = [
    (0.30, "/vjbridge/param/brightness", 0.375),  # float32 on the wire: exact
    (0.50, "/vjbridge/param/smoothing", 0.75),
    (0.75, "/vjbridge/trigger/freeze", None),
    (1.05, "/vjbridge/trigger/freeze", None),
    (1.25, "/vjbridge/preset/load", "bright"),
    (1.45, "/vjbridge/param/blackout", 1),
    (1.70, "/vjbridge/param/blackout", 0),
]


def write_lines(path, *records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def ev(name, value, t=0.1, kind="param", **more):
    return {"t": t, "kind": kind, "name": name, "value": value, "source": "osc", **more}


HEADER = {"vjbridge_recording": 1, "model": "x", "fps": 30.0, "seed": 0, "walk": None,
          "started": "2025-01-01T00:00:00.000+00:00", "params": {"brightness": 1.0}}


def perform_over_osc(path, monkeypatch, tmp_path) -> Recording:
    """Play PERFORMANCE into a store through a real OSC socket while a Recorder writes the file."""
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "bright.toml").write_text("[params]\nbrightness = 1.7\n")
    monkeypatch.setenv("VJBRIDGE_PRESETS", str(presets))
    store = ParamStore()
    with OscControl(store, port=0) as osc, \
            Recorder(store, path, {"model": "pix2pix-pulse", "fps": FPS, "seed": 0}) as recorder:
        client = SimpleUDPClient("127.0.0.1", osc.port)
        recorder.start()
        began = clock.now()
        for at, address, value in PERFORMANCE:
            time.sleep(max(0.0, at - (clock.now() - began)))
            client.send_message(address, [] if value is None else value)
        deadline = clock.now() + 3.0
        while recorder.written < 1 + 9 and clock.now() < deadline:  # header + 9 events
            time.sleep(0.02)
    return Recording.load(path)


def render_hashes(model, out, replay=None):
    hashes, frames = [], []

    def keep(i, frame, snapshot):
        hashes.append(hashlib.sha256(frame.tobytes()).hexdigest())
        frames.append(frame)

    render(model, DEMO_AUDIO, out, fps=FPS, seconds=SECONDS, runner=Runner(model, runtime="reference"),
           progress=False, on_frame=keep, replay=replay)
    return hashes, frames


def frame_of(t: float) -> int:
    """The first frame an event at t reaches: frame i is made after the events with t <= (i+1)/fps."""
    return max(math.ceil(t * FPS - 1e-9) - 1, 0)


def test_an_osc_performance_replays_to_the_same_frames_twice(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    path = tmp_path / "set.jsonl"
    recording = perform_over_osc(path, monkeypatch, tmp_path)
    header = json.loads(path.read_text().splitlines()[0])
    assert header["vjbridge_recording"] == 1 and header["model"] == "pix2pix-pulse"
    assert header["params"] == ParamStore().values()
    seen = [(e.kind, e.name, e.value, e.source) for e in recording.events]
    assert seen == [
        ("param", "brightness", 0.375, "osc"), ("param", "smoothing", 0.75, "osc"),
        ("param", "freeze", True, "osc"), ("trigger", "freeze", True, "osc"),
        ("param", "freeze", False, "osc"), ("trigger", "freeze", False, "osc"),
        ("param", "brightness", 1.7, "preset"),
        ("param", "blackout", True, "osc"), ("param", "blackout", False, "osc")]
    times = [e.t for e in recording.events]
    assert times == sorted(times) and abs(times[0] - 0.30) < 0.25 and times[-1] < SECONDS

    model = load_model("pix2pix-pulse")
    first, frames = render_hashes(model, tmp_path / "a.mp4", replay=path)
    second, _ = render_hashes(model, tmp_path / "b.mp4", replay=Recording.load(path))
    plain, _ = render_hashes(model, tmp_path / "plain.mp4")
    assert len(first) == int(SECONDS * FPS)
    assert first == second  # the same recording, the same frames
    # Before the first event the replay and a plain render agree; from it on they do not.
    touched = frame_of(recording.events[0].t)
    assert first[:touched] == plain[:touched]
    assert first[touched:] != plain[touched:]
    # Freeze holds the picture of the frame it went on, as live, until it goes off.
    on, off = frame_of(times[2]), frame_of(times[4])
    assert off - on >= 2 and all(h == first[on] for h in first[on:off])
    # Blackout: black, opaque.
    dark_on, dark_off = frame_of(times[7]), frame_of(times[8])
    assert dark_off > dark_on
    for frame in frames[dark_on:dark_off]:
        assert frame[..., :3].max() == 0 and frame[..., 3].min() == 255
    assert frames[dark_off][..., :3].max() > 0


def test_recorder_writes_a_line_per_event_flushed_and_thread_safe(tmp_path):
    store = ParamStore()
    store.set("brightness", 0.5)
    path = tmp_path / "rec.jsonl"
    recorder = Recorder(store, path, {"model": "m", "fps": 30.0, "seed": 3, "walk": "magellan", "note": "take 2"})
    t0 = clock.now() - 10.0  # the engine started ten seconds ago
    recorder.start(t0)
    store.set("smoothing", 0.25, source="midi")
    lines = path.read_text().splitlines()  # readable while the recorder is open: flushed per line
    header, event = json.loads(lines[0]), json.loads(lines[1])
    assert header["params"]["brightness"] == 0.5 and header["seed"] == 3 and header["walk"] == "magellan"
    assert header["note"] == "take 2" and "started" in header
    assert event["kind"] == "param" and event["name"] == "smoothing" and event["source"] == "midi"
    assert 10.0 <= event["t"] < 12.0 and event["t"] == round(event["t"], 6)
    store.set("brightness", 0.9, source="morph")  # a preset morph's per-frame writes: not recorded
    store.trigger("reset", source="cli")

    def knob(k):
        for i in range(50):
            store.set("brightness", 0.01 * i + 0.001 * k, source=f"knob{k}")

    threads = [threading.Thread(target=knob, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorder.close()
    recorder.close()  # idempotent
    store.set("brightness", 0.1)  # after close: nothing written, nothing raised
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines[1:]]
    assert all(r["source"] != "morph" for r in records)
    assert records[1] == {**records[1], "kind": "trigger", "name": "reset", "value": None, "source": "cli"}
    assert sum(r["source"].startswith("knob") for r in records) == 200  # none lost or interleaved
    assert len(Recording.load(path).events) == 202


@pytest.mark.parametrize("lines,where,why", [
    ([HEADER, ev("brightness", 0.5), "{not json", ev("brightness", 0.6, t=0.2)], 3, "not a JSON line"),
    ([HEADER, ev("warp", 0.5)], 2, "no parameter 'warp'"),
    ([HEADER, ev("brightness", 7.0)], 2, "brightness = 7.0"),
    ([HEADER, ev("freeze", "yes")], 2, "true/false"),
    ([HEADER, ev("launch", None, kind="trigger")], 2, "no trigger 'launch'"),
    ([HEADER, ev("freeze", 1, kind="trigger")], 2, "toggle freeze takes"),
    ([HEADER, ev("reset", 2, kind="trigger")], 2, "takes no value"),
    ([HEADER, ev("brightness", 0.5, kind="knob")], 2, "kind must be"),
    ([HEADER, ev("brightness", 0.5, t=-1)], 2, "t must be"),
    ([HEADER, '{"t": NaN, "kind": "param", "name": "brightness", "value": 0.5, "source": "osc"}'], 2,
     "not a JSON line"),
    ([HEADER, {"t": 0.1, "kind": "param", "name": "brightness", "value": 0.5}], 2, "missing source"),
    ([HEADER, ev("brightness", 0.5, x=1)], 2, "unknown key"),
    ([HEADER, [0.1, "brightness"]], 2, "must be a JSON object"),
    ([{"format": "something else"}], 1, "not a vjbridge recording"),
    ([{**HEADER, "vjbridge_recording": 2}], 1, "format 2 is not supported"),
    ([{**HEADER, "params": {"brightness": "loud"}}], 1, "wants a number"),
])
def test_a_damaged_recording_is_refused_with_its_line(tmp_path, lines, where, why):
    path = write_lines(tmp_path / "bad.jsonl", *lines)
    with pytest.raises(ConfigError, match=f"bad.jsonl:{where}: .*{why}"):
        Recording.load(path)


def test_not_json_at_all_and_missing_files(tmp_path):
    import pickle
    path = tmp_path / "pickled.jsonl"
    path.write_bytes(pickle.dumps({"vjbridge_recording": 1}))
    with pytest.raises((ConfigError, SourceError), match="pickled.jsonl"):
        Recording.load(path)
    with pytest.raises(SourceError, match="no recording at"):
        Recording.load(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ConfigError, match="empty.jsonl:1: empty file"):
        Recording.load(tmp_path / "empty.jsonl")


def test_a_last_line_cut_off_by_a_crash_is_dropped_and_events_are_sorted(tmp_path):
    path = tmp_path / "crashed.jsonl"
    write_lines(path, HEADER, {"t": 0.5, "kind": "param", "name": "brightness", "value": 0.2, "source": "osc"},
                {"t": 0.1, "kind": "trigger", "name": "reset", "value": None, "source": "midi"})
    path.write_text(path.read_text() + '{"t": 0.7, "kind": "par')  # no newline: the crash's signature
    recording = Recording.load(path)
    assert [(e.t, e.name, e.line) for e in recording.events] == [(0.1, "reset", 3), (0.5, "brightness", 2)]
    assert [e.name for e in recording.events_until(0.3)] == ["reset"]
    assert recording.events_until(0.3) == []  # a cursor: each event once
    assert [e.name for e in recording.events_until(10)] == ["brightness"]
    recording.rewind()
    assert len(recording.events_until(10)) == 2


def test_live_replay_applies_events_at_about_their_times(tmp_path):
    path = write_lines(
        tmp_path / "short.jsonl", {**HEADER, "params": {"smoothing": 0.5, "brightness": 1.0}},
        {"t": 0.2, "kind": "param", "name": "brightness", "value": 0.4, "source": "osc"},
        {"t": 0.45, "kind": "param", "name": "freeze", "value": True, "source": "osc"},  # as recorded:
        {"t": 0.45, "kind": "trigger", "name": "freeze", "value": True, "source": "osc"},  # not twice
        {"t": 0.6, "kind": "trigger", "name": "blackout", "value": None, "source": "me"},  # by hand: toggles
        {"t": 0.7, "kind": "trigger", "name": "reset", "value": None, "source": "midi"})
    store = ParamStore()
    heard = []
    store.watch(lambda e: heard.append((clock.now(), e)))
    finished = threading.Event()
    replayer = Replayer(store, Recording.load(path), on_done=finished.set)
    t0 = clock.now()
    replayer.start(t0)
    assert store.get("smoothing") == 0.5  # the starting values are written at once
    assert finished.wait(3.0)
    replayer.close()
    events = [(at - t0, e) for at, e in heard if e.name != "smoothing"]
    assert [(e.kind, e.name, e.value) for _, e in events] == [
        ("param", "brightness", 0.4), ("param", "freeze", True), ("param", "blackout", True),
        ("trigger", "blackout", None), ("trigger", "reset", None)]
    for (at, event), due in zip(events, (0.2, 0.45, 0.6, 0.6, 0.7)):
        assert event.source == "replay"
        assert due - 0.01 <= at <= due + 0.3, (event.name, at)
    assert store.get("freeze") is True and store.get("blackout") is True
    assert store.take_triggers() == [("reset", None)]
    assert replayer.applied == 5 and replayer.refused == 0


def test_a_recorded_toggle_replays_to_the_same_state(tmp_path):
    """Record toggles fired from several threads at once; the replay ends in the recorded state."""
    store = ParamStore()
    path = tmp_path / "toggles.jsonl"
    with Recorder(store, path) as recorder:
        recorder.start()
        threads = [threading.Thread(target=lambda n=n: [store.trigger(("freeze", "blackout")[n % 2], source=f"pad{n}")
                                                          for _ in range(25 + n)]) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        extra = 0
        for name in ("freeze", "blackout"):  # end with both on (racing toggles may have lost a flip)
            if not store.get(name):
                store.trigger(name, source="pad")
                extra += 1
    recording = Recording.load(path)
    toggles = [e for e in recording.events if e.kind == "trigger"]
    assert len(toggles) == 25 + 26 + 27 + 28 + extra and all(isinstance(e.value, bool) for e in toggles)
    replayed = ParamStore()
    Replayer(replayed, recording).start(clock.now() - 100.0, thread=False).poll()
    assert replayed.get("freeze") is True and replayed.get("blackout") is True
    assert replayed.values() == store.values()


def test_events_the_store_refuses_are_skipped_live_and_offline(tmp_path, caplog):
    """A recording made with a parameter and a trigger this store does not have (a newer bridge, a
    set made with the latent controls): those events are logged and skipped, the rest applied."""
    path = write_lines(
        tmp_path / "rich.jsonl", HEADER,
        {"t": 0.0, "kind": "param", "name": "smoothing", "value": 0.3, "source": "osc"},
        {"t": 0.02, "kind": "param", "name": "warp", "value": 0.5, "source": "midi"},
        {"t": 0.05, "kind": "trigger", "name": "reset", "value": None, "source": "osc"},
        {"t": 0.1, "kind": "param", "name": "brightness", "value": 0.6, "source": "osc"})
    richer = ParamStore(params=PARAMS + (Param("warp", "float", 0.0),))
    recording = Recording.load(path, richer)  # valid for the declaration it was made with
    small = ParamStore(triggers=())
    replayer = Replayer(small, recording).start(clock.now() - 1.0, thread=False)
    assert replayer.poll() == 4  # nothing raised
    assert small.get("brightness") == 0.6 and small.get("smoothing") == 0.3
    assert replayer.refused == 2 and replayer.applied == 2
    assert replayer.done and "warp" in caplog.text and "reset" in caplog.text
    # The offline render skips them too, and renders every frame.
    model = load_model("realnvp-faces")
    out = []
    offline = ParamStore(triggers=())
    render(model, DEMO_AUDIO, tmp_path / "r.mp4", fps=FPS, seconds=0.5, progress=False, params=offline,
           replay=recording, on_frame=lambda i, f, s: out.append(f))
    assert len(out) == math.ceil(0.5 * FPS) and offline.get("brightness") == 0.6
    assert not np.array_equal(out[0], out[-1])


def test_a_render_refuses_a_recording_for_other_parameters(tmp_path):
    path = write_lines(tmp_path / "future.jsonl", HEADER,
                       {"t": 0.1, "kind": "param", "name": "warp_speed", "value": 0.5, "source": "osc"})
    with pytest.raises(ConfigError, match="future.jsonl:2: no parameter 'warp_speed'"):
        render(load_model("realnvp-faces"), DEMO_AUDIO, tmp_path / "x.mp4", seconds=0.2, progress=False,
               replay=path)


def test_differences_name_what_a_replay_run_changes(tmp_path):
    recording = Recording.load(write_lines(tmp_path / "h.jsonl", HEADER))
    assert recording.differences(model="x", fps=30.0, seed=0, walk="magellan") == []  # walk: not recorded
    notes = recording.differences(model="pix2pix-pulse", fps=25.0)
    assert len(notes) == 2 and "model 'x'" in notes[0] and "fps 30.0" in notes[1]


def test_latent_controls_replay_deterministically(tmp_path):
    """A latent family: a knob of the latent controls and the walk's reset, replayed twice."""
    from bridge.params import MORPH_PARAMS
    torch.set_num_threads(1)
    knob = next(p for p in MORPH_PARAMS if p.kind == "float" and p.smoothing_s > 0)
    path = write_lines(tmp_path / "latent.jsonl", HEADER,
                       {**ev(knob.name, knob.high, t=0.2), "source": "midi"},
                       ev("reset", None, t=0.5, kind="trigger"))
    model = load_model("realnvp-faces")
    runs = [render_hashes(model, tmp_path / f"{i}.mp4", replay=path if i < 2 else None)[0] for i in range(3)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert runs[0][:frame_of(0.2)] == runs[2][:frame_of(0.2)]
