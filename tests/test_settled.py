"""A live run measured once its model has settled (compiled while it played, threads chosen):
`LiveSession.settled`, `run(settled_window=...)` and what `vjbridge demo` prints of it, on a real
engine playing a real audio file."""
import io
import threading
import time

import pytest

from bridge import live, runtime
from bridge.cli import _settled_line
from bridge.generators.base import save_bundle
from bridge.live import LiveSession, LiveSettings
from bridge.runtime import AutoRunner, Runner, TracedNetwork
from tests.helpers.streams import wait_for
from tests.test_threads import AMEN, tiny_pix2pix


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("VJBRIDGE_MODELS", str(tmp_path))
    monkeypatch.setattr(runtime, "thread_choices", lambda cores=None: [1, 2])  # a trial whatever the cores
    save_bundle(tiny_pix2pix(), tmp_path / "tiny")
    return "tiny"


def _playing(session):
    runner = live._lead(session.pipeline).runner
    return runner.chosen if isinstance(runner, AutoRunner) else runner


def test_the_window_starts_once_the_model_is_compiled_and_its_threads_chosen(tiny):
    settings = LiveSettings(model=tiny, audio_in=AMEN, outs=["null"], fps=20, threads="auto")
    seen = []  # (settled, what played then) every 20 ms from another thread
    with LiveSession(settings) as session:
        assert not session.settled  # nothing played yet; the compile is asked for as `run` starts
        done = threading.Event()

        def watch():
            while not done.is_set():
                settled = session.settled
                seen.append((settled, _playing(session)))
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            result = session.run(status_stream=None, settled_window=2.0)
        finally:
            done.set()
            watcher.join(5)
    assert result["settle_s"] is not None and result["settle_s"] >= 1.0, result
    assert result["window_s"] == pytest.approx(2.0, abs=0.3)
    # the start's frames (played traced, then the trial) are counted apart from the window's
    assert result["settling"]["sent"] >= 15 and result["errors"] == 0, result
    assert 30 <= result["sent"] <= 46 and 30 <= result["generated"] <= 46, result
    assert result["fps"] == pytest.approx(20.0, abs=1.0) and result["latency_ms_p95"] is not None
    assert [s for s, _ in seen[:3]] == [False] * 3
    early = [runner for settled, runner in seen if not settled]
    assert any(runner is None or isinstance(getattr(runner, "_fn", None), TracedNetwork) for runner in early)
    late = [runner for settled, runner in seen if settled]
    assert late and all(isinstance(r, Runner) and r.info.compiled and r.compile for r in late)


def test_a_switch_unsettles_the_set_until_the_new_model_plays_compiled(tiny, tmp_path):
    save_bundle(tiny_pix2pix(), tmp_path / "tiny-b")
    settings = LiveSettings(model=tiny, audio_in=AMEN, outs=["null"], fps=20, threads="1")
    with LiveSession(settings) as session:
        worker = threading.Thread(target=lambda: session.run(duration=20.0, status_stream=None))
        worker.start()
        try:
            assert wait_for(lambda: session.settled, timeout=30)
            session.switch_model("tiny-b")
            assert not session.settled  # the loader holds the set until tiny-b plays compiled
            assert wait_for(lambda: session.model_name == "tiny-b" and session.settled, timeout=30)
            assert _playing(session).info.compiled
        finally:
            session.engine.stop()
            worker.join(10)


def test_a_model_that_does_not_settle_in_time_is_measured_as_it_plays(tiny, monkeypatch):
    """A set whose model never settles (here: one told it has not) is measured after the limit,
    and says so; one stopped before settling returns the whole run's figures."""
    monkeypatch.setattr(LiveSession, "settled", property(lambda self: False))
    settings = LiveSettings(model=tiny, audio_in=AMEN, outs=["null"], fps=20, threads="1", runtime="reference")
    status = io.StringIO()
    with LiveSession(settings) as session:
        result = session.run(status_stream=status, settled_window=1.0, settle_limit=1.0)
    # the status line goes on showing the output's rate as the window clears the times it is taken of
    rates = [float(line.split("|")[0].split()[1]) for line in status.getvalue().split("\r") if line.startswith("fps")]
    assert len(rates) >= 2 and min(rates) >= 15.0, rates
    assert result["settle_s"] is None and result["window_s"] == pytest.approx(1.0, abs=0.3), result
    assert 10 <= result["sent"] <= 26 and result["settling"]["sent"] >= 10, result
    assert _settled_line(result).startswith("live: not settled in time, measured as it played: 1 s at")
    with LiveSession(settings) as session:
        result = session.run(duration=1.0, status_stream=None, settled_window=5.0)
    assert result["settle_s"] is None and result["window_s"] == 0.0 and result["sent"] >= 15, result
    assert _settled_line(result).startswith("live: stopped before the model settled")


def test_the_demo_line_names_the_settling_and_the_window():
    line = _settled_line({"settle_s": 14.3, "window_s": 5.0, "fps": 30.0, "latency_ms_p50": 20.9,
                          "latency_ms_p95": 26.7, "generate_ms_p50": 10.3, "repeated": 0, "stalled": 0,
                          "settling": {"sent": 419, "repeated": 13, "stalled": 1, "errors": 0}})
    assert line == ("live: settled (compiled, threads chosen) in 14.3 s while playing (repeated 13, stalled 1); "
                    "then 5 s at 30.0 fps, latency p50 21 ms p95 27 ms, model 10 ms, repeated 0 stalled 0")


def test_a_settled_window_must_be_positive(tiny):
    with LiveSession(LiveSettings(model=tiny, audio_in="silence", outs=["null"], threads="1")) as session:
        with pytest.raises(ValueError, match="positive"):
            live.SettledWindow(session, 0.0)

