"""A machine that cannot compile (Windows outside MSVC's prompt, a Linux box without g++, CUDA
without Triton): the optimized runtime plays its network uncompiled from the first frame (the
fastest of traced fp32, ONNX Runtime fp32 and traced bf16, timed as it warms up), says once why
and what to install, and never tries a compile that would fail. Each case runs in a process
of its own whose C++ compiler (`CXX`, which Inductor reads at import) is missing or broken: the
verdict is asked once per process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.runtime import AUTO_MIN_GAIN, COMPILER_HINTS, compiler_missing, cpu_has_native_bf16

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "bridge" / "data" / "demo.ogg"
HINT = COMPILER_HINTS["linux" if sys.platform.startswith("linux") else sys.platform]  # what to install here

RUNNER_SCRIPT = """
import json, torch
from bridge.generators.base import load_model
from bridge.runtime import Runner, compiler_missing, example_inputs


def ways(r):
    calls = getattr(r._fn, "_calls", {})  # a traced network's traces, by input structure and precision
    return {"ms": r.info.uncompiled_ms, "network": r.info.network, "autocast": r.info.autocast,
            "note": r.info.note, "status": r.status, "traces": sorted({str(key[1]) for key in calls})}


model = load_model("cvae-faces")
cond, latent = example_inputs(model)
runner = Runner(model, compile=True)
runner.warmup(cond, latent, runs=1)
plain = Runner(model, compile=False)  # what a live run plays while compiling: the same trace,
plain._autocast = runner._autocast  # in the precision the runner's warm-up kept
later = Runner(model, compile=True)  # a switch, a level, a thread trial's other count
later.warmup(cond, latent, runs=1)
mirror = load_model("vae-mirror")  # traced, its casts cost more than its small convolutions gain
mirror_runner = Runner(mirror, compile=True)
mirror_runner.warmup(*example_inputs(mirror), runs=1)
out = {"missing": compiler_missing("cpu"), "compiled": runner.info.compiled, "note": runner.info.note,
       "same": float((runner(cond, latent) - plain(cond, latent)).abs().max()),
       "later_compiled": later.info.compiled, "later_note": later.info.note,
       "ways": [ways(r) for r in (runner, later, mirror_runner)]}
