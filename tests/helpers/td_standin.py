"""A stand-in for the part of TouchDesigner's Python API that td/build_vjbridge.py and the vjbridge
extension use, so both run on Linux, where TouchDesigner does not.

Strict on purpose: only the operator types, parameter names and menu entries listed in OPERATORS
exist (each read from the documentation page cited beside it), custom parameter names follow
TouchDesigner's rule, and the OP, COMP, DAT, Page, ParGroup and Par objects have only the members
their class pages document (__slots__), so a typo fails here as it would inside TouchDesigner.

It records what a real session would hold (nodes, wiring, parameter values and expressions, custom
pages, .tox/.toe saves) and behaves the way the documentation says where the extension depends on
it: DAT text runs as a module (`import` finds sibling DATs first), extensions are built from the
Extension Object expression and promoted, Parameter Execute and Execute DAT callbacks fire on a
frame (`step()`), and the OSC In/Out DATs have real UDP sockets.

API pages (https://docs.derivative.ca/...): OP_Class, COMP_Class (create, op, appendCustomPage,
save, initializeExtensions), DAT_Class (text, module, clear, appendRow), Page_Class (append*),
ParGroup_Class (help), Par_Class (val, expr, eval, pulse, default, min, max, normMin, normMax,
clampMin, clampMax, menuNames, menuLabels), ParCollection_Class ([name] returns None when missing),
Project_Class (save), MOD_Class (import of DATs), OscoutDAT_Class (sendOSC), OscinDAT_Class
(onReceiveOSC), ExecuteDAT_Class and ParameterexecuteDAT_Class (callbacks), Extensions.
Custom parameter names: https://docs.derivative.ca/Custom_Parameters ("capitalize the first letter
... all remaining letters lower case ... no underscores"; other names fail).
"""
from __future__ import annotations

import builtins
import fnmatch
import re
import socket
from dataclasses import dataclass, field

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

DOCS = "https://docs.derivative.ca/"
TOP_COMMON = {  # "Parameters - Common Page" of every TOP page below
    "outputresolution": ("useinput", "eighth", "quarter", "half", "2x", "4x", "8x", "fit", "limit",
                         "custom"),
    "resolutionw": None, "resolutionh": None, "resmenu": None, "resmult": None, "outputaspect": None,
    "aspect1": None, "aspect2": None, "inputfiltertype": None, "fillmode": None, "filtertype": None,
    "npasses": None, "chanmask": None, "format": None}
CHOP_COMMON = dict.fromkeys(("timeslice", "scope", "srselect", "exportmethod", "autoexportroot",
                             "exporttable"))
DAT_COMMON = dict.fromkeys(("language", "extension", "customext", "wordwrap"))
DAT_FILE = dict.fromkeys(("edit", "file", "syncfile", "loadonstart", "loadonstartpulse", "write",
                          "writepulse"))
OSC_DAT = {"active": None, "protocol": ("msging", "multicastmsging", "reliablemsging"),
           **dict.fromkeys(("address", "port", "localaddress", "shared", "addscope", "typetag",
                            "splitbundle", "splitmessage", "bundletimestamp", "callbacks", "executeloc",
                            "fromop", "clamp", "maxlines", "clear", "bytes")), **DAT_COMMON}


@dataclass(frozen=True)
class OpType:
    family: str
    doc: str  # the page the parameter names were read from
    pars: dict = field(default_factory=dict)  # name -> allowed menu names (None: any value)


