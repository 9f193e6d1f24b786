"""`vjbridge devices` and `vjbridge doctor`: what this machine offers, and what is missing."""
from __future__ import annotations

import importlib
import platform
import shutil


def _ndi_sources(timeout: float = 1.5) -> list[dict]:
    from cyndilib.finder import Finder

    finder = Finder()
    finder.open()
    try:
        finder.wait_for_sources(timeout)
        return [{"name": name} for name in finder.get_source_names()]
    finally:
        finder.close()


def list_devices() -> dict:
    found: dict = {}
    try:
        from bridge.sources.audio import list_audio_devices
        devices = list_audio_devices()
        found["audio inputs"] = [d for d in devices if d.get("max_input_channels", 0) > 0]
        found["audio outputs"] = [d for d in devices if d.get("max_output_channels", 0) > 0]
    except Exception as e:
        found["audio"] = f"unavailable: {e}"
    try:
        from bridge.sources.video import list_cameras
        found["cameras"] = list_cameras()
    except Exception as e:
        found["cameras"] = f"unavailable: {e}"
    try:
        found["NDI sources"] = _ndi_sources()
    except Exception as e:
        found["NDI sources"] = f"unavailable: {e} (pip install vjbridge[ndi])"
    return found


def _compile_check(device: str) -> str | None:
    """Why models cannot play compiled on `device` here, or None: the compiler looked for as a
    run does, then a tiny function really compiled (a compiler can answer and still not build)."""
    from bridge.runtime import compiler_missing, error_line, use_compile_cache_dir
    why = compiler_missing(device, quiet=True)
    if why:
        return why
    try:
        import torch
        use_compile_cache_dir()
        x = torch.linspace(0, 1, 64, device=device)
        got = torch.compile(lambda t: torch.sin(t) * 2 + 1, dynamic=False)(x)
        if not torch.allclose(got, torch.sin(x) * 2 + 1):
            return "torch.compile built a function that computes wrong numbers"
    except Exception as e:
        return f"a test compile failed ({error_line(e)}): check the C++ compiler"
    return None


def _compile_cache_line() -> str:
    """Where compiled kernels (and the precompiled headers) are kept, and how much is there."""
    import os
    from bridge.runtime import COMPILE_CACHE_MAX_BYTES, cache_files, compile_cache_dir
    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or str(compile_cache_dir())
    size = sum(size for _, size, _ in cache_files(folder))
    ours = os.path.abspath(folder) == os.path.abspath(compile_cache_dir())
    kept = f", kept under {COMPILE_CACHE_MAX_BYTES / 2 ** 30:g} GB" if ours else ""
    return f"kernels kept in {folder} ({size / 2 ** 20:.0f} MB{kept})"


def run_checks() -> list[tuple[str, bool, str]]:
    """(name, passed, detail); names starting with 'optional' do not fail the doctor."""
    checks = []

    def module(name: str, label: str, optional: bool, hint: str):
        try:
            mod = importlib.import_module(name)
            checks.append((label, True, getattr(mod, "__version__", "present")))
        except Exception as e:
            checks.append((("optional " if optional else "") + label, False, f"{e}; {hint}"))

    module("torch", "torch", False, "run setup.sh")
    module("av", "PyAV (files, streams, mp4)", False, "pip install av")
    module("pyaudio", "PyAudio (line-in)", False, "install portaudio, then pip install pyaudio")
    module("cv2", "OpenCV (camera)", False, "pip install opencv-python-headless")
    module("cyndilib", "NDI output", True, "pip install vjbridge[ndi]")
    system = platform.system()
    if system == "Windows":
        module("SpoutGL", "Spout output", True, "pip install vjbridge[spout]")
    else:
        checks.append(("optional Spout output", False, "Spout needs Windows; use --out ndi"))
    if system == "Darwin":
        module("syphon", "Syphon output", True, "pip install vjbridge[syphon]")
    else:
        checks.append(("optional Syphon output", False, "Syphon needs macOS; use --out ndi"))
    try:  # torch's ONNX exporter needs onnx; the runtime runs --runtime int8, and models where torch cannot compile
        import onnx
        import onnxruntime
        checks.append(("optional ONNX Runtime", True, f"onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}"))
    except Exception as e:
        checks.append(("optional ONNX Runtime", False, f"{type(e).__name__}: {e}; pip install vjbridge[export] (--runtime "
                                                       f"int8; models play faster where torch cannot compile)"))
    ffmpeg = shutil.which("ffmpeg")
    checks.append(("optional ffmpeg command", bool(ffmpeg), ffmpeg or "not found (PyAV has its own ffmpeg)"))
    try:
        import torch
        cuda = torch.cuda.is_available()
        checks.append(("optional CUDA", cuda, torch.cuda.get_device_name() if cuda else "no GPU: running on the CPU"))
        for device in ["cpu"] + (["cuda"] if cuda else []):
            why = _compile_check(device)
            checks.append((f"optional torch.compile ({device.upper() if device == 'cpu' else 'CUDA'})", why is None,
                           why or f"models play compiled; {_compile_cache_line()}"))
    except Exception:
        pass
    try:
        from bridge.generators.base import list_bundles, load_model
        bundles = list_bundles()
        checks.append(("model bundles", bool(bundles), ", ".join(b.name for b in bundles) or "none found"))
        for b in bundles:
            try:
                load_model(b)
                checks.append((f"model {b.name}", True, "loads, sha256 ok"))
            except Exception as e:
                checks.append((f"model {b.name}", False, str(e)))
    except Exception as e:
        checks.append(("model bundles", False, str(e)))
    return checks
