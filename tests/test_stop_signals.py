"""Stopping a live set from outside: Ctrl-C (SIGINT) and SIGTERM end the loop at its next frame
and close the outputs in order (a recording is finished, not cut), and a close that never ends
says where it is stuck. Real signals, real processes, a real mp4 checked by ffprobe."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import torch

from bridge import clock
from bridge.engine import Engine, FramePipeline
from bridge.generators.base import save_bundle
from bridge.generators.pix2pix import Pix2Pix, Pix2PixConfig
from bridge.live import _SlowCloseReport, stop_on_signals
from bridge.runtime import Runner
from bridge.sinks import open_sink
from tests.helpers.procs import stop_with

AMEN = "/usr/share/sonic-pi/samples/loop_amen.flac"


def tiny_pipeline():
    torch.manual_seed(0)
    model = Pix2Pix(Pix2PixConfig(size=32, ngf=4, input="bands")).eval()
    return FramePipeline(model, runner=Runner(model, runtime="reference"))


def test_ctrl_c_ends_the_run_at_the_next_frame_without_an_exception_and_the_handler_comes_back():
    before = signal.getsignal(signal.SIGINT)
    engine = Engine(tiny_pipeline(), [open_sink("null", 32, 32, 50)], fps=50)
    timer = threading.Timer(0.6, os.kill, args=(os.getpid(), signal.SIGINT))
    started = clock.now()
    with stop_on_signals(engine.request_stop):
        timer.start()
        summary = engine.run(duration=30.0)  # a KeyboardInterrupt here would fail the test
    took = clock.now() - started
    assert 0.5 < took < 5.0, took
    assert summary["sent"] > 5 and summary["errors"] == 0
    assert signal.getsignal(signal.SIGINT) is before


def test_stop_on_signals_does_nothing_off_the_main_thread():
    seen = []

    def other():
        with stop_on_signals(lambda: None):
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen == [before]


def test_sigterm_ends_a_recording_run_cleanly(tmp_path):
    """A service manager's stop: exit 0, the summary printed, the mp4 finished and playable."""
    torch.manual_seed(0)
    save_bundle(Pix2Pix(Pix2PixConfig(size=64, ngf=4, input="bands")), tmp_path / "models" / "sig")
    movie = tmp_path / "set.mp4"
    env = dict(os.environ, VJBRIDGE_MODELS=str(tmp_path / "models"))
    bridge = subprocess.Popen(
        [sys.executable, "-m", "bridge", "run", "--model", "sig", "--audio-in", AMEN,
         "--out", f"file:{movie}", "--fps", "20", "--duration", "120", "--runtime", "reference"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and bridge.poll() is None and not movie.exists():
            time.sleep(0.2)  # the encoder has started: the file has its header
        assert bridge.poll() is None, bridge.communicate()[1][-2000:]
        # 3 s of frames at 20 fps, most of them still in the encoder's and muxer's buffers (the
        # file stays at its header for seconds): the close must write them all and the index
        time.sleep(3.0)
        out, err = stop_with(bridge, signal.SIGTERM)
    finally:
        if bridge.poll() is None:
            bridge.kill()
    assert bridge.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["sent"] >= 10
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=nb_read_frames", "-of", "csv=p=0", str(movie)], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr  # a cut-off mp4 has no index and does not open
    assert int(probe.stdout.strip().split(",")[0]) >= 10


def test_a_close_that_hangs_prints_where_each_thread_is(tmp_path):
    report_file = tmp_path / "stderr.txt"
    with open(report_file, "w") as stream:
        with _SlowCloseReport(after_s=0.2, stream=stream):
            stuck_in_a_driver = threading.Event()
            stuck_in_a_driver.wait(0.8)  # a part's close() that takes too long
    text = report_file.read_text()
    assert "closing has taken over 0.2 s" in text
    assert "test_a_close_that_hangs_prints_where_each_thread_is" in text  # the stack names the wait


def test_a_close_in_time_prints_nothing_and_leaves_no_thread(tmp_path):
    report_file = tmp_path / "stderr.txt"
    with open(report_file, "w") as stream:
        with _SlowCloseReport(after_s=0.5, stream=stream):
            pass
        assert "vjbridge-close-watch" not in {t.name for t in threading.enumerate()}
        time.sleep(0.7)
    assert report_file.read_text() == ""


# A live session whose model is still compiling when the program ends. Python ends a daemon
# thread by unwinding it where it next takes the GIL; inside torch's C++ (dynamo's frame hook)
# that can abort the whole process: "terminate called without an active exception", exit 134
# (seen ending a run on a fresh machine, its compile still going, about one exit in two). Here
# the compile is held inside Inductor until the main thread has left; the program must then wait
# for the loader thread, which ends its compile (or, with no kernels cached, has it refused by
# the exiting interpreter's thread pools and plays on eager) and compiles no further level.
HELD_COMPILE = """
import os, sys, threading, time
import torch
import torch._inductor.compile_fx as inductor
from bridge.generators.base import save_bundle
from bridge.generators.pix2pix import Pix2Pix, Pix2PixConfig
from bridge.live import LiveSession, LiveSettings

torch.manual_seed(5)  # 64 px: a half-size level of its own, compiled after the full one
save_bundle(Pix2Pix(Pix2PixConfig(size=64, ngf=4, input="bands")), os.environ["VJBRIDGE_MODELS"] + "/tiny-64")
entered, compiles = threading.Event(), []
real = inductor.compile_fx


def held(*args, **kwargs):
    compiles.append("started")
    entered.set()
    while threading.main_thread().is_alive():  # the GIL let go, until the program is ending
        time.sleep(0.02)
    try:
        compiled = real(*args, **kwargs)
    except Exception as e:  # "cannot schedule new futures after interpreter shutdown"
        compiles.append("refused" if "shutdown" in str(e) else repr(e))
        raise
    compiles.append("finished")
    return compiled


def loaders():  # the loader threads still alive
    return sum(t.name == "vjbridge-model-load" for t in threading.enumerate())


inductor.compile_fx = held
session = LiveSession(LiveSettings(model="tiny-64", audio_in="silence", outs=["null"], fps=30,
                                   threads=1, degrade="1,0.5"))
threading.Thread(target=lambda: entered.wait(60) and session.engine.stop(), daemon=True).start()
with session:
    session.run(duration=60, status_stream=None)
print("closed during", session.still_loading(), flush=True)
import atexit
atexit.register(lambda: print(*compiles, "loaders", loaders(), flush=True))
"""


def test_a_program_ending_while_its_model_compiles_lets_the_compile_end_and_compiles_no_further(tiny_models):
    from pathlib import Path
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    child = subprocess.run([sys.executable, "-c", HELD_COMPILE], env=env, capture_output=True, text=True,
                           timeout=240)
    assert "terminate called" not in child.stderr, child.stderr[-2000:]
    assert child.returncode == 0, child.stderr[-2000:]
    lines = child.stdout.splitlines()
    assert lines[0] == "closed during the compile of tiny-64", child.stdout
    # Python waited for the loader at exit (a daemon was still inside the compile here): it ended
    # the level it was on and started no other
    assert lines[-1] in ("started finished loaders 0", "started refused loaders 0"), child.stdout


HELD_PROGRAM = """
import sys, time
import torch._inductor.compile_fx as inductor
from bridge.cli import program


def held(*args, **kwargs):  # a compile that would take minutes
    print("compiling", flush=True)
    time.sleep(300)


inductor.compile_fx = held
sys.argv = ["vjbridge", "run", "--model", "tiny-a", "--audio-in", "silence", "--out", "null", "--threads", "1",
            "--duration", "2"]
program()
"""


def test_vjbridge_stopped_during_a_compile_quits_at_once_with_its_summary(tiny_models):
    from pathlib import Path
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    child = subprocess.run([sys.executable, "-c", HELD_PROGRAM], env=env, capture_output=True, text=True,
                           timeout=120)  # waiting for the compile would take 300 s
    assert child.returncode == 0, child.stderr[-2000:]
    out = child.stdout.splitlines()
    assert out[0] == "compiling"
    assert json.loads(out[-1])["sent"] >= 30  # the summary, printed before it quit
    assert "stopped during the compile of tiny-a; not waiting for it" in child.stderr
