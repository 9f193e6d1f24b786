"""Where the GPU time of one optimized call goes, and two changes that could shorten it (a lent
GPU machine, about two minutes): for the full U-Net at 256² and 512², its transposed
convolutions as it runs them against the same network with each rewritten as an ordinary 2x2
convolution plus a pixel shuffle (bridge.runtime.SubPixelDeconv, exact); for the full RealNVP at
32², fp32 (as it runs) against bf16 autocast, with the PSNR that costs. Each: GPU ms per call
back to back (our captured graph), then the compiled network's kernels under torch.profiler,
summed by kind. JSON lines to $OUT/kernels.jsonl as it goes.

    python3 benchmarks/gpu_kernels.py [--device cpu]   (cpu: a dry run of the script itself)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import bridge.runtime as runtime  # noqa: E402
from bridge.bench import gpu_ms_per_call  # noqa: E402
from bridge.generators.pix2pix import Pix2Pix, Pix2PixConfig  # noqa: E402
from bridge.generators.realnvp import RealNVP, preset_config  # noqa: E402


def kind(name: str) -> str:
    n = name.lower()
    if "dgrad" in n or "deconv" in n or "transpose" in n:
        return "transposed conv (cuDNN)"
    if "conv" in n or "fprop" in n or "implicit" in n or "xmma" in n or "cutlass" in n or "sm90" in n:
        return "conv / matmul"
    if n.startswith("triton") or "triton" in n:
        return "Inductor (Triton) fused"
    if "memcpy" in n or "memset" in n:
        return "copy"
    return "other"


def profile(runner, cond, latent, device: str, calls: int = 20) -> dict:
    """The compiled network's kernels (not the graph: the profiler sees a replay as one), ms a call."""
    activity = torch.profiler.ProfilerActivity.CUDA if device == "cuda" else torch.profiler.ProfilerActivity.CPU
    with torch.inference_mode():
        args = (cond.to(device), latent.to(device) if latent is not None else None)
        for _ in range(3):
            runner._network(*args)
        with torch.profiler.profile(activities=[activity]) as prof:
            for _ in range(calls):
                runner._network(*args)
            if device == "cuda":
                torch.cuda.synchronize()
    by_kind, by_name, count = defaultdict(float), defaultdict(float), defaultdict(int)
    for event in prof.key_averages():
        us = (event.device_time_total if device == "cuda" else event.self_cpu_time_total)
        if us <= 0 or (device == "cuda" and event.device_type != torch.autograd.DeviceType.CUDA):
            continue
        by_kind[kind(event.key)] += us / calls / 1000
        by_name[event.key[:90]] += us / calls / 1000
        count[kind(event.key)] += event.count // calls
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:8]
    return {"ms_by_kind": {k: round(v, 4) for k, v in by_kind.items()},
            "kernels_by_kind": dict(count), "top": [(k, round(v, 4)) for k, v in top]}


def run(label: str, model, cond, latent, device: str, out: Path, prepare=None, autocast=None) -> None:
    t0 = time.perf_counter()
    reference = runtime.Runner(model, "reference", device)
    runner = runtime.Runner(model, "optimized", device, compile=False)
    if prepare is not None:  # new modules are made on the CPU in the default layout: move them too
        layout = torch.channels_last if device == "cuda" else torch.contiguous_format
        runner.net = prepare(runner.net).to(device, memory_format=layout)
        runner._fn = getattr(runner.net, runner._entry)
    if autocast is not None:
        runner._autocast = autocast
    runner._try_compile()
    runner.warmup(cond, latent)
    row = {"case": label, "device": device, "cuda_graph": runner.info.cuda_graph,
           "autocast": str(runner._autocast)}
    with torch.inference_mode():
        gold = reference(cond, latent).float().cpu().numpy()
        row["psnr_db_vs_fp32"] = round(min(runtime.picture_psnr(gold, runner(cond, latent).float().cpu().numpy()),
                                           120.0), 1)
    if device == "cuda":
        dev = (cond.to(device), latent.to(device) if latent is not None else None)
        row["gpu_ms_per_call"] = round(min(gpu_ms_per_call(runner, *dev, calls=200) for _ in range(3)), 4)
    row.update(profile(runner, cond, latent, device))
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{label:<34} gpu {row.get('gpu_ms_per_call', 0):.4f} ms  psnr {row['psnr_db_vs_fp32']}  "
          f"{row['ms_by_kind']}  ({row['wall_s']} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", default="512")
    args = parser.parse_args()
    out = Path(os.environ.get("OUT", ".")) / "kernels.jsonl"
    torch.manual_seed(0)
    for size in [int(s) for s in args.sizes.split(",") if s]:
        model = Pix2Pix(Pix2PixConfig(size=size, ngf=64)).eval()
        cond = torch.rand(1, 3, size, size) * 2 - 1
        run(f"unet-full-{size} as it runs", model, cond, None, args.device, out)
        run(f"unet-full-{size} subpixel deconvs", model, cond, None, args.device, out,
            prepare=runtime.rewrite_deconvs)
    # the bundled, trained flow (lite-32): its PSNR under bf16 means something
    from bridge.generators.base import load_model
    faces = load_model(Path(__file__).resolve().parents[1] / "models" / "realnvp-faces").eval()
    cond, latent = runtime.example_inputs(faces)
    run("realnvp-faces (lite-32) fp32", faces, cond, latent, args.device, out)
    run("realnvp-faces (lite-32) bf16 autocast", faces, cond, latent, args.device, out, autocast=torch.bfloat16)
    # full-32 with random weights: its couplings start as the identity (zeroed last convs), so
    # give those small random weights too, or fp32 and bf16 would agree trivially
    flow = RealNVP(preset_config("full-32")).eval()
    for module in flow.modules():
        if hasattr(module, "out") and isinstance(module.out, torch.nn.Conv2d):
            torch.nn.init.normal_(module.out.weight, std=0.02)
    cond, latent = runtime.example_inputs(flow)
    run("realnvp-full-32 fp32 (as it runs)", flow, cond, latent, args.device, out)
    run("realnvp-full-32 bf16 autocast", flow, cond, latent, args.device, out, autocast=torch.bfloat16)


if __name__ == "__main__":
    main()
