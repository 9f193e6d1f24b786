"""Build the vjbridge TouchDesigner component and project from this checkout.

Run it once inside TouchDesigner (Windows or macOS), from the Textport (Dialogs > Textport and
DATs), with the path of your clone:

    import runpy; runpy.run_path(r'C:/vj/vjbridge/td/build_vjbridge.py', init_globals=globals(), run_name='__main__')

It creates /project1/vjbridge (a Base COMP) and saves td/vjbridge.tox (the component, to drop into
any project) and td/vjbridge.toe (a project holding it). Running it again rebuilds both, so after
`git pull` (or `vjbridge protocol --write` added parameters) run the same line again.

Inside the component:
- parameter pages: Bridge (Start/Stop, Python, model, audio, outputs), Network (OSC ports and hosts,
  the RTSP audio stream), Watchdog, Visuals, and Live + Triggers, one parameter per entry of
  td/protocol.json, with its range and default;
- picture in: a Syphon Spout In TOP and an NDI In TOP behind a Switch TOP (limited to 1280x1280,
  the Non-Commercial licence's cap), then a small visuals chain (feedback, level, composite) and
  an Out TOP;
- control: an OSC Out DAT (parameter changes out) and an OSC In DAT (heartbeat, fps, latency,
  model, parameter echoes, errors), shown in the 'status' table and the 'log' text;
- audio: Audio Device In CHOP -> Audio Stream Out CHOP (RTSP, read by the bridge with
  --audio-in rtsp://...), and the bridge's generated sound back through an Audio NDI CHOP;
- an optional MIDI In CHOP for mapping MIDI inside TouchDesigner;
- the extension (vjbridge_ext.py, with bridge_process.py and bridge_controls.py beside it, kept in
  sync with the files in td/) that starts, watches and stops the bridge.

`build()` takes the parent COMP and the project as arguments so the tests run it against a
stand-in of TouchDesigner's API (tests/helpers/td_standin.py).
"""
from __future__ import annotations

import importlib.util
import os
import sys

TD_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(TD_DIR)
COMP_NAME = "vjbridge"
MAX_RES = 1280  # TouchDesigner Non-Commercial: textures up to 1280x1280
EXTENSION = "VJBridgeExt"  # the class, and the DAT holding it (TouchDesigner's convention)
MODULE_DATS = {EXTENSION: "vjbridge_ext.py", "bridge_process": "bridge_process.py",
               "bridge_controls": "bridge_controls.py"}


class BuildError(RuntimeError):
    """The component cannot be built from these files; the message says which and why."""


