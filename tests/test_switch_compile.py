"""A switch to a model not kept warm shows it at once: it plays traced (TorchScript, built in a
tenth of a second) while its compiled runner builds on the loader thread, which then takes over
between two frames at every degradation level. Real sessions on real bundles; the compile is
held at a gate so that "before it is compiled" is a state the test sees, not a race it hopes to win."""
from __future__ import annotations

import threading
import weakref
from pathlib import Path

import pytest
import torch
from torch._dynamo.eval_frame import _debug_get_cache_entry_list

import bridge.live as live
from bridge.engine import FramePipeline
from bridge.generators.base import load_model, save_bundle
from bridge.generators.pix2pix import Pix2Pix, Pix2PixConfig
from bridge.live import LiveSession, LiveSettings
from bridge.runtime import DEFAULT_THREADS, AutoRunner, Runner, TracedNetwork, thread_choices
from tests.test_control_live import wait_until
from tests.test_reliability import COMPILE_WAIT_S, UNTIL_STOPPED_S, Running


class Gated(LiveSession):
    """Holds the compiled runner of a switched-in model until `gate` is set (or fails it)."""
    fail_compile = False

    def __init__(self, settings):
        self.gate = threading.Event()
        self.compiles: list[str] = []
        super().__init__(settings)

    def _runner(self, name, model, compile=True, trial=None, **kw):
        if compile and hasattr(self, "engine") and name != self.settings.model:  # a switched-in one
            self.compiles.append(name)
            assert self.gate.wait(COMPILE_WAIT_S)
            if self.fail_compile:
                raise RuntimeError("no room for the compiled kernels")
        return super()._runner(name, model, compile, trial, **kw)


def settings(**kw) -> LiveSettings:
    given = dict(model="tiny-a", audio_in="silence", outs=["null"], fps=30, runtime="optimized",
                 threads=1, degrade="1,0.5")
    given.update(kw)
    return LiveSettings(**given)


def settled(session) -> bool:
    """The model the run started with is compiled (asked for as `run` starts, on the loader)."""
    return not session._compile_at_start and not session._lock.locked()


def compiled(runner) -> bool:
    return runner.compile and runner.info.compiled and not isinstance(runner._fn, TracedNetwork)


def entries(code) -> int:
    """The compiles dynamo keeps on `code`."""
    return len(_debug_get_cache_entry_list(code))


def test_a_cold_switch_plays_the_new_model_traced_at_once_then_compiled_at_every_level(tiny_models):
    torch.manual_seed(5)  # 64 px: a half-size level of its own (32 px is the smallest there is)
    save_bundle(Pix2Pix(Pix2PixConfig(size=64, ngf=4, input="bands")), tiny_models / "models" / "tiny-64")
    with Gated(settings()) as session:
        run = Running(session, UNTIL_STOPPED_S)
        assert wait_until(lambda: settled(session), COMPILE_WAIT_S)
        session.switch_model("tiny-64")
        # shown while its compile is held back: the new pipeline makes the frames
        assert wait_until(lambda: session.model_name == "tiny-64" and not session.engine.swapping, 10.0)
        pipeline = session.pipeline
        assert session.engine.pipeline is pipeline
        assert wait_until(lambda: session.compiles == ["tiny-64"], 5.0)  # held at the gate
        assert len(pipeline.level_runners) == 2
        for runner in pipeline.level_runners:
            assert runner.compile is False and isinstance(runner._fn, TracedNetwork) and runner._fn.traced
        made = session.engine.stats.generated
        assert wait_until(lambda: session.engine.stats.generated >= made + 15, 5.0)
        assert "compiling)" in session.status_line(session.engine.stats)
        session.gate.set()
        assert wait_until(lambda: not session._lock.locked(), COMPILE_WAIT_S)
        assert session.pipeline is pipeline  # the same pipeline (its analysis, walk, smoothing) plays on
        assert all(compiled(r) for r in pipeline.level_runners) and pipeline.runner is pipeline.level_runners[0]
        assert [getattr(r.model, "size", 64) for r in pipeline.level_runners] == [64, 32]  # the levels, as before
        made = session.engine.stats.generated
        assert wait_until(lambda: session.engine.stats.generated >= made + 15, 5.0)  # on the compiled ones
        assert "compiling)" not in session.status_line(session.engine.stats)
        session.engine.stop()
        result = run.join()
    assert result["errors"] == 0, result  # (frames late meanwhile: benchmarks/switch_probe.py counts them)


