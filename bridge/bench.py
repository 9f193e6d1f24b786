"""`vjbridge bench`: each model measured twice in one run, as the seeds ran it (eager fp32,
batch 1: "reference") and as we run it ("optimized"), on random weights of the real shapes.
Model-only time: conditioning (and latent) in, picture out (plus the RGBA copy-out for the
optimized runtime, which is what the engine actually pays). Every family is covered: pix2pix,
the VAE-associator's image (camera) and sound paths, RealNVP decoding, the conv-VAE; and the
generated sound's mel-to-audio voice, as a real-time factor; and the streaming audio analysis,
in milliseconds per hop. Each row carries latency p50/p95 and the process's peak memory (RSS
high-water mark; on CUDA also the peak allocated); `plot()` draws the report as a PNG. On CUDA
the optimized row also carries the network alone, the network with its inputs already on the
GPU, the GPU time of a call when calls come back to back, and the pipelined frame rate (the
copy-out of one frame overlapped with the next, as the engine runs).

`bundle_cases` measures the user's own bundles (`vjbridge bench --models`) the same way, on the
conditioning they see live (an audio snapshot and a camera frame, their own latent walk), in each
live mode they offer, and says which frame rate each runtime holds."""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from bridge.errors import ConfigError
from bridge.generators.pix2pix import Pix2Pix, Pix2PixConfig
from bridge.runtime import (Runner, _to_device, cpu_has_native_bf16, cpu_has_vnni, example_inputs, picture_of,
                            picture_psnr, resolve_frame, to_rgba, to_rgba_async)

PIX2PIX_VARIANTS = {"lite": 32, "full": 64}
FAMILIES = ("pix2pix", "vae_associator", "realnvp", "cvae", "sound", "analysis", "pictures", "tick", "mix",
            "upscale")
MIX_MODELS = 4  # seed 001 played four pix2pix models at once
UPSCALE_TARGETS = ((1920, 1080), (3840, 2160))
PSNR_CAP_DB = 120.0  # fp32 reordering alone lands about here; bf16 and int8 at 40-60 dB


@dataclass
class BenchCase:
    family: str
    model: str
    size: int
    build: callable  # () -> Generator, random weights, eval mode, live mode already set
    live_inputs: bool = False  # timed on what the model sees live (example_inputs), not noise


def _vae_associator(mode: str):
    from bridge.generators.vae_associator import VAEAssociator, VAEAssociatorConfig
    model = VAEAssociator(VAEAssociatorConfig())
    model.set_mode(mode)
    return model


def _realnvp(preset: str):
    from bridge.generators.realnvp import RealNVP, STNet, preset_config
    model = RealNVP(preset_config(preset))
    # Each coupling's s/t net starts with its last convolution at zero (the identity flow);
    # trained, those weights measure 0.01-0.02 std (realnvp-faces): so here too, or the
    # pictures, and the precision check of the optimized runtime, would be an identity's.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for net in (m for m in model.modules() if isinstance(m, STNet)):
            net.out.weight.copy_(torch.randn(net.out.weight.shape, generator=generator) * 0.02)
    return model


def _cvae():
    from bridge.generators.cvae import CVAE, CVAEConfig
    return CVAE(CVAEConfig())


def default_cases(sizes=(256,), variants=("lite", "full"), families=FAMILIES) -> list[BenchCase]:
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ConfigError(f"unknown bench families {', '.join(sorted(unknown))}; choose from {', '.join(FAMILIES)}")
    cases = []
    if "pix2pix" in families:
        for size in sizes:
            for variant in variants:
                ngf = PIX2PIX_VARIANTS[variant]
                cases.append(BenchCase("pix2pix", f"pix2pix-{variant}-ngf{ngf}", size,
                                       lambda s=size, g=ngf: Pix2Pix(Pix2PixConfig(size=s, ngf=g))))
    if "vae_associator" in families:
        for mode in ("camera", "sound"):
            cases.append(BenchCase("vae_associator", f"vae-associator-{mode}", 112,
                                   lambda m=mode: _vae_associator(m)))
    if "realnvp" in families:
        for preset in ("lite-32", "full-32", "lite-64", "full-64"):
            cases.append(BenchCase("realnvp", f"realnvp-{preset}", int(preset.split("-")[1]),
                                   lambda p=preset: _realnvp(p)))
    if "cvae" in families:
        cases.append(BenchCase("cvae", "cvae-64", 64, _cvae))
    return cases


