"""A compiled runner keeps what it compiled to itself, and lets go of it when it goes.

Dynamo keeps its compiles on the code object of the function compiled (a limited number per code
object) and Inductor keeps the generated modules, frozen weights attached, in lists of its own.
Compiled straight from the class's `generate`, every model of a family shared one code object:
each compile of a set's switches stayed for good (measured: about 25 MB a pix2pix-pulse compile),
and past the limit the next compile ran eager, silently. Real compiles of real (tiny) bundles."""
from __future__ import annotations

import gc
import weakref

import torch
from torch._inductor.codecache import PyCodeCache
from torch.fx.experimental.symbolic_shapes import ShapeEnv

import bridge.runtime as runtime
from bridge.engine import FramePipeline
from bridge.generators.base import load_model
from bridge.generators.pix2pix import Pix2Pix
from bridge.live import LiveSession
from bridge.runtime import Runner
from tests.test_control_live import wait_until
from tests.test_reliability import COMPILE_WAIT_S, UNTIL_STOPPED_S, Running
from tests.test_switch_compile import compiled, entries, settings, settled


def built(name: str = "tiny-a"):
    """A compiled runner of `name`, warmed (compiled) by its pipeline, and that pipeline."""
    model = load_model(name)
    runner = Runner(model, compile=True)
    pipeline = FramePipeline(model, runner=runner, output_size=None)
    pipeline.warmup()
    return runner, pipeline


def picture(runner, pipeline) -> torch.Tensor:
    snapshot, latent = pipeline._warm_inputs
    return runner(pipeline.condition(snapshot, runner), latent).clone()


def shared_codes() -> list:
    """The class-level code objects every compile went through before: none gets a compile now."""
    from bridge.degrade import ScaledPix2Pix
    return [Pix2Pix.generate.__code__, runtime._DrawThenGenerate.generate.__code__,
            ScaledPix2Pix.generate.__code__]


def shape_envs() -> int:
    # `type`, not isinstance: isinstance on a weak proxy whose object is gone raises
    return sum(type(o) is ShapeEnv for o in gc.get_objects())


def test_each_compiled_runner_compiles_its_own_copy_and_no_limit_is_shared(tiny_models, monkeypatch):
    import torch._dynamo.config as dynamo_config
    # dynamo's limit of compiles per code object, made 2: with one code object for the family,
    # the third runner here ran eager (as the 65th did at the limit the bridge sets)
    from torch._inductor.codecache import CppWrapperCodeCache
    monkeypatch.setattr(runtime, "recompile_room", lambda: None)
    libraries = len(CppWrapperCodeCache.cache)  # the C++ wrappers built or loaded in this process
    with dynamo_config.patch(recompile_limit=2):
        runners = [built(name) for name in ("tiny-a", "tiny-b", "tiny-a", "tiny-b")]
    codes = [runner._own_code for runner, _ in runners]
    assert len({id(code) for code in codes}) == 4
    assert [entries(code) for code in codes] == [1, 1, 1, 1]  # each compiled, once, on its own
    assert [entries(code) for code in shared_codes()] == [0, 0, 0]
    if runtime.CPP_WRAPPER:  # a wrapper library per bundle, each serving its two compiles (4 before;
        # not one for both: Inductor writes some small weights into its kernels as numbers)...
        assert len(CppWrapperCodeCache.cache) - libraries <= 2
    first, second = picture(*runners[0]), picture(*runners[2])  # the same bundle, compiled twice
    assert torch.equal(first, second)
    other = picture(*runners[1])  # ...each playing its own weights through it
    assert torch.equal(other, picture(*runners[3])) and not torch.allclose(first, other, atol=1e-3)


def test_a_wrapper_is_shared_only_where_its_weights_come_in_as_arguments():
    """The notes of weights the library is handed are taken out of the key; a weight noted that
    is not handed in (the library would hold it) keeps the source, and so the key, as it is."""
    handed = ("#include <torch/csrc/inductor/cpp_wrapper/cpu.h>\n"
              "// _frozen_param3 device(type='cpu') torch.float32 (8, 4) (4, 1) 7f89308bf750\n"
              "void inductor_entry_impl(AtenTensorHandle* input_handles) {\n"
              "    auto inputs = steal_from_raw_handles_to_raii_handles(input_handles, 2);\n"
              "    [[maybe_unused]] auto _frozen_param3 = std::move(inputs[1]);\n"
              '    assert_size_stride(buf0, {8L}, {1L}, "partial(<function fn at 0x7f23ffe37240>, x)");\n'
              "}\n")
    shared = runtime.wrapper_source_shared(handed)
    assert "7f89308bf750" not in shared and "0x7f23ffe37240" not in shared
    assert shared == handed.replace("// _frozen_param3 device(type='cpu') torch.float32 (8, 4) (4, 1) "
                                    "7f89308bf750\n", "").replace(" at 0x7f23ffe37240>", ">")
    kept = handed.replace("auto _frozen_param3 = std::move(inputs[1]);", "auto other = std::move(inputs[1]);")
    assert runtime.wrapper_source_shared(kept) == kept


