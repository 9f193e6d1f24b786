"""How a generator runs: the plain eager fp32 loop the seeds used ("reference"), or ours ("optimized").

Optimized, on the CPU: BatchNorm folded into the convolutions, then torch.compile with Inductor's
freezing (weights become constants, so oneDNN can pre-pack them and fuse bias/activation), the
code around the kernels in C++ and called without the GIL on Linux (CPP_WRAPPER);
bf16 autocast only where the CPU has native bf16 (AMX / AVX512-BF16), since elsewhere it is
emulated and slower, and for a flow only where its own pictures keep CHECKED_MIN_PSNR_DB. On CUDA:
channels_last, fp16/bf16 autocast (a flow's checked alike), torch.compile (Inductor's fused
kernels) and one CUDA graph per input shape that we capture ourselves (CudaGraphStep): a call is a
copy into pinned memory, one asynchronous copy to the device and one graph replay, a few tens of
microseconds of host work, where `reduce-overhead`'s graph trees spent about a hundred checking
their inputs. Where the machine cannot compile (no C++ compiler: Windows without MSVC's prompt;
CUDA without Triton; `compiler_missing`) the network plays uncompiled, as said once at start; if a
compile fails (an unsupported op), it falls back to the same network traced and says so once.
Uncompiled on the CPU, the ways it can run are timed at warm-up and the fastest kept
(`Runner._choose_uncompiled`: traced in fp32, ONNX Runtime in fp32 (OnnxNetwork), traced in
bf16). If capturing a CUDA graph fails, it runs without the graph and says so once.
Optimized with `compile=False` (a live run's model, or one switched to mid-set, while its compiled
runner builds):
the same folded network in its precision, traced to TorchScript (TracedNetwork): ready in a
tenth of a second, and one call for the whole network, where eager is a call per layer.

int8 (CPU, pix2pix): the folded U-Net with each stride-2 transposed convolution rewritten as an
ordinary 2x2 convolution (exact, see SubPixelDeconv), so every layer quantizes; statically
quantized by ONNX Runtime (QDQ, per-channel weights; on x86 CPUs without VNNI, reduce_range:
7-bit weights keep AVX2's u8*s8 pair sums inside int16, which plain 8-bit overflows; with VNNI
the products sum straight into int32 and full 8-bit weights are kept), calibrated on
the pictures the model sees live (the bundled demo audio through the streaming analysis). Its
PSNR against fp32 on held-out ticks is measured at start and kept in `info.psnr_db`.

Threads (`--threads`): a runner given a count sets it in the thread that calls it (torch's count
is per thread under OpenMP; the int8 runtime keeps one ONNX Runtime session per count). Dynamo
guards on the count: each count a compiled runner plays at is compiled at warm-up. `auto`
lets 1 and all the cores (and half, from 4) play the first live frames in turns, as `--runtime
auto` does for the runtimes, and keeps the fewest threads unless more are AUTO_MIN_GAIN faster:
a small network runs as fast on one core and leaves the others to the audio, the sinks and
TouchDesigner; a large one needs them all.
"""
from __future__ import annotations

import atexit
import copy
import functools
import hashlib
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bridge.errors import ConfigError
from bridge.generators.base import Generator, Snapshot
from bridge.generators.pix2pix import fold_batchnorm

log = logging.getLogger(__name__)

RUNTIMES = ("reference", "optimized", "int8")
# a "checked" family (a flow) plays in bf16/fp16 only if its worst picture keeps this much against
# fp32 (1.4 levels of 255 RMS): realnvp-faces keeps 42.9 dB at worst in bf16 and stays fp32;
# a full-32 flow trained here 55.1, so it plays in bf16 (3.5x the reference on AMX, 1.3x in fp32)
CHECKED_MIN_PSNR_DB = 45.0
AUTO_MIN_PSNR_DB = 40.0  # auto takes int8 only if its mean PSNR against fp32 (held-out demo ticks) is this high
AUTO_MIN_GAIN = 1.1  # ... and only if a tick runs at least this much faster with it
AUTO_TRIAL_FRAMES = 30  # auto: timed live calls each candidate makes before the faster is kept
AUTO_BLOCK = 6  # auto: calls a candidate makes in a row; the first of each (settling after a switch) is not timed
# auto: fewer threads stay while their calls' 95th percentile takes at most this share of the
# frame (the time between two live calls), whatever more would gain: the other cores go to the
# audio, the sinks and TouchDesigner, and a faster call there buys no frame
AUTO_ROOM = 0.5
# Without a compile (no compiler, or it failed), the ways a network can run are timed at warm-up,
# each this many calls in turn (Runner._choose_uncompiled): traced in fp32, ONNX Runtime in fp32,
# traced in bf16. Compiled, bf16 always measured faster here; traced, its casts are ops of their
# own and can cost more than small convolutions gain (vae-mirror 3.9 ms a call in bf16, 3.0 in
# fp32, eager fp32 3.4), and ONNX Runtime's fused fp32 kernels beat both for most networks
# (realnvp-faces 2.2 ms against 4.1 traced).
UNCOMPILED_TRIAL_CALLS = 7
MAX_THREADS = 1024


def compile_cache_dir() -> Path:
    """Where Inductor keeps what it compiled (C++ kernels, built once per kernel source), unless
    TORCHINDUCTOR_CACHE_DIR says: $VJBRIDGE_CACHE/inductor, else the user's cache folder
    (%LOCALAPPDATA% on Windows, ~/Library/Caches on macOS, $XDG_CACHE_HOME or ~/.cache). torch's
    own default is the temporary folder, which Ubuntu empties at boot and macOS after three days
    unused: the first compile after that built every kernel again (pix2pix-pulse: 17.7 s to
    compile and warm with an empty cache, 6.0 s with its kernels there, 2-core CPU)."""
    base = os.environ.get("VJBRIDGE_CACHE")
    if base:
        return Path(base).expanduser() / "inductor"
    if sys.platform == "win32":
        root = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Caches"
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "vjbridge" / "inductor"


def use_compile_cache_dir() -> None:
    """Inductor's cache in `compile_cache_dir()`, unless the user named one. Called as a compile
    is set up: importing torch._dynamo already writes torch's default into the environment, so
    that value is taken as not chosen. Ours is kept under its size once a process (see
    `prune_compile_cache`). The precompiled headers go in whichever is used."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    given = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if given is None or os.path.abspath(given) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(compile_cache_dir())
        global _cache_pruned
        if not _cache_pruned:
            _cache_pruned = True
            prune_compile_cache(compile_cache_dir())
            atexit.register(mark_cache_used)
            _note_precompiled_headers()
    _keep_precompiled_headers(Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]))
    remember_isa_probes()


def _keep_precompiled_headers(folder: Path) -> None:
    """Inductor's precompiled C++ headers (two of 147 and 155 MB, one per torch, compiler and
    flags) in the compile cache `folder` too: torch keeps them in the temporary folder whatever
    its cache folder, so each reboot had the first compile of a run build them again (4.4 s for
    one on 2 cores, as the set starts). Set before the first compile of the process (Inductor
    makes each once a process); nothing where this torch has no such folder."""
    import torch._inductor.codecache as codecache
    if isinstance(getattr(codecache, "_HEADER_DIR", None), str) and hasattr(codecache, "_HEADER_LOCK_DIR"):
        codecache._HEADER_DIR = str(folder / "precompiled_headers")
        codecache._HEADER_LOCK_DIR = str(folder / "precompiled_headers" / "locks")


# What makes two compiles of one network write different C++ wrappers, though the library built
# from either is the same: a comment per frozen weight naming its address (Inductor keys its cache
# on the source, and so keeps graphs with other weights in other files), and in the messages of
# its size checks the address of one of its pattern functions (another each process).
_WEIGHT_NOTE = re.compile(r"^// (\S+) device\(type=[^\n]*\n", re.M)
_ARGUMENT = re.compile(r"\bauto (\S+) = std::move\(inputs\[\d+\]\)")
_FUNCTION_ADDRESS = re.compile(r" at 0x[0-9a-f]+>")


def wrapper_source_shared(source: str) -> str:
    """The C++ wrapper `source` as every compile of its network writes it: its weight notes taken
    out and the function addresses in its messages left off, so that the library built from it
    is found in the cache by the next compile of that network (a switch back to it, the next
    run) instead of going through the C++ compiler again. Only where every weight noted comes in
    as an argument (`inputs`), so that the library holds no weights of its own notes; otherwise as
    it is. (Weights that Inductor writes into its kernels as numbers stay in the source, and so in
    the key: another bundle of one shape may get a library of its own.)"""
    if not set(_WEIGHT_NOTE.findall(source)) <= set(_ARGUMENT.findall(source)):
        return source
    return _FUNCTION_ADDRESS.sub(">", _WEIGHT_NOTE.sub("", source))


def share_wrapper_builds() -> None:
    """Inductor's C++ wrappers (the CPU's, CPP_WRAPPER) built once per network, thread count
    and torch, not once per compile (see `wrapper_source_shared`). Compiled and warmed on 2
    cores (AVX-512), its library built by an earlier run or compile: pix2pix-pulse 5.0-6.3 ->
    2.1-3.3 s, realnvp-faces 7.8-10.7 -> 4.0-6.1 s, cvae-faces 2.7-3.8 -> 0.7-1.1 s. Where this
    torch has no such cache, compiles stay as they are."""
    try:
        from torch._inductor.codecache import CppWrapperCodeCache
    except ImportError:
        return
    import inspect
    if not isinstance(inspect.getattr_static(CppWrapperCodeCache, "load_pybinding_async", None), classmethod):
        return  # not the classmethod this wraps: left as it is
    load = CppWrapperCodeCache.load_pybinding_async
    if getattr(load, "vjbridge_shared", False):
        return

    def shared(cls, argtypes, main_code, *args, **kwargs):
        device_type = kwargs.get("device_type", args[0] if args else "cpu")
        if device_type == "cpu":
            main_code = wrapper_source_shared(main_code)
        return load.__func__(cls, argtypes, main_code, *args, **kwargs)
    shared.vjbridge_shared = True
    CppWrapperCodeCache.load_pybinding_async = classmethod(shared)


# Each compile writes its own wrapper module (its frozen weights' addresses are part of the
# source: Inductor keys its cache on them), 70 KB with the Python wrapper, 94 KB with the C++ one
# (pix2pix-pulse; its library, built once, see `wrapper_source_shared`: 460 KB a compile before),
# so a folder that a reboot no longer empties grows by each run's compiles.
COMPILE_CACHE_MAX_BYTES = 2 * 2 ** 30
COMPILE_CACHE_IN_USE_S = 3600.0  # files this recent may be another run's compile going on: kept
_cache_pruned = False


def cache_files(folder) -> list[tuple[float, int, str]]:
    """(last used, bytes, path) of every file under `folder`; one that cannot be read is left out.
    Last used: the access time where the file system keeps one later than the writing (Linux's
    default, relatime: the first read after a write, then once a day; loading a library counts),
    else when it was written. By the writing alone, what every run loads and nothing rewrites
    (the precompiled headers, 300 MB that take 4.4 s to build again; the kernels of a model
    played daily) went first."""
    files = []
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:
                continue
            files.append((max(st.st_atime, st.st_mtime), st.st_size, os.path.join(root, name)))
    return files


def mapped_files() -> set[str]:
    """The files mapped into this process (its libraries among them), from /proc/self/maps;
    none where there is no such file (off Linux)."""
    try:
        with open("/proc/self/maps") as maps:
            return {fields[5].strip() for fields in (line.split(None, 5) for line in maps) if len(fields) == 6}
    except OSError:
        return set()


_used_headers: set[str] = set()  # the precompiled headers this process's C++ builds used


def _note_precompiled_headers() -> None:
    """Note each precompiled header Inductor hands a C++ build, for `mark_cache_used`. Where this
    torch has no such step, nothing is noted."""
    import torch._inductor.codecache as codecache
    make = getattr(codecache, "_precompile_header", None)
    if make is None or getattr(make, "vjbridge_noted", False):
        return

    def noted(*args, **kwargs):
        path = make(*args, **kwargs)
        _used_headers.add(str(path))
        return path
    noted.vjbridge_noted = True
    codecache._precompile_header = noted


def _file_stamp(path: Path) -> tuple:
    st = path.stat()
    return path.name, st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=1)
def _torch_and_cpu_stamp() -> tuple:
    """The part of every ISA probe's stamp that is the process's: this torch's libtorch_cpu, its
    version, the platform and the CPU's flags (hashed)."""
    lib = Path(torch.__file__).parent / "lib"
    return ([_file_stamp(f) for f in sorted(lib.glob("*torch_cpu*"))], torch.__version__, sys.platform,
            hashlib.sha256(" ".join(sorted(_cpu_flags())).encode()).hexdigest()[:16])


