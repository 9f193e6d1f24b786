"""Model switches mid-set: how long until the new model shows (`swap_s`), how long until it
plays compiled (`ready_s`), and how many frames go out again (late pictures) meanwhile. Each run
is its own process (a live session from `bridge.live`, the bundled demo song as line-in, a null
output at 30 fps): pix2pix-pulse plays, then a switch to cvae-faces and one back, timed from when
the model the run started with is compiled (counts too). Variants are interleaved run by run, so a
busy moment on a shared machine hits all:

- `as-is`: the switch as the bridge does it: a cold model plays eager at once while it
  compiles (`bridge.live.PLAY_WHILE_COMPILING`); the switch back finds pix2pix-pulse kept warm;
- `compile-first`: the switch waits for the compiled model (how switches ran before);
- `keep-warm-0`: as-is, but every switch loads its model (`--keep-warm 0`);
- `gil-5ms`: keep-warm-0 and compile-first, with the GIL's switch interval left at Python's
  5 ms during the build (how switches ran before `bridge.live.playing_thread_first`; --variants);
- `unsettled`: keep-warm-0 without `bridge.live.settle_compiler` (the compiler's lasting objects
  left in the garbage collector's sight, as before it; --variants);
- `python-wrapper`: keep-warm-0 with Inductor's code around the kernels in Python, which takes
  the GIL back after every extern kernel (`bridge.runtime.CPP_WRAPPER` off, as before 2026-12-06's
  sixth session; --variants);
- `fp32-traced`: keep-warm-0 with a flow played traced in fp32 until it is compiled
  (`LiveSession._checked_precision_first` off, as before the seventh session; --variants);
- `collecting`: keep-warm-0 with the garbage collector's full collections made as it decides
  during a compile (`bridge.live.HOLD_FULL_COLLECTIONS` off, as before the seventh session;
  --variants);
- `wrapper-per-compile`: keep-warm-0 with Inductor's C++ wrapper built by the C++ compiler at
  every compile (`bridge.runtime.share_wrapper_builds` off, as before the twelfth session;
  --variants);
- `collected-at-end`: keep-warm-0 with what the compiles of a switch left collected once, when
  they are all over (`bridge.live.COLLECT_BETWEEN_COMPILES` off, as before the eighteenth
  session; --variants).

Each switch also reports its lost output ticks (`stalled`), the full garbage collections
(`gen2_ms`, each one's pause) and the longest wait between two frames sent (`longest_gap_ms`)
from the switch until a second after its compile.

    python3 benchmarks/switch_probe.py [--runs 3] [--threads auto] [--degrade auto] [--fps 30] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("as-is", "compile-first", "keep-warm-0", "gil-5ms", "unsettled", "python-wrapper", "fp32-traced",
            "collecting", "wrapper-per-compile", "collected-at-end")


def child_run(script: str, args: list[str], label: str, timeout: float = 300, env: dict | None = None) -> dict:
    """One run of `script --one ...` in its own process (in `env`, else this one's environment):
    the JSON it prints last (exits on failure)."""
    child = subprocess.run([sys.executable, script, "--one", *args], capture_output=True, text=True,
                           cwd=ROOT, timeout=timeout, env=env)
    if child.returncode != 0:
        sys.exit(f"{Path(script).stem}: {label} failed:\n{child.stderr[-2000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def one_run(variant: str, threads: str, duration: float, at: list[float], models: list[str],
            degrade: str = "off", fps: float = 30) -> dict:
    """One live session in this process; the switches made from a side thread, as OSC would."""
    import bridge.live as live
    if variant == "gil-5ms":
        live.playing_thread_first = contextlib.nullcontext
    if variant in ("compile-first", "gil-5ms"):
        live.PLAY_WHILE_COMPILING = False
    if variant == "unsettled":
        live.settle_compiler = lambda device="cpu": None
    if variant == "python-wrapper":
        import bridge.runtime
        bridge.runtime.CPP_WRAPPER = False
    if variant == "fp32-traced":
        live.LiveSession._checked_precision_first = lambda self, name, model, pipeline: None
    if variant == "collecting":
        live.HOLD_FULL_COLLECTIONS = False
    if variant == "wrapper-per-compile":
        import bridge.runtime
        bridge.runtime.share_wrapper_builds = lambda: None
    if variant == "collected-at-end":
        live.COLLECT_BETWEEN_COMPILES = False
    from bridge.sinks.null import NullSink
    sent, send = [], NullSink._send

    def timed_send(self, *args, **kwargs):  # when each frame went out
        sent.append(time.perf_counter())
        return send(self, *args, **kwargs)
    NullSink._send = timed_send
    settings = live.LiveSettings(model="pix2pix-pulse", audio_in=str(ROOT / "bridge/data/demo.ogg"),
                                 outs=["null"], fps=fps, threads=threads, degrade=degrade,
                                 keep_warm=0 if variant in ("keep-warm-0", "gil-5ms", "unsettled", "python-wrapper",
                                                             "fp32-traced", "collecting", "wrapper-per-compile",
                                                             "collected-at-end")
                                 else 2)
    switches, base, collections, began = [], {}, [], [0.0]

    def timed(phase, info):  # full collections: (when, ms)
        if phase == "start":
            began[0] = time.perf_counter()
        elif info["generation"] == 2:
            collections.append((began[0], round((time.perf_counter() - began[0]) * 1000, 1)))
    gc.callbacks.append(timed)
    with live.LiveSession(settings) as session:
        def switcher():
            # from when the model the run started with is compiled (it compiles as it plays, and
            # a switch asked meanwhile would wait for that): the run's figures count from then
            while session._compile_at_start or session._lock.locked():
                time.sleep(0.005)
            stats = session.engine.stats
            base.update(sent=stats.sent, repeated=stats.repeated, stalled=stats.stalled)
            start = time.perf_counter()
            for when, name in zip(at, models):
                time.sleep(max(0.0, when - (time.perf_counter() - start)))
                before, stalled, t = stats.repeated, stats.stalled, time.perf_counter()
                session.switch_model(name)
                while session.model_name != name and time.perf_counter() - t < 60:
                    time.sleep(0.005)
                swapped = time.perf_counter() - t
                while session._lock.locked() and time.perf_counter() - t < 60:  # compiling it still
                    time.sleep(0.005)
                ready, building = time.perf_counter() - t, stats.repeated - before
                time.sleep(1.0)  # the new model's first compiled frames, on the playing thread
                times = [when for when in sent if when >= t]
                switches.append({"model": name, "swap_s": round(swapped, 2), "ready_s": round(ready, 2),
                                 "repeated_building": building,
                                 "repeated_first_second": stats.repeated - before - building,
                                 "stalled": stats.stalled - stalled,
                                 "gen2_ms": [ms for when, ms in collections if when >= t],
                                 "longest_gap_ms": round(max((b - a for a, b in zip(times, times[1:])),
                                                             default=0.0) * 1000, 1)})
            time.sleep(max(0.0, duration - (time.perf_counter() - start)))
            session.engine.stop()
        threading.Thread(target=switcher, daemon=True).start()
        stats = session.run(duration=duration + 60, status_stream=None)
    return {"variant": variant, "switches": switches,
            **{k: stats.get(k) - base.get(k, 0) for k in ("sent", "repeated", "stalled")},
            **{k: stats.get(k) for k in ("generate_ms_p50", "latency_ms_p95")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", default="auto")
    p.add_argument("--degrade", default="off", help="the run's --degrade (auto: each model compiles at every level)")
    p.add_argument("--fps", type=float, default=30)
    p.add_argument("--duration", type=float, default=16.0)
    p.add_argument("--at", default="3,9", help="seconds into the run of each switch")
    p.add_argument("--models", default="cvae-faces,pix2pix-pulse", help="switched to, in order")
    p.add_argument("--variants", default="as-is,compile-first,keep-warm-0",
                   help=f"which to run, of {', '.join(VARIANTS)}")
    p.add_argument("--out", default=None, help="write the runs and a summary as JSON here")
    p.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # a child process: one run
    a = p.parse_args()
    at, models = [float(x) for x in a.at.split(",")], a.models.split(",")
    variants = a.variants.split(",")
    if not set(variants) <= set(VARIANTS):
        sys.exit(f"switch_probe: --variants from {', '.join(VARIANTS)}, got {a.variants}")
    if a.one:
        print(json.dumps(one_run(a.one, a.threads, a.duration, at, models, a.degrade, a.fps)))
        return
    from bridge.bench import machine_info
    runs = []
    for i in range(a.runs):
        for variant in variants:
            run = child_run(__file__, [variant, "--threads", a.threads, "--duration", str(a.duration), "--at", a.at,
                                       "--degrade", a.degrade, "--fps", str(a.fps),
                                       "--models", a.models, "--variants", a.variants], f"run {i + 1} ({variant})")
            runs.append(run)
            print(f"run {i + 1} {variant:13s} repeated {run['repeated']:4d} of {run['sent']} sent; switches "
                  + ", ".join(f"{s['model']} {s['swap_s']} s (compiled {s['ready_s']} s), "
                              f"{s['repeated_building']}+{s['repeated_first_second']}"
                              for s in run["switches"]), flush=True)
    summary = {}
    for variant in variants:
        mine = [r for r in runs if r["variant"] == variant]
        per_switch = [s["repeated_building"] + s["repeated_first_second"] for r in mine for s in r["switches"]]
        summary[variant] = {"repeated_per_run_median": statistics.median(r["repeated"] for r in mine),
                            "repeated_per_switch_median": statistics.median(per_switch),
                            "swap_s_median": round(statistics.median(s["swap_s"] for r in mine for s in r["switches"]), 2),
                            "ready_s_median": round(statistics.median(s["ready_s"] for r in mine for s in r["switches"]), 2),
                            "stalled_in_switches": sum(s.get("stalled", 0) for r in mine for s in r["switches"]),
                            "gen2_ms_in_switches": sorted(ms for r in mine for s in r["switches"] for ms in s["gen2_ms"]),
                            "longest_gaps_ms": sorted(s["longest_gap_ms"] for r in mine for s in r["switches"])}
        print(f"{variant:13s} median repeats per run {summary[variant]['repeated_per_run_median']}, per switch "
              f"{summary[variant]['repeated_per_switch_median']}, switch {summary[variant]['swap_s_median']} s, "
              f"compiled {summary[variant]['ready_s_median']} s; stalled in switches "
              f"{summary[variant]['stalled_in_switches']}, full collections {summary[variant]['gen2_ms_in_switches']} ms, "
              f"longest waits between frames {summary[variant]['longest_gaps_ms']} ms")
    if a.out:
        Path(a.out).write_text(json.dumps({"machine": machine_info("cpu"), "threads": a.threads, "at": at,
                                           "degrade": a.degrade, "fps": a.fps,
                                           "models": models, "duration_s": a.duration, "runs": runs,
                                           "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