class GatedStart(Gated):
    """Holds the compile of the model the run starts with instead."""

    def _runner(self, name, model, compile=True, trial=None, **kw):
        if compile and hasattr(self, "engine") and name == self.settings.model:
            self.compiles.append(name)
            assert self.gate.wait(COMPILE_WAIT_S)
        return LiveSession._runner(self, name, model, compile, trial, **kw)


def test_a_run_plays_its_first_frames_before_its_model_is_compiled_then_the_thread_trial(tiny_models):
    with GatedStart(settings(threads="auto", degrade=None)) as session:
        traced = session.pipeline.runner
        assert not traced.compile and traced.threads == max(1, DEFAULT_THREADS - 1)  # a core for the compile
        run = Running(session, UNTIL_STOPPED_S)
        # held at the gate, after the compiler's set-up (seconds, when this test runs first)
        assert wait_until(lambda: session.compiles == ["tiny-a"], COMPILE_WAIT_S)
        assert wait_until(lambda: session.engine.stats.generated >= 15, 5.0)  # while its compile waits
        assert session.engine.pipeline.runner is traced
        assert "compiling)" in session.status_line(session.engine.stats)
        session.gate.set()
        assert wait_until(lambda: not session._lock.locked(), COMPILE_WAIT_S)
        runner = session.pipeline.runner
        assert isinstance(runner, AutoRunner) and all(compiled(arm.runner) for arm in runner.arms)
        # each count tried is a compile of its own: the one playing, and the trial's others
        tried = [(weakref.ref(arm.runner), arm.runner._fn.code_for(arm.threads)) for arm in runner.arms]
        assert len(tried) == len({id(code) for _, code in tried}) == len(thread_choices()) > 1
        assert wait_until(lambda: runner.chosen is not None, 10.0)  # the trial ran on live frames
        # what the trial did not keep is let go of at once (on a thread of its own), not at a
        # next compile that a set playing one model never makes; the one kept plays on compiled
        kept = runner.chosen._fn.code_for(runner.chosen.threads)
        assert wait_until(lambda: [entries(code) for _, code in tried] ==
                          [int(code is kept) for _, code in tried], 30.0)
        assert [ref() is None for ref, _ in tried].count(False) == 1  # only the runner kept is left
        made = session.engine.stats.generated
        assert wait_until(lambda: session.engine.stats.generated >= made + 15, 5.0)
        session.engine.stop()
        result = run.join()
    assert result["errors"] == 0, result


