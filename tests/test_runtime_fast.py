"""The int8 runtime (ONNX Runtime, statically quantized pix2pix) on tiny models: the exact
transposed-conv rewrite it relies on, its pictures against fp32, its errors, and its bench row."""
import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from bridge.bench import BenchCase, machine_info, plot, run_case
from bridge.errors import ConfigError
from bridge.generators.pix2pix import Pix2Pix, Pix2PixConfig, fold_batchnorm
from bridge.runtime import Runner, SubPixelDeconv, demo_conditions, rewrite_deconvs


def tiny_pix2pix(seed: int = 0) -> Pix2Pix:
    torch.manual_seed(seed)
    model = Pix2Pix(Pix2PixConfig(size=32, ngf=4))
    # BatchNorm with statistics of its own (as after training), so folding is not a no-op
    model.train()
    with torch.no_grad():
        model.net(torch.rand(4, 3, 32, 32) * 2 - 1)
    return model.eval()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(4.0 / float((a - b).pow(2).mean()))


@pytest.mark.parametrize("bias", [True, False])
def test_subpixel_deconv_is_the_transposed_conv(bias):
    torch.manual_seed(1)
    deconv = torch.nn.ConvTranspose2d(5, 7, 4, 2, 1, bias=bias)
    x = torch.randn(2, 5, 9, 6)  # odd, non-square: the crops must line up on both axes
    with torch.no_grad():
        assert (deconv(x) - SubPixelDeconv(deconv)(x)).abs().max() < 1e-5


def test_rewritten_unet_keeps_the_pictures():
    model = tiny_pix2pix()
    folded = fold_batchnorm(tiny_pix2pix()).net
    rewritten = rewrite_deconvs(fold_batchnorm(tiny_pix2pix()).net)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in rewritten.modules())
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert (folded(x) - rewritten(x)).abs().max() < 1e-5
        assert (model.generate(x) - rewritten(x)).abs().max() < 1e-4


def test_int8_runner_pictures_close_to_fp32():
    model = tiny_pix2pix()
    runner = Runner(model, runtime="int8")
    conds = demo_conditions(model, count=6, every_s=1.0)
    assert conds.shape == (6, 3, 32, 32)
    runner.warmup(conds[:1], runs=1)
    for cond in conds.split(1):
        out = runner(cond)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
        assert out.shape == (1, 3, 32, 32)
        assert out.abs().max() <= 1.0
        with torch.inference_mode():
            assert psnr(model.generate(cond), out) > 30.0
    assert runner.info.runtime == "int8" and runner.info.psnr_db > 30.0
    assert "PSNR" in runner.info.note


def test_int8_refuses_what_it_cannot_run(monkeypatch):
    model = tiny_pix2pix()
    with pytest.raises(ConfigError, match="runs on the CPU"):
        Runner(model, runtime="int8", device="cuda")
    from bridge.generators.cvae import CVAE, CVAEConfig
    with pytest.raises(ConfigError, match="supports the pix2pix family"):
        Runner(CVAE(CVAEConfig()), runtime="int8")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(ConfigError, match="needs onnxruntime: pip install onnxruntime"):
        Runner(model, runtime="int8")


def test_bench_int8_row(tmp_path):
    case = BenchCase("pix2pix", "pix2pix-tiny", 32, tiny_pix2pix)
    rows = run_case(case, "cpu", iterations=3, warmup=1, int8=True)
    plot({"machine": machine_info("cpu"), "results": rows}, tmp_path / "bench.png")
    with Image.open(tmp_path / "bench.png") as picture:  # the int8 bar is drawn (matplotlib's green)
        rgb = np.asarray(picture.convert("RGB")).reshape(-1, 3).astype(int)
        assert (np.abs(rgb - (44, 160, 44)).sum(axis=1) < 30).sum() > 200
    assert [r["runtime"] for r in rows] == ["reference", "optimized", "int8"]
    int8 = rows[2]
    assert int8["ms_p50"] > 0 and int8["speedup_vs_reference"] > 0
    assert int8["psnr_db_vs_fp32"] > 30.0
    # the optimized row states its own distance from fp32 (bf16 autocast on some CPUs is lossy)
    assert 30.0 < rows[1]["psnr_db_vs_fp32"] <= 120.0


@pytest.mark.parametrize("vnni", [False, True])
def test_int8_weights_are_7_bit_only_without_vnni(monkeypatch, vnni):
    """Without VNNI, AVX2's u8*s8 pair sums saturate int16 with full 8-bit weights, so they are
    reduced to 7 bits; with VNNI the full range is kept (and the pictures are closer)."""
    from bridge import runtime
    monkeypatch.setattr(runtime, "cpu_has_vnni", lambda: vnni)
    runner = Runner(tiny_pix2pix(), runtime="int8")
    assert runner._fn.reduce_range is not vnni
    assert runner._fn.weight_peak == 127 if vnni else runner._fn.weight_peak <= 64
    assert f"{8 if vnni else 7}-bit weights" in runner.info.note
    assert runner.info.psnr_db > 30.0