def test_a_runner_gone_leaves_no_compile_behind_and_the_live_one_plays_on(tiny_models):
    keep, keep_pipeline = built("tiny-a")
    before = picture(keep, keep_pipeline)

    def cycle() -> None:  # a switched-away model built, compiled and let go, then the next built
        runner, _ = built("tiny-b")
        code = weakref.ref(runner)
        gone.append(runner._own_code)
        del runner, _
        gc.collect()
        assert code() is None

    gone: list = []
    cycle()
    built("tiny-b")  # setting up a compile lets go of what the runners gone left
    gc.collect()
    counts = (len(PyCodeCache.modules), len(weakref.finalize._registry),
              shape_envs())
    for _ in range(3):
        cycle()
        built("tiny-b")
        gc.collect()
    assert [entries(code) for code in gone] == [0, 0, 0, 0]
    # what each compile made is let go: nothing adds up over the cycles
    assert (len(PyCodeCache.modules), len(weakref.finalize._registry),
            shape_envs()) <= counts
    assert entries(keep._own_code) == 1  # the one still playing keeps its compile...
    assert torch.equal(picture(keep, keep_pipeline), before)  # ...and plays the same pictures


def test_a_set_of_cold_switches_compiles_every_model_and_keeps_nothing_of_those_gone(tiny_models):
    with LiveSession(settings(keep_warm=0)) as session:
        run = Running(session, UNTIL_STOPPED_S)
        assert wait_until(lambda: settled(session), COMPILE_WAIT_S)
        seen, codes = [], []
        for name in ("tiny-b", "tiny-a", "tiny-b", "tiny-a", "tiny-b"):
            session.switch_model(name)
            assert wait_until(lambda: session.model_name == name and not session._lock.locked(), COMPILE_WAIT_S)
            levels = session.pipeline.level_runners
            assert all(compiled(runner) for runner in levels)
            assert all(entries(runner._own_code) == 1 for runner in levels)  # compiled, not eager
            codes.append([weakref.ref(runner) for runner in levels])
            seen.append(len(PyCodeCache.modules))
        assert [entries(code) for code in shared_codes()] == [0, 0, 0]
        gc.collect()
        # every model switched away from (--keep-warm 0) is gone, its compiles with it
        assert all(ref() is None for refs in codes[:-1] for ref in refs)
        assert seen[-1] <= seen[1]
        session.engine.stop()
        stats = run.join()
    assert stats["errors"] == 0


def test_a_network_is_traced_once_keeps_no_weights_in_its_trace_and_each_build_plays_its_own(tiny_models):
    """TorchScript keeps some of every trace for good (5-8 MB a pix2pix-pulse trace): one trace
    per network, shared by its builds (each cold switch built one at every level before)."""
    def traced(model):
        runner = Runner(model, compile=False)
        pipeline = FramePipeline(model, runner=runner, output_size=None)
        pipeline.warmup()
        (trace,) = runner._fn._calls.values()
        return runner, pipeline, trace

    first, first_pipeline, trace = traced(load_model("tiny-a"))
    assert isinstance(trace, torch.jit.ScriptModule) and not list(trace.parameters())  # no weights in it
    other = load_model("tiny-a")  # the same bundle, its weights changed (as in a mix's own copy)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.mul_(0.5)
    second, second_pipeline, shared = traced(other)
    assert shared is trace  # not traced again...
    # ...and each plays its own weights: the same inputs, other pictures
    assert not torch.allclose(picture(first, first_pipeline), picture(second, second_pipeline), atol=1e-3)
    assert second._fn.traced  # it passed the check against its own eager pictures, so plays traced
    gone = weakref.ref(first._fn.net)
    del first, first_pipeline
    gc.collect()
    assert gone() is None  # the shared trace keeps no network alive