def _isa_probe_stamp(library: str) -> str:
    """What decides whether Inductor's ISA probe `library` loads: the library itself (its key
    holds the compiler's version, the ISA's flags and torch's), the torch whose vector maths it
    links against, and the CPU (a cache folder shared between machines)."""
    torch_files, version, platform, cpu = _torch_and_cpu_stamp()
    return json.dumps({"files": [list(_file_stamp(Path(library)))] + [list(f) for f in torch_files],
                       "torch": version, "platform": platform, "cpu": cpu})


_used_probes: set[str] = set()  # the ISA probe libraries and their stamps this process read


def remember_isa_probes() -> None:
    """Inductor checks each vector ISA once a process (6 on an AVX-512 CPU) by building a small
    library once and loading it in a child Python each time: 1.0-1.2 s of every start on 2 cores
    before the first compile. A library that loaded is remembered in a stamp beside it
    (`_isa_probe_stamp`), and the child is not started again while the library, the torch it
    links against and the CPU are the same. A probe that failed is not remembered: it is asked
    again. Where this torch has no such probe, nothing changes."""
    try:
        from torch._inductor.cpu_vec_isa import VecISA
    except ImportError:
        return
    probe = getattr(VecISA, "_probe_load", None)
    if not callable(probe) or getattr(probe, "vjbridge_remembered", False):
        return

    def remembered(self, output_path):
        mark = str(output_path) + ".loads"
        try:
            stamp = _isa_probe_stamp(output_path)
        except OSError:  # the library gone: probed, as Inductor would
            stamp = None
        try:
            with open(mark, encoding="utf-8") as f:
                if stamp is not None and f.read() == stamp:
                    _used_probes.update((str(output_path), mark))
                    return True
        except (OSError, ValueError):  # no stamp yet (or unreadable): probed
            pass
        loads = probe(self, output_path)
        if loads and stamp is not None:
            try:
                partial = f"{mark}.{os.getpid()}.tmp"
                with open(partial, "w", encoding="utf-8") as f:
                    f.write(stamp)
                os.replace(partial, mark)  # whole or not at all, beside another process's probe
                _used_probes.update((str(output_path), mark))
            except OSError:  # a read-only cache: probed again next time
                pass
        return loads
    remembered.vjbridge_remembered = True
    VecISA._probe_load = remembered


def mark_cache_used(folder=None) -> int:
    """Mark what this process used from the compile cache as used now (its access time; when it
    was written stays): the libraries mapped into the process (Linux), Inductor's wrapper modules,
    the precompiled headers its builds used and the ISA probes it found remembered; so that
    `prune_compile_cache` keeps them, where the file system moves access times once a day (Linux's
    relatime) or never (noatime; Windows' default on large drives). At exit, once the cache was
    set up. Returns how many were marked."""
    folder = Path(folder or os.environ.get("TORCHINDUCTOR_CACHE_DIR") or compile_cache_dir())
    inside = str(folder.resolve()) + os.sep
    paths = mapped_files()  # none off Linux: the modules and headers below
    try:
        from torch._inductor.codecache import PyCodeCache
        paths.update(getattr(module, "__file__", None) or "" for module in list(PyCodeCache.modules))
    except ImportError:
        pass
    paths.update(_used_probes)
    for header in list(_used_headers):
        paths.update(str(path) for path in Path(header).parent.glob(Path(header).name + "*"))
    now, marked = time.time_ns(), 0
    for path in sorted(p for p in paths if p and os.path.realpath(p).startswith(inside)):
        try:
            os.utime(path, ns=(now, os.stat(path).st_mtime_ns))  # in ns: a float would move it
            marked += 1
        except OSError:  # gone meanwhile, or not ours to touch: left as it is
            pass
    return marked


def prune_compile_cache(folder: Path, max_bytes: int | None = None) -> int:
    """Over `max_bytes` (COMPILE_CACHE_MAX_BYTES), the files used longest ago go until three
    quarters of it is left; the last hour's stay. A kernel deleted is compiled again if it is
    asked for. Returns the bytes removed; trouble reading or removing a file leaves it."""
    max_bytes = COMPILE_CACHE_MAX_BYTES if max_bytes is None else max_bytes
    files = cache_files(folder)
    total = sum(size for _, size, _ in files)
    if total <= max_bytes:
        return 0
    removed, recent = 0, time.time() - COMPILE_CACHE_IN_USE_S
    for used, size, path in sorted(files):
        if total - removed <= max_bytes * 3 // 4 or used > recent:
            break
        try:
            os.remove(path)
            removed += size
        except OSError:
            pass
    log.info("compile cache %s: %.0f MB over %.0f MB, the %.0f MB used longest ago removed", folder, total / 2 ** 20,
             max_bytes / 2 ** 20, removed / 2 ** 20)
    return removed


def parse_threads(value) -> int | str | None:
    """`--threads`: None (torch's own count), "auto", or a count of at least 1."""
    if value is None or value == "auto":
        return value
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    count = value if isinstance(value, int) and not isinstance(value, bool) else 0
    if not 1 <= count <= MAX_THREADS:
        raise ConfigError(f"--threads must be auto or a count 1..{MAX_THREADS}, got {value!r}")
    return count


def set_threads(count: int) -> None:
    """torch's thread count for the calling thread (under OpenMP each thread has its own). Only
    when it changes: setting it clears oneDNN's cache of prepared kernels."""
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)


@functools.lru_cache(maxsize=1)
def _gnu_openmp_pauses() -> tuple:
    """`omp_pause_resource_all` of each GNU OpenMP runtime (libgomp) loaded in this process
    (torch's Linux wheels carry one), as ctypes functions; empty elsewhere: torch on Windows and
    macOS uses other OpenMP runtimes, whose pause is not one thread's."""
    import ctypes
    if not sys.platform.startswith("linux"):
        return ()
    pauses = []
    for path in sorted(p for p in mapped_files() if os.path.basename(p).startswith("libgomp")):
        try:
            pause = ctypes.CDLL(path).omp_pause_resource_all  # already loaded: the same runtime
        except (OSError, AttributeError):  # a libgomp older than OpenMP 5.0 (GCC 9)
            continue
        pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
        pauses.append(pause)
    return tuple(pauses)


def release_openmp_workers() -> bool:
    """Let go of the OpenMP worker threads that torch's parallel calls in the calling thread
    left waiting (GNU libgomp keeps a team for each thread that ran one, for that thread's life);
    should the thread call torch in parallel again, a team is made again. Returns whether
    libgomp was there to ask.

    Why: libgomp counts the workers of every thread's team, and once they and the first thread
    outnumber the CPUs it stops spinning between parallel regions: each worker, and the thread
    that called, sleeps in the kernel at every region and is woken for the next. The live network
    runs in the engine's own thread, beside the team the main thread left building and warming the
    models, so on 2 cores a 2-thread call was always past that count: pix2pix-pulse, 60 calls a
    second from a thread of its own, took 9.6-10.1 ms (about 15,000 context switches in the
    process's 11 s) against 5.1-6.3 ms (600) once the main thread's team was let go of. Only the
    calling thread's team goes (libgomp's pause is per thread); elsewhere than Linux nothing is
    done."""
    freed = False
    for pause in _gnu_openmp_pauses():
        freed = pause(1) == 0 or freed  # omp_pause_soft; -1 inside a parallel region
    return freed


# torch's own count (the physical cores, or OMP_NUM_THREADS), read before any of ours is set: a
# thread started later begins at the count last set by any thread (the playing one's, perhaps 1)
DEFAULT_THREADS = torch.get_num_threads()


def thread_choices(cores: int | None = None) -> list[int]:
    """The counts `--threads auto` tries: 1, half the cores from 4, and all of them."""
    cores = cores or DEFAULT_THREADS
    return sorted({1, cores} | ({cores // 2} if cores >= 4 else set()))


_dynamo_imported = threading.Event()  # set by the first `recompile_room`, before any compile


def recompile_room() -> None:
    """Each thread count a compiled runner plays at (dynamo guards on torch's count) is another
    entry for its `generate` (its own copy, see `_own_entry`): room for them all, past dynamo's
    default of 8. torch's compile settings are per thread: called in each thread that builds or
    plays a model."""
    import torch._dynamo.config as dynamo_config
    _dynamo_imported.set()
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), 64))


def recompile_room_once_compiling() -> bool:
    """`recompile_room` for a thread that plays what others compile (the engine's generation
    thread), once a compile was set up in the process (it calls `recompile_room` before making
    anything compiled); False until then, and nothing imported: torch._dynamo takes about a
    second to import, and before the first frame (or on this thread, while the output waits for
    it) that second was the start's; a run that compiles nothing never imports it."""
    if not _dynamo_imported.is_set():
        return False
    recompile_room()
    return True


# The code objects of compiled runners gone (garbage), appended by their finalizers on whatever
# thread dropped them, let go of by the next compile set up (`_let_go_of_compiled`).
_gone_compiled: list = []


def _own_entry(net: torch.nn.Module, entry: str):
    """`net.<entry>`, bound to a copy of its function: its own code object and its own copy of
    its module's globals, and that code object (None where the entry is not a plain function:
    then the shared one). Dynamo keeps what it compiles on the code object (one cache entry per
    compile, limited per code object) and installs the compiled graph, Inductor's frozen weights
    inside, in the function's globals; both are per class method, shared by every model of a
    family and never let go. Measured before this: each compile of a model switched to kept its
    frozen weights for good (pix2pix-pulse: about 22 MB a compile, one a degradation level), and
    once 64 compiles of one family had added up (16 cold switches with four levels) the next ran
    eager, silently. Copied, they are the runner's own, and go with it (`_let_go_of_compiled`)."""
    import types
    function = getattr(type(net), entry, None)
    if not isinstance(function, types.FunctionType):
        return getattr(net, entry), None
    code = function.__code__.replace()  # a new code object, the same bytecode
    own = types.FunctionType(code, dict(function.__globals__), function.__name__,
                             function.__defaults__, function.__closure__)
    own.__kwdefaults__, own.__qualname__ = function.__kwdefaults__, function.__qualname__
    return types.MethodType(own, net), code