OPERATORS: dict[str, OpType] = {
    "containerCOMP": OpType("COMP", DOCS + "Container_COMP"),  # /project1 of a new project
    "baseCOMP": OpType("COMP", DOCS + "Base_COMP", dict.fromkeys((
        "reinitextensions", "initextonstart", "ext0object", "ext0name", "ext0promote",
        "parentshortcut", "opshortcut", "iop0shortcut", "iop0op", "opviewer", "enablecloning",
        "clone", "loadondemand", "enableexternaltox", "externaltox", "reloadcustom", "reloadbuiltin",
        "savebackup", "subcompname", "relpath"))),
    "textDAT": OpType("DAT", DOCS + "Text_DAT", {**DAT_FILE, **DAT_COMMON}),
    "tableDAT": OpType("DAT", DOCS + "Table_DAT", {**dict.fromkeys((
        "edit", "file", "syncfile", "defaultreadencoding", "loadonstart", "write", "removeblank",
        "fill", "rows", "cols")), **DAT_COMMON}),
    "executeDAT": OpType("DAT", DOCS + "Execute_DAT", {**dict.fromkeys((
        "active", "fromop", "start", "create", "exit", "framestart", "frameend", "playstatechange",
        "devicechange")), "executeloc": ("current", "here", "op"), **DAT_FILE, **DAT_COMMON}),
    "parameterexecuteDAT": OpType("DAT", DOCS + "Parameter_Execute_DAT", {**dict.fromkeys((
        "active", "fromop", "op", "pars", "valuechange", "valueschanged", "onpulse",
        "expressionchange", "exportchange", "enablechange", "modechange", "custom", "builtin")),
        "executeloc": ("current", "here", "op"), **DAT_FILE, **DAT_COMMON}),
    "oscinDAT": OpType("DAT", DOCS + "OSC_In_DAT", OSC_DAT),
    "oscoutDAT": OpType("DAT", DOCS + "OSC_Out_DAT", OSC_DAT),
    "syphonspoutinTOP": OpType("TOP", DOCS + "Syphon_Spout_In_TOP", {
        "usespoutactivesender": None, "sendername": None, **TOP_COMMON}),
    "ndiinTOP": OpType("TOP", DOCS + "NDI_In_TOP", {
        **dict.fromkeys(("active", "name", "extraips", "hwdecode", "inputpixelformat",
                         "inputcolorspace", "inputreferencewhite", "grouptable", "audiobuflen")),
        "bandwidth": ("high", "low"), **TOP_COMMON}),
    "switchTOP": OpType("TOP", DOCS + "Switch_TOP", {
        "index": None, "blend": None, "extend": ("clamp", "loop", "zigzag"), **TOP_COMMON}),
    "feedbackTOP": OpType("TOP", DOCS + "Feedback_TOP", {
        "top": None, "reset": None, "resetpulse": None, **TOP_COMMON}),
    "levelTOP": OpType("TOP", DOCS + "Level_TOP", {**dict.fromkeys((
        "clampinput", "invert", "blacklevel", "brightness1", "gamma1", "contrast", "inlow", "inhigh",
        "outlow", "outhigh", "stepping", "stepsize", "threshold", "soften", "gamma2", "opacity",
        "brightness2", "clamp", "clamplow2", "clamphigh2", "premultrgbbyalpha")), **TOP_COMMON}),
    "compositeTOP": OpType("TOP", DOCS + "Composite_TOP", {
        **dict.fromkeys(("top", "previewgrid", "selectinput", "inputindex", "swaporder", "size",
                         "prefit", "justifyh", "justifyv", "extend")),
        "operand": ("add", "atop", "average", "brightest", "burncolor", "burnlinear",
                    "chromadifference", "color", "darkercolor", "difference", "dimmest", "divide",
                    "dodge", "exclude", "freeze", "glow", "hardlight", "hardmix", "heat", "hue",
                    "inside", "insideluminance", "inverse", "lightercolor", "luminancedifference",
                    "maximum", "minimum", "multiply", "negate", "outside", "outsideluminance",
                    "over", "overlay", "pinlight", "reflect", "screen", "softlight", "linearlight",
                    "stencilluminance", "subtract", "subtractive", "under", "vividlight", "xor",
                    "yfilm", "zfilm"), **TOP_COMMON}),
    "nullTOP": OpType("TOP", DOCS + "Null_TOP", dict(TOP_COMMON)),
    "outTOP": OpType("TOP", DOCS + "Out_TOP", {"label": None, **TOP_COMMON}),
    "audiodeviceinCHOP": OpType("CHOP", DOCS + "Audio_Device_In_CHOP", {
        **dict.fromkeys(("active", "device", "errormissing", "inputs", "format", "rate",
                         "bufferlength", "numchan")),
        "driver": ("default", "asio", "datapath", "blackmagic", "aja"), **CHOP_COMMON}),
    "audiostreamoutCHOP": OpType("CHOP", DOCS + "Audio_Stream_Out_CHOP", {
        **dict.fromkeys(("active", "port", "streamname", "webrtc", "webrtcconnection", "webrtctrack")),
        "mode": ("rtsp", "webrtc"), **CHOP_COMMON}),
    "audiondiCHOP": OpType("CHOP", DOCS + "Audio_NDI_CHOP", {"play": None, "ndiintop": None, **CHOP_COMMON}),
    "midiinCHOP": OpType("CHOP", DOCS + "MIDI_In_CHOP", {
        **dict.fromkeys(("active", "device", "id", "file", "entire", "resetchannels",
                         "resetchannelspulse", "resetvalues", "simplified", "channel", "prefix")),
        "source": ("device", "file"), **CHOP_COMMON}),
    "nullCHOP": OpType("CHOP", DOCS + "Null_CHOP", {
        **dict.fromkeys(("cooktype", "checkvalues", "checknames", "checkrange")), **CHOP_COMMON}),
}
CUSTOM_NAME = re.compile(r"^[A-Z][a-z0-9]*$")
PULSES = {"reinitextensions", "resetpulse", "loadonstartpulse", "writepulse", "resetchannelspulse"}


