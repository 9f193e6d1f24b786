"""Inductor's CPU weight packing on and off: what a compile costs and what a call costs each way.

With freezing, Inductor packs the frozen weights into oneDNN's layouts
(`torch._inductor.config.cpp.weight_prepack`, on by default, as vjbridge plays); a packed weight
cannot go into the key of Inductor's FX graph cache, so every compile generates its code again.
Off, the cache answers. Inductor sets its packing up once a process, at its first freezing
compile, so each setting runs in processes of its own, alternating (`--rounds`). In each: every
model is compiled and warmed by the optimized runtime (timed; the first model carries the
compiler's set-up), a second build of the same network compiled (a degradation level, a switch
back), then `--calls` calls of the first; medians and p95, and the FX graph cache's counters.

    python3 benchmarks/prepack_probe.py [--rounds 3] [--calls 200]
        [--models pix2pix-pulse,lite256,full256,realnvp-faces] [--out FILE.json]

`lite256` / `full256`: pix2pix at 256² with ngf 32 / 64 and random weights (seed 0); any other
name is a bundle.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def one_process(prepack: bool, calls: int, models: list[str]) -> dict:
    import torch
    import torch._inductor.config as inductor_config
    from torch._dynamo.utils import counters

    from bridge.generators.base import load_model
    from bridge.generators.pix2pix import Pix2Pix, Pix2PixConfig
    from bridge.runtime import Runner, demo_conditions

    inductor_config.cpp.weight_prepack = prepack

    def build(name: str):
        torch.manual_seed(0)
        if name in ("lite256", "full256"):
            return Pix2Pix(Pix2PixConfig(size=256, ngf=32 if name == "lite256" else 64)).eval()
        return load_model(name)

    def compiled(name: str, cond):
        started = time.perf_counter()
        runner = Runner(build(name), runtime="optimized", device="cpu")
        runner.warmup(cond)
        return runner, time.perf_counter() - started

    out = {}
    for name in models:
        cond = demo_conditions(build(name), count=1)
        before = dict(counters["inductor"])
        runner, first_s = compiled(name, cond)
        second, second_s = compiled(name, cond)
        del second
        cache = {k: v - before.get(k, 0) for k, v in counters["inductor"].items() if k.startswith("fxgraph")}
        ms = []
        for _ in range(calls):
            started = time.perf_counter()
            runner(cond)
            ms.append((time.perf_counter() - started) * 1e3)
        ms.sort()
        out[name] = {"compile_s": round(first_s, 2), "second_compile_s": round(second_s, 2),
                     "median_ms": round(ms[len(ms) // 2], 2), "p95_ms": round(ms[int(len(ms) * 0.95)], 2),
                     "cache": cache, "precision": runner.info.autocast or "float32"}
    return {"prepack": prepack, "threads": torch.get_num_threads(), "models": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--models", default="pix2pix-pulse,lite256,full256,realnvp-faces")
    parser.add_argument("--out", help="write the runs here (JSON)")
    parser.add_argument("--one", choices=("on", "off"), help=argparse.SUPPRESS)  # a child's setting
    args = parser.parse_args()
    models = args.models.split(",")
    if args.one:
        print("RESULT " + json.dumps(one_process(args.one == "on", args.calls, models)), flush=True)
        return
    from bridge.bench import machine_info
    runs = []
    for _ in range(args.rounds):
        for setting in ("on", "off"):
            child = subprocess.run([sys.executable, __file__, "--one", setting, "--calls", str(args.calls),
                                    "--models", args.models], capture_output=True, text=True, check=True)
            line = next(line for line in child.stdout.splitlines() if line.startswith("RESULT "))
            runs.append(json.loads(line[len("RESULT "):]))
            print(" | ".join(f"packing {setting} {name}: compile {m['compile_s']}/{m['second_compile_s']} s, "
                             f"call {m['median_ms']} ms (p95 {m['p95_ms']}), {m['cache']}"
                             for name, m in runs[-1]["models"].items()), flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"machine": machine_info("cpu"), "date": time.strftime("%Y-%m-%d"), "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
