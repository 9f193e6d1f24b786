"""The TouchDesigner side's process core (td/bridge_process.py, td/bridge_controls.py) and its
extension (td/vjbridge_ext.py) driving a REAL `vjbridge run` over real UDP: the command line it
builds starts a bridge that answers on OSC, a parameter sent comes back as an echo, the watchdog
restarts a bridge that was killed and one that hung (heartbeats stopped), and a bridge that
refused its settings is not restarted. The extension runs inside the TouchDesigner stand-in
(tests/helpers/td_standin.py), whose OSC DATs are real sockets."""
from __future__ import annotations

import importlib.util
import os
import queue
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from pythonosc.osc_message_builder import OscMessageBuilder

from bridge.control.osc import decode
from tests.helpers.osc import Inbox
from tests.helpers.td_standin import TouchDesigner

ROOT = Path(__file__).resolve().parents[1]
TD_DIR = ROOT / "td"


def load(name):
    spec = importlib.util.spec_from_file_location(f"td_{name}_under_test", TD_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


core = load("bridge_process")
controls = load("bridge_controls")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Feedback(Inbox):
    """The OSC In DAT's job, done with a real socket: packets from the bridge, decoded; the test's
    main loop hands them to the core (TouchDesigner calls back on its main thread too)."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue()
        self.paused = False  # True: messages are dropped, as by a blocked network
        super().__init__()

    def receive(self, message):
        self.queue.put(message)

    def pump(self, bridge):
        while not self.queue.empty():
            message = self.queue.get()
            if not self.paused:
                bridge.feed(*message)


def send(port: int, address: str, args: list) -> None:
    """What the OSC Out DAT's sendOSC(address, args) puts on the wire."""
    builder = OscMessageBuilder(address=address)
    for a in args:
        builder.add_arg(a)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(builder.build().dgram, ("127.0.0.1", port))


def run_until(check, step, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        step()
        if check():
            return True
        time.sleep(0.05)
    return False


def settings(**overrides):
    base = dict(python=sys.executable, workdir=str(ROOT), model="tiny-a", audio_in="silence",
                outs=("null",), runtime="reference", osc_port=free_udp_port(), reply_port=9001,
                restart_after_s=2.0, startup_grace_s=30.0)
    return core.LaunchSettings(**{**base, **overrides})


def test_command_line_routes_and_settings_checks():
    s = core.LaunchSettings(python="/venv/bin/python", model="vae-mirror", audio_in="rtsp://127.0.0.1:8554/vjbridge",
                            camera="0", outs=("syphon:vjbridge", "file:set.mp4"), fps=25, size=512,
                            osc_port=9000, reply_port=9001, preset="club", midi_in="*",
                            extra_args="--walk magellan --walk-param 'seconds_per_anchor=4'")
    assert core.command_line(s) == [
        "/venv/bin/python", "-m", "bridge", "run", "--model", "vae-mirror", "--audio-in",
        "rtsp://127.0.0.1:8554/vjbridge", "--camera", "0", "--out", "syphon:vjbridge", "--out", "file:set.mp4",
        "--fps", "25", "--size", "512", "--runtime", "optimized", "--threads", "auto", "--keep-warm", "2",
        "--device", "cpu",
        "--osc-host", "127.0.0.1",
        "--osc-port", "9000", "--osc-reply", "127.0.0.1:9001", "--preset", "club", "--midi-in", "*",
        "--walk", "magellan", "--walk-param", "seconds_per_anchor=4"]
    # the command line is one `vjbridge run` accepts, option by option
    from bridge.cli import build_parser
    args = build_parser().parse_args(core.command_line(s)[3:])
    assert (args.model, args.out, args.osc_port, args.osc_reply, args.walk) == (
        ["vae-mirror"], ["syphon:vjbridge", "file:set.mp4"], 9000, "127.0.0.1:9001", "magellan")
    assert "--threads 2 " in core.remote_command_line(core.LaunchSettings(python="/p", threads=" 2 "))

    remote = core.LaunchSettings(python="", bridge_host="10.0.0.5", td_host="10.0.0.2", outs=("ndi:vjbridge",))
    assert remote.remote and "--osc-host 0.0.0.0" in core.remote_command_line(remote)
    assert core.remote_command_line(remote).startswith("python -m bridge run ")
    assert "--osc-reply 10.0.0.2:9001" in core.remote_command_line(remote)

    assert core.picture_route("auto", "vjbridge", False, "win32").out == "spout:vjbridge"
    assert core.picture_route("auto", "vj", False, "darwin") == core.Route("syphon", "syphon:vj", 0, "vj")
    assert core.picture_route("auto", "vj", False, "linux").out == "ndi:vj"
    assert core.picture_route("auto", "vj", True, "win32") == core.Route("ndi", "ndi:vj", 1, "vj")
    assert core.picture_route("none", "vj", False, "win32").out == ""
    assert core.pick_source(["STUDIO (other)", "STUDIO (vj)"], "vj") == "STUDIO (vj)"
    assert core.pick_source(["Resolume - vj"], "vj") == "Resolume - vj"
    assert core.pick_source([], "vj", "guess") == "guess"
    for bad, message in ((dict(osc_port=0), "osc_port"), (dict(fps=0.5), "fps"), (dict(size=8), "size"),
                         (dict(extra_args="--walk 'open"), "extra_args"), (dict(python=""), "python is empty"),
                         (dict(threads="0"), "threads must be auto or a count"), (dict(threads="two"), "threads"),
                         (dict(keep_warm=9), "keep_warm must be 0..8")):
        with pytest.raises(ValueError, match=message):
            core.LaunchSettings(**{"python": "/p", **bad})


def test_controls_shape_osc_for_every_kind():
    """What a TouchDesigner value (a menu name, a toggle, a slider's float) becomes on the wire,
    and what the bridge's echo becomes as a parameter value."""
    protocol = controls.parse_protocol("""{"version": 1, "osc": {"prefix": "/vjbridge"},
      "params": [
        {"name": "gain", "address": "/vjbridge/param/gain", "type": "float", "default": 1.0, "min": 0, "max": 2},
        {"name": "steps", "address": "/vjbridge/param/steps", "type": "int", "default": 2, "min": 1, "max": 8},
        {"name": "mirror_x", "address": "/vjbridge/param/mirror_x", "type": "bool", "default": false},
        {"name": "walk", "address": "/vjbridge/param/walk", "type": "choice", "default": "a", "choices": ["a", "b"]}],
      "triggers": [
        {"name": "reset", "address": "/vjbridge/trigger/reset", "arg": "none"},
        {"name": "anchor", "address": "/vjbridge/trigger/anchor", "arg": "int", "min": 0, "max": 7}]}""")
    c = protocol.by_par()
    assert c["Gain"].message(1) == ("/vjbridge/param/gain", [1.0]) and isinstance(c["Gain"].message(1)[1][0], float)
    assert c["Steps"].message(2.6) == ("/vjbridge/param/steps", [3])
    assert c["Mirrorx"].message(1) == ("/vjbridge/param/mirror_x", [True])
    assert c["Walk"].message("b") == ("/vjbridge/param/walk", ["b"])
    assert c["Trigreset"].message() == ("/vjbridge/trigger/reset", [])
    assert c["Triganchor"] is c["Triganchorarg"] and c["Triganchor"].message(5.0) == ("/vjbridge/trigger/anchor", [5])
    assert [c["Gain"].value_from([0.5]), c["Steps"].value_from([3.0]), c["Mirrorx"].value_from([1]),
            c["Walk"].value_from(["b"])] == [0.5, 3, True, "b"]
    assert c["Walk"].value_from(["z"]) is None and c["Gain"].value_from(["x"]) is None
    assert c["Gain"].value_from([float("nan")]) is None and c["Gain"].value_from([]) is None
    assert list(protocol.by_address()) == ["/vjbridge/param/gain", "/vjbridge/param/steps",
                                           "/vjbridge/param/mirror_x", "/vjbridge/param/walk"]
    # the real file: every entry's message is read back by the bridge's own decoder as sent (floats
    # travel as float32)
    for control in controls.load_protocol(str(TD_DIR / "protocol.json")).controls:
        value = control.default if control.kind != "trigger" else control.low
        address, args = control.message(value)
        builder = OscMessageBuilder(address=address)
        for a in args:
            builder.add_arg(a)
        [(got_address, got)] = decode(builder.build().dgram)
        assert got_address == address and [type(a) for a in got] == [type(a) for a in args]
        assert got == pytest.approx(args, rel=1e-6) if control.kind == "float" else got == args


def test_real_bridge_answers_echoes_and_the_watchdog_restarts_it(tiny_models):
    feedback = Feedback()
    protocol = controls.load_protocol(str(TD_DIR / "protocol.json"))
    bridge = core.BridgeProcess(settings(reply_port=feedback.port))

    def step():  # one TouchDesigner frame: the OSC In DAT's callbacks, then the watchdog
        feedback.pump(bridge)
        bridge.poll()

    try:
        bridge.start()
        first_pid = bridge.pid
        # the heartbeat, then fps/latency/model in the packets right behind it
        assert run_until(lambda: bridge.feedback.heartbeat >= 1 and bridge.feedback.model
                         and bridge.feedback.fps is not None, step), bridge.log_text()
        assert bridge.feedback.model == "tiny-a"
        assert run_until(lambda: any(": model tiny-a" in line for line in bridge.log), step), bridge.log_text()

        brightness = protocol.by_par()["Brightness"]
        send(bridge.settings.osc_port, *brightness.message(1.25))
        assert run_until(lambda: bridge.feedback.params.get("brightness") == 1.25, step), bridge.log_text()
        send(bridge.settings.osc_port, "/vjbridge/param/nothing", [1.0])
        assert run_until(lambda: any("no parameter 'nothing'" in e for e in bridge.feedback.errors), step)

        os.kill(first_pid, getattr(signal, "SIGKILL", signal.SIGTERM))  # crashed: restarted at once
        assert run_until(lambda: bridge.restarts == 1 and bridge.pid not in (None, first_pid), step)
        beats = bridge.feedback.heartbeat
        assert run_until(lambda: bridge.heartbeat_age() is not None and bridge.heartbeat_age() < 0.5
                         and bridge.feedback.heartbeat != beats, step), bridge.log_text()

        # hung: alive but silent (SIGSTOP; Windows has none, so there its feedback is cut
        # instead, which the watchdog cannot tell apart): killed and restarted after restart_after_s
        hung = bridge.proc
        if hasattr(signal, "SIGSTOP"):
            os.kill(hung.pid, signal.SIGSTOP)
        else:
            feedback.paused = True
        stopped_at = time.monotonic()
        assert run_until(lambda: bridge.restarts == 2, step, timeout=15)
        feedback.paused = False
        assert time.monotonic() - stopped_at >= bridge.settings.restart_after_s - 0.1
        assert any("no heartbeat for" in line for line in bridge.log)
        assert hung.returncode is not None  # the hung one was killed and reaped, not left behind
        assert run_until(lambda: bridge.state == "running" and bridge.heartbeat_age() is not None
                         and bridge.heartbeat_age() < 0.5 and bridge.pid != hung.pid, step), bridge.log_text()

        last = bridge.proc
        bridge.stop()
        assert last.returncode is not None and bridge.state == "stopped" and bridge.pid is None
        time.sleep(bridge.settings.restart_after_s + 0.2)
        step()
        assert bridge.pid is None and bridge.restarts == 2  # stopped on purpose: stays stopped
    finally:
        bridge.stop()
        feedback.close()


def test_refused_settings_are_not_restarted(tiny_models):
    bridge = core.BridgeProcess(settings(model="nope"))
    try:
        bridge.start()
        assert run_until(lambda: bridge.state == "failed", bridge.poll, timeout=30), bridge.log_text()
        assert "model 'nope' not found" in bridge.reason and bridge.restarts == 0
        missing = core.BridgeProcess(settings(python=str(ROOT / "no-such-python")))
        missing.start()
        assert missing.state == "failed" and "cannot start" in missing.reason
    finally:
        bridge.stop()


def test_extension_runs_a_real_bridge_inside_the_standin(tiny_models, tmp_path):
    spec = importlib.util.spec_from_file_location("build_vjbridge_ext_test", TD_DIR / "build_vjbridge.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    td = TouchDesigner()
    comp = build.build(td.op("/project1"), td.project)
    p = comp.par
    p.Python, p.Model, p.Audiosource, p.Transport, p.Extraout = sys.executable, "tiny-a", "silence", "none", "null"
    p.Runtime, p.Oscport, p.Replyport, p.Restartafter = "reference", free_udp_port(), free_udp_port(), 3.0
    p.Smoothing = 0.5  # set before the bridge exists: sent when its first heartbeat arrives
    ext = comp.ext.VJBridgeExt

    def frame():
        td.step()
        time.sleep(0.02)

    def status():
        return dict(r[:2] for r in comp.op("status").rows())

    try:
        frame()
        p.Start.pulse()
        assert run_until(lambda: status().get("heartbeat") not in (None, "", "0"), frame), comp.op("log").text
        assert status()["state"] == "running"
        # the model's name follows the heartbeat in its own OSC message: a frame or two later
        assert run_until(lambda: status()["model"] == "tiny-a", frame), comp.op("log").text
        assert "-m bridge run --model tiny-a --audio-in silence --out null" in comp.op("log").text
        assert run_until(lambda: ext.bridge.feedback.params.get("smoothing") == 0.5, frame)

        p.Brightness = 1.5  # a knob turned in TouchDesigner goes out as OSC and comes back
        assert run_until(lambda: ext.bridge.feedback.params.get("brightness") == 1.5, frame)
        p.Trigfreeze.pulse()  # the bridge toggles freeze; its echo moves the Freeze toggle here
        assert run_until(lambda: p.Freeze.eval() is True, frame)
        assert ("/vjbridge/trigger/freeze", []) in comp.op("osc_out").sent
        p.Cue = "tiny-b"  # loaded now, while tiny-a plays; the bridge says when it is ready
        assert run_until(lambda: "model tiny-b cued" in comp.op("log").text, frame), comp.op("log").text
        assert ("/vjbridge/model/cue", ["tiny-b"]) in comp.op("osc_out").sent
        assert status()["model"] == "tiny-a"
        p.Model = "tiny-b"  # while running: switched live, no restart
        assert run_until(lambda: status()["model"] == "tiny-b", frame), comp.op("log").text
        assert ext.bridge.restarts == 0

        pid = ext.bridge.pid
        p.Stop.pulse()
        frame()
        assert ext.bridge.pid is None and status()["state"] == "stopped"
        p.Start.pulse()
        frame()
        assert ext.bridge.pid not in (None, pid)
        td.quit()  # project closes: the Execute DAT's onExit stops the bridge
        assert ext.bridge.pid is None and ext.bridge.state == "stopped"
    finally:
        ext.bridge.stop()
        td.quit()


def test_remote_bridge_is_not_launched_here():
    td = TouchDesigner()
    spec = importlib.util.spec_from_file_location("build_vjbridge_remote_test", TD_DIR / "build_vjbridge.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    comp = build.build(td.op("/project1"), None, tox_path="unused.tox")
    comp.par.Bridgehost, comp.par.Tdhost, comp.par.Replyport = "10.9.8.7", "10.9.8.1", free_udp_port()
    td.step()
    comp.Start()
    ext = comp.ext.VJBridgeExt
    log = comp.op("log").text

    def status():
        return dict(r[:2] for r in comp.op("status").rows())

    assert ext.bridge.proc is None and ext.bridge.state == "remote"
    assert "--osc-host 0.0.0.0" in log and "--osc-reply 10.9.8.1:" in log and "--out ndi:vjbridge" in log
    assert "--audio-in rtsp://10.9.8.1:8554/vjbridge" in log
    assert comp.op("picture_switch").par.index.eval() == 1 and comp.op("ndi_in").par.active.eval() is True
    assert comp.op("osc_out").par.address.eval() == "10.9.8.7"
    ext.bridge.poll(now=time.monotonic() + 10)
    ext.Display()
    assert status()["reason"].startswith("no heartbeat from 10.9.8.7")
    # the remote bridge appears (its heartbeat reaches the OSC In DAT): it gets this project's values
    sent_before = len(comp.op("osc_out").sent)
    send(int(comp.par.Replyport.eval()), "/vjbridge/heartbeat", [1])
    assert run_until(lambda: ext.bridge.feedback.heartbeat == 1, td.step, timeout=5)
    ext.bridge.poll()
    ext.Display()
    assert status()["reason"] == "alive on 10.9.8.7"
    sent = [address for address, _ in comp.op("osc_out").sent[sent_before:]]
    assert sent == [c.address for c in ext.protocol.params]
    td.quit()