def test_a_flow_plays_traced_in_the_precision_its_check_keeps_while_it_compiles(tiny_models, monkeypatch):
    """A flow's low precision is checked on its own pictures, which its compile did, so it
    played traced in fp32 until then (a full-32 flow: 55 ms a frame at one thread, 28 in bf16).
    The check runs first on the loader, and the flow plays traced in bf16 while it compiles."""
    from bridge import runtime
    from bridge.bench import _realnvp
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)  # as on CI's AMX machines, anywhere
    torch.manual_seed(0)
    save_bundle(_realnvp("lite-32").eval(), tiny_models / "models" / "flow")
    with GatedStart(settings(model="flow", degrade=None)) as session:
        first = session.pipeline.runner
        assert not first.compile and first.info.autocast is None  # shown at once, unchecked: fp32
        run = Running(session, UNTIL_STOPPED_S)
        assert wait_until(lambda: session.pipeline.runner.info.autocast == "bfloat16", COMPILE_WAIT_S)
        low = session.pipeline.runner
        assert not low.compile and isinstance(low._fn, TracedNetwork) and low._fn.traced
        assert "bfloat16: PSNR against fp32" in low.info.note
        assert wait_until(lambda: session.compiles == ["flow"], 10.0)  # its compile held at the gate
        made = session.engine.stats.generated
        assert wait_until(lambda: session.engine.stats.generated >= made + 15, 5.0)  # it makes the frames
        assert session.engine.pipeline.runner is low
        session.gate.set()
        assert wait_until(lambda: not session._lock.locked(), COMPILE_WAIT_S)
        runner = session.pipeline.runner
        assert compiled(runner) and runner.info.autocast == "bfloat16"
        session.engine.stop()
        result = run.join()
    assert result["errors"] == 0, result


class GatedTrial(Gated):
    """Holds the start's thread trial (its other counts' compile), not the first compile."""

    def _runner(self, name, model, compile=True, trial=None, **kw):
        if kw.get("kept") is not None:
            self.compiles.append(name + " trial")
            assert self.gate.wait(COMPILE_WAIT_S)
        return LiveSession._runner(self, name, model, compile, trial, **kw)


def test_a_run_plays_compiled_while_its_thread_trial_compiles_on_a_free_core(tiny_models):
    """--threads auto at start, staged: compiled first for the most threads the trial tries that
    leave a core free, which takes over as soon as it is ready (a heavy model plays traced far
    under the frame rate), with the degraded levels at every core; the trial's other counts
    compile while it plays, then the trial plays with it as one candidate (not compiled twice)
    and the levels as they were."""
    from bridge.runtime import thread_choices
    fewer = [count for count in thread_choices() if count < DEFAULT_THREADS]
    assert fewer  # 2 cores or more, as on CI: there is a trial
    torch.manual_seed(5)
    save_bundle(Pix2Pix(Pix2PixConfig(size=64, ngf=4, input="bands")), tiny_models / "models" / "tiny-64")
    with GatedTrial(settings(model="tiny-64", threads="auto")) as session:
        run = Running(session, UNTIL_STOPPED_S)
        assert wait_until(lambda: session.compiles == ["tiny-64 trial"], COMPILE_WAIT_S)  # the first compile done
        pipeline = session.pipeline
        playing, levels = pipeline.runner, list(pipeline.level_runners)
        assert compiled(playing) and playing.threads == max(fewer) and len(levels) == 2
        assert compiled(levels[1]) and levels[1].threads == DEFAULT_THREADS
        made = session.engine.stats.generated
        assert wait_until(lambda: session.engine.stats.generated >= made + 15, 5.0)  # while the trial waits
        assert "compiling" not in session.status_line(session.engine.stats)
        session.gate.set()
        assert wait_until(lambda: not session._lock.locked(), COMPILE_WAIT_S)
        trial = pipeline.runner
        assert isinstance(trial, AutoRunner) and trial.chosen is None  # 30 calls of each first
        arms = {arm.threads: arm.runner for arm in trial.arms}
        assert sorted(arms) == thread_choices() and arms[max(fewer)] is playing
        assert all(compiled(r) and r is not playing for count, r in arms.items() if count != max(fewer))
        assert pipeline.level_runners[1:] == levels[1:]  # kept, not built again
        assert wait_until(lambda: trial.chosen is not None, 15.0)  # the trial ran on live frames
        session.engine.stop()
        result = run.join()
    assert result["errors"] == 0, result


def test_a_run_closed_before_its_compile_starts_closes_at_once_and_compiles_nothing(tiny_models):
    with GatedStart(settings(degrade=None)) as session:
        session.gate.set()
        session.run(duration=0.3, status_stream=None)  # asks for the compile as it starts
    assert session._closed
    assert wait_until(lambda: not session._lock.locked(), COMPILE_WAIT_S)
    assert session.compiles in ([], ["tiny-a"])  # one already going finishes; none starts after close
    assert session.messages == []