class StandInError(RuntimeError):
    """What TouchDesigner would refuse (unknown type, parameter, menu entry or name)."""


# --- parameters ----------------------------------------------------------------------------
class Par:
    __slots__ = ("owner", "name", "label", "style", "isCustom", "page", "_val", "_expr", "default",
                 "min", "max", "normMin", "normMax", "clampMin", "clampMax", "menuNames", "menuLabels",
                 "startSection", "readOnly", "enable", "_allowed", "_help")

    def __init__(self, owner, name, style="", custom=False, allowed=None):
        self.owner, self.name, self.label, self.style, self.isCustom = owner, name, name, style, custom
        self.page = None
        self._val = {"Float": 0.0, "Int": 0, "Toggle": False, "Pulse": False}.get(style, "")
        self._expr = ""
        self.default = self._val
        self.min = self.normMin = 0
        self.max = self.normMax = 1
        self.clampMin = self.clampMax = False
        self.menuNames = list(allowed or [])
        self.menuLabels = list(allowed or [])
        self.startSection = self.readOnly = False
        self.enable = True
        self._allowed = allowed
        self._help = ""

    @property
    def help(self):  # Read Only on a Par (set it on the ParGroup)
        return self._help

    @property
    def val(self):
        return self._val

    @val.setter
    def val(self, value):
        if isinstance(value, Par):
            value = value.eval()
        menu = self._allowed if not self.isCustom else (self.menuNames if self.style == "Menu" else None)
        if menu and value not in menu:
            raise StandInError(f"{self.owner.path}: '{value}' is not an entry of menu {self.name} "
                               f"({', '.join(menu)})")
        prev, self._val, self._expr = self._val, value, ""
        if self.isCustom and prev != value:
            self.owner._td._changed(self, value, prev)

    @property
    def expr(self):
        return self._expr

    @expr.setter
    def expr(self, text):
        compile(text, f"{self.owner.path}.par.{self.name}", "eval")  # a syntax error fails now
        self._expr = text

    @property
    def isPulse(self):
        return self.style == "Pulse" or self.name in PULSES

    @property
    def isMenu(self):
        return self.style == "Menu" or bool(self._allowed)

    @property
    def isToggle(self):
        return self.style == "Toggle"

    @property
    def menuIndex(self):
        return self.menuNames.index(self.eval())

    def eval(self):
        if not self._expr:
            return self._val
        value = eval(self._expr, self.owner._td.namespace(self.owner))
        return value.eval() if isinstance(value, Par) else value

    def pulse(self, value=1, frames=0, seconds=0):
        if not self.isPulse:
            raise StandInError(f"{self.owner.path}.par.{self.name} is not a pulse parameter")
        if self.name == "reinitextensions":
            self.owner.initializeExtensions()
        elif self.isCustom:
            self.owner._td._pulsed(self)

    def __repr__(self):
        return f"<Par {self.owner.path}.par.{self.name}={self.eval()!r}>"