def test_int8_runs_a_degraded_level():
    from bridge.degrade import ScaledPix2Pix
    model = tiny_pix2pix()
    scaled = ScaledPix2Pix(model, 16)  # the engine's lower internal resolution, same runtime
    runner = Runner(scaled, runtime="int8")
    cond = demo_conditions(model, count=2, every_s=1.0)[1:]
    out = runner(cond)
    assert out.shape == (1, 3, 32, 32)
    with torch.inference_mode():
        assert psnr(scaled.generate(cond), out) > 30.0


# --- --runtime auto: optimized and int8 take turns on the first live frames, the faster stays ------

@pytest.mark.parametrize("gain, chosen", [(0.0, "int8"), (1000.0, "optimized")])
def test_auto_plays_both_on_live_frames_then_keeps_one(monkeypatch, gain, chosen):
    """Each runtime gets its own kind of condition on its turns, a block of calls in a row (the
    optimized one draws the picture itself, int8 is given the picture), both are timed, and the
    threshold decides on the times measured: any gain -> int8; a speed-up no runtime makes ->
    optimized."""
    from bridge import runtime
    from bridge.engine import FramePipeline
    monkeypatch.setattr(runtime, "AUTO_TRIAL_FRAMES", 2)
    monkeypatch.setattr(runtime, "AUTO_BLOCK", 2)  # each block's first call settles, the second is timed
    monkeypatch.setattr(runtime, "AUTO_MIN_GAIN", gain)
    model = tiny_pix2pix()
    runner = runtime.make_runner(model, runtime="auto")
    assert isinstance(runner, runtime.AutoRunner) and runner.chosen is None
    pipeline = FramePipeline(model, runner=runner)
    pipeline.warmup(runs=1)
    pipeline.feed_audio(np.random.default_rng(0).standard_normal(44100).astype(np.float32) * 0.3)
    snapshot = pipeline.snapshot(1.0)
    given = []
    for _ in range(8):
        cond = pipeline.condition(snapshot, runner)
        given.append("picture" if isinstance(cond, torch.Tensor) and cond.dim() == 4 else "drawn from")
        assert pipeline.make_frame(snapshot, 1 / 30).shape == (32, 32, 4)
    # blocks of two in turn; the optimized one draws, int8 is given the picture
    assert given == ["drawn from", "drawn from", "picture", "picture"] * 2
    assert runner.chosen is not None and runner.info.runtime == chosen
    assert set(runner.info.auto_ms) == {"optimized", "int8"} and min(runner.info.auto_ms.values()) > 0
    assert f"auto: {chosen} (live calls: optimized" in runner.info.note
    assert runner.candidates == [runner.chosen]  # the other let go
    frame = pipeline.make_frame(snapshot, 1 / 30)  # and it plays on
    assert frame.shape == (32, 32, 4)


def test_auto_keeps_optimized_without_a_trial_when_int8_is_too_lossy(monkeypatch):
    from bridge import runtime
    monkeypatch.setattr(runtime, "AUTO_MIN_PSNR_DB", 200.0)
    runner = runtime.make_runner(tiny_pix2pix(), runtime="auto")
    assert isinstance(runner, Runner) and runner.info.runtime == "optimized"  # nothing left to try
    assert "auto: optimized (int8 at" in runner.info.note and "under 200 dB" in runner.info.note


def test_auto_is_the_optimized_runtime_where_int8_cannot_run(monkeypatch):
    from bridge.generators.cvae import CVAE, CVAEConfig
    from bridge.runtime import make_runner
    runner = make_runner(CVAE(CVAEConfig()), runtime="auto")
    assert runner.info.runtime == "optimized"
    assert "auto: optimized (int8 supports the pix2pix family, not cvae)" in runner.info.note
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    runner = make_runner(tiny_pix2pix(), runtime="auto")
    assert runner.info.runtime == "optimized" and "int8 needs onnxruntime: pip install" in runner.info.note


def test_auto_is_refused_with_isolate():
    from bridge.live import LiveSettings
    with pytest.raises(ConfigError, match="--runtime auto chooses on live frames"):
        LiveSettings(model="pix2pix-pulse", outs=["null"], runtime="auto", isolate=True)


def test_auto_with_degradation_warms_both_and_plays_a_lower_level(monkeypatch):
    from bridge import runtime
    from bridge.engine import FramePipeline
    monkeypatch.setattr(runtime, "AUTO_TRIAL_FRAMES", 2)
    monkeypatch.setattr(runtime, "AUTO_BLOCK", 1)
    torch.manual_seed(0)
    model = Pix2Pix(Pix2PixConfig(size=64, ngf=4, input="bands")).eval()
    runner = runtime.make_runner(model, runtime="auto")
    pipeline = FramePipeline(model, runner=runner, degrade=(1.0, 0.5))
    lower = pipeline.level_runners[1]
    assert lower.info.runtime == "optimized" and lower.draws_condition  # built before any choice
    pipeline.warmup(runs=1)
    snapshot = pipeline.snapshot(0.5)
    for level in (0, 1, 0, 1, 0, 0):
        pipeline.level = level
        assert pipeline.make_frame(snapshot, 1 / 30).shape == (64, 64, 4)
    assert runner.chosen is not None  # the full level's four calls made the trial
