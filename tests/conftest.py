"""Shared test setup. Fixtures that start real components live in tests/helpers/.

`bash setup.sh test` installs every component the tests drive (PulseAudio, JACK, ffmpeg, NDI,
CC0 samples) and sets VJBRIDGE_STRICT_TESTS=1: there, a test that skips because something is
missing fails instead, so a core path can never be skipped silently in CI. Only tests marked
`other_os` (behaviour that exists on another operating system) and `gpu` (needs a CUDA device;
run them on a GPU machine: `pytest --noconftest tests/test_runtime_cuda.py`) may skip.
"""
import os
import sys

import pytest
import torch

from tests.helpers.jack import jack_server  # noqa: F401  (fixture, one JACK server per run)
from tests.helpers.models import tiny_models  # noqa: F401  (fixture: two small pix2pix bundles)
from tests.helpers.ndi import ndi_receiver  # noqa: F401  (fixture)
from tests.helpers.osc import inbox  # noqa: F401  (fixture: a UDP socket collecting OSC replies)
from tests.helpers.pulse import pulse_null_sink  # noqa: F401  (fixture, one daemon per run)
from tests.helpers.threads import thread_exceptions  # noqa: F401  (fixture: escaped thread exceptions)

# Torch on 2 cores: keep test runs from oversubscribing.
os.environ.setdefault("OMP_NUM_THREADS", "2")

STRICT = os.environ.get("VJBRIDGE_STRICT_TESTS") == "1"


@pytest.fixture(autouse=True)
def torch_threads_put_back():
    """A test that sets this thread's torch count (a live session, a thread trial played here)
    leaves the next test the count it had: a degradation test after a mix's once ran at 1."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def runs_stopped():
    """A live run a test started on a thread (test_reliability.Running) and left going, because
    the test failed before it stopped it, is stopped as the test ends: it would keep the process
    alive for the rest of its duration (UNTIL_STOPPED_S)."""
    yield
    module = sys.modules.get("tests.test_reliability")
    runs = getattr(getattr(module, "Running", None), "started", None)
    while runs:
        run = runs.pop()
        if run.thread.is_alive():
            run.session.engine.stop()
            run.thread.join(30.0)


def pytest_configure(config):
    config.addinivalue_line("markers", "other_os: checks behaviour of another OS; may skip here")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not any(item.get_closest_marker(m) for m in ("other_os", "gpu")):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped in strict mode (setup.sh test installs everything): {reason}"