class ParGroup:
    __slots__ = ("pars", "help")

    def __init__(self, pars):
        self.pars, self.help = pars, ""

    def __getitem__(self, i):
        return self.pars[i]

    def __len__(self):
        return len(self.pars)


class ParCollection:
    """op.par.name / op.par['name']: only documented names; custom ones once appended."""
    __slots__ = ("_owner", "_pars")

    def __init__(self, owner):
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_pars", {})

    def _get(self, name, strict=True):
        if name in self._pars:
            return self._pars[name]
        spec = OPERATORS[self._owner.OPType].pars
        if name in spec:
            self._pars[name] = Par(self._owner, name, allowed=spec[name])
            return self._pars[name]
        if strict:
            raise AttributeError(f"{self._owner.OPType} has no parameter '{name}' "
                                 f"(see {OPERATORS[self._owner.OPType].doc})")
        return None

    def __getattr__(self, name):
        return self._get(name)

    def __setattr__(self, name, value):
        self._get(name).val = value

    def __getitem__(self, name):
        return self._get(name, strict=False)


class Page:
    __slots__ = ("owner", "name", "pars")

    def __init__(self, owner, name):
        self.owner, self.name, self.pars = owner, name, []

    def _append(self, style, name, label=None, size=1, order=None, replace=True):
        if not CUSTOM_NAME.match(name):
            raise StandInError(f"custom parameter name '{name}': a capital letter, then lower case "
                               f"letters and digits only")
        old = self.owner.par._pars.get(name)
        if old is not None:
            if not replace:
                raise StandInError(f"{self.owner.path} already has parameter '{name}'")
            old.page.pars.remove(old)
        par = Par(self.owner, name, style, custom=True)
        par.label, par.page = label or name, self
        self.owner.par._pars[name] = par
        self.pars.append(par)
        return ParGroup([par])

    def appendFloat(self, name, label=None, size=1, order=None, replace=True):
        return self._append("Float", name, label, size, order, replace)

    def appendInt(self, name, label=None, size=1, order=None, replace=True):
        return self._append("Int", name, label, size, order, replace)

    def appendToggle(self, name, label=None, order=None, replace=True):
        return self._append("Toggle", name, label, order=order, replace=replace)

    def appendMenu(self, name, label=None, order=None, replace=True):
        return self._append("Menu", name, label, order=order, replace=replace)

    def appendPulse(self, name, label=None, order=None, replace=True):
        return self._append("Pulse", name, label, order=order, replace=replace)

    def appendStr(self, name, label=None, order=None, replace=True):
        return self._append("Str", name, label, order=order, replace=replace)

    def appendFile(self, name, label=None, order=None, replace=True):
        return self._append("File", name, label, order=order, replace=replace)

    def appendFolder(self, name, label=None, order=None, replace=True):
        return self._append("Folder", name, label, order=order, replace=replace)


# --- operators -----------------------------------------------------------------------------
class OP:
    __slots__ = ("_td", "name", "_parent", "OPType", "par", "_inputs", "nodeX", "nodeY", "comment",
                 "color", "viewer", "valid", "_created_at", "__weakref__")

    def __init__(self, td, optype, name, parent):
        self._td, self.OPType, self.name, self._parent = td, optype, name, parent
        self.par = ParCollection(self)
        self._inputs = []
        self.nodeX = self.nodeY = 0
        self.comment = ""
        self.color = (0.55, 0.55, 0.55)
        self.viewer = False
        self.valid = True
        self._created_at = td._seq

    @property
    def family(self):
        return OPERATORS[self.OPType].family

    @property
    def type(self):
        return self.OPType[: -len(self.family)]

    @property
    def isCOMP(self):
        return self.family == "COMP"

    @property
    def path(self):
        if self._parent is None:
            return "/"
        base = self._parent.path
        return (base if base.endswith("/") else base + "/") + self.name

    @property
    def inputs(self):
        return list(self._inputs)

    def setInputs(self, ops):
        for o in ops:
            if o.family != self.family:
                raise StandInError(f"cannot wire {o.path} ({o.family}) into {self.path} ({self.family})")
        self._inputs = list(ops)

    def parent(self, n=1):
        node = self
        for _ in range(n):
            node = node._parent
        return node

    @property
    def ext(self):
        return _ExtSearch(self)

    def op(self, path):
        return self._td.resolve(path, self)

    def destroy(self):
        for child in list(getattr(self, "children", [])):
            child.destroy()
        if self.isCOMP:
            for instance in self._extensions.values():
                if hasattr(instance, "onDestroyTD"):
                    self.valid = False
                    instance.onDestroyTD()
        self.valid = False
        if self._parent is not None:
            del self._parent._children[self.name]

    def __repr__(self):
        return f"<{self.OPType} {self.path}>"


