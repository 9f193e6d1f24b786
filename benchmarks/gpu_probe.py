"""GPU probe, for a lent GPU machine (one call, a few minutes): the optimized runtime as it was
(torch.compile `reduce-overhead`, Inductor's own CUDA graph trees) against ours (plain Inductor
kernels inside a graph we capture, CudaGraphStep), with and without cuDNN's autotuner, and
Inductor's max-autotune for the flows, each beside the eager fp32 reference in the same run.
Writes JSON lines to $OUT/probe.jsonl (or ./probe.jsonl) as it goes, and a table at the end.

    python3 benchmarks/gpu_probe.py [--quick] [--budget-s 240]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import bridge.runtime as runtime  # noqa: E402
from bridge.bench import default_cases, machine_info, run_case  # noqa: E402

VARIANTS = {  # name: (our graphs, compile mode, cudnn.benchmark)
    "reduce-overhead (before)": (False, "reduce-overhead", False),
    "own graph": (True, None, False),
    "own graph + cudnn.benchmark": (True, None, True),
    "own graph + max-autotune": (True, "max-autotune-no-cudagraphs", False),
}
PLAN = [  # (case model name, size, variants): the new default's rows come from the bench part
    ("pix2pix-full-ngf64", 256, ["reduce-overhead (before)", "own graph + cudnn.benchmark"]),
    # "own graph + max-autotune" was measured on the H200 (2026-12-04): 7.0 ms a call against
    # 1.3, after 136 s of tuning; left out of the plan, still in VARIANTS to run by hand
    ("realnvp-full-32", 32, ["reduce-overhead (before)", "own graph + cudnn.benchmark"]),
    ("vae-associator-camera", 112, ["reduce-overhead (before)"]),
    ("pix2pix-full-ngf64", 512, ["reduce-overhead (before)"]),
]


def bench(out: Path, iterations: int, device: str, only: str) -> None:
    """Every family as `vjbridge bench --device cuda` runs it (the new default runtime), four
    512² models at once, the upscaling and whole ticks (bands, spectrogram and camera models; the picture made
    on the host or in the captured graph; gpu_session.sh times the other pictures' ticks on their own),
    saved as JSON and a PNG."""
    from bridge.bench import format_table, plot, run_bench
    cases = [c for c in default_cases(sizes=(256, 512), families=("pix2pix", "vae_associator", "realnvp", "cvae"))
             if only in c.model]
    report = run_bench(cases, device=device, iterations=iterations, sound=False,
                       mix=((512, "full"),) if not only else (), upscale=not only,
                       tick=(256, 512) if not only else (),
                       progress=lambda m: print("bench:", m, flush=True))
    (out / "bench-cuda.json").write_text(json.dumps(report, indent=1))
    try:
        plot(report, out / "bench-cuda.png")
    except Exception as e:
        print(f"plot failed: {e}", flush=True)
    print(format_table(report), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--budget-s", type=float, default=240.0, help="stop starting new variants after this")
    parser.add_argument("--no-bench", action="store_true", help="the variants only")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script itself")
    parser.add_argument("--only", default="", help="only the models whose name holds this")
    args = parser.parse_args()
    print(json.dumps(machine_info(args.device)), flush=True)
    t_start = time.perf_counter()
    folder = Path(os.environ.get("OUT", "."))
    out = folder / "probe.jsonl"
    if not args.no_bench:
        bench(folder, args.iterations // 2, args.device, args.only)
    cases = {(c.model, c.size): c for c in default_cases(sizes=(256, 512), families=("pix2pix", "vae_associator",
                                                                                       "realnvp"))}
    table = []
    for model, size, names in PLAN:
        if args.only not in model:
            continue
        for name in names:
            if time.perf_counter() - t_start > args.budget_s:
                print(f"budget spent: skipping {model} {size} {name}", flush=True)
                continue
            graphs, mode, autotune_cudnn = VARIANTS[name]
            runtime.CUDA_GRAPHS, runtime.CUDA_COMPILE_MODE = graphs, mode
            torch.backends.cudnn.benchmark = autotune_cudnn
            torch._dynamo.reset()
            t0 = time.perf_counter()
            try:
                rows = run_case(cases[(model, size)], args.device, args.iterations, 3)
            except Exception as e:  # one variant failing must not cost the others
                print(f"{model} {size} {name}: FAILED {type(e).__name__}: {e}", flush=True)
                continue
            for row in rows:
                row["variant"] = name
                row["wall_s"] = round(time.perf_counter() - t0, 1)
            with open(out, "a") as f:
                for row in rows:
                    f.write(json.dumps(row) + "\n")
            ref, opt = rows[0], rows[1]
            line = (f"{model:<22}{size:>4} {name:<30} ref {ref['fps_p50']:>7.0f}  e2e {opt['fps_p50']:>7.0f} "
                    f"({opt['speedup_vs_reference']:.2f}x)  net {opt.get('model_only_fps_p50', 0):>7.0f}  "
                    f"dev {opt.get('on_device_fps_p50', 0):>7.0f}  b2b {opt.get('gpu_ms_per_call', 0):.3f} ms  "
                    f"pipe {opt.get('pipelined_fps', 0):>7.0f}  psnr {opt.get('psnr_db_vs_fp32')}  "
                    f"graph {opt.get('cuda_graph')}  {opt['warmup_s']:.0f}s")
            print(line, flush=True)
            table.append(line)
    print("\n".join(["", "== probe =="] + table))


if __name__ == "__main__":
    main()
