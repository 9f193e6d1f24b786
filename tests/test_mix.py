"""Several models at once (issue 6, seed 001): blended by live weights, analysed once, driven by a
real engine and a real live session; the batched call equals the sequential one."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from bridge import clock
from bridge.engine import Engine, FramePipeline
from bridge.errors import ConfigError
from bridge.generators.pix2pix import Pix2Pix, Pix2PixConfig
from bridge.mix import BatchedPix2Pix, MixPipeline, blend
from bridge.params import ParamStore
from bridge.runtime import Runner, TracedNetwork
from bridge.sinks import open_sink
from tests.test_control_live import wait_until
from tests.test_reliability import COMPILE_WAIT_S, FPS, UNTIL_STOPPED_S, Running, live


def pix2pix(seed: int, size: int = 32, ngf: int = 4):
    torch.manual_seed(seed)
    return Pix2Pix(Pix2PixConfig(size=size, ngf=ngf, input="bands")).eval()


def pipelines(n: int, params=None):
    out = []
    for i in range(n):
        model = pix2pix(i)
        out.append(FramePipeline(model, runner=Runner(model, runtime="reference"),
                                 params=params if i == 0 else None))
    return out


def test_blend_modes():
    a, b = torch.full((1, 3, 4, 4), -1.0), torch.full((1, 3, 4, 4), 1.0)  # black, white
    assert torch.equal(blend([a, b], [1, 0]), a) and torch.equal(blend([a, b], [0, 1]), b)
    assert torch.allclose(blend([a, b], [0.5, 0.5]), torch.zeros_like(a))  # crossfade: mid grey
    assert torch.allclose(blend([a, b], [1, 3]), torch.full_like(a, 0.5))
    assert torch.equal(blend([a, b], [0, 0]), a)  # every fader down: black
    grey = torch.zeros_like(a)  # light 0.5
    assert torch.allclose(blend([grey, grey], [1, 1], "add"), b)  # 0.5 + 0.5 light = white
    assert torch.allclose(blend([grey, grey], [1, 1], "screen"), torch.full_like(a, 0.5))  # 1-.25 = .75 light
    assert torch.allclose(blend([grey, b], [1, 0.5], "lighten"), torch.zeros_like(a))  # max(.5, .5)
    for mode in ("mix", "add", "screen", "lighten"):
        out = blend([torch.rand(1, 3, 8, 8) * 4 - 2 for _ in range(3)], [1.0, 0.7, 0.2], mode)
        assert out.min() >= -1.0 and out.max() <= 1.0
    with pytest.raises(ConfigError, match="mix mode"):
        blend([a], [1], "multiply")


def test_batched_models_give_the_sequential_pictures():
    models = [pix2pix(i, size=64, ngf=8) for i in range(4)]
    cond = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        sequential = torch.cat([m.generate(cond) for m in models])
    batched = BatchedPix2Pix(models)(cond)
    assert batched.shape == (4, 3, 64, 64)
    assert (batched - sequential).abs().max() < 1e-5
    with pytest.raises(ConfigError, match="same architecture"):
        BatchedPix2Pix([pix2pix(0), pix2pix(1, ngf=8)])


def test_the_weights_pick_crossfade_and_follow_the_parameters():
    store = ParamStore()
    parts = pipelines(2, store)
    mix = MixPipeline(parts, params=store)
    assert parts[1].analyzer is parts[0].analyzer  # the audio is analysed once, for both
    mix.feed_audio(np.random.default_rng(0).standard_normal(44100).astype(np.float32) * 0.3)
    snapshot = mix.snapshot(1.0)
    alone = [p.make_frame(snapshot) for p in parts]
    assert not np.array_equal(alone[0], alone[1])
    store.set("mix_2", 0.0)
    assert np.array_equal(mix.make_frame(snapshot), alone[0])
    store.set("mix_1", 0.0)
    store.set("mix_2", 1.0)
    assert np.array_equal(mix.make_frame(snapshot), alone[1])
    store.set("mix_1", 1.0)
    both = mix.make_frame(snapshot).astype(int)
    middle = (alone[0].astype(int) + alone[1].astype(int)) / 2
    assert np.abs(both - middle).max() <= 1  # a crossfade, to the rounding
    store.set("mix_mode", "lighten")
    lighter = mix.make_frame(snapshot).astype(int)
    assert (lighter[..., :3] >= np.maximum(alone[0], alone[1])[..., :3].astype(int) - 1).all()


def test_four_models_mixed_by_a_real_engine_keep_the_rate():
    from bridge.sources.audio import open_audio_source
    mix = MixPipeline(pipelines(4), weights=[1, 1, 1, 1])
    mix.warmup(1)
    sink = open_sink("null", 32, 32, 30)
    with open_audio_source("/usr/share/sonic-pi/samples/loop_amen.flac", sample_rate=mix.sample_rate) as audio:
        stats = Engine(mix, [sink], fps=30, audio_source=audio).run(duration=2.0)
    assert stats["errors"] == 0 and stats["generated"] > 40
    assert stats["fps"] == pytest.approx(30, rel=0.1)


def test_a_live_session_plays_two_models_mixed_at_1080p_and_switches_the_lead(tiny_models, inbox):
    with live(inbox, model="tiny-a", mix_models=["tiny-b"], out_size="1920x1080", upscale="bicubic") as session:
        assert isinstance(session.pipeline, MixPipeline)
        assert (session.width, session.height) == (1920, 1080)
        frame = session.pipeline.make_frame(session.pipeline.snapshot(None))
        assert frame.shape == (1080, 1920, 4)
        run = Running(session, 4.0)
        from pythonosc.udp_client import SimpleUDPClient
        SimpleUDPClient("127.0.0.1", session.osc.port).send_message("/vjbridge/param/mix_2", 0.25)
        assert wait_until(lambda: session.params.get("mix_2") == 0.25)
        second = session.pipeline.pipelines[1]
        session.switch_model("tiny-b")  # the lead changes; the second model plays on
        assert wait_until(lambda: session.model_name == "tiny-b" and not session._lock.locked(), 10.0)
        assert session.pipeline.pipelines[1] is second
        result = run.join()
    assert result["errors"] == 0 and result["fps"] >= FPS * 0.9, result


def test_cli_takes_several_models_and_an_output_size():
    from bridge.cli import build_parser, run_settings
    args = build_parser().parse_args(["run", "--model", "a", "--model", "b", "--model", "c", "--mix-mode", "screen",
                                      "--out-size", "3840x2160", "--upscale", "lanczos", "--fit", "contain",
                                      "--out", "null"])
    s = run_settings(args)
    assert (s.model, s.mix_models, s.mix_mode) == ("a", ["b", "c"], "screen")
    assert (s.out_size, s.upscale, s.fit) == ("3840x2160", "lanczos", "contain")
    with pytest.raises(ConfigError, match="at most 4"):
        run_settings(build_parser().parse_args(["run"] + ["--model", "x"] * 5 + ["--out", "null"]))
    with pytest.raises(ConfigError, match="output size"):
        run_settings(build_parser().parse_args(["run", "--out-size", "huge", "--out", "null"]))


def test_bench_times_four_models_at_once_and_the_upscaling():
    from bridge.bench import format_table, measure_mix, measure_upscale
    rows = measure_mix("cpu", size=32, variant="lite", iterations=3, warmup=1)
    assert [r["runtime"] for r in rows] == ["reference, in sequence", "optimized, in sequence", "batched (vmap), fp32"]
    assert all(r["ms_p50"] > 0 and r["model"] == "4 x pix2pix-lite-ngf32" for r in rows)
    assert "speedup_vs_reference" in rows[1] and "speedup_vs_reference" in rows[2]
    up = measure_upscale("cpu", source=32, targets=((64, 48),), iterations=3)
    assert {r["model"] for r in up} == {"upscale bilinear", "upscale bicubic", "upscale lanczos",
                                        "torch float bicubic (plain)"}
    assert all(r["target"] == "64x48" and r["ms_p50"] > 0 for r in up)
    text = format_table({"results": [], "mix": rows, "upscale": up})
    assert "a tick p50" in text and "64x48" in text


def test_batching_is_asked_for_and_only_joins_models_that_see_the_same_picture():
    parts = pipelines(3)
    assert MixPipeline(parts)._batch is None  # default: each model through its own runner
    batched = MixPipeline(pipelines(3), batched=True)
    assert batched._batch is not None
    snapshot = batched.snapshot(None)
    plain = MixPipeline(pipelines(3))
    assert np.abs(batched.make_frame(snapshot).astype(int) - plain.make_frame(snapshot).astype(int)).max() <= 1
    torch.manual_seed(9)
    other_input = Pix2Pix(Pix2PixConfig(size=32, ngf=4, input="waveform")).eval()  # same weight shapes
    mixed_inputs = pipelines(2) + [FramePipeline(other_input, runner=Runner(other_input, runtime="reference"))]
    assert MixPipeline(mixed_inputs, batched=True)._batch is None


def test_a_mix_is_built_from_plain_models_and_runners():
    from bridge.upscale import Upscaler
    a, b = pix2pix(0), pix2pix(1)
    mix = MixPipeline.from_models([(a, Runner(a, runtime="reference")), b], weights=[0.0, 1.0],
                                  upscaler=Upscaler(64, 36, fit="contain"))
    assert [p.model for p in mix.pipelines] == [a, b]
    frame = mix.make_frame(mix.snapshot(None))
    assert frame.shape == (36, 64, 4)
    alone = FramePipeline(b, upscaler=Upscaler(64, 36, fit="contain")).make_frame(mix.snapshot(None))
    assert np.array_equal(frame, alone)  # weight 1/0: model b alone, through the same upscaler
    with pytest.raises(ConfigError, match="2 to 4"):
        MixPipeline.from_models([a])


def test_a_mix_plays_at_once_compiles_each_model_after_the_lead_at_every_core_and_steps_down_as_one(tiny_models):
    """Every model of a mix plays traced from the first frame (before, the others were compiled,
    at each thread count, before it: 18 s of no picture for four models on 2 cores); then each
    level compiles and takes over, the lead's before the other's, all at every core (no thread
    trial: it timed the lead alone against the frame); degradation moves them all."""
    from bridge.generators.base import save_bundle
    from bridge.live import LiveSession
    from bridge.runtime import DEFAULT_THREADS, AutoRunner
    from tests.test_switch_compile import compiled, settings

    for seed, name in ((5, "wide-a"), (6, "wide-b")):  # 64 px: a half-size level of their own
        torch.manual_seed(seed)
        save_bundle(Pix2Pix(Pix2PixConfig(size=64, ngf=4, input="bands")), tiny_models / "models" / name)

    with LiveSession(settings(model="wide-a", mix_models=["wide-b"], threads="auto", degrade="1,0.5")) as session:
        mix = session.pipeline
        lead, other = mix.pipelines
        for part in (lead, other):  # both traced, at both levels, a core left to the compiles
            assert [getattr(r.model, "size", 64) for r in part.level_runners] == [64, 32]
            assert all(not r.compile and isinstance(r._fn, TracedNetwork) for r in part.level_runners)
            assert [r.threads for r in part.level_runners] == [max(1, DEFAULT_THREADS - 1)] * 2
        assert [lv.name for lv in mix.levels] == ["full", "1/2"]
        gate, held, use_runner = threading.Event(), [], other.use_runner

        def held_back(runner, **kw):  # the other model's compile waits until `gate` is set
            held.append(kw.get("levels"))
            assert gate.wait(COMPILE_WAIT_S)
            use_runner(runner, **kw)
        other.use_runner = held_back
        run = Running(session, UNTIL_STOPPED_S)
        assert wait_until(lambda: held == [[0]], COMPILE_WAIT_S)  # the lead's level playing (full) compiled first
        assert compiled(lead.level_runners[0]) and not lead.level_runners[1].compile
        made = session.engine.stats.generated
        assert wait_until(lambda: session.engine.stats.generated >= made + 15, 5.0)  # the other plays traced
        assert not other.runner.compile and "compiling)" in session.status_line(session.engine.stats)
        gate.set()
        assert wait_until(lambda: not session._lock.locked(), COMPILE_WAIT_S)
        for part in (lead, other):
            assert all(compiled(r) for r in part.level_runners)
            assert [r.threads for r in part.level_runners] == [DEFAULT_THREADS] * 2
        assert [getattr(r.model, "size", 64) for r in other.level_runners] == [64, 32]
        assert not isinstance(lead.runner, AutoRunner) and session.settled  # no trial to wait for
        made = session.engine.stats.generated
        assert wait_until(lambda: session.engine.stats.generated >= made + 15, 5.0)  # on the compiled ones
        session.engine.stop()
        result = run.join()
        assert result["errors"] == 0, result
        # the mix is too slow for its frame: every model steps down, then back up together
        engine, period = session.engine, session.engine.period
        t0 = clock.now() + 10.0  # after the run's own times
        for i in range(40):
            engine._degrade_step(2.0 * period, t0 + i * period)
        assert engine.degrade.name == "1/2" and [lead.level, other.level] == [1, 1]
        frame = mix.make_frame(mix.snapshot(None))
        assert frame.shape == (64, 64, 4)
        for i in range(200):
            engine._degrade_step(0.05 * period, t0 + 10.0 + i * period)
        assert engine.degrade.name == "full" and [lead.level, other.level] == [0, 0]


def recorded_compiles(mix) -> list:
    """[(model index, levels)] of each `use_runner` the mix's pipelines are given from now on."""
    calls = []
    for k, part in enumerate(mix.pipelines):
        def recorded(runner, k=k, use_runner=part.use_runner, **kw):
            calls.append((k, kw["levels"]))
            use_runner(runner, **kw)
        part.use_runner = recorded
    return calls


