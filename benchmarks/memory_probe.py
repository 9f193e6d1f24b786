"""A long set's cold switches: does the bridge's memory stay put, and does every model it switches
to still play compiled? Each run is its own process: a live session from `bridge.live` (the
bundled demo song as line-in, a null output at 30 fps, `--threads auto`, `--keep-warm 0`, so
every switch loads, traces and compiles its model, `--degrade auto` unless told: four levels, each
its own network), switching between two bundled models, each
switch waiting until the model is compiled. After each: the process's resident memory, and how
many of the playing model's levels run compiled. Variants:

- `as-is`: each compiled runner compiles its own copy of `generate` and what the ones gone left is
  let go of (`bridge.runtime._own_entry`, `_let_go_of_compiled`); a network is traced once and its
  trace shared by its later builds (`bridge.runtime.TracedNetwork`);
- `shared`: every runner compiled the class's own `generate`, nothing let go, every build traced
  anew (how it ran before).

    python3 benchmarks/memory_probe.py [--switches 20] [--models pix2pix-pulse,cvae-faces] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.switch_probe import child_run  # noqa: E402

VARIANTS = ("as-is", "shared")


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:  # Linux: pages resident
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def compiled_levels(pipeline) -> int:
    """Levels whose compiled runner has really compiled (a cache entry on its code), not run eager."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list
    count = 0
    for runner in pipeline.level_runners:
        for arm in getattr(runner, "candidates", [runner]):
            arm = getattr(arm, "runner", arm)
            code = getattr(arm, "_own_code", None)
            if code is not None and _debug_get_cache_entry_list(code):
                count += 1
                break
    return count


def one_run(variant: str, switches: int, models: list[str], degrade: str) -> dict:
    import bridge.live as live
    import bridge.runtime as runtime
    if variant == "shared":
        runtime._own_entry = lambda net, entry: (getattr(net, entry), getattr(type(net), entry).__code__)
        runtime._let_go_of_compiled = lambda: None
        runtime._bundle_identity = lambda net: None  # every build traced again, none shared
    settings = live.LiveSettings(model=models[0], audio_in=str(ROOT / "bridge/data/demo.ogg"), outs=["null"],
                                 fps=30, threads="auto", keep_warm=0, degrade=degrade)
    after = []
    with live.LiveSession(settings) as session:
        def switcher():
            while session._compile_at_start or session._lock.locked():
                time.sleep(0.01)
            for i in range(switches):
                name = models[(i + 1) % len(models)]
                started = time.perf_counter()
                session.switch_model(name)
                while (session.model_name != name or session._lock.locked()) and time.perf_counter() - started < 120:
                    time.sleep(0.01)
                gc.collect()
                from bridge.live import _lead
                lead = _lead(session.pipeline)
                after.append({"model": name, "rss_mb": round(resident_mb(), 1), "s": round(time.perf_counter() - started, 2),
                              "levels": len(lead.level_runners), "compiled_levels": compiled_levels(lead)})
            session.engine.stop()
        threading.Thread(target=switcher, daemon=True).start()
        stats = session.run(duration=3600, status_stream=None)
    return {"variant": variant, "switches": after,
            **{k: stats.get(k) for k in ("sent", "repeated", "stalled", "errors")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--switches", type=int, default=20)
    p.add_argument("--models", default="pix2pix-pulse,cvae-faces", help="switched between, in turn")
    p.add_argument("--degrade", default="auto", help="--degrade of the session (auto: four levels, each compiled)")
    p.add_argument("--variants", default="as-is,shared", help=f"which to run, of {', '.join(VARIANTS)}")
    p.add_argument("--out", default=None, help="write the runs and a summary as JSON here")
    p.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # a child process: one run
    a = p.parse_args()
    models = a.models.split(",")
    if a.one:
        print(json.dumps(one_run(a.one, a.switches, models, a.degrade)))
        return
    from bridge.bench import machine_info
    runs, summary = [], {}
    for variant in a.variants.split(","):
        run = child_run(__file__, [variant, "--switches", str(a.switches), "--models", a.models,
                                    "--degrade", a.degrade], variant, timeout=1800)
        runs.append(run)
        rss = [s["rss_mb"] for s in run["switches"]]
        eager = [i + 1 for i, s in enumerate(run["switches"]) if s["compiled_levels"] < s["levels"]]
        half = len(rss) // 2
        summary[variant] = {"rss_mb_after_first": rss[0], "rss_mb_after_last": rss[-1],
                            "mb_per_switch_second_half": round((rss[-1] - rss[half - 1]) / (len(rss) - half), 1),
                            "switches_with_levels_eager": eager}
        print(f"{variant:7s} resident {rss[0]:.0f} MB after switch 1, {rss[-1]:.0f} MB after {len(rss)} "
              f"({summary[variant]['mb_per_switch_second_half']:+.1f} MB a switch over the second half); "
              f"levels eager after switches {eager or 'none'}; repeated {run['repeated']} of {run['sent']}",
              flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"machine": machine_info("cpu"), "models": models, "degrade": a.degrade, "runs": runs,
                                           "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
