"""How soon a live run shows its first frame, and what its first seconds cost: each run is its
own process (a live session from `bridge.live` on the bundled demo song, a null output at 30 fps,
`--threads auto`), timed from the process's start. Variants, interleaved run by run:

- `as-is`: the model plays traced from the first frame while it compiles
  (`bridge.live.PLAY_WHILE_COMPILING`), its thread trial after;
- `compile-first`: the run starts once the model is compiled (how runs started before);
- `unsettled`: as-is without `bridge.live.settle_compiler` (no tiny compile first; --variants);
- `trial-first`: as-is with --threads auto's every count compiled before the compiled runner
  takes over (`bridge.live.STAGED_TRIAL` off; --variants);
- `python-wrapper`: trial-first, with Inductor's code around the kernels in Python
  (`bridge.runtime.CPP_WRAPPER` off): how runs started before 2026-12-06's sixth session.
- `fp32-traced`: as-is with a flow's traced runner left in fp32 until its compile
  (`LiveSession._checked_precision_first` off): how runs started before the seventh session.
- `collecting`: as-is with the garbage collector's full collections made as it decides during
  the compile (`bridge.live.HOLD_FULL_COLLECTIONS` off): as before the seventh session.
- `wrapper-per-compile`: as-is with Inductor's C++ wrapper built by the C++ compiler at every
  compile (`bridge.runtime.share_wrapper_builds` off): as before the twelfth session.
- `random-settling`: as-is with the tiny network `settle_compiler` compiles given other weights
  in each process (`bridge.live.settling_network` unseeded): as before the fourteenth session.
- `compiler-first`: as-is with the compiler's modules imported as the session is made, before
  the first frame (`bridge.live.IMPORT_COMPILER_FIRST`): as before the fifteenth session.
- `isa-probed`: as-is with Inductor's vector ISA probes run in child Pythons at every start
  (`bridge.runtime.remember_isa_probes` off): as before the fifteenth session.

Marks, seconds from the process's start: the session made, the first frame, a traced runner
in low precision playing (`low_precision_traced_s`, a flow that keeps it), the compiled runner
playing (`playing_compiled_s`, with the frames repeated until then), everything compiled, and
the set settled (`settled_s`: `LiveSession.settled`, the thread trial over too).

    python3 benchmarks/start_probe.py [--runs 2] [--models pix2pix-pulse,realnvp-faces] [--out FILE.json]
"""
from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the imports: they are part of a start

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("as-is", "compile-first", "unsettled", "trial-first", "python-wrapper", "fp32-traced",
            "collecting", "wrapper-per-compile", "random-settling", "isa-probed",
            "compiler-first")


