"""vjbridge: learned, audio-reactive visuals for TouchDesigner and friends.

The package is laid out by stage (see ../shared/DESIGN.md): sources -> analysis ->
generators -> sinks, with the engine driving the loop and control writing params.
"""

__version__ = "0.1.0"
