"""Models kept warm on a live session: a model switched away from (or cued, or preloaded) stays
built, so switching to it plays it at the next frame with no load; the switched-in model listens on
from the playing one's analysis; a bundle changed on disk is loaded again. Real sessions, real
bundles on disk, real UDP for OSC."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pythonosc.udp_client import SimpleUDPClient

from bridge.errors import ConfigError, ModelLoadError
from bridge.generators.base import save_bundle
from bridge.generators.pix2pix import Pix2Pix, Pix2PixConfig
from bridge.live import LiveSession, LiveSettings
from tests.test_control_live import wait_until
from tests.test_reliability import Running

SONG = str(Path(__file__).resolve().parents[1] / "bridge" / "data" / "demo.ogg")


class Counting(LiveSession):
    """A live session counting the models it loads (a switch to a warm one loads none)."""

    def _build_one(self, name, output_size=None, lead=True, compile=True):
        self.loaded = getattr(self, "loaded", []) + [name]
        return super()._build_one(name, output_size, lead, compile)


def settings(**kw) -> LiveSettings:
    given = dict(model="tiny-a", audio_in="silence", outs=["null"], fps=30, runtime="reference")
    given.update(kw)
    return LiveSettings(**given)


def switch(session: LiveSession, name: str) -> None:
    session.switch_model(name)
    assert wait_until(lambda: session.model_name == name and not session._lock.locked(), 10.0)
    assert wait_until(lambda: not session.engine.swapping, 2.0)


def test_switching_back_plays_the_warm_model_with_no_load_and_the_oldest_is_let_go(tiny_models):
    torch.manual_seed(2)
    save_bundle(Pix2Pix(Pix2PixConfig(size=32, ngf=4, input="bands")), tiny_models / "models" / "tiny-c")
    with Counting(settings(keep_warm=1)) as session:
        first = session.pipeline
        run = Running(session, 4.0)
        switch(session, "tiny-b")
        second = session.pipeline
        switch(session, "tiny-a")  # warm: the very pipeline that played first
        assert session.pipeline is first and session.engine.pipeline is first
        assert list(session._warm) == ["tiny-b"] and session._warm["tiny-b"].pipeline is second
        assert "| ready tiny-b |" in session.status_line(session.engine.stats)
        switch(session, "tiny-c")  # loaded; tiny-a kept warm, tiny-b (the oldest) let go
        assert list(session._warm) == ["tiny-a"]
        switch(session, "tiny-c")  # the one playing, unchanged: nothing loaded
        result = run.join()
    assert session.loaded == ["tiny-a", "tiny-b", "tiny-c"]
    assert result["errors"] == 0 and result["stalled"] == 0, result
    assert session._warm == {}  # closed with the session


def test_a_switched_in_model_listens_on_from_the_playing_ones_analysis(tiny_models):
    """Its history, levels and tempo go on where the playing model's were, not from silence;
    a model that analyses differently starts its own analysis (a warm one does not keep a stale one)."""
    torch.manual_seed(3)
    save_bundle(Pix2Pix(Pix2PixConfig(size=32, ngf=4, input="bands", analysis={"history_seconds": 5.0})),
                tiny_models / "models" / "tiny-short")
    with LiveSession(settings(audio_in=SONG)) as session:
        playing = session.pipeline.analyzer
        run = Running(session, 9.0)
        assert wait_until(lambda: session.heard_tempo() > 0, 8.0)  # the song's beat found
        switch(session, "tiny-b")
        assert session.pipeline.analyzer is playing and session.heard_tempo() > 0
        switch(session, "tiny-short")
        fresh = session.pipeline.analyzer
        assert fresh is not playing and fresh.config.history_seconds == 5.0
        switch(session, "tiny-b")  # warm, and analyses as tiny-short does not: a new analysis again
        assert session.pipeline.analyzer is not playing and session.pipeline.analyzer is not fresh
        assert session.pipeline.analyzer.config == playing.config
        run.join()


def test_a_cued_model_is_ready_before_the_switch_and_is_told_over_osc(tiny_models, inbox):
    with Counting(settings(osc_port=0, osc_reply=f"127.0.0.1:{inbox.port}")) as session:
        run = Running(session, 4.0)
        client = SimpleUDPClient("127.0.0.1", session.osc.port)
        client.send_message("/vjbridge/model/cue", "tiny-b")
        assert wait_until(lambda: ["tiny-b"] in inbox.wait_for("/vjbridge/model/cued", 0.1), 10.0)
        assert session.model_name == "tiny-a" and "tiny-b" in session._warm  # cued, not playing
        assert session.loaded == ["tiny-a", "tiny-b"]
        client.send_message("/vjbridge/model", "tiny-b")
        assert wait_until(lambda: session.model_name == "tiny-b" and not session._lock.locked(), 5.0)
        client.send_message("/vjbridge/model/cue", "nope")
        client.send_message("/vjbridge/model/cue", "../tiny-a")
        assert wait_until(lambda: len(inbox.wait_for("/vjbridge/error", 0.1)) >= 2, 5.0)
        result = run.join()
    assert session.loaded == ["tiny-a", "tiny-b"]  # the switch loaded nothing
    errors = " ".join(a[0] for a in inbox.wait_for("/vjbridge/error"))
    assert "model 'nope' not found" in errors and "/vjbridge/model/cue wants a bundle name" in errors
    assert result["errors"] == 0


def test_with_keep_warm_0_a_cue_is_refused_in_one_line_and_nothing_is_kept(tiny_models):
    from bridge.errors import ControlError
    with Counting(settings(keep_warm=0)) as session:
        with pytest.raises(ControlError) as e:
            session.cue_model("tiny-b")
        assert "--keep-warm 0" in str(e.value) and "\n" not in str(e.value)
        run = Running(session, 3.0)
        switch(session, "tiny-b")
        switch(session, "tiny-a")
        assert session._warm == {}
        run.join()
    assert session.loaded == ["tiny-a", "tiny-b", "tiny-a"]


def test_a_warm_model_whose_bundle_changed_on_disk_is_loaded_again(tiny_models):
    """A bundle trained again (or replaced) under the same name: switching to it plays the new one."""
    with Counting(settings()) as session:
        run = Running(session, 4.0)
        switch(session, "tiny-b")
        warm_a = session._warm["tiny-a"].pipeline
        torch.manual_seed(7)
        retrained = Pix2Pix(Pix2PixConfig(size=32, ngf=4, input="bands"))
        save_bundle(retrained, tiny_models / "models" / "tiny-a")
        switch(session, "tiny-a")
        assert session.pipeline is not warm_a
        now = session.model.state_dict()
        assert all(torch.equal(now[k], v) for k, v in retrained.state_dict().items())
        run.join()
    assert session.loaded == ["tiny-a", "tiny-b", "tiny-a"]


def test_preloaded_models_are_built_at_start_and_switched_to_with_no_load(tiny_models):
    with Counting(settings(preload=["tiny-b"], keep_warm=0)) as session:
        assert session.loaded == ["tiny-a", "tiny-b"] and list(session._warm) == ["tiny-b"]
        run = Running(session, 3.0)
        switch(session, "tiny-b")
        switch(session, "tiny-a")  # preloading keeps as many warm as were preloaded, at least
        result = run.join()
    assert session.loaded == ["tiny-a", "tiny-b"] and result["errors"] == 0


def test_bad_keep_warm_and_preload_are_one_line_errors(tiny_models):
    for bad in (-1, 9, True, 1.5):
        with pytest.raises(ConfigError, match="--keep-warm"):
            settings(keep_warm=bad)
    with pytest.raises(ConfigError, match="--preload wants a bundle name"):
        settings(preload=["../tiny-b"])
    with pytest.raises(ModelLoadError) as e:
        LiveSession(settings(preload=["nope"]))
    assert "model 'nope' not found" in str(e.value) and "\n" not in str(e.value)


def test_cli_run_takes_keep_warm_and_preload():
    from bridge.cli import build_parser, run_settings
    args = build_parser().parse_args(["run", "--out", "null", "--audio-in", "silence", "--keep-warm", "3",
                                      "--preload", "cvae-faces", "--preload", "vae-mirror"])
    s = run_settings(args)
    assert s.keep_warm == 3 and s.preload == ["cvae-faces", "vae-mirror"]
    s = run_settings(build_parser().parse_args(["run", "--out", "null"]))
    assert s.keep_warm == 2 and s.preload == []


def test_a_switch_asked_while_a_model_loads_waits_its_turn_and_the_last_one_asked_wins(tiny_models, inbox):
    """A switch pressed before its cue was ready lands once it is (no second load, no refusal);
    switches pressed while one loads: only the last is made."""
    torch.manual_seed(2)
    save_bundle(Pix2Pix(Pix2PixConfig(size=32, ngf=4, input="bands")), tiny_models / "models" / "tiny-c")
    with Counting(settings(osc_port=0, osc_reply=f"127.0.0.1:{inbox.port}")) as session:
        run = Running(session, 5.0)
        session.cue_model("tiny-b")
        session.switch_model("tiny-b")  # the cue is still loading it
        assert wait_until(lambda: session.model_name == "tiny-b" and not session._lock.locked(), 10.0)
        assert ["tiny-b"] in inbox.wait_for("/vjbridge/model/cued", 1.0)
        session.switch_model("tiny-c")  # loads...
        session.switch_model("tiny-b")  # ...meanwhile: waits,
        session.switch_model("tiny-a")  # and is replaced by this one (warm: no load)
        assert wait_until(lambda: session.model_name == "tiny-a" and not session._lock.locked(), 10.0)
        result = run.join()
    assert session.loaded == ["tiny-a", "tiny-b", "tiny-c"]
    assert session.messages == [] and result["errors"] == 0


def test_a_cue_that_cannot_load_is_reported_and_changes_nothing(tiny_models, inbox):
    broken = tiny_models / "models" / "broken"
    torch.manual_seed(4)
    save_bundle(Pix2Pix(Pix2PixConfig(size=32, ngf=4, input="bands")), broken)
    (broken / "weights.safetensors").write_bytes(b"not a safetensors file")
    with Counting(settings(osc_port=0, osc_reply=f"127.0.0.1:{inbox.port}")) as session:
        run = Running(session, 3.0)
        session.cue_model("tiny-b")
        session.cue_model("broken")  # waits for tiny-b's cue, then fails
        assert wait_until(lambda: not session._lock.locked() and session.messages, 10.0)
        assert list(session._warm) == ["tiny-b"] and session.model_name == "tiny-a"
        assert wait_until(lambda: any("model broken not cued" in a[0] for a in inbox.wait_for("/vjbridge/error", 0.1)), 3.0)
        assert "\n" not in session.messages[-1] and "weights.safetensors" in session.messages[-1]
        result = run.join()
    assert result["errors"] == 0 and result["stalled"] == 0
