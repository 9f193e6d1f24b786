"""--threads: a fixed count set in the thread that plays (the one that builds keeps its own),
int8's ONNX Runtime session per count, and `auto` trying the counts on live calls, alone and with
`--runtime auto`, in a real engine beside a real audio file."""
import re
import sys
import threading
import time

import pytest
import torch
from torch._dynamo.utils import counters

from bridge import runtime
from bridge.engine import Engine, FramePipeline
from bridge.errors import ConfigError
from bridge.generators.base import save_bundle
from bridge.generators.pix2pix import Pix2Pix, Pix2PixConfig
from bridge.live import LiveSession, LiveSettings
from bridge.runtime import AutoRunner, Runner, demo_conditions, make_runner, parse_threads
from bridge.sinks import open_sink
from bridge.sources.audio import open_audio_source
from tests.test_switch_compile import entries

AMEN = "/usr/share/sonic-pi/samples/loop_amen.flac"


def tiny_pix2pix(size: int = 32) -> Pix2Pix:
    torch.manual_seed(0)
    return Pix2Pix(Pix2PixConfig(size=size, ngf=4, input="bands")).eval()


def in_a_thread(fn):
    """fn() run on a fresh thread, as the engine's generation thread runs the network."""
    result = {}
    worker = threading.Thread(target=lambda: result.update(value=fn()))
    worker.start()
    worker.join(60)
    assert "value" in result, "the playing thread failed"
    return result["value"]


@pytest.fixture
def two_counts(monkeypatch):
    """auto tries 1 and 2 threads whatever this machine's cores (2 here, as on CI)."""
    monkeypatch.setattr(runtime, "thread_choices", lambda cores=None: [1, 2])


def test_a_fixed_count_is_set_where_the_network_plays_and_the_builder_keeps_its_own():
    torch.set_num_threads(2)
    model = tiny_pix2pix()
    runner = make_runner(model, threads=1)
    pipeline = FramePipeline(model, runner=runner)
    pipeline.warmup(runs=1)
    assert torch.get_num_threads() == 2  # warmed here, at 1 thread, and this thread's count given back
    snapshot = pipeline.snapshot(0.5)

    def play():
        frame = pipeline.make_frame(snapshot, 1 / 30)
        return frame.shape, torch.get_num_threads()

    assert in_a_thread(play) == ((32, 32, 4), 1)
    assert runner.info.threads == 1 and torch.get_num_threads() == 2


def test_int8_keeps_a_session_per_count_with_the_same_pictures():
    model = tiny_pix2pix()
    runner = Runner(model, runtime="int8")
    cond = demo_conditions(model, count=2, every_s=1.0)[1:]
    pictures = {}
    for count in (1, 2, 1):
        runner.use_threads(count)
        assert runner._fn.session.get_session_options().intra_op_num_threads == count
        pictures[count] = runner(cond)
    assert len(runner._fn._sessions) == 2  # made once per count, then kept
    assert torch.allclose(pictures[1], pictures[2], atol=1e-5)


def test_int8_lets_go_of_the_session_at_a_count_no_longer_played(monkeypatch):
    monkeypatch.setattr(runtime, "ONNX_IDLE_CALLS", 20)
    model = tiny_pix2pix()
    runner = Runner(model, runtime="int8")
    cond = demo_conditions(model, count=2, every_s=1.0)[1:]
    runner.use_threads(2)
    before = runner(cond)
    runner.use_threads(1)  # as a thread trial that kept one thread
    for _ in range(64):
        runner(cond)
    assert [count for count in runner._fn._sessions] == [1]
    runner.use_threads(2)  # played again: made again
    assert torch.equal(runner(cond), before) and len(runner._fn._sessions) == 2


