"""The vjbridge COMP's extension: a thin adapter between TouchDesigner and bridge_process.

TouchDesigner builds it from the COMP's Extension Object, `op('./VJBridgeExt').module.VJBridgeExt(me)`,
and promotes it, so `op('vjbridge').Start()` works as well as the Start pulse. The work is done by
the two TouchDesigner-free modules beside it (DATs synced with td/bridge_process.py and
td/bridge_controls.py): this class only reads the COMP's parameters, calls them, and writes back
into the COMP's operators (OSC Out DAT, Switch TOP, receivers, 'status' table, 'log' text).

Callbacks (from DATs inside the COMP): OnPulse / OnParChange (Parameter Execute DAT), OnBridgeOSC
(OSC In DAT), OnFrame / OnProjectStart / Stop (Execute DAT).
"""
import math
import sys
import time
from collections import deque

ROUTE_PARS = ("Transport", "Sender", "Ndisource", "Bridgehost")
LAUNCH_PARS = ("Python", "Workdir", "Audiosource", "Audiodevice", "Camera", "Extraout", "Fps", "Size",
               "Runtime", "Threads", "Keepwarm", "Device", "Midiin", "Extraargs", "Oscport", "Tdhost", "Replyport",
               "Streamport", "Streamname", "Autorestart", "Restartafter", "Startupgrace")
ECHO_HOLD_S = 0.5  # echoes of values sent this recently, but since replaced, do not move the knob
DISPLAY_EVERY_S = 0.25
ROUTE_EVERY_S = 2.0  # receivers list new senders over time