def test_a_mix_compiles_the_level_it_plays_first_for_every_model_then_the_levels_above(tiny_models):
    """Played traced, a mix has often stepped down before its compile starts: the level playing
    is compiled first, for the lead then the others, then the levels above it, nearest first."""
    from bridge.generators.base import save_bundle
    from bridge.live import LiveSession
    from tests.test_switch_compile import compiled, settings

    torch.manual_seed(5)  # 128 px: levels 128, 96, 64 (1/2), 32 (1/4)
    save_bundle(Pix2Pix(Pix2PixConfig(size=128, ngf=4, input="bands")), tiny_models / "models" / "wide")
    with LiveSession(settings(model="wide", mix_models=["wide"], threads=1, degrade="auto")) as session:
        mix = session.pipeline
        assert [lv.size for lv in mix.levels] == [128, 96, 64, 32]
        mix.level = 2  # stepped down to 1/2 while traced
        calls = recorded_compiles(mix)
        before = [sum(part.runner_versions) for part in mix.pipelines]
        session._compile_by_level([("wide", mix.pipelines[0], session._runner("wide", mix.pipelines[0].model))]
                                  + session._others_to_compile())
        assert calls == [(0, [2]), (1, [2]), (0, [1]), (1, [1]), (0, [0]), (1, [0]), (0, [3]), (1, [3])]
        for k, part in enumerate(mix.pipelines):
            assert all(compiled(r) for r in part.level_runners) and part.runner is part.level_runners[0]
            assert [getattr(r.model, "size", 128) for r in part.level_runners] == [128, 96, 64, 32]
            assert sum(part.runner_versions) == before[k] + 4  # each level swapped in as it was ready
        assert sum(sum(part.runner_versions) for part in mix.pipelines) == sum(before) + 8