def test_every_degradation_level_has_its_own_trace_and_the_next_build_reuses_them_all(tiny_models):
    from bridge.degrade import parse_degrade
    from bridge.generators.base import save_bundle
    from bridge.generators.pix2pix import Pix2PixConfig
    torch.manual_seed(3)  # 64 px: room for levels of 48 and 32 px, the same weights' shapes at each
    save_bundle(Pix2Pix(Pix2PixConfig(size=64, ngf=4, input="bands")), tiny_models / "models" / "tiny-64")

    def level_traces():
        model = load_model("tiny-64")
        pipeline = FramePipeline(model, runner=Runner(model, compile=False), output_size=None,
                                 degrade=parse_degrade("1,0.75,0.5"))
        pipeline.warmup()
        assert len(pipeline.level_runners) == 3
        return [next(iter(runner._fn._calls.values())) for runner in pipeline.level_runners]

    first = level_traces()
    assert len({id(trace) for trace in first}) == 3  # a level's size is part of what is traced
    assert all(isinstance(trace, torch.jit.ScriptModule) for trace in first)
    assert [id(trace) for trace in level_traces()] == [id(trace) for trace in first]  # none traced again


COMPILE_IN_CHILD = """
import os, sys
import torch._dynamo  # (it puts torch's own default in the environment)
import bridge.runtime as runtime
from bridge.engine import FramePipeline
from bridge.generators.base import load_model
model = load_model("tiny-a")
runner = runtime.Runner(model, compile=True)
FramePipeline(model, runner=runner, output_size=None).warmup()
print(os.environ["TORCHINDUCTOR_CACHE_DIR"], runner.info.compiled)
"""


def test_compiled_kernels_are_kept_in_the_users_cache_folder_not_the_temporary_one(tiny_models, tmp_path):
    """torch's default is the temporary folder: emptied at boot (Ubuntu) or after days (macOS).
    Ours (its precompiled headers too), and the user's own choice where given: each a process of
    its own (the folder is chosen once a process), both at once. The next run's compile of the
    same network builds nothing: what it needs is there (its C++ wrapper's library included)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    def child(own_dir: bool) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
        env.update(VJBRIDGE_CACHE=str(tmp_path / ("ours-unused" if own_dir else "ours")),
                   PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        if own_dir:  # the user's own choice stays
            env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "mine")
        return subprocess.Popen([sys.executable, "-c", COMPILE_IN_CHILD], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def compiled_in(child: subprocess.Popen) -> Path:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err[-2000:]
        where, compiled_there = out.split()
        assert compiled_there == "True"
        return Path(where)

    def built(folder: Path) -> set:
        return {path for path in folder.rglob("*") if path.suffix == ".so"}

    children = {own_dir: child(own_dir) for own_dir in (False, True)}
    for own_dir, running in children.items():
        expected = tmp_path / ("mine" if own_dir else "ours/inductor")
        assert compiled_in(running) == expected
        assert built(expected)  # its kernels, built and kept there
        if runtime.CPP_WRAPPER:  # the C++ headers its wrapper is built with, precompiled, kept there too
            assert any(path.suffix == ".gch" for path in (expected / "precompiled_headers").iterdir())
    assert not built(tmp_path / "ours-unused")  # theirs won
    ours = tmp_path / "ours/inductor"
    before = built(ours)
    assert compiled_in(child(False)) == ours
    assert built(ours) == before  # the next run built no library: each was found


SWITCH_IN_CHILD = """
import gc, sys, threading, time
import bridge.live as live
from bridge.runtime import TracedNetwork
if sys.argv[1] == "unsettled":  # as before: the loader compiles straight away
    live.settle_compiler = lambda device="cpu": None
session = live.LiveSession(live.LiveSettings(model="tiny-a", audio_in="silence", outs=["null"], fps=30,
                                             threads=1, keep_warm=0))
seen = {}


def driver():
    while session._compile_at_start or session._lock.locked():
        time.sleep(0.05)
    session.switch_model("tiny-b")  # a cold switch: compiled on the loader as it plays
    while session.model_name != "tiny-b" or session._lock.locked():
        time.sleep(0.05)
    gc.collect()
    seen["walked"] = len(gc.get_objects())  # what every full collection walks, holding the GIL
    seen["compiled"] = not isinstance(session.pipeline.runner._fn, TracedNetwork)
    session.engine.stop()


threading.Thread(target=driver, daemon=True).start()
with session:
    summary = session.run(duration=120, status_stream=None)