class VJBridgeExt:
    def __init__(self, ownerComp):
        self.ownerComp = ownerComp
        self.core = ownerComp.op("bridge_process").module
        controls = ownerComp.op("bridge_controls").module
        self.protocol = controls.parse_protocol(ownerComp.op("protocol").text, where=f"{ownerComp.path}/protocol")
        self.by_par = self.protocol.by_par()
        self.by_address = self.protocol.by_address()
        # a bridge started by an earlier instance of this extension keeps running: take it over
        self.bridge = self.core.BRIDGES.setdefault(ownerComp.path, self.core.BridgeProcess(prefix=self.protocol.prefix))
        self._echo = {}  # TouchDesigner parameter -> value the bridge last reported
        self._sent = {}  # TouchDesigner parameter -> recent (time, value) sent
        self._next_display = 0.0
        self._next_route = 0.0
        self._log_version = -1
        self.platform = sys.platform  # decides Spout (Windows) or Syphon (macOS)

    # --- TouchDesigner's extension hooks -------------------------------------------------------
    def onInitTD(self):
        self.Route()
        self.Display()

    def onDestroyTD(self):
        # The COMP itself was deleted (or rebuilt), not just this extension re-initialised: its
        # bridge goes with it. Only the process is touched; the COMP's operators may be gone.
        if not self.ownerComp.valid:
            self.bridge.stop()
            self.core.BRIDGES.pop(self.ownerComp.path, None)

    # --- promoted actions ---------------------------------------------------------------------
    def Settings(self):
        """The COMP's parameters as bridge_process.LaunchSettings (ValueError when one is wrong)."""
        p = self.ownerComp.par
        bridge_host = p.Bridgehost.eval().strip() or "127.0.0.1"
        td_host = p.Tdhost.eval().strip() or "127.0.0.1"
        route = self.core.picture_route(p.Transport.eval(), p.Sender.eval(),
                                        bridge_host.lower() not in self.core.LOCAL_HOSTS, self.platform)
        audio = {"td": f"rtsp://{td_host}:{int(p.Streamport.eval())}/{p.Streamname.eval()}",
                 "device": p.Audiodevice.eval().strip() or "default",
                 "silence": "silence"}[p.Audiosource.eval()]
        outs = ([route.out] if route.out else []) + p.Extraout.eval().split()
        return self.core.LaunchSettings(
            python=p.Python.eval(), workdir=p.Workdir.eval(), model=p.Model.eval().strip() or "pix2pix-pulse",
            audio_in=audio, camera=p.Camera.eval().strip(), outs=tuple(outs), fps=float(p.Fps.eval()),
            size=int(p.Size.eval()), runtime=p.Runtime.eval(), threads=p.Threads.eval().strip() or "auto",
            keep_warm=int(p.Keepwarm.eval()),
            device=p.Device.eval().strip() or "cpu",
            bridge_host=bridge_host, osc_port=int(p.Oscport.eval()), td_host=td_host,
            reply_port=int(p.Replyport.eval()), preset=p.Preset.eval().strip(),
            midi_in=p.Midiin.eval().strip(), extra_args=p.Extraargs.eval(),
            auto_restart=bool(p.Autorestart.eval()), restart_after_s=float(p.Restartafter.eval()),
            startup_grace_s=float(p.Startupgrace.eval()))

    def Start(self):
        """Launch the bridge here (or, with a remote Bridgehost, show what to run there)."""
        try:
            self.bridge.with_settings(self.Settings())
            self.bridge.start()
        except ValueError as e:
            self.bridge.state, self.bridge.reason = "failed", str(e)
            self.bridge.note(f"cannot start: {e}")
        self.Route()
        self.Display()

    def Stop(self):
        self.bridge.stop()
        self.Display()

    def Restart(self):
        self.Stop()
        self.Start()

    def Query(self):
        """Ask the bridge for every value; the echoes update the Live page."""
        self._send(f"{self.protocol.prefix}/query", [])

    def SendAll(self):
        """Every live parameter's current value to the bridge (done whenever a bridge appears)."""
        for control in self.protocol.params:
            self._send(*control.message(self.ownerComp.par[control.par].eval()), par=control.par)

    def Route(self):
        """Point the Switch TOP and the receivers at the bridge's picture."""
        p, op = self.ownerComp.par, self.ownerComp.op
        remote = (p.Bridgehost.eval().strip() or "127.0.0.1").lower() not in self.core.LOCAL_HOSTS
        try:
            route = self.core.picture_route(p.Transport.eval(), p.Sender.eval(), remote, self.platform)
        except ValueError as e:
            self.bridge.note(str(e))
            return
        op("picture_switch").par.index = route.switch_index
        receiver = op("syphon_spout_in").par.sendername
        receiver.val = self.core.pick_source(receiver.menuNames, route.sender, route.sender)
        ndi = op("ndi_in")
        ndi.par.active = route.kind == "ndi"
        if route.kind == "ndi":
            guess = "" if remote else self.core.local_ndi_source(route.sender)
            wanted = p.Ndisource.eval().strip() or self.core.pick_source(ndi.par.name.menuNames, route.sender, guess)
            if wanted and ndi.par.name.eval() != wanted:
                ndi.par.name = wanted

    # --- callbacks ----------------------------------------------------------------------------
    def OnPulse(self, par):
        name = par.name
        prefix = self.protocol.prefix
        actions = {"Start": self.Start, "Stop": self.Stop, "Restart": self.Restart, "Query": self.Query,
                   "Presetload": lambda: self._send(f"{prefix}/preset/load", [self.ownerComp.par.Preset.eval()]),
                   "Presetsave": lambda: self._send(f"{prefix}/preset/save", [self.ownerComp.par.Preset.eval()])}
        if name in actions:
            actions[name]()
            return
        control = self.by_par.get(name)
        if control is not None and control.kind == "trigger":
            arg = self.ownerComp.par[control.arg_par].eval() if control.arg_par else None
            self._send(*control.message(arg))

    def OnParChange(self, par):
        name = par.name
        control = self.by_par.get(name)
        if control is not None:
            if control.kind == "trigger":  # a trigger's number goes out with its pulse
                return
            value = par.eval()
            if name in self._echo and _same(self._echo[name], value):
                return  # the bridge's own value, just shown here: nothing to send back
            self._send(*control.message(value), par=name)
            return
        running = self.bridge.state in ("running", "remote")
        if name in ROUTE_PARS:
            self.Route()  # TouchDesigner's receivers follow at once
        if name == "Model" and running:
            self._send(f"{self.protocol.prefix}/model", [par.eval()])  # switched live, between frames
        elif name == "Cue" and running and par.eval().strip():
            self._send(f"{self.protocol.prefix}/model/cue", [par.eval().strip()])  # Model set to it later: at once
        elif (name in LAUNCH_PARS or name in ROUTE_PARS) and running:
            self.bridge.note(f"{name} applies to the bridge at the next Start or Restart")

    def OnBridgeOSC(self, address, args):
        if self.bridge.feed(address, list(args)):
            self.SendAll()  # a new bridge (started, restarted, remote) gets this project's values
        control = self.by_address.get(address)
        if control is None:
            return
        value = control.value_from(list(args))
        if value is None:
            return
        self._echo[control.par] = value
        now = time.monotonic()
        recent = [v for t, v in self._sent.get(control.par, ()) if now - t < ECHO_HOLD_S]
        if any(_same(v, value) for v in recent[:-1]) and not _same(recent[-1], value):
            return  # the echo of a value already replaced (a knob being turned): keep the knob
        par = self.ownerComp.par[control.par]
        if not _same(par.eval(), value):
            par.val = value  # changed by the bridge or elsewhere (trigger, MIDI, preset)

    def OnFrame(self):
        event = self.bridge.poll()
        now = time.monotonic()
        if event or now >= self._next_display:
            self._next_display = now + DISPLAY_EVERY_S
            self.Display()
        if now >= self._next_route:
            self._next_route = now + ROUTE_EVERY_S
            self.Route()

    def OnProjectStart(self):
        if self.ownerComp.par.Autostart.eval():
            self.Start()

    # --- display ------------------------------------------------------------------------------
    def Display(self):
        table = self.ownerComp.op("status")
        table.clear()
        for key, value in self.bridge.summary().items():
            table.appendRow([key, value])
        if self.bridge.log_version != self._log_version:
            self._log_version = self.bridge.log_version
            self.ownerComp.op("log").text = self.bridge.log_text()

    def _send(self, address, args, par=None):
        self.ownerComp.op("osc_out").sendOSC(address, args)
        if par is not None:
            self._sent.setdefault(par, deque(maxlen=32)).append((time.monotonic(), args[0]))


def _same(a, b):
    """Equal, with a float32 round trip (OSC floats) counted as equal."""
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return a == b