def one_run(variant: str, model: str, duration: float) -> dict:
    import bridge.live as live
    from bridge.runtime import TracedNetwork
    live.PLAY_WHILE_COMPILING = variant != "compile-first"
    if variant in ("trial-first", "python-wrapper"):
        live.STAGED_TRIAL = False
    if variant == "python-wrapper":
        import bridge.runtime
        bridge.runtime.CPP_WRAPPER = False
    if variant == "unsettled":
        live.settle_compiler = lambda device="cpu": None
    if variant == "fp32-traced":
        live.LiveSession._checked_precision_first = lambda self, name, model, pipeline: None
    if variant == "collecting":
        live.HOLD_FULL_COLLECTIONS = False
    if variant == "wrapper-per-compile":
        import bridge.runtime
        bridge.runtime.share_wrapper_builds = lambda: None
    if variant == "compiler-first":
        live.IMPORT_COMPILER_FIRST = True
    if variant == "isa-probed":
        import bridge.runtime
        bridge.runtime.remember_isa_probes = lambda: None
    if variant == "random-settling":
        seeded = live.settling_network
        live.settling_network = lambda: seeded(seed=None)
    settings = live.LiveSettings(model=model, audio_in=str(ROOT / "bridge/data/demo.ogg"), outs=["null"],
                                 fps=30, threads="auto")
    marks = {}
    full = []  # each full collection's ms (the GIL held throughout), once the session is made
    began = [0.0]

    def timed(phase, info):
        if info["generation"] == 2:
            if phase == "start":
                began[0] = time.perf_counter()
            elif "session_s" in marks:
                full.append(round((time.perf_counter() - began[0]) * 1000, 1))
    gc.callbacks.append(timed)
    with live.LiveSession(settings) as session:
        marks["session_s"] = time.perf_counter() - STARTED

        def watch():
            while session.engine.stats.generated == 0:
                time.sleep(0.002)
            marks["first_frame_s"] = time.perf_counter() - STARTED
            while isinstance(getattr(live._lead(session.pipeline).runner, "_fn", None), TracedNetwork):
                if "low_precision_traced_s" not in marks and live._lead(session.pipeline).runner.info.autocast:
                    marks["low_precision_traced_s"] = time.perf_counter() - STARTED
                    marks["repeated_until_low_precision"] = session.engine.stats.repeated
                time.sleep(0.005)
            marks["playing_compiled_s"] = time.perf_counter() - STARTED
            marks["repeated_until_compiled"] = session.engine.stats.repeated
            while session._compile_at_start or session._lock.locked():
                time.sleep(0.01)
            marks["compiled_s"] = time.perf_counter() - STARTED
            while not session.settled:
                time.sleep(0.01)
            marks["settled_s"] = time.perf_counter() - STARTED
        threading.Thread(target=watch, daemon=True).start()
        stats = session.run(duration=duration, status_stream=None)
    gc.callbacks.remove(timed)
    return {"variant": variant, "model": model, **{k: round(v, 2) for k, v in marks.items()},
            "full_collections_ms": full,
            **{k: stats.get(k) for k in ("sent", "repeated", "stalled", "errors", "latency_ms_p95")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--models", default="pix2pix-pulse,cvae-faces,realnvp-faces")
    p.add_argument("--duration", type=float, default=20.0, help="seconds each run plays")
    p.add_argument("--variants", default="as-is,compile-first", help=f"which to run, of {', '.join(VARIANTS)}")
    p.add_argument("--out", default=None, help="write the runs and a summary as JSON here")
    p.add_argument("--one", nargs=2, metavar=("VARIANT", "MODEL"), help=argparse.SUPPRESS)  # a child
    a = p.parse_args()
    if a.one:
        print(json.dumps(one_run(a.one[0], a.one[1], a.duration)))
        return
    from benchmarks.switch_probe import child_run
    from bridge.bench import machine_info
    variants = a.variants.split(",")
    if not set(variants) <= set(VARIANTS):
        sys.exit(f"start_probe: --variants from {', '.join(VARIANTS)}, got {a.variants}")
    runs = []
    for i in range(a.runs):
        for model in a.models.split(","):
            for variant in variants:
                run = child_run(__file__, [variant, model, "--duration", str(a.duration)],
                                f"run {i + 1} ({variant}, {model})")
                runs.append(run)
                low = (f"low precision traced {run['low_precision_traced_s']} s (repeated "
                       f"{run['repeated_until_low_precision']}), " if "low_precision_traced_s" in run else "")
                print(f"run {i + 1} {model:14s} {variant:13s} first frame {run.get('first_frame_s')} s, {low}compiled "
                      f"playing {run.get('playing_compiled_s')} s (repeated {run.get('repeated_until_compiled')} "
                      f"until then), all {run.get('compiled_s')} s, settled {run.get('settled_s')} s; "
                      f"{a.duration:g} s: repeated {run['repeated']}, stalled {run['stalled']}, errors {run['errors']}; "
                      f"full collections (ms) {run['full_collections_ms']}", flush=True)
    summary = {}
    for model in a.models.split(","):
        for variant in variants:
            mine = [r for r in runs if r["model"] == model and r["variant"] == variant]
            summary[f"{model} {variant}"] = {k: statistics.median(r[k] for r in mine)
                                             for k in ("first_frame_s", "low_precision_traced_s",
                                                       "repeated_until_low_precision", "playing_compiled_s",
                                                       "compiled_s", "settled_s", "repeated_until_compiled", "repeated",
                                                       "stalled")
                                             if all(k in r for r in mine)}
    print(json.dumps(summary, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps({"machine": machine_info("cpu"), "duration_s": a.duration,
                                           "runs": runs, "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