@pytest.mark.parametrize("gain, room, kept", [(1000.0, 0.0, 1), (0.0, 0.0, 2), (0.0, 1000.0, 1)])
def test_auto_threads_plays_each_count_in_blocks_then_keeps_one(monkeypatch, two_counts, gain, room, kept):
    """Fewer threads are kept unless more are AUTO_MIN_GAIN faster: no speed-up -> 1 thread,
    any -> 2, unless 1 thread fits its frame with AUTO_ROOM to spare. Each block of calls runs at
    its count in the playing thread. Each count is a compile of its own; the one not kept is let
    go of."""
    monkeypatch.setattr(runtime, "AUTO_TRIAL_FRAMES", 2)
    monkeypatch.setattr(runtime, "AUTO_BLOCK", 2)
    monkeypatch.setattr(runtime, "AUTO_MIN_GAIN", gain)
    monkeypatch.setattr(runtime, "AUTO_ROOM", room)
    torch.set_num_threads(2)
    model = tiny_pix2pix()
    runner = make_runner(model, threads="auto")
    assert isinstance(runner, AutoRunner)
    assert [arm.label for arm in runner.candidates] == ["1 thread", "2 threads"]
    assert runner.status == "auto: trying 1 thread, 2 threads"
    pipeline = FramePipeline(model, runner=runner)
    pipeline.warmup(runs=1)  # each count warmed, this thread's count given back
    assert torch.get_num_threads() == 2
    snapshot = pipeline.snapshot(0.5)

    def play(calls):
        counts = []
        for _ in range(calls):
            pipeline.make_frame(snapshot, 1 / 30)
            counts.append(torch.get_num_threads())
        return counts

    compiled = counters["frames"]["total"]
    shared = runner.arms[0].runner
    codes = {count: shared._fn.code_for(count) for count in (1, 2)}
    assert codes[1] is not codes[2] and [entries(codes[1]), entries(codes[2])] == [1, 1]
    assert in_a_thread(lambda: play(8)) == [1, 1, 2, 2, 1, 1, 2, 2]
    assert counters["frames"]["total"] == compiled  # each count compiled at warm-up, none live
    assert runner.chosen is shared and runner.candidates == [runner.chosen]
    assert runner.info.threads == kept and set(runner.info.auto_ms) == {"1 thread", "2 threads"}
    assert f"auto: {kept} thread" in runner.info.note and "more threads kept if" in runner.info.note
    for thread in [t for t in threading.enumerate() if t.name == "vjbridge-let-go"]:
        thread.join(30.0)
    # the compile of the count not kept is let go of; the one kept plays on, not compiled again
    assert [entries(codes[kept]), entries(codes[3 - kept])] == [1, 0]
    assert in_a_thread(lambda: play(3)) == [kept] * 3  # and it plays on at the count kept
    assert counters["frames"]["total"] == compiled
    assert runner.status == f"optimized, {kept} thread{'s' if kept > 1 else ''}"


def test_auto_runtime_and_threads_try_every_pair(monkeypatch, two_counts):
    monkeypatch.setattr(runtime, "AUTO_TRIAL_FRAMES", 1)
    monkeypatch.setattr(runtime, "AUTO_BLOCK", 1)
    monkeypatch.setattr(runtime, "AUTO_MIN_GAIN", 0.0)  # each later one taken: the last pair stays
    monkeypatch.setattr(runtime, "AUTO_ROOM", 0.0)  # (whatever room fewer threads have)
    model = tiny_pix2pix()
    runner = make_runner(model, runtime="auto", threads="auto")
    assert [arm.label for arm in runner.candidates] == [
        "optimized, 1 thread", "optimized, 2 threads", "int8, 1 thread", "int8, 2 threads"]
    assert runner.level_runtime == "optimized"  # degraded levels are built before the choice
    pipeline = FramePipeline(model, runner=runner)
    pipeline.warmup(runs=1)
    snapshot = pipeline.snapshot(0.5)
    in_a_thread(lambda: [pipeline.make_frame(snapshot, 1 / 30) for _ in range(4)])
    assert runner.info.runtime == "int8" and runner.info.threads == 2
    assert runner.chosen._fn.session.get_session_options().intra_op_num_threads == 2
    assert "auto: int8, 2 threads (live calls: optimized, 1 thread" in runner.info.note


