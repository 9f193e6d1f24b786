"""`run --isolate` (issue 7, part 4): the generator's network runs in a worker process; when it is
killed (`kill -9`) or hangs, the output keeps its rate on the last good frame, the worker is
restarted and warmed, and fresh pictures come back. Real processes, real signals, a real live
session over real UDP."""
from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from bridge.errors import ModelLoadError
from bridge.isolate import IsolatedGenerator, WorkerLost, pack, unpack
from bridge.runtime import Runner
from tests.test_control_live import wait_until
from tests.test_reliability import FPS, Running, assert_none_escaped, live


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_tensors_cross_as_json_and_raw_bytes_and_a_lying_header_is_refused():
    tree = (torch.randn(1, 3, 8, 8), None, (torch.arange(5), torch.randn(2).to(torch.bfloat16)),
            torch.zeros(0, 4))
    spec, buffers = pack(tree)
    back = unpack(spec, buffers)
    assert torch.equal(back[0], tree[0]) and back[1] is None
    assert torch.equal(back[2][0], tree[2][0]) and torch.equal(back[2][1], tree[2][1])
    assert back[3].shape == (0, 4)
    buffers[0] = buffers[0][:-4]
    with pytest.raises(WorkerLost, match="came with"):
        unpack(spec, buffers)
    with pytest.raises(TypeError, match="cannot send"):
        pack(("a string",))


def test_the_worker_makes_the_same_pictures_as_the_live_process(tiny_models):
    from bridge.generators.base import find_bundle, load_model
    model = load_model("tiny-a")
    iso = IsolatedGenerator(find_bundle("tiny-a"), runtime="reference", sizes=[16])
    try:
        pid = iso.pid
        assert pid != os.getpid() and alive(pid)
        runner = iso.runner(model)
        cond = torch.rand(1, 3, 32, 32) * 2 - 1
        runner.warmup(cond, None, runs=1)
        assert torch.equal(runner(cond), Runner(model, runtime="reference")(cond))
        small = runner.at_level(1, 16)
        assert small(cond).shape == (1, 3, 32, 32)  # a lower level, grown back to full size
        with pytest.raises(ValueError, match="no degradation level"):
            runner.at_level(2, 8)
        with pytest.raises(RuntimeError, match="worker process|Error"):  # the network's own error
            runner(torch.rand(1, 5, 32, 32))
        assert torch.equal(runner(cond), Runner(model, runtime="reference")(cond))  # still fine
    finally:
        iso.close()
    assert wait_until(lambda: not alive(pid), 3.0)
    assert str(iso.status) == "closed"


def test_a_worker_that_draws_is_sent_what_the_picture_is_drawn_from(tiny_models):
    """The optimized worker draws the bands picture itself (every level): the pipeline sends it
    five numbers, not a float picture, and gets the frames the live process makes from one."""
    from bridge.engine import FramePipeline
    from bridge.generators.base import find_bundle, load_model, save_bundle
    from bridge.generators.pix2pix import Pix2Pix, Pix2PixConfig
    torch.manual_seed(2)
    save_bundle(Pix2Pix(Pix2PixConfig(size=64, ngf=4, input="bands")), tiny_models / "models" / "tiny-64")
    model = load_model("tiny-64")
    iso = IsolatedGenerator(find_bundle("tiny-64"), runtime="optimized", sizes=[32])
    try:
        runner = iso.runner(model)
        assert runner.draws_condition and runner.at_level(1, 32).draws_condition
        pipeline = FramePipeline(model, runner=runner, degrade=(1.0, 0.5))
        local = FramePipeline(model, runner=Runner(model, runtime="optimized", compile=False),
                              degrade=(1.0, 0.5))
        pipeline.warmup(runs=1)
        for p in (pipeline, local):
            p.feed_audio((0.5 * torch.randn(4410)).numpy())
        snapshot = pipeline.snapshot(0.1)
        for level in (0, 1):
            cond = pipeline.condition(snapshot, pipeline.level_runners[level])
            assert cond.shape == (1, 5)
            pipeline.level = local.level = level
            got, want = pipeline.make_frame(snapshot), local.make_frame(snapshot)
            assert got.shape == want.shape == (64, 64, 4)
            assert abs(got.astype(int) - want.astype(int)).max() <= 16  # compiled vs eager bf16
    finally:
        iso.close()