def test_a_session_closed_during_a_switch_stops_its_loader_before_the_next_compile(tiny_models, monkeypatch):
    """The loader thread is not a daemon (Python would cut it off inside torch's C++ at exit,
    which can abort the process): it must end soon after `close` instead, compiling nothing more."""
    import torch._inductor.compile_fx as inductor
    real, compiles = inductor.compile_fx, []
    monkeypatch.setattr(inductor, "compile_fx", lambda *a, **k: compiles.append(1) or real(*a, **k))
    with Gated(settings()) as session:
        run = Running(session, UNTIL_STOPPED_S)
        assert wait_until(lambda: settled(session), COMPILE_WAIT_S)
        before = len(compiles)
        session.switch_model("tiny-b")
        assert wait_until(lambda: session.compiles == ["tiny-b"], 10.0)  # its compile held at the gate
        assert session.still_loading() == "the switch to tiny-b"
        session.engine.stop()
        run.join()
    session.gate.set()
    assert wait_until(lambda: session.still_loading() is None and not session._loader_thread.is_alive(), 10.0)
    assert len(compiles) == before  # neither level of tiny-b compiled after the close
    assert not compiled(session.pipeline.runner) and session.messages == []
    session.switch_model("tiny-a")  # asked after the close: nothing starts
    assert not session._lock.locked() and session.still_loading() is None


def test_a_compile_that_fails_is_reported_and_the_traced_model_plays_on(tiny_models):
    with Gated(settings(degrade=None)) as session:
        session.fail_compile = True
        session.gate.set()
        run = Running(session, UNTIL_STOPPED_S)
        assert wait_until(lambda: settled(session), COMPILE_WAIT_S)
        session.switch_model("tiny-b")
        assert wait_until(lambda: session.model_name == "tiny-b" and not session._lock.locked(), COMPILE_WAIT_S)
        assert any("model tiny-b not compiled" in m and "no room" in m for m in session.messages), session.messages
        assert isinstance(session.pipeline.runner._fn, TracedNetwork)
        made = session.engine.stats.generated
        assert wait_until(lambda: session.engine.stats.generated >= made + 15, 5.0)
        session.engine.stop()
        result = run.join()
    assert result["errors"] == 0, result


def test_without_play_while_compiling_the_switch_waits_for_the_compiled_model(tiny_models, monkeypatch):
    monkeypatch.setattr(live, "PLAY_WHILE_COMPILING", False)
    with Gated(settings(degrade=None)) as session:
        run = Running(session, UNTIL_STOPPED_S)
        session.switch_model("tiny-b")
        assert wait_until(lambda: session.compiles == ["tiny-b"], COMPILE_WAIT_S)
        assert not wait_until(lambda: session.model_name == "tiny-b", 1.0)  # the old one plays on
        session.gate.set()
        assert wait_until(lambda: session.model_name == "tiny-b" and not session._lock.locked(), COMPILE_WAIT_S)
        assert compiled(session.pipeline.runner)
        session.engine.stop()
        result = run.join()
    assert result["errors"] == 0, result