def _let_go_of_compiled() -> None:
    """Free what dynamo and Inductor still hold of the compiled runners gone: the cache entries
    on their own code objects (which refer back to that code: a cycle through C, which Python's
    collector cannot see), their guard-failure notes, the generated modules (Inductor keeps
    each in a list and in sys.modules, frozen weights attached; a live compiled graph keeps what
    it uses through its functions' globals, so only what nothing uses goes) and the shape
    environments memoised with them. On a thread that builds (or one of its own, `let_go_soon`),
    under dynamo's compile lock (no compile half done), never on the playing one."""
    if not _gone_compiled:
        return
    try:
        import torch._dynamo.convert_frame as convert_frame
        from torch._C._dynamo.eval_frame import reset_code
        from torch._dynamo.guards import CheckFunctionManager
        from torch._dynamo.utils import guard_failures
        from torch._inductor.codecache import PyCodeCache
        from torch.fx.experimental.symbolic_shapes import ShapeEnv
    except ImportError as e:  # a torch without these: what it kept stays
        log.info("compiled runners gone not let go of (%s)", e)
        _gone_compiled.clear()
        return
    with convert_frame.compile_lock:
        while _gone_compiled:
            code = _gone_compiled.pop()
            reset_code(code)
            guard_failures.pop(code, None)
        # a compile's guards watch what they name (types, modules, weights) through finalizers
        # that hold its guard manager, and the types and modules never go: once its cache entry
        # is gone (none), those finalizers would do nothing, and are detached
        for finalizer, info in list(weakref.finalize._registry.items()):
            manager = getattr(getattr(info.func, "func", None), "__self__", None)
            if isinstance(manager, CheckFunctionManager) and \
                    getattr(getattr(manager, "guard_manager", None), "cache_entry", True) is None:
                finalizer.detach()
        shared = {id(module) for module in PyCodeCache.modules_no_attr.values()}
        for module in [m for m in PyCodeCache.modules if id(m) not in shared]:
            PyCodeCache.modules.remove(module)
            if sys.modules.get(module.__name__) is module:
                del sys.modules[module.__name__]
        # ShapeEnv's methods memoised per class (up to 256 calls each, some without a bound),
        # `self` in each key: every compile's shape environment, its fake tensors and through
        # them the real weights, kept (about 14 MB a pix2pix-pulse compile). Caches only.
        for member in vars(ShapeEnv).values():
            clear = getattr(member, "cache_clear", None)
            if callable(clear):
                clear()


def let_go_soon() -> None:
    """What the compiled runners gone left (`_gone_compiled`), let go of now rather than at the
    next compile, which a set playing one model never makes: on a thread of its own, as it waits
    for a compile under way and must not hold up the playing thread."""
    if _gone_compiled:
        threading.Thread(target=_let_go_now, name="vjbridge-let-go", daemon=True).start()


def _let_go_now() -> None:
    """`_let_go_of_compiled`, then what was freed handed back to the system: glibc keeps freed
    memory mapped for the process to reuse, and a compile's frozen weights are 100 MB and more
    (the full U-Net-256 in bf16: 104 MB; trimming it took 8 ms here)."""
    count = len(_gone_compiled)
    _let_go_of_compiled()
    log.info("let go of %d compile%s no longer played", count, "s" * (count != 1))
    if sys.platform.startswith("linux"):
        import ctypes
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):  # a C library without it (musl): kept for reuse
            pass


class _CompiledByCount:
    """`torch.compile` of a network's entry, one compile for each torch thread count it is
    called at. Dynamo guards on the count (Inductor's C++ kernels are built for one), so each
    count is a compile of its own anyway, frozen weights inside; each is made on its own copy of
    the entry (`_own_entry`), so that the ones no longer played can be let go of one by one
    (`keep_only`). On one code object, an auto trial's counts all stayed for good (measured on
    the full U-Net-256: the 1-thread compile held about 100 MB more once 2 threads were kept)."""

    def __init__(self, net: torch.nn.Module, entry: str, mode: str | None):
        self._net, self._entry, self._mode = net, entry, mode
        self._by_count: dict = {}  # torch thread count -> (compiled entry, its own code object)
        self.codes: list = []  # the own code objects of the compiles kept (see Runner._try_compile)

    def _for(self, count: int):
        made = self._by_count.get(count)
        if made is None:
            shared = next(iter(self._by_count.values()), None)
            if shared is not None and shared[1] is None:  # no copy of its own: one for every count
                return shared
            entry, code = _own_entry(self._net, self._entry)
            made = self._by_count[count] = (torch.compile(entry, mode=self._mode, dynamic=False), code)
            if code is not None:
                self.codes.append(code)
        return made

    def __call__(self, cond, latent):
        return self._for(torch.get_num_threads())[0](cond, latent)

    def code_for(self, count: int):
        made = self._by_count.get(count) or next(reversed(self._by_count.values()), (None, None))
        return made[1]

    def keep_only(self, count: int) -> None:
        """Let go of the compiles for every count but `count`: their code objects go to
        `_gone_compiled`, for `_let_go_of_compiled`."""
        for c in [c for c in self._by_count if c != count and self._by_count[c][1] is not None]:
            code = self._by_count.pop(c)[1]
            self.codes[:] = [kept for kept in self.codes if kept is not code]  # copies compare equal
            _gone_compiled.append(code)


def _threads_label(count: int) -> str:
    return f"{count} thread{'s' if count != 1 else ''}"


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere: then nothing is assumed)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    return bool({"amx_bf16", "avx512_bf16"} & _cpu_flags())


