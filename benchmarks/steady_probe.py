"""A live run past its start: the generation time, the latency, the repeats and the cores the
process keeps busy, over a window that starts once the model is compiled and its thread trial is
over. Each run is its own process (a live session from `bridge.live` on the bundled demo song, a
null output, `--threads auto`). Variants, interleaved run by run:

- `as-is`: the engine lets go of the OpenMP workers its own thread left waiting (building and
  warming the models), once at start and each second (`bridge.runtime.release_openmp_workers`),
  so libgomp's workers spin between parallel regions as it means them to (its own count,
  300,000 spins: several ms) instead of sleeping at each; the thread trial keeps fewer threads
  where they fit the frame with room to spare (`bridge.runtime.AUTO_ROOM`);
- `no-room`: as-is with the trial taking more threads wherever they are AUTO_MIN_GAIN faster;
- `short-spin`: no-room with GOMP_SPINCOUNT=20000 (about half a millisecond before a worker sleeps);
- `workers-kept`: no-room with the workers kept (the engine never lets go of them): as before the
  thirteenth session.

    python3 benchmarks/steady_probe.py [--runs 2] [--models pix2pix-pulse] [--fps 60] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("as-is", "no-room", "short-spin", "workers-kept")
SHORT_SPIN = "20000"


def _thread_cpu_s(native_id: int) -> float:
    """CPU seconds a thread of this process has used (Linux)."""
    with open(f"/proc/self/task/{native_id}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(variant: str, model: str, fps: float, duration: float, window: float) -> dict:
    import bridge.engine
    import bridge.live as live
    import bridge.runtime
    if variant != "as-is":
        bridge.runtime.AUTO_ROOM = 0.0
    if variant == "workers-kept":
        bridge.engine.release_openmp_workers = lambda: False
    settings = live.LiveSettings(model=model, audio_in=str(ROOT / "bridge/data/demo.ogg"), outs=["null"],
                                 fps=fps, threads="auto")
    seen: dict = {}
    with live.LiveSession(settings) as session:
        stats = session.engine.stats

        def runner():
            return live._lead(session.pipeline).runner

        def watch():
            started = time.perf_counter()
            while not session.settled:
                time.sleep(0.05)
            time.sleep(3.0)  # the kept count settles (oneDNN's kernels for it made again)
            seen["window_from_s"] = round(time.perf_counter() - started, 1)
            generate = next(t for t in threading.enumerate() if t.name == "vjbridge-generate").native_id
            before = (time.perf_counter(), time.process_time(), _thread_cpu_s(generate), stats.repeated,
                      stats.stalled, stats.generated)
            time.sleep(window)
            after = (time.perf_counter(), time.process_time(), _thread_cpu_s(generate), stats.repeated,
                     stats.stalled, stats.generated)
            wall = after[0] - before[0]
            summary = stats.summary()
            seen.update(
                threads=runner().status, cores_used=round((after[1] - before[1]) / wall, 2),
                generate_thread_cores=round((after[2] - before[2]) / wall, 2),
                repeated=after[3] - before[3], stalled=after[4] - before[4], generated=after[5] - before[5],
                **{k: summary[k] for k in ("generate_ms_p50", "generate_ms_p95", "latency_ms_p50", "latency_ms_p95")})
            session.engine.stop()

        threading.Thread(target=watch, daemon=True).start()
        session.run(duration=duration, status_stream=None)
    if "cores_used" not in seen:
        raise SystemExit(f"steady_probe: {model} did not settle within {duration:g} s")
    return {"variant": variant, "model": model, "fps": fps, **seen}


def variant_env(variant: str) -> dict:
    """This process's environment for a run of `variant`: libgomp's own spin count, but where the
    variant sets one."""
    env = dict(os.environ)
    env.pop("GOMP_SPINCOUNT", None)
    if variant == "short-spin":
        env["GOMP_SPINCOUNT"] = SHORT_SPIN
    return env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--models", default="pix2pix-pulse", help="bundle names or folders, comma-separated")
    p.add_argument("--fps", default="60", help="frame rates, comma-separated")
    p.add_argument("--window", type=float, default=10.0, help="seconds measured once the model settled")
    p.add_argument("--duration", type=float, default=120.0, help="the longest a run plays")
    p.add_argument("--variants", default="as-is,workers-kept", help=f"which to run, of {', '.join(VARIANTS)}")
    p.add_argument("--out", default=None, help="write the runs and a summary as JSON here")
    p.add_argument("--one", nargs=3, metavar=("VARIANT", "MODEL", "FPS"), help=argparse.SUPPRESS)  # a child
    a = p.parse_args()
    if a.one:
        print(json.dumps(one_run(a.one[0], a.one[1], float(a.one[2]), a.duration, a.window)))
        return
    from benchmarks.switch_probe import child_run
    from bridge.bench import machine_info
    variants = a.variants.split(",")
    if not set(variants) <= set(VARIANTS):
        sys.exit(f"steady_probe: --variants from {', '.join(VARIANTS)}, got {a.variants}")
    cases = [(model, fps) for model in a.models.split(",") for fps in a.fps.split(",")]
    runs = []
    for i in range(a.runs):
        for model, fps in cases:
            for variant in variants:
                run = child_run(__file__, [variant, model, fps, "--duration", str(a.duration), "--window",
                                           str(a.window)], f"run {i + 1} ({variant}, {model}, {fps} fps)",
                                timeout=600, env=variant_env(variant))
                runs.append(run)
                print(f"run {i + 1} {Path(model).name:14s} {fps:>3s} fps {variant:13s} {run['threads']}: generate "
                      f"p50 {run['generate_ms_p50']} / p95 {run['generate_ms_p95']} ms, latency p50 "
                      f"{run['latency_ms_p50']} / p95 {run['latency_ms_p95']} ms, repeated {run['repeated']} of "
                      f"{run['generated'] + run['repeated']}, cores {run['cores_used']} (generation thread "
                      f"{run['generate_thread_cores']})", flush=True)
    summary = {}
    for model, fps in cases:
        for variant in variants:
            mine = [r for r in runs if r["model"] == model and r["fps"] == float(fps) and r["variant"] == variant]
            summary[f"{Path(model).name} {fps} fps {variant}"] = {
                k: statistics.median(r[k] for r in mine)
                for k in ("generate_ms_p50", "generate_ms_p95", "latency_ms_p50", "latency_ms_p95", "repeated",
                          "cores_used", "generate_thread_cores")}
    print(json.dumps(summary, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps({"machine": machine_info("cpu"), "window_s": a.window, "runs": runs,
                                           "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