@pytest.mark.parametrize("name", ["pix2pix-pulse", "cvae-faces", "vae-mirror", "realnvp-faces"])
def test_every_bundled_model_traces_to_the_pictures_it_makes_eager(name):
    """Every family, with its own condition (drawn on the device for pix2pix-pulse), latent and
    sound: the traced call gives what the same folded network gives eager, in the same precision."""
    model = load_model(name)
    model.check_inputs(has_audio=True, has_image=False)
    traced = Runner(model, runtime="optimized", compile=False)
    eager = Runner(model, runtime="optimized", compile=False)
    eager._fn = getattr(eager.net, eager._entry)  # what TracedNetwork stands in for
    pipeline = FramePipeline(model, runner=traced)
    pipeline.warmup(runs=1)
    snapshot = pipeline.snapshot(None)
    cond = pipeline.condition(snapshot, traced)
    latent = pipeline.navigator.step(snapshot.audio, 0.5) if pipeline.navigator is not None else None
    outs = [runner(cond, latent) for runner in (traced, eager)]
    assert traced._fn.traced, name
    pictures = [out[0] if isinstance(out, tuple) else out for out in outs]
    assert pictures[0].dtype == torch.float32 and pictures[0].shape == pictures[1].shape
    assert (pictures[0] - pictures[1]).abs().max() < 1e-3, name
    if isinstance(outs[0], tuple):  # the sound's mel frames too
        assert (outs[0][1].float() - outs[1][1].float()).abs().max() < 1e-2


class Branchy(torch.nn.Module):
    """A network that branches on a value: a trace would keep one side for good."""

    def generate(self, cond, latent=None):
        return cond * 2 if float(cond.mean()) > 0 else cond - 1


def test_a_network_the_trace_cannot_follow_runs_eager_and_right_on_both_branches():
    net = TracedNetwork(Branchy(), "generate", "cpu")
    up, down = torch.ones(1, 3, 4, 4), -torch.ones(1, 3, 4, 4)
    assert torch.equal(net(up), up * 2)
    assert not net.traced
    assert torch.equal(net(down), down - 1)


def test_use_runner_leaves_the_playing_walk_where_it_is_and_needs_a_warmed_pipeline():
    """Two pipelines of the same model and seed make the same frames; one gets its runner
    replaced mid-way: its walk carries on exactly as the other's."""
    model = load_model("cvae-faces")
    model.check_inputs(has_audio=True, has_image=False)
    fresh = FramePipeline(model, runner=Runner(model, runtime="optimized", compile=False), seed=4)
    with pytest.raises(RuntimeError, match="warmup"):
        fresh.use_runner(Runner(model, runtime="reference"))
    a, b = (FramePipeline(model, runner=Runner(model, runtime="optimized", compile=False), seed=4)
            for _ in range(2))
    for p in (a, b):
        p.warmup(runs=1)
    latents = {id(a): [], id(b): []}
    for frame in range(6):
        if frame == 3:
            a.use_runner(Runner(model, runtime="reference"))
            assert a.runner.info.runtime == "reference" and a.level_runners == [a.runner]
        for p in (a, b):
            snapshot = p.snapshot(frame / 30)
            p.make_frame(snapshot, 1 / 30)
            latents[id(p)].append(p.navigator.step(snapshot.audio, 0.0).clone())  # where the walk is
    assert all(torch.equal(x, y) for x, y in zip(latents[id(a)], latents[id(b)]))


def test_a_traced_call_plays_while_another_thread_traces_with_torch_fx():
    """torch.fx's tracer (which a compile uses) patches nn.Module.__call__ for the whole process
    while it traces: the traced model, playing on another thread meanwhile, must not go through it."""
    model = load_model("pix2pix-pulse")
    model.check_inputs(has_audio=True, has_image=False)
    runner = Runner(model, runtime="optimized", compile=False)
    pipeline = FramePipeline(model, runner=runner)
    pipeline.warmup(runs=1)
    cond = pipeline.condition(pipeline.snapshot(None), runner)
    inside, release = threading.Event(), threading.Event()

    class Slow(torch.nn.Module):
        def forward(self, x):
            inside.set()
            release.wait(10.0)
            return x + 1

    tracer = threading.Thread(target=lambda: torch.fx.symbolic_trace(Slow()))
    tracer.start()
    try:
        assert inside.wait(10.0)  # the patch is on now
        picture = runner(cond)
    finally:
        release.set()
        tracer.join(10.0)
    assert picture.shape == (1, 3, model.output_size, model.output_size)