def bundle_cases(names) -> list[BenchCase]:
    """A case per bundle (name or folder) and live mode: its own weights, its own conditioning.
    Each is loaded here once, so a name that is wrong fails before anything is timed."""
    from bridge.generators.base import load_model

    def build(name: str, mode: str | None):
        model = load_model(name)
        if mode is not None:
            model.set_mode(mode)
        return model

    cases = []
    for name in names:
        model = load_model(name)
        for mode in model.modes or (None,):
            cases.append(BenchCase(model.family, name if mode is None else f"{name} ({mode})", model.output_size,
                                   lambda n=name, m=mode: build(n, m), live_inputs=True))
    return cases


FRAME_RATES = (240, 144, 120, 60, 50, 30, 25, 24)  # what projectors, LED walls and recorders run at


def holds_fps(ms_p95: float) -> int | None:
    """The highest common frame rate whose frame the model's 95th-percentile time fits with the
    margin degradation keeps (it steps down past 90 % of the period): None under 24 fps."""
    from bridge.degrade import DegradeSettings
    margin = DegradeSettings().down_fraction
    return next((fps for fps in FRAME_RATES if ms_p95 <= margin * 1000.0 / fps), None)


def machine_info(device: str) -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "cpu_vnni": cpu_has_vnni(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def peak_rss_mb() -> float:
    """The process's resident-memory high-water mark so far, in MB (0 where the OS cannot say)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)  # bytes on macOS, KB on Linux


def measure_analysis(seconds: float = 10.0, seed: int = 0) -> dict:
    """The streaming analysis (mel, bands, onsets, tempo) fed one hop at a time, as live: ms per hop."""
    import numpy as np

    from bridge.analysis import AnalysisConfig, StreamingAnalyzer

    config = AnalysisConfig()
    rng = np.random.default_rng(seed)
    n = int(seconds * config.sample_rate)
    t = np.arange(n) / config.sample_rate
    # a pulse every half second over noise: onsets, tempo and bands all have work to do
    audio = (0.05 * rng.standard_normal(n) + 0.5 * np.sin(2 * np.pi * 60 * t) * ((t % 0.5) < 0.08)).astype(np.float32)
    analyzer = StreamingAnalyzer(config)
    per_hop = []
    for at in range(0, n - config.hop, config.hop):
        t0 = time.perf_counter()
        analyzer.feed(audio[at:at + config.hop])
        analyzer.snapshot(at / config.sample_rate)
        per_hop.append((time.perf_counter() - t0) * 1000.0)
    per_hop = per_hop[20:]  # the first hops fill the buffers
    return {"hop": config.hop, "sample_rate": config.sample_rate, "hops": len(per_hop),
            "ms_per_hop_p50": round(statistics.median(per_hop), 4),
            "ms_per_hop_p95": round(sorted(per_hop)[int(0.95 * (len(per_hop) - 1))], 4),
            "hop_ms_budget": round(1000.0 * config.hop / config.sample_rate, 2)}


def _noise_features(seed: int = 0):
    """A live snapshot's AudioFeatures after two seconds of noise: every picture has data."""
    import numpy as np

    from bridge.analysis import AnalysisConfig, StreamingAnalyzer

    config = AnalysisConfig()
    rng = np.random.default_rng(seed)
    analyzer = StreamingAnalyzer(config)
    analyzer.feed((rng.standard_normal(2 * config.sample_rate) * 0.3).astype(np.float32))
    return analyzer.snapshot(2.0)


def measure_pictures(sizes=(256, 512), iterations: int = 20, seed: int = 0) -> list[dict]:
    """The conditioning an audio model sees each frame: each audio picture drawn from a live
    snapshot and made the network's input tensor (`image_to_tensor`), ms p50/p95 per size."""
    from bridge.analysis import REPRESENTATIONS
    from bridge.generators.pix2pix import image_to_tensor

    features = _noise_features(seed)
    rows = []
    for size in sizes:
        for name in REPRESENTATIONS:
            step = (lambda n=name, s=size: image_to_tensor(features.representation(n, s), s))
            step()
            ms = []
            for _ in range(iterations):
                t0 = time.perf_counter()
                step()
                ms.append((time.perf_counter() - t0) * 1000.0)
            rows.append({"family": "pictures", "model": name, "size": size,
                         "ms_p50": round(statistics.median(ms), 3), "ms_p95": round(_p95(ms), 3),
                         "iterations": iterations})
    return rows


def _noise_frame(seed: int = 0, shape=(480, 640)):
    """A camera-sized (H, W, 3) uint8 frame of noise, as the camera source delivers frames."""
    import numpy as np
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


TICK_INPUTS = ("bands", "spectrogram", "image")  # bench's default: the bundled model's, a dB array's, a camera's


def measure_tick(device: str = "cpu", sizes=(256,), ngf: int = PIX2PIX_VARIANTS["lite"],
                 iterations: int = 20, warmup: int = 3, seed: int = 0,
                 inputs=TICK_INPUTS) -> list[dict]:
    """A whole tick of a pix2pix on each input in `inputs` (audio pictures, or "image": a
    640x480 camera frame), live snapshot in, uint8 RGBA out, three ways: the reference (picture
    made by numpy, eager fp32 network); the optimized runtime given that host-made picture; and
    the optimized runtime given what the picture is drawn from (bands: five numbers; mel,
    spectrogram: the dB array; waveform: the samples; history, bands_history: feature rows;
    image: the frame fitted to the model's size, still uint8), making it itself inside its
    compiled call (on CUDA: inside the captured graph). Interleaved, p50/p95."""
    from bridge.generators.base import Snapshot

    snapshot = Snapshot(audio=_noise_features(seed), image=_noise_frame(seed))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    rows = []
    for picture, size in ((p, s) for p in inputs for s in sizes):
        torch.manual_seed(seed)
        model = Pix2Pix(Pix2PixConfig(size=size, ngf=ngf, input=picture)).eval()
        reference = Runner(model, runtime="reference", device=device)
        optimized = Runner(model, runtime="optimized", device=device)
        steps = {
            "reference": lambda: to_rgba(reference(model.condition(snapshot))),
            "optimized, picture from the host": lambda: resolve_frame(to_rgba_async(optimized(
                model.condition(snapshot)))),
            "optimized, drawn in the call": lambda: resolve_frame(to_rgba_async(optimized(
                model.condition_params(snapshot)))),
        }
        optimized.warmup(model.condition(snapshot), runs=warmup)
        optimized.warmup(model.condition_params(snapshot), runs=warmup)
        for step in steps.values():
            step()
        times = {name: [] for name in steps}
        for _ in range(iterations):
            for name, step in steps.items():
                t0 = time.perf_counter()
                step()
                sync()
                times[name].append((time.perf_counter() - t0) * 1000.0)
        base = statistics.median(times["reference"])
        for name, ms in times.items():
            rows.append({"family": "tick", "model": f"pix2pix-{picture}-ngf{ngf}", "size": size,
                         "device": device, "runtime": name, "ms_p50": round(statistics.median(ms), 3),
                         "ms_p95": round(_p95(ms), 3), "fps_p50": round(1000.0 / statistics.median(ms), 1),
                         "speedup_vs_reference": round(base / statistics.median(ms), 2),
                         "draws_condition": name.endswith("in the call") and optimized.draws_condition,
                         "iterations": iterations})
    return rows


def _timed(fn, cond, latent, sync) -> float:
    t0 = time.perf_counter()
    fn(cond, latent)
    sync()
    return (time.perf_counter() - t0) * 1000.0


def _p95(ms: list[float]) -> float:
    """The 95th percentile of the timings (the nearest-rank value below it)."""
    return sorted(ms)[int(0.95 * (len(ms) - 1))]


def run_case(case: BenchCase, device: str, iterations: int, warmup: int,
             interleave: bool = True, int8: bool = False) -> list[dict]:
    """Both runtimes (with `int8`, for pix2pix on the CPU, the int8 one too) are warmed up, then
    timed. Interleaved (the default), they are called alternately, so a change in the machine's
    load during the run (another process, turbo, a noisy neighbour) falls on all alike;
    sequential runs all reference calls, then all optimized ones, as a live run (one model,
    warm caches) would. The int8 row also carries its PSNR against fp32."""
    torch.manual_seed(0)
    model = case.build().eval()
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    if case.family == "pix2pix" and not case.live_inputs:
        cond, latent = torch.rand(1, 3, case.size, case.size) * 2 - 1, None
    else:
        cond, latent = example_inputs(model)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    runners, steps, warm_s = {}, {}, {}
    runtimes = ("reference", "optimized")
    if int8 and case.family == "pix2pix" and device == "cpu":
        runtimes += ("int8",)
    for runtime in runtimes:
        runner = runners[runtime] = Runner(model, runtime=runtime, device=device)
        # the optimized path includes the copy-out to uint8 RGBA, as the engine pays it (on CUDA
        # as the engine does it: uint8 on the device, into pinned memory, waited for)
        steps[runtime] = runner if runtime == "reference" else (
            lambda c, z, r=runner: resolve_frame(to_rgba_async(picture_of(r(c, z)))))
        t0 = time.perf_counter()
        runner.warmup(cond, latent, runs=warmup)
        sync()
        warm_s[runtime] = time.perf_counter() - t0
    times = {runtime: [] for runtime in runtimes}
    cuda = device.startswith("cuda")
    if cuda:  # the network alone too: the GPU targets are model-only and end to end
        times["optimized:model"] = []
        steps["optimized:model"] = runners["optimized"]
        # and with its inputs already on the GPU (conditioning drawn there): no copy in
        on_device = _to_device(cond, torch.device(device)), _to_device(latent, torch.device(device))
        times["optimized:on-device"] = []
        steps["optimized:on-device"] = lambda c, z, r=runners["optimized"]: r(*on_device)
    if interleave:
        for _ in range(iterations):
            for runtime in times:
                times[runtime].append(_timed(steps[runtime], cond, latent, sync))
    else:
        for runtime in times:
            times[runtime] = [_timed(steps[runtime], cond, latent, sync) for _ in range(iterations)]
    # how far each fast runtime's picture is from the reference's, on the timed input (the int8
    # runner measured itself on held-out demo ticks when it was built: that figure stands)
    unmeasured = [runtime for runtime in runtimes[1:] if runners[runtime].info.psnr_db is None]
    with torch.inference_mode():
        gold = picture_of(runners["reference"](cond, latent)).float().cpu().numpy()
        psnr = {runtime: picture_psnr(gold, picture_of(runners[runtime](cond, latent)).float().cpu().numpy())
                for runtime in unmeasured}
    rows = []
    model_only = times.pop("optimized:model", None)
    model_on_device = times.pop("optimized:on-device", None)
    if cuda:
        gpu_ms = gpu_ms_per_call(runners["optimized"], *on_device, calls=iterations)
        pipelined = pipelined_fps(runners["optimized"], cond, latent, frames=iterations)
    for runtime, ms in times.items():
        ms_p50 = statistics.median(ms)
        rows.append({
            "family": case.family, "model": case.model, "params_m": round(params_m, 2),
            "size": case.size, "device": device, "runtime": runtime,
            "fps_p50": round(1000.0 / ms_p50, 2), "ms_p50": round(ms_p50, 3),
            "ms_p95": round(_p95(ms), 3),
            "compiled": runners[runtime].info.compiled, "autocast": runners[runtime].info.autocast,
            "network": runners[runtime].info.network,  # uncompiled: "traced" or "onnxruntime"
            "warmup_s": round(warm_s[runtime], 2), "iterations": iterations,
            "timing": "interleaved" if interleave else "sequential",
            "peak_rss_mb": peak_rss_mb(), "holds_fps": holds_fps(_p95(ms)),
        })
        if case.live_inputs:
            rows[-1]["bundle"] = True
        if runners[runtime].info.note:  # e.g. the precision a flow keeps, and why
            rows[-1]["note"] = runners[runtime].info.note
        if device.startswith("cuda") and torch.cuda.is_available():
            rows[-1]["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
        if runtime == "optimized" and model_only:
            rows[-1]["model_only_ms_p50"] = round(statistics.median(model_only), 3)
            rows[-1]["model_only_fps_p50"] = round(1000.0 / statistics.median(model_only), 1)
            rows[-1]["on_device_ms_p50"] = round(statistics.median(model_on_device), 3)
            rows[-1]["on_device_fps_p50"] = round(1000.0 / statistics.median(model_on_device), 1)
            rows[-1]["gpu_ms_per_call"] = round(gpu_ms, 4)
            rows[-1]["pipelined_fps"] = round(pipelined, 1)
            rows[-1]["cuda_graph"] = runners[runtime].info.cuda_graph
        if runners[runtime].info.psnr_db is not None:
            rows[-1]["psnr_db_vs_fp32"] = round(runners[runtime].info.psnr_db, 1)
        elif runtime in psnr:  # capped: an exact runtime's error is float rounding, not loss
            rows[-1]["psnr_db_vs_fp32"] = round(min(psnr[runtime], PSNR_CAP_DB), 1)
    for row in rows[1:]:
        row["speedup_vs_reference"] = round(rows[0]["ms_p50"] / row["ms_p50"], 2)
    return rows


def gpu_ms_per_call(runner, cond, latent, calls: int = 100) -> float:
    """GPU time of one call when calls come back to back, inputs already on the device: CUDA
    events around `calls` calls, no wait between them (what the GPU itself can sustain)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    runner(cond, latent)
    torch.cuda.synchronize()
    start.record()
    for _ in range(calls):
        runner(cond, latent)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / calls


def pipelined_fps(runner, cond, latent, frames: int = 100) -> float:
    """Frames per second end to end as the live engine runs them on a GPU: each frame's
    conditioning copied in from host memory, the network, its RGBA copied out asynchronously
    (PendingFrame), and the previous frame's RGBA taken while this one runs."""
    pending = resolve_frame(to_rgba_async(picture_of(runner(cond, latent))))
    t0 = time.perf_counter()
    for _ in range(frames):
        frame = to_rgba_async(picture_of(runner(cond, latent)))
        resolve_frame(pending)
        pending = frame
    resolve_frame(pending)
    return frames / (time.perf_counter() - t0)


def measure_mix(device: str = "cpu", size: int = 512, variant: str = "full", models: int = MIX_MODELS,
                iterations: int = 5, warmup: int = 2) -> list[dict]:
    """`models` pix2pix U-Nets of one shape making one tick's pictures: in sequence with the
    reference runtime, in sequence optimized (the frames' RGBA copy-out included, as for one
    model), and batched into one vmap call (bridge.mix.BatchedPix2Pix, fp32). Interleaved."""
    from bridge.mix import BatchedPix2Pix
    ngf = PIX2PIX_VARIANTS[variant]
    nets = []
    for seed in range(models):
        torch.manual_seed(seed)
        nets.append(Pix2Pix(Pix2PixConfig(size=size, ngf=ngf)).eval())
    cond = torch.rand(1, 3, size, size) * 2 - 1
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    reference = [Runner(m, runtime="reference", device=device) for m in nets]
    optimized = [Runner(m, runtime="optimized", device=device) for m in nets]
    batched = BatchedPix2Pix(nets).to(device)
    device_cond = cond.to(device)
    steps = {
        "reference, in sequence": lambda c, z: [r(c) for r in reference],
        "optimized, in sequence": lambda c, z: [to_rgba(r(c)) for r in optimized],
        "batched (vmap), fp32": lambda c, z: batched(device_cond),
    }
    for r in reference + optimized:
        r.warmup(cond, None, runs=warmup)
    for _ in range(warmup):
        batched(device_cond)
    sync()
    times = {name: [] for name in steps}
    for _ in range(iterations):
        for name, step in steps.items():
            times[name].append(_timed(step, cond, None, sync))
    rows = []
    for name, ms in times.items():
        ms_p50 = statistics.median(ms)
        rows.append({"family": "mix", "model": f"{models} x pix2pix-{variant}-ngf{ngf}", "size": size,
                     "device": device, "runtime": name, "ms_p50": round(ms_p50, 2),
                     "ms_p95": round(_p95(ms), 2),
                     "ticks_per_s_p50": round(1000.0 / ms_p50, 2), "iterations": iterations,
                     "peak_rss_mb": peak_rss_mb()})
    for row in rows[1:]:
        row["speedup_vs_reference"] = round(rows[0]["ms_p50"] / row["ms_p50"], 2)
    return rows


def measure_upscale(device: str = "cpu", source: int = 256, targets=UPSCALE_TARGETS,
                    iterations: int = 20) -> list[dict]:
    """The cost of the last step at projector sizes: a model's square picture to a `targets`
    frame (cover) as RGBA in host memory, per mode (bridge.upscale), beside torch's float bicubic
    followed by the RGBA copy-out (the plain way)."""
    import torch.nn.functional as F

    from bridge.upscale import MODES, Upscaler
    picture = (torch.rand(1, 3, source, source) * 2 - 1).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    rows = []
    for width, height in targets:
        side = max(width, height)
        top, left = (side - height) // 2, (side - width) // 2

        def plain(c, z):
            big = F.interpolate(c, size=(side, side), mode="bicubic", align_corners=False)
            return to_rgba(big[..., top:top + height, left:left + width])
        steps = {f"upscale {mode}": (lambda c, z, u=Upscaler(width, height, mode=mode): u.rgba(c)) for mode in MODES}
        steps["torch float bicubic (plain)"] = plain
        for step in steps.values():
            step(picture, None)
        sync()
        for name, step in steps.items():
            ms = [_timed(step, picture, None, sync) for _ in range(iterations)]
            ms_p50 = statistics.median(ms)
            rows.append({"family": "upscale", "model": name, "size": source, "target": f"{width}x{height}",
                         "device": device, "ms_p50": round(ms_p50, 2),
                         "ms_p95": round(_p95(ms), 2),
                         "iterations": iterations})
    return rows


def run_bench(cases: list[BenchCase], device: str = "cpu", iterations: int = 20, warmup: int = 3,
              progress=None, interleave: bool = True, sound: bool = True, analysis: bool = False,
              int8: bool = False, mix: tuple = (), upscale: bool = False, pictures: tuple = (),
              tick: tuple = (), tick_inputs: tuple = TICK_INPUTS) -> dict:
    """`int8` adds, for each pix2pix case on the CPU, the int8 runtime (needs onnxruntime;
    its calibration adds seconds to a minute per case). `mix`: (size, variant) pairs to time
    four models at once (measure_mix); `upscale`: the upscaling rows (measure_upscale);
    `pictures`: sizes to time drawing the audio pictures at (measure_pictures); `tick`: sizes
    to time whole ticks of models on `tick_inputs` at, picture drawn on the host or in the call
    (measure_tick)."""
    results = []
    for case in cases:
        if progress:
            progress(f"{case.model} {case.size}² on {device}")
        results += run_case(case, device, iterations, warmup, interleave, int8)
    report = {"machine": machine_info(device), "results": results}
    if mix:
        report["mix"] = []
        for size, variant in mix:
            if progress:
                progress(f"{MIX_MODELS} x pix2pix-{variant} {size}² at once on {device}")
            report["mix"] += measure_mix(device, size, variant, iterations=max(3, iterations // 4))
    if upscale:
        if progress:
            progress(f"upscaling to {', '.join(f'{w}x{h}' for w, h in UPSCALE_TARGETS)} on {device}")
        report["upscale"] = measure_upscale(device, iterations=iterations)
    if pictures:
        if progress:
            progress(f"audio pictures at {', '.join(f'{s}²' for s in pictures)}")
        report["pictures"] = measure_pictures(pictures, iterations=iterations)
    if tick:
        if progress:
            progress(f"whole ticks of {', '.join(tick_inputs)} models at {', '.join(f'{s}²' for s in tick)} "
                     f"on {device}")
        report["tick"] = measure_tick(device, tick, iterations=iterations, warmup=warmup, inputs=tick_inputs)
    if sound:
        from bridge.sinks.voice_measure import measure_voice
        if progress:
            progress("generated sound: mel -> audio voice")
        report["sound"] = measure_voice()
    if analysis:
        if progress:
            progress("streaming analysis, one hop at a time")
        report["analysis"] = measure_analysis()
    return report


def plot(report: dict, path) -> None:
    """fps of each model, a bar per runtime it was timed with (reference, optimized, int8), as a
    PNG (matplotlib, the `train` extra)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'vjbridge[train]'") from None
    rows = report["results"]
    cases = list(dict.fromkeys((r["model"], r["size"]) for r in rows))
    names = [f"{model} {size}²" for model, size in cases]
    labels = {"reference": "reference (eager fp32)", "optimized": "optimized", "int8": "int8 (ONNX Runtime)"}
    runtimes = [name for name in labels if any(r["runtime"] == name for r in rows)]
    fps = {(r["model"], r["size"], r["runtime"]): r["fps_p50"] for r in rows}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 4.5))
    xs = range(len(names))
    width = 0.8 / len(runtimes)
    for i, runtime in enumerate(runtimes):
        offset = (i - (len(runtimes) - 1) / 2) * width
        ax.bar([x + offset for x in xs], [fps.get((*case, runtime), 0.0) for case in cases],
               width=width, label=labels[runtime])
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("frames per second (p50, batch 1)")
    ax.set_yscale("log")
    machine = report["machine"]
    ax.set_title(f"{machine.get('gpu') or machine['cpu']} · torch {machine['torch']} · "
                 f"{machine['torch_threads']} threads", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(report: dict) -> str:
    width = max([24] + [len(r["model"]) + 2 for r in report["results"]])
    lines = [f"{'model':<{width}}{'size':>6}{'runtime':>11}{'ms p50':>10}{'fps p50':>10}{'speedup':>9}"
             f"{'PSNR dB':>9}{'holds':>9}  precision"] if report["results"] else []
    for r in report["results"]:
        speed = f"{r['speedup_vs_reference']:.2f}x" if "speedup_vs_reference" in r else ""
        psnr = f"{r['psnr_db_vs_fp32']:.1f}" if "psnr_db_vs_fp32" in r else ""
        holds = "" if "holds_fps" not in r else (f"{r['holds_fps']} fps" if r["holds_fps"] else "<24 fps")
        precision = "int8" if r["runtime"] == "int8" else (r.get("autocast") or "float32")
        if r["runtime"] == "optimized" and r.get("compiled") is False:
            # a machine without a compiler (the run said why): the way its warm-up kept
            precision += f", {r.get('network') or 'traced'} (not compiled)"
        lines.append(f"{r['model']:<{width}}{r['size']:>6}{r['runtime']:>11}{r['ms_p50']:>10.1f}"
                     f"{r['fps_p50']:>10.1f}{speed:>9}{psnr:>9}{holds:>9}  {precision}")
        if r.get("bundle") and r["runtime"] != "reference" and r.get("note"):
            lines.append(f"{'':<{width}}{r['note']}")
        if "pipelined_fps" in r:
            lines.append(f"{'':<30}GPU: network alone {r['model_only_fps_p50']:.0f} fps, inputs on the device "
                         f"{r['on_device_fps_p50']:.0f} fps, back to back {r['gpu_ms_per_call']:.3f} ms a call, "
                         f"pipelined end to end {r['pipelined_fps']:.0f} fps")
    sound = report.get("sound")
    if sound:
        lines.append(f"generated sound (mel -> audio): real-time factor {sound['rtf_median']:.3f} "
                     f"(median per call, {sound['ms_per_call_median']:.2f} ms per call), "
                     f"{sound['rtf_overall']:.3f} overall")
    for row in report.get("mix", []):
        speed = f" ({row['speedup_vs_reference']:.2f}x)" if "speedup_vs_reference" in row else ""
        lines.append(f"{row['model']} {row['size']}² {row['runtime']}: {row['ms_p50']:.1f} ms a tick "
                     f"p50, {row['ms_p95']:.1f} p95{speed}")
    for row in report.get("upscale", []):
        lines.append(f"{row['size']}² -> {row['target']} {row['model']}: {row['ms_p50']:.2f} ms p50, "
                     f"{row['ms_p95']:.2f} p95")
    for row in report.get("tick", []):
        lines.append(f"tick {row['model']} {row['size']}² {row['runtime']}: {row['ms_p50']:.2f} ms p50, "
                     f"{row['ms_p95']:.2f} p95 ({row['speedup_vs_reference']:.2f}x the reference)")
    for row in report.get("pictures", []):
        lines.append(f"audio picture {row['model']} {row['size']}² (draw + input tensor): "
                     f"{row['ms_p50']:.2f} ms p50, {row['ms_p95']:.2f} p95")
    analysis = report.get("analysis")
    if analysis:
        lines.append(f"streaming analysis: {analysis['ms_per_hop_p50']:.3f} ms per hop p50 "
                     f"({analysis['ms_per_hop_p95']:.3f} p95; a hop is {analysis['hop_ms_budget']} ms of audio)")
    return "\n".join(lines)