class _ExtSearch:
    """OP.ext: finds a named extension on this component or an ancestor (Extensions page)."""
    __slots__ = ("_op",)

    def __init__(self, op):
        self._op = op

    def __getattr__(self, name):
        node = self._op if self._op.isCOMP else self._op._parent
        while node is not None:
            if name in node._extensions:
                return node._extensions[name]
            node = node._parent
        raise AttributeError(f"no extension '{name}' on {self._op.path} or above")


class COMP(OP):
    __slots__ = ("_children", "_pages", "_extensions", "_promoted")

    def __init__(self, td, optype, name, parent):
        super().__init__(td, optype, name, parent)
        self._children, self._pages, self._extensions, self._promoted = {}, [], {}, {}

    @property
    def children(self):
        return list(self._children.values())

    def create(self, opType, name=None, initialize=True):
        if not isinstance(opType, str) or opType not in OPERATORS:
            raise StandInError(f"unknown operator type {opType!r} (not among the documented types "
                               f"this stand-in lists)")
        family = OPERATORS[opType].family
        base = name or opType[: -len(family)] + "1"
        name, n = base, 1
        while name in self._children:  # "the next numbered name will be used"
            n += 1
            name = f"{base.rstrip('0123456789')}{n}"
        cls = {"COMP": COMP, "DAT": DAT}.get(family, OP)
        cls = {"oscinDAT": OscInDAT, "oscoutDAT": OscOutDAT}.get(opType, cls)
        node = cls(self._td, opType, name, self)
        self._children[name] = node
        return node

    def appendCustomPage(self, name):
        page = Page(self, name)
        self._pages.append(page)
        return page

    @property
    def customPages(self):
        return list(self._pages)

    @property
    def customPars(self):
        return [p for page in self._pages for p in page.pars]

    def save(self, filepath, createFolders=False, password=None):
        self._td.saves.append(("tox", str(filepath), self.path))
        return str(filepath)

    def initializeExtensions(self, index=None):
        """Build the extension from ext0object (an expression evaluated with me = this COMP)."""
        for old in self._extensions.values():
            if hasattr(old, "onDestroyTD"):
                old.onDestroyTD()
        self._extensions, self._promoted = {}, {}
        source = self.par.ext0object.eval()
        if not source:
            return None
        instance = eval(source, self._td.namespace(self))
        name = self.par.ext0name.eval() or type(instance).__name__
        self._extensions[name] = instance
        if self.par.ext0promote.eval():  # capitalised members become members of the COMP
            self._promoted = {k: instance for k in dir(instance) if k[:1].isupper()}
        if hasattr(instance, "onInitTD"):
            instance.onInitTD()
        return instance

    def __getattr__(self, name):
        promoted = object.__getattribute__(self, "_promoted")
        if name in promoted:
            return getattr(promoted[name], name)
        raise AttributeError(f"{self.OPType} {self.path} has no member '{name}'")


