"""Error types. Each child also inherits the builtin it resembles, so callers can
catch either ours or Python's (the python-rtmidi habit)."""


class BridgeError(Exception):
    """Base for every error vjbridge raises on purpose. Its message is one line for a human."""


class ModelLoadError(BridgeError, RuntimeError):
    """A model bundle could not be found, verified or rebuilt."""


class DeviceError(BridgeError, OSError):
    """An audio device, camera or output cannot be opened."""


class SourceError(BridgeError, OSError):
    """A file or stream cannot be read."""


class SinkUnavailable(BridgeError, RuntimeError):
    """An output is not supported on this OS or its library is missing."""


class InputMismatch(BridgeError, ValueError):
    """A model was given an input kind it cannot use."""


class ConfigError(BridgeError, ValueError):
    """A setting, preset or command line value is invalid."""


class ControlError(BridgeError, ValueError):
    """A control message (OSC, MIDI, preset) was refused: wrong type, unknown name, bad value."""


class GeneratorUnavailable(BridgeError, RuntimeError):
    """The generator cannot make this frame (an isolated worker restarting): the last good one
    goes out again. Not an error of the frame: the engine counts it as a repeat."""