COMPILER_IN_CHILD = """
import gc, sys, threading, time
import bridge.live as live
from bridge.engine import FramePipeline
from bridge.live import LiveSession, LiveSettings
seen = {}


class Watched:  # bridge.live's gc: each full collection it makes says whether it walks the compiler
    def __getattr__(self, name):
        return getattr(gc, name)

    def collect(self, *args):
        lowering = sys.modules.get("torch._inductor.lowering")
        if lowering is not None:  # one of the compiler's module-level tables: walked, or frozen
            seen.setdefault("walked", []).append(any(o is lowering.lowerings for o in gc.get_objects()))
        return gc.collect(*args)


live.gc = Watched()
made_by = FramePipeline.make_frame


def make_frame(self, *args, **kwargs):  # on the generation thread: its own dynamo settings, read there
    if getattr(getattr(self.runner, "info", None), "compiled", False):
        seen.setdefault("room", set()).add(sys.modules["torch._dynamo.config"].recompile_limit)
    return made_by(self, *args, **kwargs)


FramePipeline.make_frame = make_frame
session = LiveSession(LiveSettings(model="tiny-a", audio_in="silence", outs=["null"], runtime=sys.argv[1], threads=1))
seen["made"] = "torch._inductor.compile_fx" in sys.modules


def driver():
    while not session.settled:
        time.sleep(0.05)
    seen["settled"] = "torch._inductor.compile_fx" in sys.modules
    time.sleep(0.5)  # frames of the compiled runner
    session.engine.stop()


threading.Thread(target=driver, daemon=True).start()
with session:
    session.run(duration=120, status_stream=None)
seen["dynamo"] = "torch._dynamo" in sys.modules
print(seen)
"""


@pytest.mark.parametrize("runtime", ["optimized", "reference"])
def test_the_compiler_is_imported_as_the_model_plays_and_moved_out_of_the_collectors_sight(tiny_models, runtime):
    """The compiler's modules (1.1-1.4 s to import on 2 cores) are not imported before the first
    frame: the compile made as the model plays imports them on the loader thread, and
    `settle_compiler` freezes them at once, so that no full collection of the set walks them
    (100-140 ms holding the GIL instead of 50-70: output ticks lost). The generation thread
    widens its own recompile room (dynamo's settings are per thread) before the compiled runner
    plays there. A fresh process: nothing imported them before; a run that compiles nothing never
    imports them, dynamo included."""
    import ast
    import subprocess
    import sys
    child = subprocess.run([sys.executable, "-c", COMPILER_IN_CHILD, runtime], capture_output=True, text=True,
                           timeout=180, cwd=str(Path(__file__).resolve().parents[1]))
    assert child.returncode == 0, child.stderr[-2000:]
    seen = ast.literal_eval(child.stdout.strip().splitlines()[-1])
    if runtime == "optimized":
        assert seen["made"] is False and seen["settled"] is True, seen
        assert len(seen["walked"]) >= 2 and not any(seen["walked"]), seen  # settling's, and the compile's end
        assert seen["room"] == {64} and seen["dynamo"], seen  # 8, dynamo's default, without
    else:
        assert seen == {"made": False, "settled": False, "dynamo": False}


def test_the_gpu_sessions_live_set_runs_here_on_the_cpu():
    """What tests/test_runtime_cuda.py plays on a lent GPU (rarely: a broken step there costs its
    device time), played here on the CPU with the bundled models, so it cannot rot unseen."""
    from tests.test_runtime_cuda import live_set_plays_at_once_then_compiled_and_switches_cold
    seen = live_set_plays_at_once_then_compiled_and_switches_cold("cpu")
    assert seen["first_frame_traced"] and seen["settled"] and seen["start_compiled"]
    assert not seen["start_graph"]  # CUDA graphs are the GPU's
    assert seen["switch_traced"] and seen["switch_compiled"] and seen["errors"] == 0