print(seen["walked"], seen["compiled"], summary["errors"])
"""


def test_the_settling_network_is_the_same_in_every_process_and_leaves_the_randomness_alone():
    """Inductor writes some of its weights into the C++ it builds: the same weights whatever the
    random state (another in each process) find the library an earlier start built."""
    from bridge import live
    torch.manual_seed(1)
    first = live.settling_network().state_dict()
    then = torch.rand(3)
    torch.manual_seed(2)
    second = live.settling_network().state_dict()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    torch.manual_seed(1)
    assert torch.equal(torch.rand(3), then)  # the set's own randomness as it was


def test_a_run_sets_the_compiler_up_first_so_collections_during_a_switch_walk_a_fraction(tiny_models):
    """Inductor's first compile leaves 140,000 objects for the life of the process (pattern
    tables, sympy, its C++ builder) that `run`'s freeze at the start cannot know of; every full
    collection during a later switch walked them again (50-80 ms with the GIL held, lost ticks).
    A live run compiles a tiny network first and freezes what lives then. Real runs, each in a
    process of its own (the compiler is set up once a process)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    children = {variant: subprocess.Popen([sys.executable, "-c", SWITCH_IN_CHILD, variant], env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for variant in ("settled", "unsettled")}  # both at once: what is counted is objects, not time
    walked = {}
    for variant, child in children.items():
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err[-2000:]
        count, compiled, errors = out.split()
        assert compiled == "True" and errors == "0", out  # the switch played compiled, no frame lost to errors
        walked[variant] = int(count)
    assert walked["settled"] < walked["unsettled"] / 2, walked


def test_a_compile_makes_no_full_collection_of_its_own_and_one_at_its_end(monkeypatch):
    """A full collection holds the GIL while it walks every tracked object: during a big compile
    (a full flow's, switched to) the collector made 7 of them, up to 130 ms each, and the output
    lost ticks. Inside `full_collections_held` (the loader's compile) only the young generations
    are collected; the full one comes once, on leaving, and the threshold is put back."""
    from bridge import live

    def survivors_made() -> tuple[list, list]:
        """Enough objects that live on (past a quarter of those already in the old generation,
        however many earlier tests left) for the collector to make full collections of its own."""
        count, full = max(200_000, len(gc.get_objects()) // 2), []

        def seen(phase, info):
            if phase == "stop" and info["generation"] == 2:
                full.append(1)
        gc.callbacks.append(seen)
        try:
            kept = [[i] for i in range(count)]
        finally:
            gc.callbacks.remove(seen)
        return kept, full

    before = gc.get_threshold()
    _, full = survivors_made()
    assert full  # as the collector does on its own
    del _
    ends = []

    def at_end(phase, info):
        if phase == "stop" and info["generation"] == 2:
            ends.append(1)
    with live.full_collections_held():
        assert gc.get_threshold()[:2] == before[:2] and gc.get_threshold()[2] > 10 ** 6
        kept, full = survivors_made()
        assert not full  # none of its own while held
        gc.callbacks.append(at_end)
    gc.callbacks.remove(at_end)
    assert ends == [1] and gc.get_threshold() == before  # one on leaving, the threshold as it was
    monkeypatch.setattr(live, "HOLD_FULL_COLLECTIONS", False)
    with live.full_collections_held():
        assert gc.get_threshold() == before


def test_between_compiles_the_garbage_goes_at_once_and_leaving_walks_it_again_only_if_more_came(monkeypatch):
    """`collected_between_compiles`: a full collection inside `full_collections_held` (one
    compile's garbage at a time, not all at the end), none outside it (the collector's own
    thresholds rule there); leaving right after it makes no second walk of the same objects."""
    from bridge import live
    full = []

    def seen(phase, info):
        if phase == "stop" and info["generation"] == 2:
            full.append(info["collected"])
    gc.callbacks.append(seen)
    try:
        live.collected_between_compiles()
        assert full == []  # not held: nothing made here
        with live.full_collections_held():
            cycles = [[] for _ in range(5000)]
            for cycle in cycles:
                cycle.append(cycle)
            gc.collect(1)  # the compile's garbage lived long enough to reach the old generation
            del cycles, cycle
            live.collected_between_compiles()
            assert len(full) == 1 and full[0] >= 5000  # found there, by a full collection
        assert len(full) == 1  # nothing came since: leaving walked nothing again
        with live.full_collections_held():
            kept = [[i] for i in range(50_000)]  # more reaches the old generation after it
            live.collected_between_compiles()
            more = [[i] for i in range(50_000)]
        assert len(full) == 3  # one between, one on leaving for what came after it
        monkeypatch.setattr(live, "HOLD_FULL_COLLECTIONS", False)
        with live.full_collections_held():
            live.collected_between_compiles()
        assert len(full) == 3
    finally:
        gc.callbacks.remove(seen)
    del kept, more