def test_auto_threads_with_a_fixed_runtime_degrades_on_that_runtime(two_counts):
    runner = make_runner(tiny_pix2pix(), runtime="reference", threads="auto")
    assert isinstance(runner, AutoRunner) and runner.level_runtime == "reference"


def test_the_counts_auto_tries():
    assert runtime.thread_choices(1) == [1] and runtime.thread_choices(2) == [1, 2]
    assert runtime.thread_choices(8) == [1, 4, 8] and runtime.thread_choices(6) == [1, 3, 6]


def test_auto_threads_on_one_core_is_nothing_to_try(monkeypatch):
    monkeypatch.setattr(runtime, "thread_choices", lambda cores=None: [1])
    runner = make_runner(tiny_pix2pix(), threads="auto")
    assert isinstance(runner, Runner) and runner.info.threads == 1
    assert "1 thread (no other count to try)" in runner.info.note


@pytest.mark.parametrize("given, parsed", [("auto", "auto"), (None, None), ("3", 3), (2, 2)])
def test_thread_counts_parse(given, parsed):
    assert parse_threads(given) == parsed


@pytest.mark.parametrize("bad", ["0", "-1", "two", 2.5, True, "1e3", 5000])
def test_bad_thread_counts_are_refused_in_one_line(bad):
    with pytest.raises(ConfigError, match=r"--threads must be auto or a count 1\.\.1024, got"):
        LiveSettings(model="pix2pix-pulse", outs=["null"], threads=bad)


