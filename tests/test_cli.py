"""The `vjbridge` command as a user types it: render, models, devices, doctor, bench, errors."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from bridge.analysis import REPRESENTATIONS
from bridge.bench import BenchCase, format_table, run_bench
from bridge.cli import main
from bridge.generators.base import save_bundle
from bridge.generators.pix2pix import Pix2Pix, Pix2PixConfig

AMEN = "/usr/share/sonic-pi/samples/loop_amen.flac"  # 1.75 s


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.setenv("VJBRIDGE_MODELS", str(tmp_path / "models"))
    torch.manual_seed(0)
    save_bundle(Pix2Pix(Pix2PixConfig(size=32, ngf=4, input="bands")), tmp_path / "models" / "tiny")
    return tmp_path / "models"


def probe(path):
    with av.open(str(path)) as c:
        video = c.streams.video[0]
        audio = c.streams.audio[0]
        frames = sum(1 for _ in c.decode(video))
        return {"frames": frames, "width": video.codec_context.width, "has_audio": audio is not None,
                "audio_rate": audio.rate, "duration": float(c.duration) / av.time_base}


def test_render_writes_music_length_mp4_with_audio(models, tmp_path, capsys):
    out = tmp_path / "amen.mp4"
    assert main(["render", AMEN, "--model", "tiny", "--out", str(out), "--fps", "30"]) == 0
    summary = json.loads(capsys.readouterr().out)
    with av.open(AMEN) as c:
        music = float(c.duration) / av.time_base
    info = probe(out)
    assert info["frames"] == summary["frames"] == int(np.ceil(music * 30))
    assert info["width"] == 32 and info["has_audio"] and info["audio_rate"] == 44100
    assert abs(info["duration"] - music) < 0.1


def test_render_is_deterministic(models, tmp_path):
    from bridge.generators.base import load_model
    from bridge.render import render
    frames = [[], []]
    for k in range(2):
        render(load_model("tiny"), AMEN, tmp_path / f"r{k}.mp4", seconds=1.0, progress=False,
               on_frame=lambda i, f, s, k=k: frames[k].append(f.copy()))
    assert len(frames[0]) == 30
    assert all(np.array_equal(a, b) for a, b in zip(*frames))


def test_unreadable_audio_is_one_line_with_path(models, tmp_path, capsys):
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(os.urandom(4000))
    assert main(["render", str(bad), "--model", "tiny", "--out", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err


def test_missing_model_is_one_line_listing_models(models, capsys):
    assert main(["render", AMEN, "--model", "nope", "--out", "x.mp4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and "tiny" in err


def test_unknown_audio_device_lists_the_devices(models, capsys):
    assert main(["run", "--model", "tiny", "--audio-in", "No Such Mixer 9000", "--out", "null",
                 "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert "No Such Mixer 9000" in err and "inputs:" in err


@pytest.mark.other_os
@pytest.mark.skipif(sys.platform == "win32", reason="Spout works on Windows")
def test_spout_elsewhere_says_what_to_use(models, capsys):
    assert main(["run", "--model", "tiny", "--audio-in", "silence", "--out", "spout",
                 "--duration", "1"]) == 2
    assert "Spout needs Windows; try --out ndi" in capsys.readouterr().err


def test_models_lists_bundles(models, capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {r["name"]: r for r in rows}
    assert names["tiny"]["family"] == "pix2pix" and names["tiny"]["config"]["input"] == "bands"
    assert "input bands, 32²" in names["tiny"]["summary"]
    assert "pix2pix-pulse" in names  # the bundled default


def test_devices_and_doctor_run_on_a_machine_without_devices(capsys):
    assert main(["devices", "--json"]) == 0
    devices = json.loads(capsys.readouterr().out)
    assert "audio inputs" in devices and "cameras" in devices and "NDI sources" in devices
    code = main(["doctor"])
    out = capsys.readouterr().out
    assert "torch" in out and "Spout" in out
    assert code in (0, 1)
    # setup.sh installs g++: the doctor finds it and compiles with it (tests/test_no_compiler.py: without)
    compiled = next(line for line in out.splitlines() if "torch.compile (CPU)" in line)
    assert compiled.startswith("ok   optional torch.compile (CPU): models play compiled; kernels kept in ")
    folder, size = re.fullmatch(r".*kernels kept in (.+) \((\d+) MB.*\)", compiled).groups()
    assert Path(folder).is_dir() and int(size) > 0  # the doctor's own test compile went there
    import onnx
    import onnxruntime  # the test set-up installs vjbridge[export]
    assert f"ok   optional ONNX Runtime: onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}" in out.splitlines()
    if not torch.cuda.is_available():
        assert "torch.compile (CUDA)" not in out


@pytest.mark.parametrize("command", ["run", "render", "demo", "devices", "models", "doctor", "bench",
                                     "dataset", "train"])
def test_help_everywhere(command):
    result = subprocess.run([sys.executable, "-m", "bridge", command, "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "usage: vjbridge" in result.stdout


def test_bench_json_shape():
    case = BenchCase("pix2pix", "pix2pix-tiny", 32, lambda: Pix2Pix(Pix2PixConfig(size=32, ngf=4)))
    report = run_bench([case], iterations=3, warmup=1)
    assert {"platform", "cpu", "torch"} <= set(report["machine"])
    rows = report["results"]
    assert [r["runtime"] for r in rows] == ["reference", "optimized"]
    for r in rows:
        assert {"family", "model", "params_m", "size", "device", "runtime", "fps_p50", "ms_p50"} <= set(r)
        assert r["fps_p50"] == pytest.approx(1000 / r["ms_p50"], rel=0.01)
    assert rows[1]["speedup_vs_reference"] > 0
    assert all(r["ms_p95"] >= r["ms_p50"] and r["peak_rss_mb"] > 0 for r in rows)


def test_bench_times_the_users_own_bundles_in_each_live_mode_and_says_what_rate_they_hold(models, capsys):
    from bridge.bench import FRAME_RATES
    from bridge.generators.vae_associator import VAEAssociator, VAEAssociatorConfig
    torch.manual_seed(1)
    save_bundle(VAEAssociator(VAEAssociatorConfig(image_size=16, image_widths=(4, 8), image_bottleneck=2,
                                                  image_latent=8, sound_latent=8, sound_hidden=(16,),
                                                  associator_hidden=8, associator_latent=4)), models / "mirror")
    assert main(["bench", "--models", f"tiny,{models / 'mirror'}", "--iterations", "3", "--no-int8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["results"]
    mirror = str(models / "mirror")
    assert [(r["model"], r["size"], r["runtime"]) for r in rows] == [
        (name, size, runtime) for name, size in [("tiny", 32), (f"{mirror} (camera)", 16), (f"{mirror} (sound)", 16),
                                                 (f"{mirror} (both)", 16)]
        for runtime in ("reference", "optimized")]
    assert all(r["bundle"] for r in rows) and {r["family"] for r in rows} == {"pix2pix", "vae_associator"}
    assert "sound" not in report and "analysis" not in report  # --models alone: those bundles only
    for r in rows:  # the highest common rate whose frame its 95th percentile fits, with the 10 % margin
        fits = [fps for fps in FRAME_RATES if r["ms_p95"] <= 0.9 * 1000.0 / fps]
        assert r["holds_fps"] == (max(fits) if fits else None)
    table = format_table(report)  # as the table prints it: the rate in its own column
    assert table.splitlines()[0].split()[-2] == "holds"
    assert [line.split()[-3:-1] for line in table.splitlines()[1:3]] == [
        ([f"{r['holds_fps']}", "fps"] if r["holds_fps"] else ["<24", "fps"]) for r in rows[:2]]

    assert main(["bench", "--models", "tiny,nope"]) == 2  # checked before anything is timed
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "model 'nope' not found" in err


def test_bench_measures_the_analysis_and_plots(tmp_path):
    from bridge.bench import measure_analysis, plot

    analysis = measure_analysis(seconds=2.0)
    assert analysis["hops"] > 100 and 0 < analysis["ms_per_hop_p50"] <= analysis["ms_per_hop_p95"]
    pictures = run_bench([], iterations=3, sound=False, pictures=(64, 128))["pictures"]
    assert {(r["model"], r["size"]) for r in pictures} == {(n, s) for n in REPRESENTATIONS for s in (64, 128)}
    assert all(0 < r["ms_p50"] <= r["ms_p95"] for r in pictures)
    case = BenchCase("pix2pix", "pix2pix-tiny", 32, lambda: Pix2Pix(Pix2PixConfig(size=32, ngf=4)))
    report = run_bench([case], iterations=2, warmup=1)
    plot(report, tmp_path / "bench.png")
    from PIL import Image
    with Image.open(tmp_path / "bench.png") as picture:
        assert picture.size[0] > 300 and len(set(picture.convert("L").getdata())) > 10


def test_render_an_image_input_model_from_a_video(tmp_path, monkeypatch, capsys):
    """A camera-style model rendered offline: each output frame comes from the video frame at
    that time, and the result follows the video (testsrc moves)."""
    from tests.helpers.streams import make_test_video
    monkeypatch.setenv("VJBRIDGE_MODELS", str(tmp_path / "models"))
    torch.manual_seed(0)
    save_bundle(Pix2Pix(Pix2PixConfig(size=32, ngf=4, input="image")), tmp_path / "models" / "cam")
    moving = make_test_video(tmp_path / "moving.mp4", seconds=2.0)
    still = tmp_path / "still.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "color=c=orange:size=160x120:rate=25:duration=2", "-pix_fmt", "yuv420p",
                    str(still)], check=True, timeout=30)
    change = {}
    for name, video in (("moving", moving), ("still", still)):
        out = tmp_path / f"{name}-out.mp4"
        assert main(["render", AMEN, "--video", str(video), "--model", "cam", "--out", str(out)]) == 0
        with av.open(str(out)) as c:
            frames = [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(c.streams.video[0])]
        assert len(frames) == int(np.ceil(1.75 * 30))
        change[name] = np.mean([np.abs(a - b).mean() for a, b in zip(frames, frames[1:])])
    assert change["still"] < 0.05 < change["moving"]  # the picture follows the video, not the audio
    out = tmp_path / "none.mp4"
    # without a video it says what the model needs
    assert main(["render", AMEN, "--model", "cam", "--out", str(out)]) == 2
    assert "--video" in capsys.readouterr().err


def test_vjbridge_command_keeps_numpy_to_one_blas_thread():
    """numpy's small products (the audio pictures' resizes) must not spread over every core and
    fight torch's threads; a value the user sets still wins."""
    probe = ("import bridge.cli, threadpoolctl; "
             "print(max(i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas'))")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    ours = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout.split() == ["1"]
    theirs = subprocess.run([sys.executable, "-c", probe], env=dict(env, OPENBLAS_NUM_THREADS="2"),
                            capture_output=True, text=True, timeout=60)
    assert theirs.stdout.split() == ["2"], theirs.stderr


def test_vjbridge_command_reuses_freed_big_buffers():
    """A frame's multi-megabyte arrays (a 512² picture, the RGBA frame) are served from memory the
    process already has, not mapped afresh and faulted in page by page every frame; a malloc
    setting the user made still wins."""
    probe = ("import resource, sys, numpy as np; {imp}"
             "a = np.ones((512, 512, 3), np.float32); del a; "
             "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt; "
             "[float(np.ones((512, 512, 3), np.float32)[0, 0, 0]) for _ in range(30)]; "
             "print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 30)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}

    def faults_per_array(imports: str, extra_env: dict | None = None) -> float:
        run = subprocess.run([sys.executable, "-c", probe.format(imp=imports)], env=dict(env, **(extra_env or {})),
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        return float(run.stdout)

    plain = faults_per_array("")
    assert plain >= 1.0  # this machine maps such arrays afresh: the check below can tell
    assert faults_per_array("import bridge.cli; ") < 0.2
    assert faults_per_array("import bridge.cli; ", {"MALLOC_ARENA_MAX": "2"}) >= 1.0  # theirs: left alone