def cpu_has_vnni() -> bool:
    """x86 int8 dot products into int32 (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & _cpu_flags())


# how to get what Inductor needs, per platform: a C++ compiler on the CPU, Triton on CUDA
COMPILER_HINTS = {
    "win32": "install Visual Studio Build Tools with 'Desktop development with C++' and start vjbridge "
             "from the 'x64 Native Tools Command Prompt' (cl.exe on PATH)",
    "darwin": "install Xcode's command line tools (xcode-select --install)",
    "linux": "install g++ (apt install g++)",
}
TRITON_HINTS = {"win32": "pip install triton-windows", "linux": "pip install triton"}
_compiler_verdicts: dict[str, str | None] = {}


def error_line(error: Exception, limit: int = 200) -> str:
    """An exception as one line: its type, and the first line of its message (cut at `limit`)."""
    text = str(error).strip()
    first = text.splitlines()[0][:limit] if text else ""
    return f"{type(error).__name__}{': ' + first if first else ''}"


def _compiler_kind(device_type: str) -> str:
    return "cuda" if device_type.startswith("cuda") else device_type


def _compiler_answers() -> bool:
    """Inductor's own search for its C++ compiler outside Windows ($CXX, else g++, clang++ on
    macOS, asked for its --version), made without importing Inductor: that import took 1.1-1.4 s
    of the main thread before a run's first frame (2 cores), and the compile imports it anyway,
    on the loader thread while the model plays. Where it answers nothing, or Inductor is already
    imported (its settings may name another compiler), Inductor's check decides."""
    if sys.platform == "win32" or "torch._inductor" in sys.modules:
        return False
    cxx = os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++")
    try:
        subprocess.run([cxx, "--version"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def compiler_missing(device_type: str = "cpu", quiet: bool = False) -> str | None:
    """Why torch.compile cannot build kernels for `device_type` on this machine, with what to
    install, or None where it can: Inductor's C++ compiler for the CPU (on Windows MSVC's cl.exe,
    found only inside its command prompt), Triton for CUDA. Asked once per process (a compiler
    run with --version, or cl /help); said once, as a warning (unless `quiet`). Without it the
    optimized runtime plays its network traced (TorchScript, one call without the GIL, 1.1-3x
    slower than compiled) rather than trying a compile that fails after seconds of tracing, at
    every switch and level.
    A compile that failed anyway (`Runner._fall_back`) sets the verdict for the process."""
    kind = _compiler_kind(device_type)
    if kind in _compiler_verdicts:
        return _compiler_verdicts[kind]
    platform_key = "linux" if sys.platform.startswith("linux") else sys.platform
    why = None
    try:
        if kind == "cuda":
            from torch.utils._triton import has_triton
            if not has_triton():
                why = (f"Triton, which compiles CUDA kernels, is not installed: "
                       f"{TRITON_HINTS.get(platform_key, 'install triton')}")
        elif kind == "cpu" and not _compiler_answers():
            from torch._inductor.cpp_builder import get_cpp_compiler
            get_cpp_compiler()
    except Exception as e:  # Inductor's own check: InvalidCxxCompiler, or it cannot run here at all
        why = (f"no C++ compiler for torch.compile ({error_line(e, 160)}): "
               f"{COMPILER_HINTS.get(platform_key, 'install a C++ compiler')}")
    _compiler_verdicts[kind] = why
    if why and not quiet:
        log.warning("models play uncompiled (traced or ONNX Runtime, 1.1-3x slower than compiled): %s%s", why,
                    "" if OnnxNetwork.available() else
                    "; meanwhile pip install onnx onnxruntime (vjbridge[export]) plays most models 1.1-1.9x faster")
    return why


@dataclass
class RunnerInfo:
    runtime: str
    device: str
    compiled: bool = False
    autocast: str | None = None
    cuda_graph: bool = False  # CUDA: the network replays a graph we captured (CudaGraphStep)
    draws_condition: bool = False  # takes the condition's few numbers and draws it in the call
    note: str = ""
    psnr_db: float | None = None  # lossy runtimes: mean PSNR of the picture against fp32, held-out inputs
    auto_ms: dict | None = None  # auto: median ms a call each candidate took in its live trial
    uncompiled_ms: dict | None = None  # without a compile: median ms a call of each way it can run, timed at warm-up
    network: str | None = None  # without a compile, what runs it: "traced" (TorchScript) or "onnxruntime"
    threads: int | None = None  # torch threads it runs with (None: the calling thread's own)


def _to_device(x, device: torch.device, channels_last: bool = False):
    """A tensor, or a tuple of them (families with two inputs), moved to the device."""
    if x is None:
        return None
    if isinstance(x, (tuple, list)):
        return tuple(_to_device(t, device, channels_last) for t in x)
    x = x.to(device, non_blocking=True)
    # One memory layout and one tensor kind always: a compiled model guards on strides and on
    # inference-vs-normal tensors, and a camera frame's permuted view (or a tensor made outside
    # inference mode at warm-up) would otherwise recompile it, for seconds, mid-set.
    layout = torch.channels_last if channels_last and x.dim() == 4 else torch.contiguous_format
    x = x.contiguous(memory_format=layout)
    return x if x.is_inference() else x.clone(memory_format=layout)


def _to_float(out):
    if isinstance(out, tuple):
        return tuple(t.float() for t in out)
    return out.float()


class Runner:
    """Calls a generator's network: `runner(cond, latent=None) -> (1, 3, H, W)` float32 in [-1, 1],
    or `(picture, mel_db)` for families that make sound."""

    def __init__(self, model: Generator, runtime: str = "optimized", device: str = "cpu",
                 compile: bool = True, check_precision: bool = False):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.device = torch.device(device)
        self.model = model
        self.compile = compile  # False: traced until a compiled one replaces it (its levels alike)
        self.info = RunnerInfo(runtime=runtime, device=str(self.device))
        self._entry = "generate_with_sound" if model.makes_sound else "generate"
        self._autocast = None
        self._graphs: dict | None = None  # input signature -> CudaGraphStep (optimized, on CUDA)
        self.threads: int | None = None  # see use_threads
        if runtime == "int8":
            self.net = model.eval()
            self._fn = Int8Pix2Pix(model, self.device)
            self.info.psnr_db = self._fn.psnr_db
            self.info.note = (f"int8 (onnxruntime, {7 if self._fn.reduce_range else 8}-bit weights): PSNR "
                              f"against fp32 {self._fn.psnr_db:.1f} dB mean, "
                              f"{self._fn.psnr_min_db:.1f} dB worst, on held-out demo ticks")
            return
        if runtime == "reference":
            self.net = model.to(self.device).eval()
            self._fn: Callable = getattr(self.net, self._entry)
            self._autocast = None
            return
        net = fold_batchnorm(copy.deepcopy(model)).to(self.device).eval()
        drawer = model.condition_drawer()
        if drawer is not None:  # the picture drawn on the device, in the same compiled call
            net = _DrawThenGenerate(net, drawer.to(self.device))
            self.info.draws_condition = True
        self._autocast = None
        if self.device.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
            self._autocast = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif cpu_has_native_bf16():
            self._autocast = torch.bfloat16
        if self._autocast is not None and model.low_precision is not True:
            # checked by the compiled runner (a live one's built while the traced plays), or by a
            # traced one asked to (`check_precision`: the live run's second traced runner, see
            # bridge.live): a switch shows the new model without waiting for the check (seconds
            # for a full flow)
            checked = model.low_precision == "checked" and (compile or check_precision)
            self._autocast = self._checked_low_precision(model, net) if checked else None
        self.info.autocast = str(self._autocast).replace("torch.", "") if self._autocast else None
        self.net = net
        self._fn = getattr(net, self._entry)
        self._graphs = {} if self.device.type == "cuda" and CUDA_GRAPHS else None
        missing = compiler_missing(self.device.type) if compile else None
        if missing:  # traced for good (`compile` stays True: nothing is to replace it)
            self.info.note = join_note(self.info.note, f"not compiled: {missing}")
        if compile and not missing:
            self._try_compile()
        else:
            self._fn = TracedNetwork(net, self._entry, self.device.type)

    def _checked_low_precision(self, model: Generator, net: torch.nn.Module):
        """A "checked" family (a flow): its autocast dtype if the pictures of its own probe
        (`model.precision_probe()`, its anchors and the walks between them) stay within
        CHECKED_MIN_PSNR_DB of fp32 at worst, else None (fp32). Measured eagerly, once per model,
        device and dtype: its traced and compiled runners share the verdict."""
        dtype, name = self._autocast, str(self._autocast).replace("torch.", "")
        verdicts = model.__dict__.setdefault("_precision_checked", {})
        key = (str(self.device), dtype)
        fresh = key not in verdicts
        if fresh:
            cond, latent = model.precision_probe()
            cond, latent = _to_device(cond, self.device), _to_device(latent, self.device)
            fn = getattr(net, self._entry)
            with torch.inference_mode():
                gold = picture_of(fn(cond, latent)).float().cpu().numpy()
                with self._autocast_context():
                    low = picture_of(fn(cond, latent)).float().cpu().numpy()
            each = [picture_psnr(g, x) for g, x in zip(gold, low)]
            verdicts[key] = (min(each), float(np.mean(np.minimum(each, 99.0))), len(each))
        worst, mean, count = verdicts[key]
        keep = worst >= CHECKED_MIN_PSNR_DB
        verdict = (f"{name}: PSNR against fp32 {mean:.1f} dB mean, {worst:.1f} dB worst on {count} of its pictures"
                   if keep else f"fp32: {name} would keep {worst:.1f} dB at worst on {count} of its pictures, "
                                f"under {CHECKED_MIN_PSNR_DB:g} dB")
        if fresh:
            log.info("%s: %s", model.family, verdict)
        self.info.note = join_note(self.info.note, verdict)
        if keep:
            self.info.psnr_db = mean
            return dtype
        return None

    @property
    def draws_condition(self) -> bool:
        """Whether `model.condition_params(snapshot)` may be given instead of the picture."""
        return self.info.draws_condition

    @property
    def status(self) -> str:
        """For the status line: the runtime, and the thread count where one is set."""
        # optimized for good without its compile (no compiler here, or it failed): said so
        uncompiled = self.info.runtime == "optimized" and self.compile and not self.info.compiled
        return (self.info.runtime + (", not compiled" if uncompiled else "")
                + (", onnxruntime" if uncompiled and self.info.network == "onnxruntime" else "")
                + (f", {_threads_label(self.threads)}" if self.threads else ""))

    @property
    def level_threads(self) -> int | None:
        """The count the degraded levels' runners run at: this one's."""
        return self.threads

    def use_threads(self, count: int | None) -> None:
        """Run each call with `count` torch threads, set in the thread that makes it (None: that
        thread's own count). int8: its ONNX Runtime session for that count."""
        self.threads = self.info.threads = count
        if count is not None and self.info.runtime == "int8":
            self._fn.use_threads(count)

    def keep_threads(self, count: int | None) -> None:
        """It plays at `count` threads from now on (an auto trial's choice): the compiles made for
        the other counts tried go to `_gone_compiled` (`_CompiledByCount.keep_only`)."""
        if count is not None and isinstance(self._fn, _CompiledByCount):
            self._fn.keep_only(count)

    @property
    def _own_code(self):
        """Compiled: the code object dynamo keeps the compile for this runner's count on (its
        own count, else the calling thread's; the last one made where that has none yet)."""
        if not isinstance(self._fn, _CompiledByCount):
            return None
        return self._fn.code_for(self.threads or torch.get_num_threads())

    def _try_compile(self) -> None:
        try:
            import torch._inductor.config as inductor_config
            # torch's compile settings are per thread: set in the one that builds the runner,
            # which warms it, so compiles it (`freezing` given as a torch.compile option instead
            # ran the bundled model at 6.9 ms a call against 4.5: it is read outside the option's reach)
            inductor_config.freezing = True
            # (Frozen weights packed for oneDNN, the default, make Inductor's FX graph cache
            # bypass every compile: a packed tensor cannot go into its key. Unpacked, a compile
            # takes 1-2 s less (a flow 3-7) and the U-Net-256s call 15-30 % slower (2-core AVX2): kept
            # packed; benchmarks/README.md, nineteenth session.)
            inductor_config.cpp_wrapper = CPP_WRAPPER and self.device.type == "cpu"
            recompile_room()
            use_compile_cache_dir()
            if inductor_config.cpp_wrapper:
                share_wrapper_builds()
            _let_go_of_compiled()
            # CUDA: plain Inductor kernels; the graph around them is ours (CudaGraphStep)
            self._fn = _CompiledByCount(self.net, self._entry,
                                        CUDA_COMPILE_MODE if self.device.type == "cuda" else None)
            weakref.finalize(self, _gone_compiled.extend, self._fn.codes)
            self.info.compiled = True
        except Exception as e:  # compile is an optimisation: never a reason not to play
            self._fall_back(e)

    def _fall_back(self, error: Exception) -> str | None:
        """A compile that failed: the same network traced (eager where it cannot be), as one
        built uncompiled plays, and said why, once. Returns what failed, for `warmup` to tell
        whose failure it was (None as the program ends)."""
        self._fn = TracedNetwork(self.net, self._entry, self.device.type)
        self.info.compiled = False
        failed = f"torch.compile failed ({error_line(error)})"
        self.info.note = join_note(self.info.note, failed + "; playing traced")
        if self._graphs:  # captured around the compiled function: capture again around the traced one
            self._graphs.clear()
        # A compile still going as the program ends (bridge.live waits for it) has its thread
        # pools refused by the exiting interpreter: nobody plays it any more, nothing to warn of.
        if "after interpreter shutdown" in str(error):
            log.info("%s; playing traced", failed)
            return None
        log.warning("%s; playing traced (`vjbridge doctor` checks the compiler)", failed)
        return failed

    def _blame_machine(self, cond, latent, failed: str) -> None:
        """After a failed compile (`failed`, what failed): where the same network runs traced (it raises here if not),
        the failure was the machine's (a compiler that answers but cannot build, OpenMP missing,
        the cache folder unwritable; every family here compiles where the machine can), so the
        runners built after this one in the process play traced without trying
        (`compiler_missing`): each try cost seconds of tracing and repeated frames, and a start
        tried three (the compiler's set-up, the model, its thread trial)."""
        self(cond, latent)
        kind = _compiler_kind(self.device.type)
        if not _compiler_verdicts.get(kind):
            _compiler_verdicts[kind] = failed
            log.info("later models play traced without compiling: %s", failed)

    def _autocast_context(self):
        # Never autocast's weight cache. It lasts one autocast region, a call, where each weight is
        # cast once anyway; it is one map for the whole process, cleared under its mutex at every
        # region's end, and clearing drops tensors, which takes the GIL. A model compiling on the
        # loader thread (a switch) holds the GIL and waits for that mutex in its traced casts,
        # while the playing thread holds the mutex and waits for the GIL: both froze (seen on a
        # live switch with bf16). With no thread caching, the map stays empty. Inside a captured
        # CUDA graph it must be off too: a cached cast would be made once, at capture, by a
        # kernel later replays skip (torch.cuda.graph's advice).
        return torch.autocast(self.device.type, dtype=self._autocast, cache_enabled=False)

    def _network(self, cond, latent):
        """The network in its precision, its outputs float32 (what a graph captures)."""
        if self._autocast is None:
            return self._fn(cond, latent)
        with self._autocast_context():
            out = self._fn(cond, latent)
        return _to_float(out)

    def _graph_for(self, cond, latent):
        """The captured graph for these inputs' shapes, captured now if new (None: run without)."""
        key = CudaGraphStep.signature(cond, latent)
        step = self._graphs.get(key)
        if step is None:
            if len(self._graphs) >= MAX_GRAPHS:  # shapes that keep changing: not a live model's
                return None
            # warm-up first, its errors (a failed compile) left to `warmup`'s fallback to eager
            step = CudaGraphStep(self._network, cond, latent, self.device)
            try:
                step.capture()
            except Exception as e:  # the graph is an optimisation: never a reason not to play
                self._graphs = None
                self.info.cuda_graph = False
                self.info.note = join_note(self.info.note, f"CUDA graph capture failed ({type(e).__name__}: {e}); "
                                                         "running without")
                log.warning(self.info.note)
                return None
            self._graphs[key] = step
            self.info.cuda_graph = True
        return step

    def warmup(self, cond, latent: torch.Tensor | None = None, runs: int = 3) -> None:
        """First calls compile; a failure there still falls back to eager. The calling thread
        (the one that builds, not the one that plays) keeps its own thread count."""
        before = torch.get_num_threads()
        try:
            for _ in range(runs):
                try:
                    self(cond, latent)
                except Exception as e:
                    if self.info.runtime == "int8" or not self.info.compiled:
                        raise
                    failed = self._fall_back(e)
                    if failed:
                        self._blame_machine(cond, latent, failed)
            if self._times_uncompiled():
                self._choose_uncompiled(cond, latent)
        finally:
            set_threads(before)

    def _times_uncompiled(self) -> bool:
        """Traced for good (no compiler, or its compile failed) on the CPU, not yet timed."""
        return (self.info.runtime == "optimized" and self.device.type == "cpu" and self.compile
                and not self.info.compiled and self.info.uncompiled_ms is None
                and isinstance(self._fn, TracedNetwork))

    def _choose_uncompiled(self, cond, latent) -> None:
        """Without a compile, the ways this network can run are timed in turn on these inputs
        (UNCOMPILED_TRIAL_CALLS calls each, after one that builds it) and one is kept, in order
        of preference: traced in fp32; ONNX Runtime in fp32 (where onnx and onnxruntime are
        installed and its pictures are the network's); traced in the low precision. Each later one is kept only
        if AUTO_MIN_GAIN faster than the one kept so far; what is not kept is let go."""
        low = self._autocast
        traced = self._fn
        ways = [("traced fp32", traced, None)]
        onnx = OnnxNetwork.for_network(self.net, self._entry)
        if onnx is not None:
            ways.append(("onnxruntime fp32", onnx, None))
        if low is not None:
            ways.append((f"traced {str(low).replace('torch.', '')}", traced, low))
        if len(ways) == 1:
            return
        usable = []
        for way in ways:  # the first call of each builds it (a trace, an export)
            self._fn, self._autocast = way[1], way[2]
            try:
                self(cond, latent)
                usable.append(way)
            except Exception as e:  # one way fewer: never a reason not to play
                log.info("%s: %s left out (%s)", type(self.model).__name__, way[0], error_line(e))
        times: dict = {label: [] for label, _, _ in usable}
        try:
            for label, fn, dtype in usable * UNCOMPILED_TRIAL_CALLS:
                self._fn, self._autocast = fn, dtype
                started = time.perf_counter()
                self(cond, latent)
                times[label].append((time.perf_counter() - started) * 1000.0)
        except Exception as e:  # the trial is an optimisation: what played before it plays on
            usable = []
            log.info("%s: uncompiled ways not timed (%s)", type(self.model).__name__, error_line(e))
        if len(usable) < 2:
            self._fn, self._autocast = (usable[0][1], usable[0][2]) if usable else (traced, low)
            return
        ms = {label: statistics.median(t) for label, t in times.items()}
        label, self._fn, self._autocast = usable[kept_in_order([ms[way[0]] for way in usable])]
        self.info.uncompiled_ms = {name: round(v, 3) for name, v in ms.items()}
        if self._fn is traced:
            traced.keep_only(self._autocast)
        self.info.network = "onnxruntime" if self._fn is onnx else "traced"
        if self._autocast is None:
            self.info.autocast, self.info.psnr_db = None, None
        timed = ", ".join(f"{name} {v:.1f} ms" for name, v in ms.items())
        verdict = f"{label} kept ({timed} a call; each later one kept if {AUTO_MIN_GAIN:g}x faster)"
        self.info.note = join_note(self.info.note, verdict)
        log.info("%s: %s", type(self.model).__name__, verdict)

    @torch.inference_mode()
    def __call__(self, cond, latent: torch.Tensor | None = None):
        if self.threads is not None:
            set_threads(self.threads)
        if self._graphs is not None:
            step = self._graph_for(cond, latent)
            if step is not None:
                return step(cond, latent)
        cuda = self.device.type == "cuda"
        cond = _to_device(cond, self.device, channels_last=cuda)  # in inference mode: see there
        latent = _to_device(latent, self.device)
        if self._autocast is not None:
            with self._autocast_context():
                out = self._fn(cond, latent)
            return _to_float(out)
        return self._fn(cond, latent)


class _DrawThenGenerate(torch.nn.Module):
    """A generator whose condition may also come as what it is drawn from
    (`Generator.condition_params`: (N, K) numbers, uint8 camera frames, or a tuple of tensors):
    drawn here by `drawer` on the device, so in the compiled (and on CUDA, graph-captured) call,
    and the host uploads those instead of a float picture. A float picture (N, C, H, W) passes
    straight through; a tuple goes to the drawer, which passes on the float pictures in it."""

    def __init__(self, net: Generator, drawer: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.drawer = net, drawer

    def _drawn(self, cond):
        if isinstance(cond, tuple):
            return self.drawer(*cond)
        return cond if cond.dim() == 4 and cond.is_floating_point() else self.drawer(cond)

    def generate(self, cond, latent: torch.Tensor | None = None):
        return self.net.generate(self._drawn(cond), latent)

    def generate_with_sound(self, cond, latent: torch.Tensor | None = None):
        return self.net.generate_with_sound(self._drawn(cond), latent)


class _FlatCall(torch.nn.Module):
    """`net.<entry>(cond, latent)` taking the call's tensors flat, in `_flatten`'s order: what
    TorchScript traces (tensors only, no None, no nesting)."""

    def __init__(self, net: torch.nn.Module, entry: str, cond_is_tuple: bool, has_latent: bool):
        super().__init__()
        self.net, self.entry = net, entry
        self.cond_is_tuple, self.has_latent = cond_is_tuple, has_latent

    def forward(self, *tensors):
        return getattr(self.net, self.entry)(*_unflatten(tensors, self.cond_is_tuple, self.has_latent))


def _other_inputs(tensors: list) -> list:
    """Inputs of the same shapes and kinds as `tensors`, with other values: negated and flipped
    (uint8 pictures inverted), so a branch on a value, a mean's sign or a threshold, goes the
    other way."""
    other = []
    for t in tensors:
        if t.is_floating_point():
            other.append(-t.flip(-1) + 0.25)
        elif t.dtype == torch.uint8:
            other.append(255 - t.flip(-1))
        else:
            other.append(t.flip(-1))
    return other


def _same_outputs(a, b, tolerance: float = 1e-3) -> bool:
    a, b = (x if isinstance(x, (tuple, list)) else (x,) for x in (a, b))
    return len(a) == len(b) and all(
        x.shape == y.shape and float((x.float() - y.float()).abs().max()) <= tolerance for x, y in zip(a, b))


# Traces kept for the process, shared by every build of the same network (see TracedNetwork):
# key -> the traced module (no weights in it), the least recently made dropped past MAX_SHARED_TRACES.
_shared_traces: dict[tuple, Callable] = {}
MAX_SHARED_TRACES = 64


def _bundle_identity(net: torch.nn.Module) -> tuple | None:
    """The bundle `net` was loaded from (its folder and config, the weights' sha256 in it), or None."""
    import json
    for module in net.modules():
        path = getattr(module, "bundle_path", None)
        if path is not None:
            return str(path), json.dumps(getattr(module, "bundle_config", None), sort_keys=True, default=str)
    return None


def _plain_settings(module: torch.nn.Module) -> tuple:
    """A module's attributes that are plain values (sizes, flags, names), sorted."""
    plain = (bool, int, float, str, type(None))

    def is_plain(value) -> bool:
        return isinstance(value, plain) or (isinstance(value, tuple) and all(isinstance(v, plain) for v in value))
    return tuple(sorted((name, value) for name, value in vars(module).items() if is_plain(value)))


class _Stateless(torch.nn.Module):
    """What TracedNetwork traces: `flat(*inputs)` with its network's weights and buffers (at
    `slots`) taken from the call's last tensors instead. A module (a traced module's call runs
    without the GIL; a traced function's, measured, did not always), holding `flat` out of its
    own sight, so the trace keeps no weights."""

    def __init__(self, flat: torch.nn.Module, slots: list, count: int):
        super().__init__()
        self._hidden = (flat, slots, count)  # a tuple: no submodule, its weights not the trace's

    def forward(self, *tensors):
        flat, slots, count = self._hidden
        held = [getattr(module, kind)[name] for module, kind, name in slots]
        try:
            for (module, kind, name), value in zip(slots, tensors[count:]):
                getattr(module, kind)[name] = value
            return flat(*tensors[:count])
        finally:
            for (module, kind, name), value in zip(slots, held):
                getattr(module, kind)[name] = value


class TracedNetwork:
    """A network run as TorchScript, traced on its first call for each input structure (the
    calling thread's autocast recorded in the trace as plain casts): built in about a tenth of
    a second, and a call is one op, which runs without the GIL. Eager, every layer is an op that
    gives the GIL up and takes it back: while another thread compiles a model (Python holding
    the GIL nearly all the time), that cost pix2pix-pulse 15 -> 29 ms a call on 2 cores, the
    trace 12.6 -> 13.1 ms (its eager calls, 110 ops). Slower than compiled (3.4 ms there): what a
    live run's model, or one switched to, plays while its compiled runner builds. A trace keeps the branches its inputs
    took; shapes are fixed per trace, but a branch on a value would be frozen to one side: the
    trace is checked against eager on other values once, and a network that disagrees (or that
    cannot be traced) runs eager.

    TorchScript never gives back all of what a trace made (measured: 5-8 MB a trace of
    pix2pix-pulse, kept after the network is gone; a known torch leak): every cold switch, at every
    degradation level, added that for good. So what is traced takes the weights and buffers
    with each call rather than keeping them (`_Stateless`), is made once per network (the
    bundle, its config, the level's shapes, the inputs' structure, the precision) and is shared
    by every later build of it, each build checking it against its own eager pictures first."""

    def __init__(self, net: torch.nn.Module, entry: str, device_type: str):
        self.net, self.entry, self.device_type = net, entry, device_type
        self._calls: dict[tuple, Callable] = {}  # input signature -> traced module or eager entry
        self.traced = True  # False once a structure could not be traced
        # where each weight and buffer lives: given to the trace with each call, in this order
        self._slots = [(module, kind, name) for module in net.modules() for kind in ("_parameters", "_buffers")
                       for name, value in getattr(module, kind).items() if value is not None]
        self._state = tuple(getattr(module, kind)[name] for module, kind, name in self._slots)
        bundle = _bundle_identity(net)
        # what makes two builds the same network: the bundle, each module's class and plain
        # settings (a degradation level's size is one), the weights' names and shapes
        self._network_key = None if bundle is None else (
            bundle, entry, device_type, tuple((type(module).__qualname__, _plain_settings(module))
                                              for module in net.modules()),
            tuple((name, tuple(value.shape), value.dtype) for (_, _, name), value in zip(self._slots, self._state)))

    def _trace(self, cond, latent) -> Callable:
        import warnings
        flat = _FlatCall(self.net, self.entry, isinstance(cond, (tuple, list)), latent is not None)
        tensors = _flatten(cond, latent)
        autocast = _autocast_now(self.device_type)
        key = None if self._network_key is None else (self._network_key, CudaGraphStep.signature(cond, latent), autocast)
        try:
            with warnings.catch_warnings():
                # a size read as a number (`unet_any_size`'s padding) is fine: a trace is per shape
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                # torch 2.13 calls TorchScript deprecated: chosen here knowingly, eager if it goes
                warnings.simplefilter("ignore", DeprecationWarning)
                traced = _shared_traces.get(key) if key is not None else None
                if traced is None or not self._agrees(traced, flat, tensors):
                    traced = torch.jit.trace(_Stateless(flat, self._slots, len(tensors)),
                                             tuple(tensors) + self._state, check_trace=False)
                    if not self._agrees(traced, flat, tensors):
                        raise ValueError("it branches on its inputs' values")
                    if key is not None:
                        _shared_traces.pop(key, None)
                        _shared_traces[key] = traced
                        while len(_shared_traces) > MAX_SHARED_TRACES:
                            _shared_traces.pop(next(iter(_shared_traces)))
                return traced
        except Exception as e:  # tracing is an optimisation: eager plays the same network
            self.traced = False
            log.info("%s: not traced (%s); eager", type(self.net).__name__, error_line(e))
            return getattr(self.net, self.entry)

    def keep_only(self, autocast) -> None:
        """Lets go of the traces made in any precision other than `autocast` (None: fp32)."""
        self._calls = {key: call for key, call in self._calls.items() if key[1] == autocast}

    def _agrees(self, traced, flat, tensors) -> bool:
        """The trace makes what this network makes eager (in the caller's autocast), on inputs
        of the same shapes with other values."""
        other = _other_inputs(tensors)
        with torch.autocast(self.device_type, enabled=False):
            got = traced.forward(*other, *self._state)
        return _same_outputs(got, flat(*other))

    def __call__(self, cond, latent=None):
        key = (CudaGraphStep.signature(cond, latent), _autocast_now(self.device_type))
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = self._trace(cond, latent)
        if not isinstance(call, torch.jit.ScriptModule):
            return call(cond, latent)
        with torch.autocast(self.device_type, enabled=False):  # its casts are in the trace
            # `forward`, not `call(...)`: nn.Module.__call__ is what torch.fx's tracer patches for
            # the whole process while it traces, and a compile on another thread traces with it
            # (the call then fails: "module is not installed as a submodule")
            return call.forward(*_flatten(cond, latent), *self._state)


def ort_session(model: bytes, count: int, names: list[str] = (), values: list = ()):
    """An ONNX Runtime CPU session for `model` with `count` intra-op threads (and the external
    initializers `names` given as the ORT values `values`, see `_weights_outside`). Its idle pool
    threads must not spin: they would steal the cores the analysis, the sinks (and, in the
    bench, the reference) need between frames."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = count
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if names:
        options.add_external_initializers(list(names), list(values))
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class SessionsByCount:
    """ONNX Runtime sessions of one network, each made on the first call that asks for its key
    (a thread count, with the input signature where there are several). Every `get` is a call
    of the network: a session not asked for in the last ONNX_IDLE_CALLS calls is let go."""

    def __init__(self):
        self._held: dict = {}  # key -> [session, the call that last asked for it]
        self.calls = 0

    def __len__(self) -> int:
        return len(self._held)

    def __iter__(self):
        return iter(list(self._held))

    def get(self, key, build: Callable):
        self.calls += 1
        if self.calls % 64 == 0:
            self.drop(lambda held: self.calls - self._held[held][1] > ONNX_IDLE_CALLS)
        entry = self._held.get(key)
        if entry is None:
            entry = self._held[key] = [build(), self.calls]
        entry[1] = self.calls
        return entry[0]

    def drop(self, which: Callable) -> None:
        for key in [key for key in self._held if which(key)]:
            del self._held[key]


class OnnxNetwork:
    """A network run by ONNX Runtime on the CPU, in fp32: a way to run it where torch cannot
    compile (no C++ compiler: Windows outside MSVC's prompt), whose fused kernels beat the
    traced network for most (one thread, ms a call: realnvp-faces 2.2 against 4.1, vae-mirror
    2.1 against 3.0, pix2pix-pulse 9.8 against 12.4 traced in bf16). Exported (TorchScript's
    ONNX exporter, under a second for the bundles) on its first call for each input structure,
    checked against the network eager on other values (as a trace is), and run on a session per
    thread count whose idle threads do not spin; a run releases the GIL. `for_network` gives
    None where onnx or onnxruntime is not installed.

    Its weights stay the network's: the exported graph keeps none (`_weights_outside`), each
    session is handed the network's own tensors; a session at a count no longer played is let
    go (SessionsByCount)."""

    def __init__(self, net: torch.nn.Module, entry: str):
        self.net, self.entry = net, entry
        # input signature -> (ONNX bytes without its weights, input positions used, outputs, weights)
        self._models: dict[tuple, tuple] = {}
        self._sessions = SessionsByCount()  # keyed (input signature, thread count)

    @staticmethod
    def available() -> bool:
        """Whether onnxruntime, and onnx for torch's exporter, are installed."""
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:
            return False
        return True

    @classmethod
    def for_network(cls, net: torch.nn.Module, entry: str) -> "OnnxNetwork | None":
        return cls(net, entry) if cls.available() else None

    def _run(self, key: tuple, tensors: list):
        model, used, outputs, (names, values) = self._models[key]
        feed = {f"in{i}": tensors[i].detach().contiguous().numpy() for i in used}
        count = torch.get_num_threads()
        session = self._sessions.get((key, count), lambda: ort_session(model, count, names, values))
        got = [torch.from_numpy(x) for x in session.run(None, feed)]
        return got[0] if outputs == 1 else tuple(got)

    def _export(self, key: tuple, cond, latent) -> None:
        import io
        import warnings
        flat = _FlatCall(self.net, self.entry, isinstance(cond, (tuple, list)), latent is not None)
        tensors = [t.clone() for t in _flatten(cond, latent)]  # plain tensors: the call's are inference-mode ones
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
            torch.onnx.export(flat, tuple(tensors), buffer, dynamo=False, opset_version=17,
                              input_names=[f"in{i}" for i in range(len(tensors))])
        import onnx
        model = onnx.load_from_string(buffer.getvalue())
        del buffer
        weights = _weights_outside(model, flat)
        used = [int(i.name[2:]) for i in model.graph.input]  # an input the network ignores is left out
        # the picture, and the sound if made
        self._models[key] = (model.SerializeToString(), used, len(model.graph.output), weights)
        other = _other_inputs(tensors)
        with torch.autocast("cpu", enabled=False):
            wanted = flat(*other)
        if not _same_outputs(self._run(key, other), wanted):
            del self._models[key]
            self._sessions.drop(lambda held: held[0] == key)
            raise ValueError("its ONNX Runtime pictures differ from the network's")

    def __call__(self, cond, latent=None):
        key = CudaGraphStep.signature(cond, latent)
        if key not in self._models:
            with torch.inference_mode(False), torch.no_grad():  # the exporter traces the network
                self._export(key, cond, latent)
        return self._run(key, _flatten(cond, latent))


# A session at a thread count not run for this many of its network's calls is let go (a full
# U-Net-256 in fp32 holds 270-375 MB a session: ONNX Runtime lays the weights out for its kernels
# in memory of each session's own): a thread trial comes back to each count within 36 calls while
# it runs; once it has kept one, the others are not played again (made again if they are).
ONNX_IDLE_CALLS = 900
ONNX_OUTSIDE_MIN = 1024  # initializers of this many values or more are handed to the sessions


def _weights_outside(model, flat: torch.nn.Module) -> tuple[list[str], list]:
    """Takes the weights out of an exported `model` (edited in place: each big float initializer
    left as a reference to external data) and returns their names and ORT values, for every
    session of it to use without a copy of its own. A weight that is one of the network's
    tensors, unchanged, is that tensor's memory; another (a constant the exporter folded) a
    copy made once. The bytes of a full U-Net-256 go from 208 MB to under 0.1."""
    import onnxruntime as ort
    from onnx import TensorProto, numpy_helper
    own = dict(flat.named_parameters())
    own.update(flat.named_buffers())
    names, values = [], []
    for init in model.graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < ONNX_OUTSIDE_MIN:
            continue
        array = numpy_helper.to_array(init)
        tensor = own.get(init.name)
        if (tensor is not None and tensor.device.type == "cpu" and tensor.dtype == torch.float32
                and tensor.is_contiguous() and tuple(tensor.shape) == array.shape):
            mine = tensor.detach().numpy()
            if np.array_equal(mine, array):
                array = mine
        names.append(init.name)
        values.append(ort.OrtValue.ortvalue_from_numpy(array))  # its memory, not a copy
        init.ClearField("raw_data")
        init.ClearField("float_data")
        init.data_location = TensorProto.EXTERNAL
        del init.external_data[:]
        init.external_data.add(key="location", value="vjbridge-in-memory")
    return names, values


CUDA_GRAPHS = True  # the optimized runtime on CUDA captures its own graphs (CudaGraphStep)
# On the CPU, Inductor writes the code around its kernels in C++ (cpp_wrapper), called without the
# GIL: a compiled call is then one call, as a traced one, where its Python wrapper took the GIL
# back after every extern kernel (the convolutions) and waited for it behind any thread holding
# it (a compile on the loader thread, a full garbage collection). Measured, 1 thread, another thread busy in Python:
# pix2pix-pulse 4.45 -> 8.77 ms a call with the Python wrapper, 4.18 -> 4.75 with C++; a full-32
# flow 11.7 -> 43.4 against 9.9 -> 11.3. A network's first compile takes 2 s longer (the wrapper
# through the C++ compiler; its library is kept for the next ones, `share_wrapper_builds`). Linux,
# where it is tested.
CPP_WRAPPER = sys.platform.startswith("linux")
CUDA_COMPILE_MODE = None  # Inductor's default: fused Triton kernels, no graphs of its own
MAX_GRAPHS = 8  # per runner: one per input shape; a live model has one (a degraded level is its own runner)


def _autocast_now(device_type: str):
    """The calling thread's autocast dtype on `device_type`, None where autocast is off."""
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


def _flatten(cond, latent) -> list:
    """The input tensors of a call, in order: cond (one, or a tuple's), then the latent if any."""
    tensors = list(cond) if isinstance(cond, (tuple, list)) else [cond]
    return tensors + ([latent] if latent is not None else [])


def _unflatten(tensors, cond_is_tuple: bool, has_latent: bool) -> tuple:
    """`_flatten`'s tensors back to (cond, latent)."""
    n = len(tensors) - has_latent
    return (tuple(tensors[:n]) if cond_is_tuple else tensors[0]), (tensors[-1] if has_latent else None)


def _numpy_or_none(t: torch.Tensor):
    """A CPU tensor's numpy view, or None where numpy lacks its dtype (bf16) or it needs grad."""
    try:
        return t.detach().numpy()
    except (TypeError, RuntimeError):
        return None


class CudaGraphStep:
    """One network call captured as a CUDA graph, with the copy-in outside it.

    The inputs live in fixed device buffers (plain layout, whatever the caller's); a call copies
    host inputs into pinned staging buffers (a memcpy), starts one
    asynchronous copy of each to the device, replays the graph and returns fresh copies of the
    outputs (device tensors the caller may keep: the next replay rewrites the graph's own). The
    staging buffers are written again only once the last call's copy to the device has finished
    (an event), so a caller that does not wait for its frame never races its own next input."""

    def __init__(self, network: Callable, cond, latent, device: torch.device, warmup: int = 2):
        """Fixed buffers made and the network warmed up on them (compiled, autotuned, cuDNN's
        kernels chosen) on a side stream, as capturing asks; `capture()` then records it."""
        self.network, self.device = network, device
        self.cond_is_tuple = isinstance(cond, (tuple, list))
        self.has_latent = latent is not None
        host = _flatten(cond, latent)
        # our own buffers (never a caller's tensor, which a later call would overwrite), in the
        # plain layout: a pinned memcpy in, and one layout for the graph whatever the caller sends
        self.inputs = [torch.empty(t.shape, dtype=t.dtype, device=device) for t in host]
        self.staging = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in host]
        # numpy views of them, for a one-thread memcpy in (see __call__), where numpy has the dtype
        self.staging_np = [_numpy_or_none(t) for t in self.staging]
        for src, dst in zip(host, self.inputs):
            dst.copy_(src)
        self.copied = torch.cuda.Event()
        self.copied.record()
        self.graph, self.outputs = None, None
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                network(*self._args())
        torch.cuda.current_stream(device).wait_stream(stream)

    def capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        # thread_local: a model switched in mid-set is captured on the loading thread while the
        # live thread goes on replaying the old one, allocating pinned frames and waiting on
        # events; "global" would forbid those calls in every thread for the capture's length
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            outputs = self.network(*self._args())
        self.graph, self.outputs = graph, outputs

    def _args(self):
        return _unflatten(self.inputs, self.cond_is_tuple, self.has_latent)

    @staticmethod
    def signature(cond, latent) -> tuple:
        return (isinstance(cond, (tuple, list)), latent is not None,
                tuple((tuple(t.shape), t.dtype) for t in _flatten(cond, latent)))

    def __call__(self, cond, latent=None):
        self.copied.synchronize()  # the last call's inputs are on the device: staging is free
        for src, stage, stage_np, dst in zip(_flatten(cond, latent), self.staging, self.staging_np, self.inputs):
            if src.device.type == "cuda":
                dst.copy_(src, non_blocking=True)
                continue
            # A single memcpy: torch's own CPU copy splits a picture over its thread pool, and
            # when the cores are busy (the analysis, the sinks, Inductor's compile workers just
            # after start) waiting for those threads cost up to 7 ms a frame on a 16-core host.
            src_np = _numpy_or_none(src) if stage_np is not None else None
            if src_np is not None:
                np.copyto(stage_np, src_np)
            else:
                stage.copy_(src)
            dst.copy_(stage, non_blocking=True)
        self.copied.record()
        self.graph.replay()
        if isinstance(self.outputs, tuple):
            return tuple(t.clone() for t in self.outputs)
        return self.outputs.clone()


class SubPixelDeconv(torch.nn.Module):
    """ConvTranspose2d(kernel 4, stride 2, padding 1) as one 2x2 convolution, exactly.

    Along one axis the transposed conv gives y[2m] = x[m] w1 + x[m-1] w3 and
    y[2m+1] = x[m+1] w0 + x[m] w2: each output parity is a 2-tap conv of the input. One 2x2 conv
    (padding 1) makes all four (row, column) parities as 4 * c_out channels on an (H+1, W+1)
    grid; parity (a, b) is its crop [a:a+H, b:b+W], and pixel_shuffle interleaves them. Same
    FLOPs, but an ordinary conv, which ONNX Runtime quantizes and runs in its fast layouts."""

    TAPS = ((3, 1), (2, 0))  # kernel rows used by output parity 0 and 1, for input rows m-1+a, m+a

    def __init__(self, deconv: torch.nn.ConvTranspose2d):
        super().__init__()
        w = deconv.weight.detach()  # (c_in, c_out, 4, 4)
        c_in, self.c_out = w.shape[:2]
        parts = [w[:, :, list(self.TAPS[a])][:, :, :, list(self.TAPS[b])].permute(1, 0, 2, 3)
                 for a in range(2) for b in range(2)]  # 4 x (c_out, c_in, 2, 2)
        self.conv = torch.nn.Conv2d(c_in, 4 * self.c_out, 2, 1, 1, bias=deconv.bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(torch.cat(parts))
            if deconv.bias is not None:
                self.conv.bias.copy_(deconv.bias.repeat(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        z = self.conv(x)  # (N, 4 c_out, H+1, W+1)
        c = self.c_out
        crops = [z[:, (2 * a + b) * c:(2 * a + b + 1) * c, a:a + h, b:b + w] for a in range(2) for b in range(2)]
        return torch.nn.functional.pixel_shuffle(torch.stack(crops, 2).reshape(n, 4 * c, h, w), 2)


def rewrite_deconvs(module: torch.nn.Module) -> torch.nn.Module:
    """Every ConvTranspose2d(4, 2, 1) in `module` replaced by its SubPixelDeconv, in place."""
    for name, child in module.named_children():
        if (isinstance(child, torch.nn.ConvTranspose2d) and child.kernel_size == (4, 4)
                and child.stride == (2, 2) and child.padding == (1, 1) and child.groups == 1
                and child.dilation == (1, 1) and child.output_padding == (0, 0)):
            setattr(module, name, SubPixelDeconv(child))
        else:
            rewrite_deconvs(child)
    return module


def demo_conditions(model: Generator, count: int = 60, every_s: float = 0.5) -> torch.Tensor:
    """(count, 3, S, S): what the model sees live, every `every_s` seconds of the bundled demo
    audio through the streaming analysis (camera models: the analysis' pictures stand in)."""
    from pathlib import Path

    from bridge.analysis import AnalysisConfig, StreamingAnalyzer
    from bridge.sources.decode import decode_audio

    config = AnalysisConfig(**(getattr(model.config, "analysis", {}) or {}))
    audio = decode_audio(str(Path(__file__).parent / "data" / "demo.ogg"), config.sample_rate)
    analyzer = StreamingAnalyzer(config)
    tick = config.sample_rate // 30
    every = max(1, round(every_s * 30))
    pictures = []
    for i, at in enumerate(range(0, len(audio) - tick, tick)):
        analyzer.feed(audio[at:at + tick])
        if at >= config.sample_rate and i % every == 0:  # after a second: the windows are full
            features = analyzer.snapshot(at / config.sample_rate)
            image = None
            if "image" in model.inputs:  # a camera model: a busy picture from the same music
                image = features.representation("spectrogram", model.output_size)
            snapshot = Snapshot(audio=features, image=image, audio_time=0.0, image_time=0.0)
            pictures.append(model.condition(snapshot))
            if len(pictures) == count:
                break
    return torch.cat(pictures)


def make_runner(model: Generator, runtime: str = "optimized", device: str = "cpu",
                threads: int | str | None = None, compile: bool = True,
                kept: Runner | None = None, check_precision: bool = False):
    """The runner `--runtime` and `--threads` ask for (either "auto": an AutoRunner, see there).
    `compile=False`: the optimized runtime's network (folded, in its precision) run eager, ready
    in a tenth of a second, where compiling takes seconds (a model switch plays it while the
    compiled one builds).
    `kept`: a compiled optimized runner playing now at one of the counts the trial tries: that
    count's candidate is it (compiled already); the other counts share a runner of their own (one
    playing cannot be shared: a candidate sets its runner's count at each call).
    `check_precision`: uncompiled too, a "checked" family's precision is checked (see Runner)."""
    threads = parse_threads(threads)
    cpu = torch.device(device).type == "cpu"
    if threads == "auto" and not cpu:
        threads = None  # the network runs on the GPU: the host's threads only feed it

    def built(runtime: str) -> Runner:
        return Runner(model, runtime=runtime, device=device, compile=compile, check_precision=check_precision)

    if runtime != "auto" and threads != "auto":
        runner = built(runtime)
        runner.use_threads(threads)
        return runner
    runners, note = [], ""
    if runtime == "auto":
        runners.append(built("optimized"))
        why = int8_unavailable(model, device)
        if why is None:
            try:
                int8 = built("int8")
                if int8.info.psnr_db is not None and int8.info.psnr_db >= AUTO_MIN_PSNR_DB:
                    runners.append(int8)
                else:
                    why = f"at {int8.info.psnr_db or 0:.1f} dB, under {AUTO_MIN_PSNR_DB:g} dB"
            except Exception as e:  # int8 is an option: never a reason not to play
                why = f"failed to build ({type(e).__name__}: {e})"
        if why is not None:
            note = f"optimized (int8 {why})"
    else:
        runners.append(built(runtime))
    tried = thread_choices() if threads == "auto" else [threads]
    if len(tried) == 1 and threads == "auto":
        note = join_note(note, f"{_threads_label(tried[0])} (no other count to try)")
    arms = [_Arm(kept if kept is not None and count == kept.threads and runner.info.runtime == kept.info.runtime
                 else runner, count) for runner in runners for count in tried]
    if len(arms) == 1:
        runner = arms[0].runner
        runner.use_threads(arms[0].threads)
        if note:
            runner.info.note = join_note(runner.info.note, f"auto: {note}")
            log.info(runner.info.note)
        return runner
    return AutoRunner(arms, note)


def int8_unavailable(model: Generator, device) -> str | None:
    """Why the int8 runtime cannot run `model` on `device` (to follow "int8 "), or None."""
    if model.family != "pix2pix":
        return f"supports the pix2pix family, not {model.family}"
    if torch.device(device).type != "cpu":
        return f"runs on the CPU, not {device}"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "needs onnxruntime: pip install onnxruntime (or pip install 'vjbridge[export]')"
    return None


class _Arm:
    """One candidate of an AutoRunner: a runner and the thread count it is tried with."""

    def __init__(self, runner: Runner, threads: int | None):
        self.runner, self.threads = runner, threads
        self.label = ""

    @property
    def draws_condition(self) -> bool:
        return self.runner.draws_condition

    def warmup(self, cond, latent: torch.Tensor | None = None, runs: int = 3) -> None:
        self.runner.use_threads(self.threads)
        self.runner.warmup(cond, latent, runs)

    def __call__(self, cond, latent: torch.Tensor | None = None):
        self.runner.use_threads(self.threads)
        return self.runner(cond, latent)


class AutoRunner:
    """`--runtime auto` and `--threads auto`: the candidates (the optimized and the int8 runner,
    pix2pix on the CPU; each with each thread count tried), all warmed, take turns on the first
    live frames, AUTO_BLOCK calls in a row each, every call timed where the engine makes it
    (beside the audio, the analysis and the sinks: the threads it shares the cores with change
    which is faster). Once each has AUTO_TRIAL_FRAMES timed calls one is kept and the others let
    go: the first in the order optimized before int8, fewer threads before more, unless a later
    one is AUTO_MIN_GAIN faster by median (int8 is in the trial only at AUTO_MIN_PSNR_DB or more
    against fp32), and more threads only where fewer do not fit within AUTO_ROOM of the frame (at
    the 95th percentile; the frame is the median time between two calls, as the engine paces
    them). Looks like a Runner to the pipeline: `draws_condition` answers for the one
    that takes the next call, and `candidates` lists what the pipeline warms."""

    def __init__(self, arms: list[_Arm], note: str = ""):
        self.arms = arms
        runtimes = len({arm.runner.info.runtime for arm in arms}) > 1
        threads = len({arm.threads for arm in arms}) > 1
        for arm in arms:
            arm.label = ", ".join([arm.runner.info.runtime] * runtimes + [_threads_label(arm.threads)] * threads)
        self.candidates: list = list(arms)
        self.device = arms[0].runner.device
        self._most_threads = max((arm.threads for arm in arms if arm.threads is not None), default=None)
        self.note = note  # why a runtime was left out of the trial, if one was
        self._times: dict[str, list[float]] = {arm.label: [] for arm in arms}
        self._gaps: list[float] = []  # ms from one call's start to the next's: the frame, as paced
        self._last_start: float | None = None
        self._calls = 0
        self.chosen: Runner | None = None

    @property
    def level_runtime(self) -> str:
        """The runtime of the degraded levels, built before the choice: optimized, when int8 is tried."""
        runtimes = {arm.runner.info.runtime for arm in self.arms} or {self.chosen.info.runtime}
        return "optimized" if len(runtimes) > 1 else runtimes.pop()

    @property
    def level_threads(self) -> int | None:
        """The count the degraded levels run at: the most tried. They are built, warmed and so
        compiled before the choice (dynamo compiles again for another count, for seconds), and
        a lower level plays because the model is slow: it gets every core offered."""
        return self._most_threads

    @property
    def _current(self) -> "_Arm | Runner":
        return self.chosen or self.arms[(self._calls // AUTO_BLOCK) % len(self.arms)]

    @property
    def info(self) -> RunnerInfo:
        current = self._current
        return current.runner.info if isinstance(current, _Arm) else current.info

    @property
    def draws_condition(self) -> bool:
        return self._current.draws_condition

    @property
    def status(self) -> str:
        """For the status line: the trial while it runs, then what was kept."""
        if self.chosen is None:
            return f"auto: trying {', '.join(arm.label for arm in self.arms)}"
        return self.chosen.status

    def warmup(self, cond, latent: torch.Tensor | None = None, runs: int = 3) -> None:
        """Warms the candidate that takes the next call (the pipeline warms each candidate)."""
        self._current.warmup(cond, latent, runs)

    def __call__(self, cond, latent: torch.Tensor | None = None):
        arm = self._current
        if self.chosen is not None:
            return arm(cond, latent)
        t0 = time.perf_counter()
        if self._last_start is not None:
            self._gaps.append((t0 - self._last_start) * 1000.0)
        self._last_start = t0
        out = arm(cond, latent)
        if self._calls % AUTO_BLOCK or AUTO_BLOCK == 1:  # a block's first call settles the switch
            self._times[arm.label].append((time.perf_counter() - t0) * 1000.0)
        self._calls += 1
        del arm  # (its runner, if not kept, goes at the choice)
        if min(len(t) for t in self._times.values()) >= AUTO_TRIAL_FRAMES:
            self._decide()
        return out

    def cut_short(self, why: str) -> bool:
        """The set left full size during the trial (degradation stepped down: full size missed
        the frame with the counts in turn). The trial is decided now, for the most threads of
        the levels' runtime, the count the lower levels play at, as a model missing the frame
        would keep; left unfinished, it would wait at full size all set. False if decided already."""
        if self.chosen is not None:
            return False
        self._decide(cut=why)
        return True

    def _decide(self, cut: str | None = None) -> None:
        ms = {label: statistics.median(t) for label, t in self._times.items() if t}
        frame = statistics.median(self._gaps) if self._gaps else None
        timed = ", ".join(f"{label} {v:.1f} ms" for label, v in ms.items()) or "none"
        if cut is None:
            roomy = [frame is not None and float(np.percentile(self._times[arm.label], 95)) <= AUTO_ROOM * frame
                     for arm in self.arms]
            best = self.arms[kept_in_order([ms[arm.label] for arm in self.arms], [arm.threads for arm in self.arms],
                                           roomy)]
            int8 = next((arm.runner for arm in self.arms if arm.runner.info.runtime == "int8"), None)
            wants = [f"int8 ({int8.info.psnr_db:.1f} dB)"] if int8 is not None else []
            room = ""
            if len({arm.threads for arm in self.arms}) > 1:
                wants.append("more threads")
                if frame is not None:
                    room = f", more threads only where fewer take over {AUTO_ROOM:.0%} of the {frame:.1f} ms frame at p95"
            why = join_note(self.note, f"live calls: {timed}; {' and '.join(wants)} kept if {AUTO_MIN_GAIN:g}x faster{room}")
        else:
            best = max((arm for arm in self.arms if arm.runner.info.runtime == self.level_runtime),
                       key=lambda arm: arm.threads or 0)
            why = join_note(self.note, f"trial cut short, {cut}: the most threads, as the lower levels; live calls: {timed}")
        runner = best.runner
        self.chosen = runner
        runner.use_threads(best.threads)
        runner.keep_threads(best.threads)  # the counts it did not keep: their compiles go
        runner.info.note = join_note(runner.info.note, f"auto: {best.label} ({why})")
        runner.info.auto_ms = {label: round(v, 2) for label, v in ms.items()}
        self.candidates = [runner]
        self.arms = []  # the runners not kept go, and with them what they compiled
        let_go_soon()
        log.info(runner.info.note)


def kept_in_order(ms: list[float], threads: list[int | None] | None = None,
                  roomy: list[bool] | None = None) -> int:
    """Which of candidates timed at `ms` (in their order of preference) is kept: the first,
    unless a later one is AUTO_MIN_GAIN faster than the one kept so far; one with more `threads`
    than that one only where that one is not `roomy` (it fits the frame with room to spare)."""
    best = 0
    for i in range(1, len(ms)):
        more = threads is not None and (threads[i] or 0) > (threads[best] or 0)
        if more and roomy is not None and roomy[best]:
            continue
        if ms[best] >= AUTO_MIN_GAIN * ms[i]:
            best = i
    return best


def join_note(note: str | None, more: str) -> str:
    return f"{note}; {more}" if note else more


def picture_of(out):
    """The picture of a network's output (families that make sound give (picture, mel_db))."""
    return out[0] if isinstance(out, tuple) else out


def picture_psnr(reference: np.ndarray, other: np.ndarray) -> float:
    """PSNR in dB of `other` against `reference`, pictures in [-1, 1] (inf when equal)."""
    mse = float(np.mean((reference.astype(np.float64) - other) ** 2))
    return 10 * np.log10(4.0 / mse) if mse > 0 else float("inf")  # pictures span 2.0


class _GenerateEntry(torch.nn.Module):
    def __init__(self, model: Generator):
        super().__init__()
        self.model = model

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.model.generate(cond)


def _int8_weight_peak(path: str) -> int:
    """The largest |value| among an ONNX model's int8 weights: 127 for full 8-bit per-channel
    weights, 63 or 64 when they were reduced to 7 bits."""
    import onnx
    from onnx import numpy_helper

    peaks = [int(np.abs(numpy_helper.to_array(t).astype(np.int16)).max())
             for t in onnx.load(path).graph.initializer
             if t.data_type == onnx.TensorProto.INT8 and np.prod(t.dims) > 1]
    return max(peaks, default=0)


class Int8Pix2Pix:
    """A pix2pix U-Net statically quantized to int8 for ONNX Runtime on the CPU:
    `(cond (1, 3, S, S), latent) -> (1, 3, S, S)` float32. Building it exports, calibrates and
    quantizes the network: seconds for a lite model, about 20 s for full ngf64 on 2 cores."""

    def __init__(self, model: Generator, device: torch.device, calibration: torch.Tensor | None = None,
                 threads: int | None = None):
        why = int8_unavailable(model, device)
        if why is not None:
            raise ConfigError(f"--runtime int8 {why}; use --runtime optimized")
        from onnxruntime import quantization as q
        import tempfile
        import warnings
        from pathlib import Path

        self.reduce_range = not cpu_has_vnni()  # 7-bit weights only where 8-bit could overflow
        # the whole live entry point (a degraded ScaledPix2Pix's resizes too), folded, rewritten
        net = _GenerateEntry(rewrite_deconvs(fold_batchnorm(copy.deepcopy(model))).eval())
        conditions = demo_conditions(model) if calibration is None else calibration
        calib, held_out = conditions[0::2].numpy(), conditions[1::2][::2]

        class Reader(q.CalibrationDataReader):
            def __init__(self):
                self.items = iter({"cond": calib[i:i + 1]} for i in range(len(calib)))

            def get_next(self):
                return next(self.items, None)

        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
            fp32, prepared, int8 = (str(Path(tmp) / n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
            torch.onnx.export(net, (conditions[:1],), fp32, dynamo=False, input_names=["cond"],
                              output_names=["picture"], opset_version=17)
            q.quant_pre_process(fp32, prepared, skip_symbolic_shape=True)
            q.quantize_static(prepared, int8, Reader(), quant_format=q.QuantFormat.QDQ,
                              per_channel=True, reduce_range=self.reduce_range,
                              activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                              calibrate_method=q.CalibrationMethod.MinMax)
            self.weight_peak = _int8_weight_peak(int8)
            self._onnx = Path(int8).read_bytes()
        self._sessions = SessionsByCount()  # keyed by thread count
        self.use_threads(threads or torch.get_num_threads())
        with torch.inference_mode():
            reference = model.eval().generate(held_out).numpy()
        got = np.concatenate([self(held_out[i:i + 1]).numpy() for i in range(len(held_out))])
        per_tick = [picture_psnr(reference[i], got[i]) for i in range(len(held_out))]
        self.psnr_db, self.psnr_min_db = float(np.mean(per_tick)), float(min(per_tick))

    def use_threads(self, count: int) -> None:
        """Run on a session with `count` intra-op threads (made the first time it runs, kept
        while that count is played: SessionsByCount)."""
        self.count = count

    @property
    def session(self):
        """The session at the count in use."""
        return self._sessions.get(self.count, lambda: ort_session(self._onnx, self.count))

    def __call__(self, cond: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        x = cond.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {"cond": x})[0])


def _rgba_on_device(picture: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1] -> (H, W, 4) uint8 RGBA on the picture's own device."""
    rgb = picture[0].detach().add(1.0).mul_(127.5).clamp_(0, 255).to(torch.uint8)
    h, w = rgb.shape[1:]
    out = torch.empty((h, w, 4), dtype=torch.uint8, device=rgb.device)
    out[..., :3] = rgb.permute(1, 2, 0)
    out[..., 3] = 255
    return out


def to_rgba(picture: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [-1, 1] -> contiguous (H, W, 4) uint8 RGBA in host memory, alpha opaque."""
    return _rgba_on_device(picture).cpu().numpy()


class PendingFrame:
    """An RGBA frame on its way from the GPU: converted to uint8 there (a quarter of the float
    picture's bytes cross the bus), copied into pinned host memory without waiting, with an event
    recorded after the copy. The generation thread goes on at once; `result()`, called by the
    output thread at the deadline, waits for the event (long done, usually) and gives the array.
    Each frame has its own pinned block from torch's caching host allocator, so a frame still
    held by a sink is never overwritten by a later one."""

    __slots__ = ("_host", "_event")

    def __init__(self, host: torch.Tensor, event):
        self._host, self._event = host, event

    def result(self) -> np.ndarray:
        if self._event is not None:
            self._event.synchronize()
            self._event = None
        return self._host.numpy()


def to_rgba_async(picture: torch.Tensor) -> np.ndarray | PendingFrame:
    """`to_rgba`, but on CUDA the copy to the host is left running (see PendingFrame)."""
    if picture.device.type != "cuda":
        return to_rgba(picture)
    rgba = _rgba_on_device(picture)
    host = torch.empty(rgba.shape, dtype=torch.uint8, pin_memory=True)
    host.copy_(rgba, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return PendingFrame(host, event)


def resolve_frame(frame) -> np.ndarray:
    """The array of a frame that may still be on its way from the GPU."""
    return frame.result() if isinstance(frame, PendingFrame) else frame


def example_inputs(model: Generator, seed: int = 0) -> tuple:
    """(cond, latent) the model would see live: a busy camera frame or audio snapshot, a latent
    from its own walk. Random, seeded: parity must hold away from silence too."""
    snapshot, latent = example_snapshot(model, seed)
    return model.condition(snapshot), latent


def example_snapshot(model: Generator, seed: int = 0) -> tuple:
    """(snapshot, latent) behind `example_inputs`: what a picture drawn in the call is drawn from."""
    from bridge.analysis import AnalysisConfig, StreamingAnalyzer

    rng = np.random.default_rng(seed)
    config = AnalysisConfig(**(getattr(model.config, "analysis", {}) or {}))
    analyzer = StreamingAnalyzer(config)
    analyzer.feed((rng.standard_normal(config.sample_rate) * 0.3).astype(np.float32))
    image = rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    snapshot = Snapshot(audio=analyzer.snapshot(1.0), image=image, audio_time=1.0, image_time=1.0)
    walk = model.navigator(None, seed=seed)
    latent = walk.step(snapshot.audio, 1 / 30) if walk is not None else None
    return snapshot, latent