def load_td_module(name: str, td_dir: str = TD_DIR):
    """One of td/*.py as a module without touching sys.path (TouchDesigner's Python shares it)."""
    path = os.path.join(td_dir, name + ".py")
    spec = importlib.util.spec_from_file_location(f"vjbridge_td_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the component's own parameters ----------------------------------------------------------
# (style, name, label, default, extra); extra: (min, max) for numbers, [(name, label)...] for menus.
def own_parameters(repo_dir: str, platform: str, td_dir: str = TD_DIR) -> dict:
    process = load_td_module("bridge_process", td_dir)
    return {
        "Bridge": [
            ("Pulse", "Start", "Start", None, None),
            ("Pulse", "Stop", "Stop", None, None),
            ("Pulse", "Restart", "Restart", None, None),
            ("Pulse", "Query", "Ask the bridge for its values", None, None),
            ("Toggle", "Autostart", "Start when the project opens", False, None),
            ("File", "Python", "Python with vjbridge", process.default_python(repo_dir, platform), None),
            ("Folder", "Workdir", "Working folder", repo_dir, None),
            ("Str", "Model", "Model (name or folder)", "pix2pix-pulse", None),
            ("Str", "Cue", "Cue model (loaded now, switched to at once)", "", None),
            ("Menu", "Audiosource", "Audio for the bridge", "td",
             [("td", "This TouchDesigner (RTSP stream)"), ("device", "The bridge's own input"),
              ("silence", "Silence")]),
            ("Str", "Audiodevice", "Bridge input (device, file, URL)", "default", None),
            ("Str", "Camera", "Camera (index, name, file, URL)", "", None),
            ("Menu", "Transport", "Picture to TouchDesigner", "auto",
             [("auto", "Spout (Windows) / Syphon (macOS)"), ("ndi", "NDI (any OS, any machine)"),
              ("none", "None (other outputs only)")]),
            ("Str", "Sender", "Sender name", "vjbridge", None),
            ("Str", "Ndisource", "NDI source (empty: find it)", "", None),
            ("Str", "Extraout", "More outputs (--out, space separated)", "", None),
            ("Float", "Fps", "Frame rate", 30.0, (1.0, 120.0)),
            ("Int", "Size", "Output size (0: the model's)", 0, (0, MAX_RES)),
            ("Menu", "Runtime", "Runtime", "optimized",
             [("optimized", "Optimized"), ("auto", "Auto (fastest measured at start)"),
              ("int8", "Int8 (CPU, pix2pix)"), ("reference", "Reference (eager fp32)")]),
            ("Str", "Threads", "CPU threads (auto or a count)", "auto", None),
            ("Int", "Keepwarm", "Models kept warm after a switch", 2, (0, 8)),
            ("Str", "Device", "Torch device", "cpu", None),
            ("Str", "Preset", "Preset", "", None),
            ("Pulse", "Presetload", "Load preset", None, None),
            ("Pulse", "Presetsave", "Save preset", None, None),
            ("Str", "Midiin", "Bridge MIDI input (pattern)", "", None),
            ("Str", "Extraargs", "More run options", "", None),
        ],
        "Network": [
            ("Str", "Bridgehost", "Bridge host (another machine: remote)", "127.0.0.1", None),
            ("Int", "Oscport", "Bridge OSC port", 9000, (1, 65535)),
            ("Str", "Tdhost", "This machine, as the bridge reaches it", "127.0.0.1", None),
            ("Int", "Replyport", "Feedback OSC port (here)", 9001, (1, 65535)),
            ("Int", "Streamport", "RTSP audio port (here)", 8554, (1, 65535)),
            ("Str", "Streamname", "RTSP stream name", "vjbridge", None),
            ("Toggle", "Soundback", "Play the bridge's sound (NDI)", False, None),
            ("Toggle", "Tdmidi", "MIDI In CHOP on", False, None),
        ],
        "Watchdog": [
            ("Toggle", "Autorestart", "Restart when it stops", True, None),
            ("Float", "Restartafter", "Restart after silence (s)", 5.0, (1.0, 60.0)),
            ("Float", "Startupgrace", "First heartbeat within (s)", 90.0, (5.0, 600.0)),
        ],
        "Visuals": [
            ("Float", "Fxtrail", "Trail", 0.0, (0.0, 0.98)),
            ("Float", "Fxgain", "Gain", 1.0, (0.0, 2.0)),
            ("Float", "Fxcontrast", "Contrast", 1.0, (0.0, 2.0)),
        ],
    }


def _append(comp, page, style, name, label, default=None, extra=None, help_text=""):
    group = {"Float": page.appendFloat, "Int": page.appendInt, "Toggle": page.appendToggle,
             "Menu": page.appendMenu, "Pulse": page.appendPulse, "Str": page.appendStr,
             "File": page.appendFile, "Folder": page.appendFolder}[style](name, label=label)
    if help_text:
        group.help = help_text
    par = comp.par[name]
    if style == "Menu":
        par.menuNames = [n for n, _ in extra]
        par.menuLabels = [lab for _, lab in extra]
    elif style in ("Float", "Int") and extra is not None:
        par.min, par.max = extra
        par.normMin, par.normMax = extra
        par.clampMin = par.clampMax = True
    if default is not None:
        par.default = default
        par.val = default
    return par


def add_control_pages(comp, protocol) -> None:
    """One parameter per protocol entry: floats and ints with their range, bools as toggles,
    choices as menus; triggers as pulses (and an Int beside those that take a number)."""
    live = comp.appendCustomPage("Live")
    for c in protocol.params:
        style = {"float": "Float", "int": "Int", "bool": "Toggle", "choice": "Menu"}[c.kind]
        extra = [(x, x) for x in c.choices] if c.kind == "choice" else (
            (c.low, c.high) if c.kind in ("float", "int") else None)
        _append(comp, live, style, c.par, c.label, c.default, extra, f"{c.doc} ({c.address})")
    triggers = comp.appendCustomPage("Triggers")
    for c in protocol.triggers:
        _append(comp, triggers, "Pulse", c.par, c.label, None, None, f"{c.doc} ({c.address})")
        if c.arg == "int":
            _append(comp, triggers, "Int", c.arg_par, f"{c.label} number", c.low, (c.low, c.high),
                    f"the number {c.par} sends")


# --- the network ---------------------------------------------------------------------------
CALLBACKS_OSC_IN = '''\
# The bridge's feedback (heartbeat, fps, latency, model, parameter echoes, errors) to the extension.
def onReceiveOSC(dat, rowIndex, message, bytes, timeStamp, address, args, peer):
    parent().ext.VJBridgeExt.OnBridgeOSC(address, args)
'''
CALLBACKS_PARAMETERS = '''\
# The vjbridge COMP's own parameters: pulses (Start, Stop, triggers) and changes (live controls
# go out as OSC; launch settings apply at the next Start).
def onValueChange(par, *_):
    parent().ext.VJBridgeExt.OnParChange(par)


def onPulse(par):
    parent().ext.VJBridgeExt.OnPulse(par)
'''
CALLBACKS_FRAMES = '''\
# Each frame: the watchdog and the status/log display. Project open: start if asked.
# Project close: stop the bridge.
def onStart():
    parent().ext.VJBridgeExt.OnProjectStart()


def onFrameStart(frame):
    parent().ext.VJBridgeExt.OnFrame()


def onExit():
    parent().ext.VJBridgeExt.Stop()
'''


class Expr:
    """A parameter expression (evaluated by TouchDesigner every cook), not a constant."""

    def __init__(self, text: str):
        self.text = text


def own(par: str) -> Expr:
    """The value of one of the vjbridge COMP's own parameters, followed live."""
    return Expr(f"parent().par.{par}.eval()")


def _node(comp, optype, name, x, y, inputs=(), comment="", **pars):
    node = comp.create(optype, name)
    node.nodeX, node.nodeY = x, y
    if inputs:
        node.setInputs(list(inputs))
    if comment:
        node.comment = comment
    for key, value in pars.items():
        if isinstance(value, Expr):
            getattr(node.par, key).expr = value.text
        else:
            setattr(node.par, key, value)
    return node


def build_network(comp, td_dir: str) -> None:
    # picture in: both receivers behind a switch (the extension picks the input and the names)
    syphon = _node(comp, "syphonspoutinTOP", "syphon_spout_in", 0, 400, usespoutactivesender=False,
                   sendername="vjbridge", comment="Spout (Windows) / Syphon (macOS) from the bridge")
    ndi = _node(comp, "ndiinTOP", "ndi_in", 0, 200, active=False,
                comment="NDI from the bridge (any OS, also from another machine)")
    switch = _node(comp, "switchTOP", "picture_switch", 200, 300, [syphon, ndi], index=0,
                   outputresolution="limit", resolutionw=MAX_RES, resolutionh=MAX_RES,
                   comment="0: Syphon/Spout, 1: NDI; never larger than 1280x1280")
    picture = _node(comp, "nullTOP", "bridge_picture", 400, 300, [switch])
    # visuals: a trail (feedback faded by a level, kept with a composite), then gain/contrast
    feedback = _node(comp, "feedbackTOP", "trail_feedback", 600, 200, [picture], top="trail_mix")
    fade = _node(comp, "levelTOP", "trail_fade", 800, 200, [feedback], opacity=own("Fxtrail"))
    mix = _node(comp, "compositeTOP", "trail_mix", 1000, 300, [picture, fade], operand="maximum")
    look = _node(comp, "levelTOP", "look", 1200, 300, [mix], brightness1=own("Fxgain"),
                 contrast=own("Fxcontrast"))
    visuals = _node(comp, "nullTOP", "visuals", 1400, 300, [look], comment="build your visuals from here")
    _node(comp, "outTOP", "out1", 1600, 300, [visuals])
    # control and feedback over OSC
    _node(comp, "oscoutDAT", "osc_out", 0, -100, active=True, address=own("Bridgehost"), port=own("Oscport"),
          comment="parameter changes to the bridge (sendOSC from the extension)")
    _node(comp, "textDAT", "osc_in_callbacks", 200, -250).text = CALLBACKS_OSC_IN
    _node(comp, "oscinDAT", "osc_in", 0, -250, active=True, port=own("Replyport"), callbacks="osc_in_callbacks",
          clamp=True, maxlines=20, comment="heartbeat, fps, latency, model, echoes, errors")
    _node(comp, "tableDAT", "status", 400, -100, comment="what the bridge last said")
    _node(comp, "textDAT", "log", 400, -250, comment="the bridge's output and errors")
    # audio to the bridge (RTSP) and the bridge's sound back (NDI audio)
    audio_on = Expr("parent().par.Audiosource.eval() == 'td'")
    audio_in = _node(comp, "audiodeviceinCHOP", "audio_in", 0, -450, active=audio_on)
    _node(comp, "audiostreamoutCHOP", "audio_stream_out", 200, -450, [audio_in], active=audio_on,
          mode="rtsp", port=own("Streamport"), streamname=own("Streamname"),
          comment="the bridge reads rtsp://<Tdhost>:<Streamport>/<Streamname>")
    sound = _node(comp, "audiondiCHOP", "bridge_sound", 0, -600, ndiintop="ndi_in", play=own("Soundback"))
    _node(comp, "nullCHOP", "sound", 200, -600, [sound], comment="the bridge's generated sound")
    midi = _node(comp, "midiinCHOP", "midi_in", 0, -750, active=own("Tdmidi"),
                 comment="optional: map MIDI here (Dialogs > MIDI Device Mapper) instead of the bridge")
    _node(comp, "nullCHOP", "midi", 200, -750, [midi])
    # the extension and its two TouchDesigner-free modules, synced with the files in td/
    for i, (dat_name, filename) in enumerate(MODULE_DATS.items()):
        path = os.path.join(td_dir, filename)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        dat = _node(comp, "textDAT", dat_name, 800 + 200 * i, -100, comment=f"td/{filename}")
        dat.text = text
        dat.par.file = path.replace("\\", "/")
        dat.par.syncfile = True
    frames = _node(comp, "executeDAT", "frame_exec", 800, -250, active=True, start=True,
                   framestart=True, exit=True)
    frames.text = CALLBACKS_FRAMES


def build(parent, project=None, td_dir: str = TD_DIR, protocol_path: str | None = None,
          tox_path: str | None = None, toe_path: str | None = None, platform: str = sys.platform):
    """Build /<parent>/vjbridge, then save the .tox and (with a project) the .toe."""
    controls = load_td_module("bridge_controls", td_dir)
    protocol_path = protocol_path or os.path.join(td_dir, "protocol.json")
    try:
        protocol = controls.load_protocol(protocol_path)  # refuse a bad file before touching anything
        pages = own_parameters(os.path.dirname(os.path.abspath(td_dir)), platform, td_dir)
        protocol.check_names([name for page in pages.values() for _, name, *_ in page])
    except (OSError, controls.ProtocolError) as e:
        raise BuildError(f"cannot build vjbridge: {e}") from None

    old = parent.op(COMP_NAME)
    if old is not None:
        old.destroy()  # its extension stops its bridge; press Start again after a rebuild
    comp = parent.create("baseCOMP", COMP_NAME)
    comp.comment = "vjbridge: learned, audio-reactive visuals (see td/README.md)"
    comp.nodeX, comp.nodeY = 0, 0

    for page_name, entries in pages.items():
        page = comp.appendCustomPage(page_name)
        for style, name, label, default, extra in entries:
            _append(comp, page, style, name, label, default, extra)
    add_control_pages(comp, protocol)

    build_network(comp, td_dir)
    _node(comp, "textDAT", "protocol", 600, -100, comment="td/protocol.json as built").text = protocol.text
    # parameter callbacks last, so building does not trigger them
    _node(comp, "parameterexecuteDAT", "par_exec", 800, -550, active=True, op="..", pars="*",
          custom=True, builtin=False, valuechange=True, onpulse=True).text = CALLBACKS_PARAMETERS

    comp.par.ext0object = f"op('./{EXTENSION}').module.{EXTENSION}(me)"
    comp.par.ext0promote = True
    comp.par.reinitextensions.pulse()

    comp.save(tox_path or os.path.join(td_dir, "vjbridge.tox"))
    if project is not None:
        project.save(toe_path or os.path.join(td_dir, "vjbridge.toe"))
    return comp


if __name__ == "__main__":
    # Inside TouchDesigner: op() and project come from the Textport's globals (init_globals).
    built = build(op("/project1"), project)
    print(f"vjbridge: built {built.path}; saved {os.path.join(TD_DIR, 'vjbridge.tox')} and "
          f"{os.path.join(TD_DIR, 'vjbridge.toe')}. Open the component's Bridge page and press Start.")