def test_the_cli_refuses_a_bad_count_before_anything_opens(capsys):
    from bridge.cli import main
    assert main(["run", "--audio-in", "silence", "--out", "null", "--threads", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "vjbridge: --threads must be auto or a count 1..1024, got 'none'"


def test_auto_threads_in_a_live_engine_on_real_audio_keeps_one_where_it_fits_the_frame(monkeypatch, two_counts):
    """The trial runs inside the engine's own generation thread, beside a real file played in
    real time; the output keeps its rate through it and a count is kept. Whatever a second thread
    would gain (any gain is taken here), a model whose calls take a small share of the frame keeps
    one thread and leaves the other core to the rest: the frame is measured as the engine paces
    the calls (30 fps, about 33 ms)."""
    monkeypatch.setattr(runtime, "AUTO_TRIAL_FRAMES", 5)
    monkeypatch.setattr(runtime, "AUTO_MIN_GAIN", 0.0)
    torch.set_num_threads(2)
    model = tiny_pix2pix()
    runner = make_runner(model, threads="auto")
    pipeline = FramePipeline(model, runner=runner)
    pipeline.warmup(runs=1)
    sink = open_sink("null", 32, 32, 30)
    with open_audio_source(AMEN, sample_rate=pipeline.sample_rate) as audio:
        stats = Engine(pipeline, [sink], fps=30, audio_source=audio).run(duration=3.0)
    assert stats["errors"] == 0 and 75 <= stats["sent"] <= 92, stats
    assert runner.chosen is not None and runner.info.threads == 1, runner.info.note
    assert all(ms > 0 for ms in runner.info.auto_ms.values())
    frame = float(re.search(r"of the ([0-9.]+) ms frame", runner.info.note).group(1))
    assert 25.0 < frame < 45.0, runner.info.note
    assert torch.get_num_threads() == 2  # the count kept is the generation thread's, not ours


def test_live_session_passes_the_count(tmp_path, monkeypatch):
    from tests.helpers.streams import wait_for
    monkeypatch.setenv("VJBRIDGE_MODELS", str(tmp_path))
    save_bundle(tiny_pix2pix(), tmp_path / "tiny")
    settings = LiveSettings(model="tiny", audio_in=AMEN, outs=["null"], fps=20, threads="1")
    with LiveSession(settings) as session:
        traced = session.pipeline.runner  # played from the first frame, as the compiled one builds
        summary = session.run(duration=1.0, status_stream=None)
        assert wait_for(lambda: not session._lock.locked(), timeout=30)
        runner = session.engine.pipeline.runner
        line = session.status_line(session.engine.stats)
    assert summary["sent"] >= 15 and summary["errors"] == 0
    assert "model tiny" in line and "ms (optimized, 1 thread) |" in line
    assert isinstance(traced, Runner) and not traced.compile and traced.threads == 1
    assert isinstance(runner, Runner) and runner.info.compiled and runner.threads == 1


def test_degraded_levels_run_at_the_most_threads_tried(monkeypatch, two_counts):
    """A level below full plays because the model is slow: it gets every core tried, whichever
    count the full level keeps, and is warmed (so compiled) at that count before playing."""
    monkeypatch.setattr(runtime, "AUTO_TRIAL_FRAMES", 1)
    monkeypatch.setattr(runtime, "AUTO_BLOCK", 1)
    monkeypatch.setattr(runtime, "AUTO_MIN_GAIN", 1000.0)  # 1 thread kept
    model = tiny_pix2pix(64)
    runner = make_runner(model, threads="auto")
    pipeline = FramePipeline(model, runner=runner, degrade=(1.0, 0.5))
    assert pipeline.level_runners[1].threads == 2
    pipeline.warmup(runs=1)
    snapshot = pipeline.snapshot(0.5)

    def play(levels):
        counts = []
        for level in levels:
            pipeline.level = level
            pipeline.make_frame(snapshot, 1 / 30)
            counts.append(torch.get_num_threads())
        return counts

    compiled = counters["frames"]["total"]
    assert in_a_thread(lambda: play([0, 1, 0, 0, 1])) == [1, 2, 2, 1, 2]
    assert runner.chosen is not None and runner.info.threads == 1
    # dynamo compiles again for a count it has not seen (seconds): every count was warmed
    assert counters["frames"]["total"] == compiled


def test_a_step_down_during_the_trial_decides_it_for_the_most_threads(monkeypatch, two_counts):
    """Full size missed the frame while the counts took turns there: the engine's degradation
    steps down, and the trial, which plays at full size only, would wait there all set ("auto:
    trying" in the status line, the session never settled). It is decided at the step down for
    the most threads, the count the lower levels play at, where a finished trial would have kept
    one (AUTO_MIN_GAIN), and full size is measured afresh: its cost was the counts' in turn."""
    monkeypatch.setattr(runtime, "AUTO_TRIAL_FRAMES", 50)
    monkeypatch.setattr(runtime, "AUTO_BLOCK", 2)
    monkeypatch.setattr(runtime, "AUTO_MIN_GAIN", 1000.0)
    model = tiny_pix2pix(64)
    runner = make_runner(model, threads="auto")
    pipeline = FramePipeline(model, runner=runner, degrade=(1.0, 0.5))
    pipeline.warmup(runs=1)
    engine = Engine(pipeline, sinks=[], fps=30.0, degrade=True)
    snapshot = pipeline.snapshot(0.5)
    in_a_thread(lambda: [pipeline.make_frame(snapshot, 1 / 30) for _ in range(6)])
    assert runner.chosen is None and runner.status == "auto: trying 1 thread, 2 threads"
    versions = list(pipeline.runner_versions)
    t = 0.0
    while pipeline.level == 0 and t < 5.0:  # 50 ms a frame against a 33 ms one
        t += 0.05
        engine._degrade_step(0.05, t)
    assert pipeline.level == 1 and t < 2.0
    assert runner.chosen is not None and runner.info.threads == 2 and runner.candidates == [runner.chosen]
    assert "auto: 2 threads (trial cut short, the set stepped down to 1/2" in runner.info.note
    assert pipeline.runner_versions == [versions[0] + 1, versions[1]]
    assert 0 in engine.degrade._cost  # what the counts in turn cost at full size ...
    engine._degrade_step(0.02, t + 0.02)
    assert 0 not in engine.degrade._cost  # ... is forgotten
    assert runner.cut_short("again") is False  # decided once
    pipeline.level = 0
    assert in_a_thread(lambda: [(pipeline.make_frame(snapshot, 1 / 30), torch.get_num_threads())[1]
                                for _ in range(3)]) == [2, 2, 2]


def test_the_start_s_staged_compile_goes_level_by_level_the_level_playing_first(tmp_path, monkeypatch, two_counts):
    """A model played traced has often stepped down before its compile starts (pix2pix-pulse at
    60 fps on 2 cores: 1/4 within 3 s): the count that leaves a core free is compiled at the
    level playing first, then the levels above it, nearest first, then those below (the lower
    levels at every core), each taking over as it is ready; then the trial's other count. What
    each compile left is collected as it ends (a full collection holds the GIL, and one at the
    end walked all of their garbage at once: the playing thread's longest wait)."""
    import gc

    from bridge import live
    monkeypatch.setattr(live, "DEFAULT_THREADS", 2)  # 1 staged, 2 for the levels, as on 2 cores
    monkeypatch.setenv("VJBRIDGE_MODELS", str(tmp_path))
    torch.manual_seed(5)  # 128 px: levels 128, 96, 64 (1/2), 32 (1/4)
    save_bundle(Pix2Pix(Pix2PixConfig(size=128, ngf=4, input="bands")), tmp_path / "wide")
    with LiveSession(LiveSettings(model="wide", audio_in="silence", outs=["null"], degrade="auto")) as session:
        pipeline = session.pipeline
        assert session._compile_at_start and not pipeline.runner.compile  # plays traced until run() compiles
        pipeline.level = 2  # stepped down to 1/2 while traced
        calls, use_runner, use_lead_runner, steps = [], pipeline.use_runner, pipeline.use_lead_runner, []
        pipeline.use_runner = lambda runner, **kw: (calls.append((runner.threads, kw["levels"], kw["level_threads"])),
                                                    steps.append("compile"), use_runner(runner, **kw))
        pipeline.use_lead_runner = lambda *a, **kw: (steps.append("compile"), use_lead_runner(*a, **kw))

        def full(phase, info):
            if phase == "stop" and info["generation"] == 2 and steps:
                steps.append("collected")
        before = list(pipeline.runner_versions)
        gc.callbacks.append(full)
        try:
            session._compile_playing("wide", session.model, pipeline, trial=True)
        finally:
            gc.callbacks.remove(full)
        assert calls == [(1, [2], 2), (1, [1], 2), (1, [0], 2), (1, [3], 2)]
        assert steps == ["compile", "collected"] * 5  # four levels, the trial; none more on leaving
        # each level as it was compiled, full again for the trial, then every level once the
        # compiles are over (what was measured beside them is measured again: costs_changed)
        assert [v - b for v, b in zip(pipeline.runner_versions, before)] == [3, 2, 2, 2]
        runner = pipeline.runner
        assert isinstance(runner, AutoRunner) and [arm.threads for arm in runner.arms] == [1, 2]
        assert [r.threads for r in pipeline.level_runners[1:]] == [2, 2, 2]
        assert all(r.compile for r in pipeline.level_runners[1:])


def test_a_fixed_count_holds_on_the_degraded_levels():
    model = tiny_pix2pix(64)
    pipeline = FramePipeline(model, runner=make_runner(model, threads=1), degrade=(1.0, 0.5))
    pipeline.warmup(runs=1)
    pipeline.level = 1
    snapshot = pipeline.snapshot(0.5)
    torch.set_num_threads(2)
    assert in_a_thread(lambda: (pipeline.make_frame(snapshot, 1 / 30), torch.get_num_threads())[1]) == 1


def test_bench_runs_at_the_count_given_and_says_so():
    import json
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-m", "bridge", "bench", "--families", "analysis", "--threads", "1",
                          "--json", "--iterations", "2"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["machine"]["torch_threads"] == 1 and report["analysis"]["hops"] > 0
    refused = subprocess.run([sys.executable, "-m", "bridge", "bench", "--threads", "auto"],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "bench --threads takes a count" in refused.stderr


def test_auto_tries_the_machine_s_counts_from_a_thread_started_after_one_played_at_1():
    """torch starts a new thread at the count any thread set last: a model switched to on a
    loader thread, after the playing thread kept 1, must still try every count."""
    in_a_thread(lambda: torch.set_num_threads(1))
    assert in_a_thread(torch.get_num_threads) == 1  # torch's behaviour this guards against
    assert in_a_thread(runtime.thread_choices) == runtime.thread_choices(runtime.DEFAULT_THREADS)
    if runtime.DEFAULT_THREADS > 1:
        runner = in_a_thread(lambda: make_runner(tiny_pix2pix(), threads="auto"))
        assert isinstance(runner, AutoRunner) and len(runner.candidates) >= 2


def test_runner_autocast_keeps_no_weight_cache():
    """autocast's weight cache is one map for the process, cleared under a mutex that a model
    compiling on another thread waits for while holding the GIL: a live switch froze both threads.
    The runner's autocast never caches, so the map stays empty."""
    model = tiny_pix2pix()
    runner = Runner(model, runtime="optimized", compile=False)
    runner._autocast = torch.bfloat16  # as on a CPU with native bf16, or any GPU
    seen = []
    conv = next(m for m in runner.net.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_pre_hook(
        lambda module, args: seen.append((torch.is_autocast_enabled("cpu"), torch.is_autocast_cache_enabled())))
    out = runner(demo_conditions(model, count=2, every_s=1.0)[1:])
    assert out.dtype == torch.float32 and seen and all(on and not cached for on, cached in seen)


def test_a_switch_mid_set_plays_the_new_model_at_every_core_without_a_trial(tmp_path, monkeypatch, two_counts):
    """A trial would compile the new model once per count while the set plays (each compile
    holds the playing thread back): a switch gets the most threads, once. Until that compile is
    done the new model plays traced at one thread fewer, leaving the compile a core."""
    from tests.helpers.streams import wait_for
    monkeypatch.setenv("VJBRIDGE_MODELS", str(tmp_path))
    save_bundle(tiny_pix2pix(), tmp_path / "tiny-a")
    save_bundle(tiny_pix2pix(), tmp_path / "tiny-b")
    settings = LiveSettings(model="tiny-a", audio_in=AMEN, outs=["null"], fps=20)
    with LiveSession(settings) as session:
        worker = threading.Thread(target=lambda: session.run(duration=6.0, status_stream=None))
        worker.start()
        time.sleep(0.5)
        assert wait_for(lambda: not session._lock.locked(), timeout=30)  # the model started with, compiled
        assert isinstance(session.pipeline.runner, AutoRunner)  # at start: the trial
        session.switch_model("tiny-b")
        assert wait_for(lambda: session.model_name == "tiny-b", timeout=30)
        traced = session.pipeline.runner  # built and handed to the engine (it swaps it in between frames)
        assert wait_for(lambda: not session._lock.locked(), timeout=30)  # compiled, and playing
        runner = session.pipeline.runner
        worker.join(30)
    assert not worker.is_alive()
    assert isinstance(traced, Runner) and not traced.compile and traced.threads == runtime.DEFAULT_THREADS - 1 == 1
    assert isinstance(runner, Runner) and runner.info.compiled and runner.threads == runtime.DEFAULT_THREADS == 2


class _IntervalWatch(LiveSession):
    """A live session noting the GIL switch interval each model build runs under."""

    def _build_one(self, name, output_size=None, lead=True, compile=True):
        self.intervals = getattr(self, "intervals", []) + [(name, sys.getswitchinterval())]
        return super()._build_one(name, output_size, lead, compile)

    def _runner(self, name, model, compile=True, trial=None, **kw):
        if compile and hasattr(self, "engine"):  # a compile as the model plays
            self.intervals = getattr(self, "intervals", []) + [(name + " compiled", sys.getswitchinterval())]
        return super()._runner(name, model, compile, trial, **kw)


def test_a_switch_builds_with_the_gil_handed_to_the_playing_thread_and_puts_the_interval_back(tmp_path, monkeypatch):
    """The loader thread compiling holds the GIL; the playing thread waits for it around every
    kernel. During a build (only then) the holder hands it over after 20 us, not 5 ms; after the
    build, and after a build that fails, the interval is what it was."""
    from bridge.live import SWITCH_GIL_INTERVAL_S
    from tests.helpers.streams import wait_for
    monkeypatch.setenv("VJBRIDGE_MODELS", str(tmp_path))
    save_bundle(tiny_pix2pix(), tmp_path / "tiny-a")
    save_bundle(tiny_pix2pix(), tmp_path / "tiny-b")
    save_bundle(tiny_pix2pix(), tmp_path / "broken")
    (tmp_path / "broken" / "weights.safetensors").write_bytes(b"not a safetensors file")
    before = sys.getswitchinterval()
    assert before > SWITCH_GIL_INTERVAL_S  # Python's own, 5 ms
    settings = LiveSettings(model="tiny-a", audio_in=AMEN, outs=["null"], fps=20, threads=1)
    with _IntervalWatch(settings) as session:
        worker = threading.Thread(target=lambda: session.run(duration=4.0, status_stream=None))
        worker.start()
        time.sleep(0.3)
        session.switch_model("tiny-b")
        assert wait_for(lambda: session.model_name == "tiny-b" and not session._lock.locked(), timeout=30)
        assert sys.getswitchinterval() == before
        session.switch_model("broken")
        assert wait_for(lambda: not session._lock.locked(), timeout=30)
        assert sys.getswitchinterval() == before
        assert session.model_name == "tiny-b" and "model broken not loaded" in session.messages[-1]
        worker.join(30)
    assert not worker.is_alive()
    assert [name for name, _ in session.intervals] == ["tiny-a", "tiny-a compiled", "tiny-b", "tiny-b compiled",
                                                       "broken"]
    # Python keeps the interval in whole microseconds
    assert [seen for _, seen in session.intervals] == pytest.approx([before] + [SWITCH_GIL_INTERVAL_S] * 4)


def test_loaders_that_overlap_put_the_process_settings_back_once_the_last_leaves():
    """A closed session's loader finishes its piece while the next session's starts: the GIL
    interval and the collector's threshold are held by both, and put back only when the second
    leaves (each putting back what it had found left 20 us in place for good)."""
    import gc

    from bridge import live
    interval, threshold = sys.getswitchinterval(), gc.get_threshold()
    first, second = live.playing_thread_first(), live.playing_thread_first()
    held_first, held_second = live.full_collections_held(), live.full_collections_held()
    first.__enter__()
    held_first.__enter__()
    second.__enter__()
    held_second.__enter__()
    first.__exit__(None, None, None)  # in the order they started: not the order `with` nests
    held_first.__exit__(None, None, None)
    assert sys.getswitchinterval() == pytest.approx(live.SWITCH_GIL_INTERVAL_S)
    assert gc.get_threshold()[2] > 10 ** 6  # the second still holds full collections off
    second.__exit__(None, None, None)
    held_second.__exit__(None, None, None)
    assert sys.getswitchinterval() == interval and gc.get_threshold() == threshold