print("RESULT " + json.dumps(out))
"""


def _env(tmp_path, cxx: str) -> dict:
    return {**os.environ, "CXX": cxx, "VJBRIDGE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}


def _runner_result(tmp_path, cxx: str) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", RUNNER_SCRIPT], env=_env(tmp_path, cxx), capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return _result(done.stdout), done.stderr


def _each_plays_the_fastest_way(result: dict) -> None:
    """Each runner without a compile timed the ways it can run at warm-up (traced fp32, ONNX
    Runtime fp32, traced bf16 where the CPU has it) and plays the one its own times chose, in
    that order of preference, each later one only if AUTO_MIN_GAIN faster; what it did not keep
    is let go. The test set-up installs onnxruntime, so it is always a way here."""
    for way in result["ways"]:
        ms = way["ms"]
        wanted = ["traced fp32", "onnxruntime fp32"] + (["traced bfloat16"] if cpu_has_native_bf16() else [])
        assert list(ms) == wanted and min(ms.values()) > 0, way
        best = wanted[0]
        for label in wanted[1:]:
            if ms[best] >= AUTO_MIN_GAIN * ms[label]:
                best = label
        assert f"{best} kept (" in way["note"], way
        if best == "onnxruntime fp32":
            assert way["network"] == "onnxruntime" and way["autocast"] is None and not way["traces"], way
            assert way["status"] == "optimized, not compiled, onnxruntime", way
        else:
            precision = best.split()[1]
            assert way["network"] == "traced" and way["autocast"] == (None if precision == "fp32" else precision)
            assert way["traces"] == ["None" if precision == "fp32" else f"torch.{precision}"], way
            assert way["status"] == "optimized, not compiled", way
    cvae = result["ways"][0]  # the very network a live run plays while compiling, in the same precision
    assert result["same"] == 0.0 if cvae["network"] == "traced" else result["same"] < 1e-4, result


def _result(stdout: str) -> dict:
    """What a script printed as `RESULT {json}`."""
    line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.mark.skipif(sys.platform == "win32", reason="MSVC is not installed by setup.ps1")
def test_this_machine_compiles():
    """The check itself: setup.sh installs g++ (macOS: Xcode's clang++), so nothing is missing."""
    assert compiler_missing("cpu") is None


def test_without_a_compiler_a_runner_is_traced_at_once_and_says_what_to_install(tmp_path):
    result, stderr = _runner_result(tmp_path, "/nonexistent/g++")
    assert result["missing"] and HINT in result["missing"], result
    assert not result["compiled"] and not result["later_compiled"], result
    assert result["note"].startswith("not compiled: no C++ compiler")
    assert result["later_note"].split("; ")[0] == result["note"].split("; ")[0]
    _each_plays_the_fastest_way(result)
    said = [x for x in stderr.splitlines() if "models play uncompiled" in x]
    assert len(said) == 1 and HINT in said[0], stderr[-3000:]  # once, for both runners
    assert "torch.compile failed" not in stderr  # no compile was tried


@pytest.mark.skipif(sys.platform == "win32", reason="/bin/true stands in for a broken compiler")
def test_a_compiler_that_fails_leaves_the_network_traced_and_says_why(tmp_path):
    # /bin/true answers --version (the check passes) and makes nothing: Inductor's build fails
    result, stderr = _runner_result(tmp_path, "/bin/true")
    assert result["missing"].startswith("torch.compile failed (")  # told after the first failure
    assert not result["later_compiled"] and result["later_note"].startswith("not compiled: torch.compile failed")
    assert not result["compiled"], result
    assert "torch.compile failed (" in result["note"] and "); playing traced" in result["note"]
    _each_plays_the_fastest_way(result)
    assert stderr.count("torch.compile failed") == 1, stderr[-3000:]  # the later runner tried nothing


def test_a_live_run_without_a_compiler_plays_traced_from_the_first_frame_without_compiling(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bridge", "run", "--model", "pix2pix-pulse", "--audio-in", str(DEMO),
                           "--out", "null", "--duration", "5"], env=_env(tmp_path, "/nonexistent/g++"),
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    lines = done.stderr.replace("\r", "\n").splitlines()
    said = [x for x in lines if "WARNING" in x]
    assert len(said) == 1 and "models play uncompiled" in said[0] and HINT in said[0], said
    status = [x for x in lines if x.startswith("fps ")]
    assert status and not any("compiling" in x for x in status), status[:3]
    assert "optimized, not compiled" in status[-1]
    assert summary["errors"] == 0 and summary["stalled"] == 0
    assert summary["generated"] >= 0.9 * summary["sent"], summary  # a compile would have held frames back
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.so"))


SWITCH_SCRIPT = """
import json, threading, time
from bridge.live import LiveSession, LiveSettings
from bridge.runtime import AutoRunner
settings = LiveSettings(model="cvae-faces", audio_in="silence", outs=["null"], fps=30)
seen = {}
with LiveSession(settings) as session:
    out = {}
    run = threading.Thread(target=lambda: out.update(session.run(duration=7, status_stream=None)))
    run.start()
    time.sleep(1.5)
    session.switch_model("vae-mirror")
    deadline = time.time() + 6
    while time.time() < deadline and not (session.model_name == "vae-mirror" and "live calls" in
                                          (session.pipeline.runner.info.note or "")):
        seen["trial"] = seen.get("trial") or isinstance(session.pipeline.runner, AutoRunner)
        time.sleep(0.05)
    seen.update(model=session.model_name, status=session._runner_status(), note=session.pipeline.runner.info.note)
    run.join()
print("RESULT " + json.dumps({**seen, "stats": out}))
"""


def test_a_switch_without_a_compiler_plays_traced_at_once_and_tries_the_thread_counts(tmp_path):
    """Traced, a thread count costs no compile: a model switched to mid-set gets the trial of
    counts the start had (compiled, a switch gets every core and no trial)."""
    done = subprocess.run([sys.executable, "-c", SWITCH_SCRIPT], env=_env(tmp_path, "/nonexistent/g++"),
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = _result(done.stdout)
    assert result["model"] == "vae-mirror" and result["trial"], result
    assert "live calls: 1 thread" in result["note"] and "not compiled: no C++ compiler" in result["note"], result
    assert "not compiled" in result["status"] and "compiling" not in result["status"], result
    assert result["stats"]["errors"] == 0 and result["stats"]["stalled"] == 0, result
    assert "torch.compile failed" not in done.stderr


def test_doctor_says_what_to_install_and_still_passes(tmp_path):
    """Two doctors at once: no compiler, and one that answers but cannot build (the doctor
    compiles a tiny function to find that out). This machine's own: tests/test_cli.py."""
    envs = {"missing": _env(tmp_path, "/nonexistent/g++")}
    if sys.platform != "win32":
        envs["broken"] = _env(tmp_path, "/bin/true")
    doctors = {k: subprocess.Popen([sys.executable, "-m", "bridge", "doctor"], env=env, cwd=ROOT, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE) for k, env in envs.items()}
    done = {k: (p.communicate(timeout=180)[0], p.returncode) for k, p in doctors.items()}
    line = {k: next(x for x in out.splitlines() if "torch.compile (CPU)" in x) for k, (out, _) in done.items()}
    assert line["missing"].startswith("FAIL optional") and HINT in line["missing"], line
    if "broken" in line:
        assert line["broken"].startswith("FAIL optional torch.compile (CPU): a test compile failed ("), line
    # optional: a missing compiler fails nothing (the bundles load, so both pass)
    assert {code for _, code in done.values()} == {0}, done


def test_bench_says_its_optimized_rows_are_uncompiled_and_how_they_ran(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "bridge", "bench", "--models", "cvae-faces", "--iterations", "5",
                           "--out", str(out)], env=_env(tmp_path, "/nonexistent/g++"), capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["runtime"]: r for r in json.loads(out.read_text())["results"]}
    optimized = rows["optimized"]
    assert optimized["compiled"] is False and HINT in optimized["note"]
    assert optimized["network"] in ("traced", "onnxruntime") and f"{AUTO_MIN_GAIN:g}x faster)" in optimized["note"]
    assert (optimized["autocast"] is None) == (optimized["network"] == "onnxruntime" or "traced fp32 kept" in optimized["note"])
    line = next(x for x in done.stdout.splitlines() if " optimized " in x)
    assert line.endswith(f", {optimized['network']} (not compiled)"), line
    assert "not compiled" not in next(x for x in done.stdout.splitlines() if " reference " in x)