class DAT(OP):
    __slots__ = ("_text", "_rows", "_module", "_module_text")

    def __init__(self, td, optype, name, parent):
        super().__init__(td, optype, name, parent)
        self._text, self._rows, self._module, self._module_text = "", [], None, None

    @property
    def text(self):
        if self._rows:
            return "\n".join("\t".join(str(c) for c in row) for row in self._rows)
        return self._text

    @text.setter
    def text(self, value):
        self._text, self._rows = str(value), []

    # table members
    def clear(self, keepSize=False, keepFirstRow=False, keepFirstCol=False):
        self._rows, self._text = [], ""

    def appendRow(self, vals, nameOrIndex=None, sort=None):
        self._rows.append([str(v) for v in vals])
        return len(self._rows) - 1

    @property
    def numRows(self):
        return len(self._rows)

    def rows(self):
        return [list(r) for r in self._rows]

    @property
    def module(self):
        """The DAT's text run as a module, recompiled when the text changes (MOD Class)."""
        if self._module is None or self._module_text != self._text:
            import types
            module = types.ModuleType(self.name)
            namespace = module.__dict__
            namespace.update(self._td.namespace(self))
            namespace["__builtins__"] = dict(builtins.__dict__, __import__=self._import)
            exec(compile(self._text, f"{self.path} (DAT)", "exec", dont_inherit=True), namespace)
            self._module, self._module_text = module, self._text
        return self._module

    def _import(self, name, globals=None, locals=None, fromlist=(), level=0):
        """`import datName` finds a DAT beside this one first, then the file system (MOD Class)."""
        sibling = self._parent._children.get(name) if level == 0 else None
        if isinstance(sibling, DAT):
            return sibling.module
        return builtins.__import__(name, globals, locals, fromlist, level)

    def run_callback(self, function, *args):
        callback = getattr(self.module, function, None)
        return callback(*args) if callback is not None else None


class OscOutDAT(DAT):
    __slots__ = ("_sock", "sent")

    def __init__(self, td, optype, name, parent):
        super().__init__(td, optype, name, parent)
        self._sock, self.sent = None, []

    def sendOSC(self, *pairs, asBundle=False, useNonStandardTypes=True, use64BitPrecision=False):
        """sendOSC(address, values, [address, values...]) -> bytes sent (OscoutDAT Class)."""
        if len(pairs) % 2:
            raise StandInError("sendOSC takes address/valueList pairs")
        if self._sock is None:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        target = (str(self.par.address.eval()), int(self.par.port.eval()))
        total = 0
        for address, values in zip(pairs[::2], pairs[1::2]):
            builder = OscMessageBuilder(address=address)
            for v in values:
                builder.add_arg(v)
            data = builder.build().dgram
            total += self._sock.sendto(data, target) if self.par.active.eval() else 0
            self.sent.append((address, list(values)))
        return total

    def close(self):
        if self._sock is not None:
            self._sock.close()


class OscInDAT(DAT):
    __slots__ = ("_sock", "_bound")

    def __init__(self, td, optype, name, parent):
        super().__init__(td, optype, name, parent)
        self._sock, self._bound = None, None

    def pump(self):
        """One frame of receiving: every waiting packet becomes rows and callbacks."""
        if not self.par.active.eval():
            return
        port = int(self.par.port.eval())
        if self._bound != port:
            self.close()
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sock.bind(("0.0.0.0", port))
            self._sock.setblocking(False)
            self._bound = port
        while True:
            try:
                data, peer = self._sock.recvfrom(65535)
            except BlockingIOError:
                return
            for element in OscPacket(data).messages:
                message, row = element.message, len(self._rows)
                self._rows.append([message.address] + [str(a) for a in message.params])
                limit = int(self.par.maxlines.eval() or 0) if self.par.clamp.eval() else 100
                if limit and len(self._rows) > limit:
                    self._rows = self._rows[-limit:]
                callbacks = self.par.callbacks.eval()
                if callbacks:
                    self.op(callbacks).run_callback(
                        "onReceiveOSC", self, row, " ".join(self._rows[-1]), data, element.time,
                        message.address, list(message.params), peer)

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock, self._bound = None, None


# --- the session -----------------------------------------------------------------------------
class AbsTime:
    __slots__ = ("frame", "seconds", "step")

    def __init__(self):
        self.frame, self.seconds, self.step = 0, 0.0, 1.0 / 60.0