def test_a_worker_that_cannot_load_its_model_is_one_clear_error(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError) as e:
        IsolatedGenerator(tmp_path / "broken", runtime="reference")
    assert "config.json" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("how", ["kill", "hang"])
def test_a_killed_or_hung_worker_is_replaced_while_the_output_keeps_its_rate(tiny_models, inbox, how,
                                                                             thread_exceptions):
    duration = 12.0
    with live(inbox, isolate=True) as session:
        iso = session.pipeline.runner.iso
        first = iso.pid
        run = Running(session, duration)
        assert wait_until(lambda: ["ok", f"worker pid {first}"] in inbox.wait_for("/vjbridge/status/generator", 0.1), 5.0)
        time.sleep(1.0)
        before = session.engine.stats.generated
        os.kill(first, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        hit = time.monotonic()
        assert wait_until(lambda: any(v[0] == "reconnecting" for v in inbox.wait_for("/vjbridge/status/generator", 0.1)), 4.0)
        assert wait_until(lambda: iso.restarts == 1 and iso.status.state.value == "ok", 8.0)
        back = time.monotonic() - hit
        second = iso.pid
        made_at_restart = session.engine.stats.generated
        assert wait_until(lambda: session.engine.stats.generated > made_at_restart, 3.0)  # fresh pictures again
        fresh_again = time.monotonic() - hit
        assert wait_until(lambda: session.engine.stats.generated > made_at_restart + 10, 5.0)  # and they go on
        assert "generator ok (worker pid" in session.status_line(session.engine.stats)
        result = run.join()
    print(f"\nisolate/{how}: worker {first} -> {second}, restarted {back:.2f} s after the signal, fresh "
          f"frames {fresh_again:.2f} s after; fps {result['fps']}, sent {result['sent']}, generated "
          f"{result['generated']} ({before} before), repeated {result['repeated']}, stalled {result['stalled']}, "
          f"errors {result['errors']}")
    assert second != first and not alive(first)
    assert not alive(second)  # closed with the session
    # The output never stopped: every tick sent a frame (the last good one while the worker was down).
    assert result["sent"] >= FPS * duration * 0.95 and result["fps"] >= FPS * 0.95, result
    assert result["stalled"] <= 0.02 * result["sent"], result
    assert result["errors"] == 1, result  # the one call that found the worker gone; restarting is no error
    assert all(sink.dropped == 0 for sink in session.sinks)
    assert_none_escaped(thread_exceptions)


def test_switching_models_starts_a_new_worker_and_keeps_the_old_one_warm_until_the_end(tiny_models):
    """The model switched away from keeps its worker (--keep-warm): switching back plays it again,
    the same process, with no load; closing the session ends both."""
    with live(None, isolate=True, osc_port=None) as session:
        old = session.pipeline.runner.iso.pid
        run = Running(session, 5.0)
        session.switch_model("tiny-b")
        assert wait_until(lambda: session.model_name == "tiny-b" and not session._lock.locked(), 10.0)
        new = session.pipeline.runner.iso.pid
        assert new != old and alive(new) and alive(old)
        session.switch_model("tiny-a")
        assert wait_until(lambda: session.model_name == "tiny-a" and not session._lock.locked(), 10.0)
        assert session.pipeline.runner.iso.pid == old and alive(new)
        result = run.join()
    assert not alive(old) and not alive(new)
    assert result["fps"] >= FPS * 0.9 and result["errors"] == 0, result


def test_with_keep_warm_0_a_switch_ends_the_old_worker(tiny_models):
    with live(None, isolate=True, osc_port=None, keep_warm=0) as session:
        old = session.pipeline.runner.iso.pid
        run = Running(session, 4.0)
        session.switch_model("tiny-b")
        assert wait_until(lambda: session.model_name == "tiny-b" and not session._lock.locked(), 10.0)
        new = session.pipeline.runner.iso.pid
        assert new != old and alive(new)
        assert wait_until(lambda: not alive(old), 3.0)
        result = run.join()
    assert not alive(new)
    assert result["fps"] >= FPS * 0.9 and result["errors"] == 0, result


def test_cli_run_takes_isolate():
    from bridge.cli import build_parser, run_settings
    args = build_parser().parse_args(["run", "--isolate", "--out", "null", "--audio-in", "silence"])
    assert run_settings(args).isolate is True
    args = build_parser().parse_args(["run", "--out", "null"])
    assert run_settings(args).isolate is False