def test_a_model_with_fewer_levels_is_compiled_where_the_mix_s_level_has_it_play(tiny_models):
    """A latent family has the full level only: at the mix's 1/2 it plays that one, so it is
    compiled with the level playing, not after the levels above it. The mix's runner versions
    count it at every level it plays."""
    from bridge.generators.base import save_bundle
    from bridge.generators.cvae import CVAE, CVAEConfig
    from bridge.live import LiveSession
    from tests.test_switch_compile import compiled, settings

    torch.manual_seed(5)
    save_bundle(Pix2Pix(Pix2PixConfig(size=128, ngf=4, input="bands")), tiny_models / "models" / "wide")
    save_bundle(CVAE(CVAEConfig(size=16, latent_dim=4, widths=(4, 8))).eval(), tiny_models / "models" / "latent")
    with LiveSession(settings(model="wide", mix_models=["latent"], threads=1, degrade="auto")) as session:
        mix = session.pipeline
        assert [len(part.levels) for part in mix.pipelines] == [4, 1]
        mix.level = 2
        calls = recorded_compiles(mix)
        before = list(mix.runner_versions)
        session._compile_by_level([("wide", mix.pipelines[0], session._runner("wide", mix.pipelines[0].model))]
                                  + session._others_to_compile())
        assert calls == [(0, [2]), (1, [0]), (0, [1]), (0, [0]), (0, [3])]
        assert all(compiled(r) for part in mix.pipelines for r in part.level_runners)
        assert [v - b for v, b in zip(mix.runner_versions, before)] == [2, 2, 2, 2]