class Project:
    def __init__(self, td):
        self._td, self.name, self.folder = td, "NewProject.toe", ""

    def save(self, path=None, saveExternalToxs=False):
        self._td.saves.append(("toe", str(path), "/"))
        return True


class TouchDesigner:
    """A session: /project1 exists, as in a new project. step() plays one frame."""

    def __init__(self):
        self._seq = 0
        self.saves: list[tuple[str, str, str]] = []
        self.root = COMP(self, "containerCOMP", "", None)
        self.root._children["project1"] = COMP(self, "containerCOMP", "project1", self.root)
        self.project = Project(self)
        self.absTime = AbsTime()
        self._events: list[tuple[int, str, Par, object, object]] = []
        self.printed: list[str] = []

    # paths: '/abs'; './child' and '../up' start at `base` itself; a bare name starts in the
    # network `base` shows: its children for a component, its siblings otherwise
    def resolve(self, path, base=None):
        path = str(path)
        if path.startswith("/"):
            node = self.root
        elif path.startswith(".") or base is None or base.isCOMP:
            node = base if base is not None else self.root
        else:
            node = base._parent
        for part in path.strip("/").split("/"):
            if part in ("", "."):
                continue
            node = node._parent if part == ".." else node._children.get(part) if node.isCOMP else None
            if node is None:
                return None
        return node

    def namespace(self, me):
        """The names TouchDesigner gives every script and expression (td module)."""
        return {"me": me, "op": lambda path: self.resolve(path, me),
                "parent": lambda n=1: me.parent(n), "root": self.root, "project": self.project,
                "absTime": self.absTime, "debug": lambda *a: self.printed.append(" ".join(map(str, a)))}

    def op(self, path):
        return self.resolve(path)

    def textport_globals(self):
        """What the Textport's globals() holds for the build one-liner's init_globals."""
        return {"op": self.op, "root": self.root, "project": self.project, "absTime": self.absTime,
                "me": self.root}

    # parameter callbacks
    def _changed(self, par, value, prev):
        self._seq += 1
        self._events.append((self._seq, "value", par, value, prev))

    def _pulsed(self, par):
        self._seq += 1
        self._events.append((self._seq, "pulse", par, None, None))

    def _all(self, node=None):
        node = node or self.root
        for child in node.children if node.isCOMP else []:
            yield child
            yield from self._all(child)

    def step(self, frames=1):
        """Play frames: OSC In DATs receive, Execute DATs' onFrameStart, then the parameter
        callbacks of the changes and pulses since the last frame."""
        for _ in range(frames):
            self.absTime.frame += 1
            self.absTime.seconds += self.absTime.step
            for node in list(self._all()):
                if isinstance(node, OscInDAT) and node.valid:
                    node.pump()
            self._execute("framestart", "onFrameStart", self.absTime.frame)
            events, self._events = self._events, []
            for node in list(self._all()):
                if node.OPType == "parameterexecuteDAT" and node.valid and node.par.active.eval():
                    watched = node.op(node.par.op.eval())
                    for seq, kind, par, value, prev in events:
                        if seq <= node._created_at or par.owner is not watched or not par.owner.valid \
                                or not fnmatch.fnmatchcase(par.name, node.par.pars.eval() or "*"):
                            continue
                        if not (node.par.custom.eval() if par.isCustom else node.par.builtin.eval()):
                            continue
                        if kind == "value" and node.par.valuechange.eval():
                            node.run_callback("onValueChange", par, value, prev)
                        elif kind == "pulse" and node.par.onpulse.eval():
                            node.run_callback("onPulse", par)

    def _execute(self, toggle, function, *args):
        for node in list(self._all()):
            if node.OPType == "executeDAT" and node.valid and node.par.active.eval() \
                    and node.par._get(toggle).eval():
                node.run_callback(function, *args)

    def start(self):
        """The project opens: Execute DATs with Start on run onStart()."""
        self._execute("start", "onStart")

    def quit(self):
        """The project closes: Execute DATs with Exit on run onExit(); sockets close."""
        self._execute("exit", "onExit")
        for node in list(self._all()):
            if isinstance(node, (OscInDAT, OscOutDAT)):
                node.close()
