"""Live latent control on real tiny models: principal directions measured, stored in bundles and
moved by knobs that glide; the knob walk between two anchors; anchor jumps that wait for the next
beat of a MIDI clock or of the beat tracker; walks and their settings changed live; refusals that
leave the show running; families without a walk (vae_associator: offsets, pix2pix: nothing)."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bridge.analysis import AudioFeatures
from bridge.engine import FramePipeline
from bridge.errors import ConfigError, ControlError
from bridge.generators.base import families, load_model, save_bundle
from bridge.generators.cvae import CVAE, CVAEConfig
from bridge.generators.realnvp import RealNVP, RealNVPConfig, with_anchors
from bridge.morph.anchors import NAVIGATORS
from bridge.morph.control import DIRECTION_KNOBS, KNOB_STDS, LatentControl, walk_param_names
from bridge.morph.directions import add_directions, principal_directions, with_directions
from bridge.morph.walks import LingerParams
from bridge.params import MORPH_PARAMS, MORPH_TRIGGERS, PARAMS, BeatClock, ParamStore
from bridge.runtime import Runner
from bridge.train.images import load_image_folder, to_unit
from tests.test_realnvp import write_pictures

FPS = 30
DT = 1.0 / FPS
SILENCE = AudioFeatures.silent()
LOUD = dataclasses.replace(SILENCE, level=1.0)  # steady loud sound: walks move, no hits


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_flow(size: int = 8) -> RealNVP:
    torch.manual_seed(0)
    model = RealNVP(RealNVPConfig(size=size, hidden=4))
    model.initialize(torch.randint(0, 256, (16, 3, size, size), dtype=torch.uint8))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("pictures")
    write_pictures(root / "train", 24, 8, seed=1)
    write_pictures(root / "anchors", 4, 8, seed=2)
    return root


@pytest.fixture(scope="module")
def flow(folder):
    """A tiny flow with 4 anchors from PNGs and 4 principal directions of 24 training PNGs."""
    return with_directions(with_anchors(tiny_flow(), folder / "anchors"), folder / "train", k=4).eval()


def store(**values) -> ParamStore:
    params = ParamStore()
    for name, value in values.items():
        params.set(name, value)
    return params


def run(control: LatentControl, frames: int, features=SILENCE) -> list[torch.Tensor]:
    return [control.step(features, DT) for _ in range(frames)]


# --- principal directions ---------------------------------------------------------------------------

def test_principal_directions_are_the_unit_axes_of_largest_spread():
    gen = torch.Generator().manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen))
    spread = torch.tensor([3.0, 2.0, 1.0, 0.5, 0.2, 0.1])
    latents = (torch.randn(4000, 6, generator=gen) * spread) @ rotation.T + 5.0
    directions, stds = principal_directions(latents, k=3)
    assert directions.shape == (3, 6) and stds.shape == (3,)
    assert torch.allclose(directions @ directions.T, torch.eye(3), atol=1e-5)
    assert torch.allclose(stds, spread[:3], rtol=0.05)
    for k in range(3):  # the same axes as the ones the data was made along (up to sign)
        assert abs(float(directions[k] @ rotation[:, k])) > 0.99
        assert directions[k][directions[k].abs().argmax()] > 0  # the sign rule
    assert principal_directions(latents[:3], k=8)[0].shape == (2, 6)  # K <= N - 1
    with pytest.raises(ConfigError, match="at least 2"):
        principal_directions(latents[:1])


def test_with_directions_measures_training_latents_and_keeps_the_weights(flow, folder):
    plain = with_anchors(tiny_flow(), folder / "anchors")
    assert plain.principal_directions() is None and "directions" not in plain.state_dict()
    directions, stds = flow.principal_directions()
    assert directions.shape == (4, 3 * 8 * 8) and flow.config.n_directions == 4
    latents = flow.encode(to_unit(load_image_folder(folder / "train", 8))).detach()
    spread = ((latents - latents.mean(0)) @ directions.T).std(0, unbiased=False)
    assert torch.allclose(spread, stds, rtol=1e-3)
    for key, value in plain.state_dict().items():
        assert torch.equal(value, flow.state_dict()[key]), key


def test_bundles_with_directions_round_trip(flow, tmp_path):
    save_bundle(flow, tmp_path / "flow")
    loaded = load_model(tmp_path / "flow")
    assert loaded.config.n_directions == 4
    for a, b in zip(loaded.principal_directions(), flow.principal_directions()):
        assert torch.equal(a, b)
    assert set(load_file(str(tmp_path / "flow" / "weights.safetensors"))) >= {"directions", "direction_stds"}


def test_old_bundle_without_directions_loads_and_its_knobs_say_they_do_nothing(tmp_path, caplog):
    torch.manual_seed(0)
    save_bundle(CVAE(CVAEConfig(size=16, latent_dim=4, widths=(4, 8))).eval(), tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["config"]["n_directions"]  # as written before directions existed
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    assert "directions" not in load_file(str(tmp_path / "old" / "weights.safetensors"))
    model = load_model(tmp_path / "old")
    assert model.principal_directions() is None
    quiet, knob = LatentControl(model, store()), LatentControl(model, store(direction_1=1.0))
    with caplog.at_level(logging.WARNING, logger="bridge.morph.control"):
        for _ in range(5):
            assert torch.equal(quiet.step(SILENCE, DT), knob.step(SILENCE, DT))
    said = [r.message for r in caplog.records if "no principal directions" in r.message]
    assert len(said) == 1 and "vjbridge directions" in said[0]


def test_add_directions_rewrites_a_bundle_keeping_its_weights(tmp_path, folder):
    torch.manual_seed(0)
    model = CVAE(CVAEConfig(size=16, latent_dim=4, widths=(4, 8))).eval()
    save_bundle(model, tmp_path / "cvae", weights_dtype=torch.float16, card="# cvae\n\nTrained here.\n")
    before = load_file(str(tmp_path / "cvae" / "weights.safetensors"))
    written = add_directions(tmp_path / "cvae", folder / "train", k=3)
    again = add_directions(written, folder / "train", k=3)  # a second run replaces, not appends
    after = load_file(str(again / "weights.safetensors"))
    assert all(torch.equal(before[k], after[k]) and after[k].dtype == before[k].dtype for k in before)
    assert before["to_mu.weight"].dtype == torch.float16
    assert after["directions"].shape == (3, 4)
    config = json.loads((again / "config.json").read_text())
    assert config["config"]["n_directions"] == 3 and config["training"]["directions"]["k"] == 3
    assert sum(c.startswith("vjbridge directions") for c in config["training"]["commands"]) == 1
    card = (again / "card.md").read_text()
    assert card.startswith("# cvae") and card.count("## Principal directions") == 1
    assert load_model(again).principal_directions()[0].shape == (3, 4)
    with pytest.raises(ConfigError, match="no latent"):
        from bridge.generators.pix2pix import Pix2Pix, Pix2PixConfig
        save_bundle(Pix2Pix(Pix2PixConfig(size=32, ngf=4, input="bands")), tmp_path / "p2p")
        add_directions(tmp_path / "p2p", folder / "train")


# --- direction knobs --------------------------------------------------------------------------------

def test_a_direction_knob_moves_the_picture_and_never_jumps(flow):
    params = store(walk="magellan")  # magellan in silence stands still: only the knob moves it
    control = LatentControl(flow, params)
    rest = run(control, 3)[-1]
    params.set("direction_1", 1.0)  # 0 -> 1 in one message
    latents = [rest] + run(control, 4 * FPS)
    steps = [float((b - a).norm()) for a, b in zip(latents, latents[1:])]
    directions, stds = flow.principal_directions()
    full = KNOB_STDS * float(stds[0])
    glide = 1.0 - 0.5 ** (DT / params.declared("direction_1").smoothing_s)
    assert steps[0] == pytest.approx(glide * full, rel=1e-3)  # the largest step there is
    assert max(steps) <= glide * full * 1.001
    assert torch.allclose(latents[-1] - rest, full * directions[0][None], atol=1e-3 * full)
    with torch.no_grad():
        pictures = flow.decode(torch.cat(latents))
    per_frame = (pictures[1:] - pictures[:-1]).abs().mean((1, 2, 3))
    total = (pictures[-1] - pictures[0]).abs().mean()
    assert total > 0.05 and per_frame.max() < 0.25 * total


def test_the_live_pipeline_with_resting_knobs_is_the_plain_walk(flow):
    """With a ParamStore at its defaults the picture is what render (no store) makes."""
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(44_100) * np.repeat(rng.uniform(0, 0.5, 30), 1470)).astype(np.float32)
    frames = {}
    for name, params in (("plain", None), ("live", ParamStore())):
        pipeline = FramePipeline(flow, runner=Runner(flow, runtime="reference"), seed=3, params=params)
        pipeline.warmup(runs=1)
        out = []
        for i in range(30):
            pipeline.feed_audio(audio[i * 1470:(i + 1) * 1470])
            out.append(pipeline.make_frame(pipeline.snapshot((i + 1) / 30), DT))
        frames[name] = out
    assert all(np.array_equal(a, b) for a, b in zip(frames["plain"], frames["live"]))
    assert any(not np.array_equal(a, b) for a, b in zip(frames["live"], frames["live"][1:]))


# --- the knob walk ------------------------------------------------------------------------------------

def test_knob_mode_slerps_between_two_anchors(flow, folder):
    params = store(walk="knob", anchor_a=1, anchor_b=2, jump_beats=0.0)
    control = LatentControl(flow, params)
    pictures = load_image_folder(folder / "anchors", 8).int()

    def shown(latent):
        with torch.no_grad():
            return ((flow.decode(latent) + 1.0) * 127.5).round().int()[0]

    at_a = run(control, 2)[-1]
    assert torch.allclose(at_a, flow.anchors[1:2], atol=1e-5)
    assert (shown(at_a) - pictures[1]).abs().max() <= 1  # morph 0: anchor a's picture
    params.set("morph", 1.0)
    at_b = run(control, 3 * FPS)[-1]
    assert torch.allclose(at_b, flow.anchors[2:3], atol=1e-4)
    assert (shown(at_b) - pictures[2]).abs().max() <= 1  # morph 1: anchor b's picture
    params.set("morph", 0.5)
    half = run(control, 3 * FPS)[-1]
    a, b = flow.anchors[1], flow.anchors[2]
    omega = math.acos(float(a @ b / (a.norm() * b.norm())))
    expected = (math.sin(0.5 * omega) * (a + b)) / math.sin(omega)
    assert torch.allclose(half[0], expected, atol=1e-3 * float(expected.norm()))
    # Turning anchor_b with jump_beats > 0 eases to the new end instead of cutting.
    params.set("morph", 1.0)
    settled = run(control, 3 * FPS)[-1]
    params.set("jump_beats", 1.0)  # 0.5 s at the 120 bpm used while no tempo is known
    params.set("anchor_b", 3)
    latents = [settled] + run(control, FPS)
    steps = [float((y - x).norm()) for x, y in zip(latents, latents[1:])]
    distance = float((flow.anchors[3] - flow.anchors[2]).norm())
    assert torch.allclose(latents[-1], flow.anchors[3:4], atol=1e-4)
    assert max(steps) < 0.2 * distance and steps[0] < 0.02 * distance


# --- beat-quantised jumps -----------------------------------------------------------------------------

def test_anchor_jump_lands_on_the_next_beat_of_the_midi_clock(flow):
    now = [0.0]
    params = store(walk="magellan", quantise="beat", jump_beats=0.0)
    params.clock = BeatClock(now=lambda: now[0])
    control = LatentControl(flow, params)
    control.step(SILENCE, DT)
    target = (int(control.navigator.position) + 2) % 4  # not where magellan starts
    tick_every = 0.5 / BeatClock.PPQ  # 120 bpm
    ticks = 0
    fired_at = None
    for frame in range(60):
        now[0] = frame * DT
        while ticks * tick_every <= now[0]:
            params.clock.tick(ticks * tick_every)
            ticks += 1
        if frame == 20:
            params.trigger("anchor", target)
            bpm, beats = params.clock.position()
            boundary = math.floor(beats) + 1
            assert beats % 1 > 0.1  # mid-beat: the jump must wait
        latent = control.step(SILENCE, DT)
        if frame >= 20:
            _, beats = params.clock.position()
            on_anchor = torch.allclose(latent, flow.anchors[target:target + 1], atol=1e-5)
            if fired_at is None and on_anchor:
                fired_at = frame
            assert on_anchor == (beats >= boundary), (frame, beats, boundary)
    assert fired_at is not None and control.status()["anchor"] == target
    # bar: the next multiple of four beats of the clock
    params.set("quantise", "bar")
    params.trigger("next_anchor")
    control.step(SILENCE, DT)
    status = control.status()
    assert status["pending"] == (target + 1) % 4
    assert status["pending_beat"] % 4 == 0 and 0 < status["pending_beat"] - params.clock.position()[1] <= 4


def test_anchor_jump_lands_on_the_next_beat_of_the_beat_tracker(flow):
    params = store(walk="magellan", quantise="beat", jump_beats=0.0)
    control = LatentControl(flow, params)
    control.step(SILENCE, DT)
    target = (int(control.navigator.position) + 2) % 4  # not where magellan starts
    phases = [(i / 15.0 + 0.1) % 1.0 for i in range(60)]  # 120 bpm at 30 fps: 15 frames a beat
    fired = []
    for i, phase in enumerate(phases):
        if i == 20:
            params.trigger("anchor", target)  # at phase 0.43 of a beat
        features = dataclasses.replace(LOUD, level=0.0, tempo_bpm=120.0, beat_phase=phase)
        latent = control.step(features, DT)
        fired.append(torch.allclose(latent, flow.anchors[target:target + 1], atol=1e-5))
    first = fired.index(True)
    assert phases[first] < phases[first - 1]  # the first frame of the next beat, not before
    assert first > 20 and all(fired[first:])
    # no tempo at all: at once
    params.trigger("anchor", (target + 1) % 4)
    latent = control.step(SILENCE, DT)
    assert torch.allclose(latent, flow.anchors[(target + 1) % 4][None], atol=1e-5)


def test_next_and_previous_anchor_cycle(flow):
    params = store(walk="magellan", quantise="off", jump_beats=0.0)
    control = LatentControl(flow, params)
    params.trigger("anchor", 0)
    control.step(SILENCE, DT)
    seen = []
    for _ in range(5):
        params.trigger("next_anchor")
        latent = control.step(SILENCE, DT)
        seen.append(control.status()["anchor"])
        assert torch.allclose(latent, flow.anchors[seen[-1]:seen[-1] + 1], atol=1e-5)
    assert seen == [1, 2, 3, 0, 1]
    params.trigger("previous_anchor")
    params.trigger("previous_anchor")  # two pads before a frame: two steps
    control.step(SILENCE, DT)
    assert control.status()["anchor"] == 3


def test_a_jump_eases_over_jump_beats(flow):
    params = store(walk="magellan", quantise="off", jump_beats=2.0)  # 1 s at 120 bpm (no tempo)
    control = LatentControl(flow, params)
    start = run(control, 2)[-1]
    params.trigger("anchor", 2)
    latents = run(control, 40)
    assert not torch.allclose(latents[14], flow.anchors[2:3], atol=1e-3)  # half way at 0.5 s
    assert torch.allclose(latents[-1], flow.anchors[2:3], atol=1e-5)
    steps = [float((b - a).norm()) for a, b in zip([start] + latents, latents)]
    assert max(steps) < 0.2 * float((flow.anchors[2] - start[0]).norm())


# --- walks live ---------------------------------------------------------------------------------------

def test_walk_and_its_settings_change_live(flow, caplog):
    refusals = []
    params = store(walk="magellan", jump_beats=0.0)
    control = LatentControl(flow, params, on_refusal=refusals.append)
    run(control, 1, LOUD)
    walk = control.navigator
    before = walk.position
    run(control, FPS, LOUD)  # 1 s at full level: a quarter of the way to the next anchor
    assert (walk.position - before) % 4 == pytest.approx(0.25, abs=1e-6)
    params.set("magellan_seconds_per_anchor", 0.5)
    position = walk.position
    run(control, FPS, LOUD)
    assert control.navigator is walk  # the same walk, not reset
    assert (walk.position - position) % 4 == pytest.approx(2.0, abs=1e-6)
    params.set("walk", "explore")
    run(control, 1, LOUD)
    assert control.navigator.mode == "explore" and control.status()["walk"] == "explore"
    params.set("explore_amount", 0.1)
    run(control, 1, LOUD)
    assert control.navigator.amount == 0.1
    with caplog.at_level(logging.WARNING, logger="bridge.morph.control"):
        params.set("walk", "linger")  # a cvae walk: this flow has none
        latent = control.step(LOUD, DT)
        params.trigger("anchor", 9)  # 4 anchors here
        control.step(LOUD, DT)
    assert latent.shape == (1, flow.latent_dim)
    assert params.get("walk") == "explore" and control.navigator.mode == "explore"
    assert "no walk 'linger'" in refusals[0] and "has 4 anchors" in refusals[1]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    # The same answers before a value is accepted (for a store that asks first).
    with pytest.raises(ControlError, match="no walk 'linger'"):
        control.check("walk", "linger")
    with pytest.raises(ControlError, match="4 anchors"):
        control.check("anchor_b", 4)
    with pytest.raises(ControlError, match="4 anchors"):
        control.check_trigger("anchor", 4)
    control.check("walk", "weighted")
    control.check_trigger("anchor", 3)


def test_reset_returns_the_walk_to_its_start(flow):
    params = store(walk="magellan", jump_beats=0.0)
    control = LatentControl(flow, params)
    start = run(control, 1)[0]
    run(control, FPS, LOUD)
    params.trigger("reset")
    assert torch.allclose(control.step(SILENCE, DT), start)


def test_cvae_linger_walk_jumps_to_its_stand_in_anchors():
    torch.manual_seed(0)
    model = CVAE(CVAEConfig(size=16, latent_dim=4, widths=(4, 8))).eval()
    params = store(quantise="off", jump_beats=0.0, linger_sigma=0.0)
    control = LatentControl(model, params)
    assert control.navigator.mode == "linger" and control.anchor_count == 8
    params.trigger("anchor", 5)
    assert torch.allclose(control.step(SILENCE, DT), model.anchor_latents(0)[5:6], atol=1e-5)
    params.set("linger_move_s", 0.5)
    control.step(SILENCE, DT)
    assert control.navigator.params.move_s == 0.5


def test_the_declaration_covers_every_walk_with_playable_ranges():
    walk = next(p for p in MORPH_PARAMS if p.name == "walk")
    modes = {m for cls in families().values() for m in cls.navigator_modes}
    assert modes | {"auto", "knob"} == set(walk.choices)
    declared = {p.name: p for p in PARAMS}
    assert all(f"direction_{i}" in declared for i in range(1, DIRECTION_KNOBS + 1))
    for mode in modes:
        for name, field in walk_param_names(mode).items():
            param = declared[name]
            if mode in NAVIGATORS:
                own = NAVIGATORS[mode].PARAMS[field]
                assert param.default == own.default and own.low <= param.low <= param.high <= own.high
                assert (param.kind == "int") == own.integer
            else:
                assert param.default == getattr(LingerParams(), field)
                if param.kind == "float":  # both ends are settings the walk takes
                    LingerParams(**{field: param.low})
                    LingerParams(**{field: param.high})
    names = [p.name for p in PARAMS] + [t.name for t in MORPH_TRIGGERS]
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", n) for n in names) and len(set(names)) == len(names)


# --- families without a walk ----------------------------------------------------------------------------

def test_vae_associator_knobs_move_its_image_latent():
    """The bundled vae-mirror (camera mode): its directions came from its training frames."""
    model = load_model("vae-mirror")
    assert model.principal_directions()[0].shape == (8, model.config.image_latent)
    model.set_mode("camera")
    refusals = []
    params = store()
    pipeline = FramePipeline(model, runner=Runner(model, runtime="reference"), params=params)
    pipeline.control.on_refusal = refusals.append
    pipeline.warmup(runs=1)
    image = model.idle_images()[3].permute(1, 2, 0).numpy()  # one of its training frames
    snapshot = pipeline.snapshot(0.1, image, 0.1)
    rest = pipeline.make_frame(snapshot, DT)
    cond = model.condition(snapshot)
    with torch.no_grad():  # no offset is today's picture
        assert torch.equal(model.generate(cond), model.generate(cond, torch.zeros(1, 128)))
    params.set("direction_1", -1.0)
    frames = [pipeline.make_frame(snapshot, DT) for _ in range(2 * FPS)]
    change = [np.abs(b.astype(int) - a.astype(int)).mean() for a, b in zip([rest] + frames, frames)]
    total = np.abs(frames[-1].astype(int) - rest.astype(int)).mean()
    assert total > 10.0 and max(change) < 0.25 * total
    params.set("walk", "magellan")
    params.trigger("anchor", 1)
    pipeline.make_frame(snapshot, DT)
    assert params.get("walk") == "auto" and len(refusals) == 2
    assert any("no anchors" in r for r in refusals) and any("no walk 'magellan'" in r for r in refusals)


def test_pix2pix_takes_latent_params_and_ignores_them(caplog):
    from tests.test_engine import tiny_model

    model = tiny_model()
    params = ParamStore()
    pipeline = FramePipeline(model, runner=Runner(model, runtime="reference"), params=params)
    plain = FramePipeline(model, runner=Runner(model, runtime="reference"))
    snapshot = pipeline.snapshot(None)
    with caplog.at_level(logging.WARNING, logger="bridge.morph.control"):
        params.set("direction_2", 0.7)
        params.set("walk", "magellan")
        for _ in range(3):
            params.trigger("anchor", 3)
            assert np.array_equal(pipeline.make_frame(snapshot, DT), plain.make_frame(snapshot, DT))
    assert params.take_triggers() == []  # drained every frame: a long set does not pile them up
    assert params.get("walk") == "magellan"  # accepted, and said once to do nothing
    said = [r.message for r in caplog.records]
    assert len(said) == 3 and all("has no latent" in m for m in said)


def test_the_trainers_store_directions(folder, tmp_path):
    from bridge.train.cvae import train_cvae

    out = train_cvae(folder / "train", tmp_path / "cvae", size=16, latent_dim=4, widths=(4, 8),
                     epochs=1, batch_size=8, progress=False, threads=1, directions=3)
    model = load_model(out)
    directions, stds = model.principal_directions()
    assert directions.shape == (3, 4) and (stds > 0).all()
    training = json.loads((out / "config.json").read_text())["training"]
    assert training["directions"]["k"] == 3 and "principal directions" in (out / "card.md").read_text()
    assert "--directions 3" in training["commands"][-1]
