"""The playing thread's parallel calls, beside the OpenMP teams other threads left waiting.

GNU libgomp (torch's Linux wheels) keeps a team of worker threads for each thread that ran a
parallel call, and counts them all: past the CPUs, every worker sleeps in the kernel between two
parallel regions instead of spinning. The live network runs in the engine's own thread, after the
main thread built and warmed the models, so without `release_openmp_workers` its calls slept and
woke at every region. Each check runs in a child process held to 2 CPUs (libgomp counts them as
it loads), counting the kernel's voluntary context switches of the calling thread."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
                                reason="GNU OpenMP's teams: Linux with 2 CPUs or more")

PREAMBLE = """
import json, os, resource, threading
os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
import torch
import bridge.engine as engine
from bridge.runtime import release_openmp_workers

def switches():
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw
"""

A_THREADS_CALLS = PREAMBLE + """
torch.set_num_threads(2)
conv = torch.nn.Conv2d(32, 32, 3, padding=1).eval()
x = torch.randn(1, 32, 96, 96)

def per_call(out, calls=40):
    torch.set_num_threads(2)
    with torch.inference_mode():
        for _ in range(5):
            conv(x)
        before = switches()
        for _ in range(calls):
            conv(x)
        out.append((switches() - before) / calls)

def in_a_thread():
    out = []
    thread = threading.Thread(target=per_call, args=(out,))
    thread.start()
    thread.join()
    return out[0]

with torch.inference_mode():
    conv(x)  # the main thread's own team: a worker left waiting
kept = in_a_thread()
released = release_openmp_workers()
print(json.dumps({"kept": kept, "released": released, "after": in_a_thread()}))
"""

THE_ENGINES_FRAMES = PREAMBLE + """
from bridge.engine import Engine, FramePipeline
from bridge.generators.pix2pix import Pix2Pix, Pix2PixConfig
from bridge.runtime import Runner
from bridge.sinks import open_sink

torch.manual_seed(0)
model = Pix2Pix(Pix2PixConfig(size=128, ngf=16, input="bands")).eval()

def run(release):
    runner = Runner(model, runtime="reference")
    runner.use_threads(2)
    pipeline = FramePipeline(model, runner=runner)
    counts, make = [], pipeline.make_frame
    def counted(*args, **kwargs):
        before = switches()
        try:
            return make(*args, **kwargs)
        finally:
            counts.append(switches() - before)
    pipeline.make_frame = counted
    torch.set_num_threads(2)
    with torch.inference_mode():
        runner(torch.zeros(1, 3, 128, 128))  # built and warmed in this thread: its team waits
    engine.release_openmp_workers = release_openmp_workers if release else (lambda: False)
    stats = Engine(pipeline, [open_sink("null", 128, 128, 30)], fps=30).run(duration=2.0)
    later = counts[len(counts) // 2:]  # past the first frames, which start the team
    return {"per_frame": sum(later) / max(1, len(later)), "frames": len(counts), "errors": stats["errors"]}

print(json.dumps({"kept": run(False), "released": run(True)}))
"""


def _child(script: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script], env=env, text=True, capture_output=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_thread_s_parallel_calls_stop_sleeping_once_another_thread_s_workers_are_let_go():
    seen = _child(A_THREADS_CALLS)
    print(f"\nvoluntary context switches a call: {seen}")
    assert seen["released"]
    assert seen["kept"] >= 0.5  # libgomp past the CPUs: the calling thread slept at its regions
    assert seen["after"] <= 0.25 and seen["after"] < seen["kept"] / 4


def test_the_engine_lets_go_of_its_callers_workers_so_the_network_does_not_sleep_between_regions():
    """Engine.run, in the thread that built and warmed the model, lets go of that thread's
    waiting workers (and again each second): the generation thread's 2-thread frames then
    switch out a few times a frame (the GIL, the sink), not at every parallel region."""
    seen = _child(THE_ENGINES_FRAMES)
    print(f"\nvoluntary context switches a frame: {seen}")
    kept, released = seen["kept"], seen["released"]
    assert kept["errors"] == 0 and released["errors"] == 0 and released["frames"] > 40
    assert kept["per_frame"] >= 6.0
    assert released["per_frame"] < kept["per_frame"] / 2.5
