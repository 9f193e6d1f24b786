"""Where frames go. `open_sink("ndi:stage", w, h, fps)` is the usual way in; see factory.py
for the spec strings and base.py for the Sink seam. Output libraries load only when chosen."""
from bridge.sinks.base import Sink, check_frame
from bridge.sinks.factory import SINK_SPECS, SinkSpec, build_sink, open_sink, parse_sink_spec
from bridge.sinks.threaded import ThreadedSink

__all__ = ["Sink", "ThreadedSink", "SinkSpec", "SINK_SPECS", "build_sink", "check_frame",
           "open_sink", "parse_sink_spec"]
