"""Turn an `--out` spec string into an opened sink.

Each output's library is imported only when that output is chosen, so a missing optional
extra (cyndilib, SpoutGL, syphon-python, pygame) only matters to the user who asked for it.
Outputs that can be slow (network, GPU sharing, windows, encoders, disk) are wrapped in
`ThreadedSink`; `shm` (one memcpy) and `null` are called directly, for the least latency.
"""
from __future__ import annotations

from dataclasses import dataclass

from bridge.errors import ConfigError
from bridge.sinks.base import Sink

SINK_FORMS = ("ndi[:name]", "spout[:name]", "syphon[:name]", "shm[:name]", "window",
              "file:PATH.mp4", "png:DIR", "null", "sound[:device]")

SINK_SPECS = """\
Outputs (--out, may be given more than once):
  ndi[:name]      NDI source on the network (default name "vjbridge"); carries audio too
  spout[:name]    Spout sender, Windows only (pip install vjbridge[spout])
  syphon[:name]   Syphon server, macOS only (pip install vjbridge[syphon])
  shm[:name]      shared memory block for local readers such as a TouchDesigner Script TOP
  window          preview window (pip install pygame); closing it leaves the bridge running
  file:PATH.mp4   H.264 + AAC recording
  png:DIR         PNG sequence DIR/frame_000000.png ...
  null            discard frames (benchmarks)
  sound[:device]  play the sound on a sound card (index or name; default: the system's output):
                  a sound model's generated voice, else the music"""

_NAMED = ("ndi", "spout", "syphon", "shm", "sound")
_PLAIN = ("window", "null")
_PATHED = ("file", "png")
_THREADED = ("ndi", "spout", "syphon", "window", "file", "png")


@dataclass(frozen=True)
class SinkSpec:
    kind: str       # one of ndi, spout, syphon, shm, window, file, png, null, sound
    arg: str = ""   # the name or path after the first ':' ("" when none)


def _bad(spec: str, why: str) -> ConfigError:
    return ConfigError(f"bad output {spec!r}: {why}; use one of: {', '.join(SINK_FORMS)}")


def parse_sink_spec(spec: str) -> SinkSpec:
    """'ndi:stage left' → SinkSpec('ndi', 'stage left'). Splits at the first ':' only, so
    Windows paths (file:C:\\clips\\a.mp4) survive. Raises ConfigError listing the forms."""
    kind, _, arg = spec.strip().partition(":")
    kind, arg = kind.strip().lower(), arg.strip()
    if kind in _NAMED:
        if kind == "shm" and arg:
            from bridge.sinks.shm import check_shm_name
            try:
                check_shm_name(arg)
            except ValueError as exc:
                raise _bad(spec, str(exc)) from None
        return SinkSpec(kind, arg)
    if kind in _PLAIN:
        if arg:
            raise _bad(spec, f"{kind} takes no argument")
        return SinkSpec(kind)
    if kind in _PATHED:
        if not arg:
            raise _bad(spec, f"{kind} needs a path")
        if kind == "file" and not arg.lower().endswith(".mp4"):
            raise _bad(spec, "recordings are .mp4 files")
        return SinkSpec(kind, arg)
    raise _bad(spec, "unknown output")


def build_sink(spec: str | SinkSpec, audio_rate: int | None = None,
               threaded: bool | None = None) -> Sink:
    """Make (but do not open) the sink for `spec`. `threaded=None` wraps the slow kinds."""
    s = parse_sink_spec(spec) if isinstance(spec, str) else spec
    sink: Sink
    if s.kind == "ndi":
        from bridge.sinks.ndi import NdiSink
        sink = NdiSink(s.arg or "vjbridge", audio_rate=audio_rate)
    elif s.kind == "spout":
        from bridge.sinks.spout import SpoutSink
        sink = SpoutSink(s.arg or "vjbridge")
    elif s.kind == "syphon":
        from bridge.sinks.syphon import SyphonSink
        sink = SyphonSink(s.arg or "vjbridge")
    elif s.kind == "shm":
        from bridge.sinks.shm import ShmSink
        sink = ShmSink(s.arg or "vjbridge")
    elif s.kind == "window":
        from bridge.sinks.window import WindowSink
        sink = WindowSink()
    elif s.kind == "file":
        from bridge.sinks.file import Mp4Sink
        sink = Mp4Sink(s.arg, audio_rate=audio_rate)
    elif s.kind == "png":
        from bridge.sinks.file import PngSink
        sink = PngSink(s.arg)
    elif s.kind == "null":
        from bridge.sinks.null import NullSink
        sink = NullSink()
    elif s.kind == "sound":
        # Not threaded: send only copies into the player's ring buffer.
        from bridge.sinks.sound import SoundOut
        sink = SoundOut(s.arg or None, rate=audio_rate)
    else:  # a SinkSpec built by hand
        raise _bad(s.kind, "unknown output")
    if threaded if threaded is not None else s.kind in _THREADED:
        from bridge.sinks.threaded import ThreadedSink
        sink = ThreadedSink(sink)
    return sink


def open_sink(spec: str | SinkSpec, width: int, height: int, fps: float,
              audio_rate: int | None = None, threaded: bool | None = None) -> Sink:
    """Build and open the sink for `spec`. Raises ConfigError for a bad spec and
    SinkUnavailable (one line naming the fix) when the output cannot work here."""
    return build_sink(spec, audio_rate=audio_rate, threaded=threaded).open(width, height, fps)
