"""td/build_vjbridge.py run against a stand-in of TouchDesigner's API (tests/helpers/td_standin.py),
which knows only the operator types, parameter names and menu entries read from TouchDesigner's
documentation: the network it builds (nodes, wiring, expressions), the parameter pages generated
from td/protocol.json (read here with plain json, independently of the code under test), the
extension, the .tox/.toe saves, and a lint of td/*.py with TouchDesigner's built-in names."""
from __future__ import annotations

import ast
import importlib.util
import json
import re
import runpy
from pathlib import Path

import pytest
from pyflakes.checker import Checker

from tests.helpers.td_standin import OPERATORS, StandInError, TouchDesigner

ROOT = Path(__file__).resolve().parents[1]
TD_DIR = ROOT / "td"
BUILD_SCRIPT = TD_DIR / "build_vjbridge.py"
# the td module's names every TouchDesigner script sees (https://docs.derivative.ca/Td_Module)
TD_BUILTINS = ["op", "ops", "me", "parent", "root", "project", "absTime", "app", "run", "debug", "ui",
               "tdu", "mod", "ext", "iop", "ipar", "td", "families", "licenses", "monitors", "sysinfo",
               "PaneType", "ParMode", "tdError"]


def load_build():
    spec = importlib.util.spec_from_file_location("build_vjbridge_under_test", BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def td_name(name: str, prefix: str = "") -> str:
    """TouchDesigner's custom parameter naming, written out again for the test."""
    flat = re.sub(r"[^0-9a-z]", "", name.lower())
    return prefix + flat if prefix else flat.capitalize()


@pytest.fixture
def built():
    td = TouchDesigner()
    comp = load_build().build(td.op("/project1"), td.project, platform="win32")
    return td, comp


def test_every_protocol_entry_is_a_parameter_with_its_range_and_default(built):
    td, comp = built
    protocol = json.loads((TD_DIR / "protocol.json").read_text())
    pages = {p.name: [par.name for par in p.pars] for p in comp.customPages}
    assert protocol["params"] and protocol["triggers"]
    for entry in protocol["params"]:
        par = comp.par[td_name(entry["name"])]
        assert par is not None, entry["name"]
        assert par.name in pages["Live"]
        style = {"float": "Float", "int": "Int", "bool": "Toggle", "choice": "Menu"}[entry["type"]]
        assert par.style == style and par.default == entry["default"] and par.eval() == entry["default"]
        if entry["type"] in ("float", "int"):
            assert (par.min, par.max, par.normMin, par.normMax) == (entry["min"], entry["max"]) * 2
            assert par.clampMin and par.clampMax
        if entry["type"] == "choice":
            assert par.menuNames == entry["choices"]
    for entry in protocol["triggers"]:
        pulse = comp.par[td_name(entry["name"], "Trig")]
        assert pulse is not None and pulse.isPulse and pulse.name in pages["Triggers"]
        if entry["arg"] == "int":
            number = comp.par[pulse.name + "arg"]
            assert number.style == "Int" and (number.min, number.max) == (entry["min"], entry["max"])
    assert len(pages["Live"]) == len(protocol["params"])
    assert len(pages["Triggers"]) == len(protocol["triggers"]) + sum(t["arg"] == "int" for t in protocol["triggers"])


def test_network_nodes_wiring_and_expressions(built):
    td, comp = built
    kinds = {c.name: c.OPType for c in comp.children}
    assert kinds["syphon_spout_in"] == "syphonspoutinTOP" and kinds["ndi_in"] == "ndiinTOP"
    switch = comp.op("picture_switch")
    assert switch.inputs == [comp.op("syphon_spout_in"), comp.op("ndi_in")]
    # never larger than the Non-Commercial licence's 1280x1280
    assert (switch.par.outputresolution.eval(), switch.par.resolutionw.eval(), switch.par.resolutionh.eval()) \
        == ("limit", 1280, 1280)
    chain = ["bridge_picture", "trail_feedback", "trail_fade", "trail_mix", "look", "visuals", "out1"]
    assert [kinds[n] for n in chain] == ["nullTOP", "feedbackTOP", "levelTOP", "compositeTOP", "levelTOP",
                                         "nullTOP", "outTOP"]
    assert comp.op("bridge_picture").inputs == [switch]
    assert comp.op("trail_mix").inputs == [comp.op("bridge_picture"), comp.op("trail_fade")]
    assert comp.op("out1").inputs == [comp.op("visuals")]
    feedback = comp.op("trail_feedback")
    assert feedback.op(feedback.par.top.eval()) is comp.op("trail_mix")  # the loop closes
    comp.par.Fxtrail = 0.6
    assert comp.op("trail_fade").par.opacity.eval() == 0.6

    # OSC: out to the bridge's host and port, in on the reply port with the callbacks DAT
    out, inn = comp.op("osc_out"), comp.op("osc_in")
    assert (out.OPType, inn.OPType) == ("oscoutDAT", "oscinDAT")
    assert (out.par.address.eval(), out.par.port.eval(), inn.par.port.eval()) == ("127.0.0.1", 9000, 9001)
    comp.par.Oscport, comp.par.Bridgehost = 9100, "10.0.0.7"
    assert (out.par.address.eval(), out.par.port.eval()) == ("10.0.0.7", 9100)
    assert inn.op(inn.par.callbacks.eval()) is comp.op("osc_in_callbacks")

    # audio: device -> RTSP stream (on while the bridge's audio is this TouchDesigner's)
    stream = comp.op("audio_stream_out")
    assert stream.inputs == [comp.op("audio_in")] and kinds["audio_in"] == "audiodeviceinCHOP"
    assert (stream.par.mode.eval(), stream.par.port.eval(), stream.par.streamname.eval()) == ("rtsp", 8554, "vjbridge")
    assert stream.par.active.eval() is True and comp.op("audio_in").par.active.eval() is True
    comp.par.Audiosource = "device"
    assert stream.par.active.eval() is False
    sound = comp.op("bridge_sound")
    assert kinds["bridge_sound"] == "audiondiCHOP" and sound.op(sound.par.ndiintop.eval()) is comp.op("ndi_in")
    assert comp.op("sound").inputs == [sound]
    assert kinds["midi_in"] == "midiinCHOP" and comp.op("midi").inputs == [comp.op("midi_in")]
    assert comp.op("midi_in").par.active.eval() is False
    for name in ("status", "log", "protocol", "frame_exec", "par_exec"):
        assert name in kinds
    par_exec = comp.op("par_exec")
    assert par_exec.op(par_exec.par.op.eval()) is comp and par_exec.par.custom.eval() is True


def test_extension_modules_are_synced_with_td_files_and_promoted(built):
    td, comp = built
    for dat, filename in (("VJBridgeExt", "vjbridge_ext.py"), ("bridge_process", "bridge_process.py"),
                          ("bridge_controls", "bridge_controls.py")):
        node = comp.op(dat)
        assert node.text == (TD_DIR / filename).read_text()
        assert Path(node.par.file.eval()) == TD_DIR / filename and node.par.syncfile.eval() is True
    assert comp.op("protocol").text == (TD_DIR / "protocol.json").read_text()
    ext = comp.ext.VJBridgeExt
    assert type(ext).__name__ == "VJBridgeExt" and comp.Start.__self__ is ext  # promoted
    # the extension routed the picture: on Linux (neither Spout nor Syphon) through NDI...
    switch, ndi = comp.op("picture_switch"), comp.op("ndi_in")
    assert switch.par.index.eval() == 1 and ndi.par.active.eval() is True
    assert ndi.par.name.eval().endswith(" (vjbridge)")
    # ...on Windows through Spout, into input 0, with the NDI receiver off
    ext.platform = "win32"
    comp.Route()
    assert switch.par.index.eval() == 0 and ndi.par.active.eval() is False
    assert comp.op("syphon_spout_in").par.sendername.eval() == "vjbridge"
    rows = dict(r[:2] for r in comp.op("status").rows())
    assert rows["state"] == "stopped"


def test_defaults_per_os_and_saves(built):
    td, comp = built
    assert Path(comp.par.Python.eval()) == ROOT / ".venv" / "Scripts" / "python.exe"
    assert Path(comp.par.Workdir.eval()) == ROOT
    assert td.saves == [("tox", str(TD_DIR / "vjbridge.tox"), "/project1/vjbridge"),
                        ("toe", str(TD_DIR / "vjbridge.toe"), "/")]
    mac = TouchDesigner()
    comp = load_build().build(mac.op("/project1"), None, platform="darwin")
    assert Path(comp.par.Python.eval()) == ROOT / ".venv" / "bin" / "python"
    assert [s[0] for s in mac.saves] == ["tox"]  # no project given: only the component


def test_textport_line_builds_and_rebuilding_replaces(capsys):
    """The README's one line: runpy with the Textport's globals, as __main__; twice."""
    td = TouchDesigner()
    for _ in range(2):
        runpy.run_path(str(BUILD_SCRIPT), init_globals=td.textport_globals(), run_name="__main__")
    assert [c.name for c in td.op("/project1").children] == ["vjbridge"]
    assert [s[0] for s in td.saves] == ["tox", "toe", "tox", "toe"]
    assert "Open the component's Bridge page and press Start" in capsys.readouterr().out


def _protocol(tmp_path, params, triggers=(), version=1):
    path = tmp_path / "protocol.json"
    path.write_text(json.dumps({"version": version, "osc": {"prefix": "/vjbridge", "out": {"every_s": 1.0}},
                                "params": list(params), "triggers": list(triggers)}))
    return path


def _param(name, kind, default, **extra):
    return {"name": name, "address": f"/vjbridge/param/{name}", "type": kind, "default": default,
            "doc": f"{name} doc", **extra}


def test_every_kind_is_built_generically_and_bad_files_are_refused(tmp_path):
    build = load_build()
    params = [_param("beat_quantise", "int", 4, min=1, max=16), _param("walk_speed", "float", 0.5, min=0.0, max=2.0),
              _param("mirror_x", "bool", True), _param("walk", "choice", "linger", choices=["linger", "magellan"])]
    triggers = [{"name": "next_anchor", "address": "/vjbridge/trigger/next_anchor", "arg": "none", "doc": ""},
                {"name": "anchor", "address": "/vjbridge/trigger/anchor", "arg": "int", "min": 0, "max": 7, "doc": ""}]
    td = TouchDesigner()
    comp = build.build(td.op("/project1"), None, protocol_path=str(_protocol(tmp_path, params, triggers)),
                       tox_path=str(tmp_path / "x.tox"))
    assert comp.par.Beatquantise.style == "Int" and comp.par.Beatquantise.eval() == 4
    assert (comp.par.Walkspeed.normMin, comp.par.Walkspeed.normMax) == (0.0, 2.0)
    assert comp.par.Mirrorx.style == "Toggle" and comp.par.Mirrorx.eval() is True
    assert comp.par.Walk.menuNames == ["linger", "magellan"] and comp.par.Walk.eval() == "linger"
    assert comp.par.Trignextanchor.isPulse and comp.par.Triganchor.isPulse
    assert (comp.par.Triganchorarg.min, comp.par.Triganchorarg.max) == (0, 7)
    assert td.saves == [("tox", str(tmp_path / "x.tox"), "/project1/vjbridge")]

    bad = [([_param("start", "bool", False)], "'Start', already taken by the vjbridge COMP's own"),
           ([_param("a_b", "float", 0.0, min=0.0, max=1.0), _param("ab", "bool", True)],
            "'Ab', already taken by float 'a_b'"),
           ([_param("v", "vec3", 0)], "type must be one of float, int, bool, choice"),
           ([_param("g", "float", 3.0, min=0.0, max=1.0)], "default 3.0 outside [0.0, 1.0]"),
           ([_param("c", "choice", "z", choices=["x"])], "default 'z' is not one of x")]
    for params, message in bad:
        with pytest.raises(build.BuildError, match=re.escape(message)):
            build.build(TouchDesigner().op("/project1"), None, protocol_path=str(_protocol(tmp_path, params)))
    with pytest.raises(build.BuildError, match="version 2"):
        build.build(TouchDesigner().op("/project1"), None, protocol_path=str(_protocol(tmp_path, [], version=2)))
    untouched = TouchDesigner()
    with pytest.raises(build.BuildError):
        build.build(untouched.op("/project1"), None, protocol_path=str(tmp_path / "missing.json"))
    assert untouched.op("/project1").children == [] and untouched.saves == []


def test_the_standin_refuses_what_touchdesigner_would():
    td = TouchDesigner()
    project = td.op("/project1")
    with pytest.raises(StandInError, match="unknown operator type"):
        project.create("syphonspoutinTop", "x")  # a typo in the type
    top = project.create("syphonspoutinTOP", "spout")
    with pytest.raises(AttributeError, match="no parameter 'sendrname'"):
        top.par.sendrname = "vjbridge"
    with pytest.raises(StandInError, match="not an entry of menu outputresolution"):
        top.par.outputresolution = "limited"
    base = project.create("baseCOMP", "b")
    page = base.appendCustomPage("P")
    for bad in ("start", "Start_now", "StartNow"):
        with pytest.raises(StandInError, match="capital letter"):
            page.appendPulse(bad)
    with pytest.raises(AttributeError):
        top.nodex = 3  # OP members are the documented ones
    assert set(OPERATORS) >= {"syphonspoutinTOP", "ndiinTOP", "oscinDAT", "oscoutDAT", "audiostreamoutCHOP"}
    assert all(spec.doc.startswith("https://docs.derivative.ca/") for spec in OPERATORS.values())


def _flakes(source: str, filename: str) -> list[str]:
    checker = Checker(ast.parse(source, filename=filename), filename, builtins=TD_BUILTINS)
    return [f"{filename}:{m.lineno}: {m.message % m.message_args}" for m in checker.messages]


def test_td_python_passes_pyflakes_with_touchdesigners_names(built):
    td, comp = built
    problems = []
    for path in sorted(TD_DIR.glob("*.py")):
        problems += _flakes(path.read_text(), str(path))
    for name in ("osc_in_callbacks", "par_exec", "frame_exec"):  # the callbacks the build writes
        problems += _flakes(comp.op(name).text, f"{comp.path}/{name}")
    assert problems == []
    # and without TouchDesigner's names the lint does see them, so it is really checking
    assert any("undefined name 'parent'" in m.message % m.message_args for m in
               Checker(ast.parse(comp.op("par_exec").text)).messages)
