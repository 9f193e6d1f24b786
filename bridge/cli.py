"""`vjbridge` sub-commands. Thin: parse, build objects, call, turn our errors into one line."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

# Before numpy loads OpenBLAS: numpy's small matrix products (drawing the conditioning pictures,
# resizes) spread over every core otherwise, fighting torch's threads: on a 16-core host four
# audio pictures took 164 ms to draw, 68 ms with one BLAS thread (no change on 2 cores). A value
# the user set wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from bridge import __version__  # noqa: E402
from bridge.errors import BridgeError  # noqa: E402
from bridge.memory import keep_freed_memory  # noqa: E402
from bridge.sinks.factory import SINK_FORMS  # noqa: E402

keep_freed_memory()  # big per-frame arrays reused, not faulted in afresh (bridge.memory)

DEFAULT_MODEL = "pix2pix-pulse"
DEMO_AUDIO = Path(__file__).parent / "data" / "demo.ogg"
SINK_HELP = "where frames go, repeatable: " + ", ".join(SINK_FORMS)
SOURCE_HELP = "audio in: 'default', a device index or name, an audio file, a URL (http, rtsp, udp, srt…), or 'silence'"


def _add_runtime(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", choices=("optimized", "reference", "int8", "auto"), default="optimized",
                   help="optimized (BN folded, compiled), int8 (CPU, pix2pix: ONNX Runtime int8, its PSNR "
                        "against fp32 measured at start; needs onnxruntime), auto (both play the first live "
                        "frames in turn, int8 kept if 1.1x faster at 40 dB or more), or the plain eager fp32 "
                        "reference")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")


def _add_threads(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--threads", default=default,
                   help="torch threads for the network on the CPU: a count, or auto (1 and all the cores "
                        "play the first live frames in turn; more kept only if 1.1x faster, so a small model "
                        "leaves cores to the rest)" + (f"; default {default}" if default else
                                                        "; default torch's own (all the cores)"))


def _add_generation(p: argparse.ArgumentParser) -> None:
    """Options that choose how a model plays: its live mode and its latent walk."""
    p.add_argument("--mode", help="live mode of families that have them (vae_associator: camera, "
                   "sound, both; default from the inputs given)")
    p.add_argument("--mix", type=float, help="vae_associator 'both': how far the sound moves the camera picture 0..1")
    p.add_argument("--walk", help="latent walk of latent families (realnvp: weighted, magellan, explore; "
                   "cvae: linger); default: the family's own")
    p.add_argument("--walk-param", action="append", metavar="KEY=VALUE", help="a walk parameter, repeatable")
    p.add_argument("--seed", type=int, default=0, help="seed of the walks' randomness (default 0)")


def run_settings(args):
    """LiveSettings from `run`'s arguments. With --preset, the preset's model and [session]
    (inputs, outputs, fps, MIDI mapping) fill in every option not given on the command line."""
    from bridge.config import parse_key_values
    from bridge.live import LiveSettings

    models = args.model or []
    given = dict(model=models[0] if models else None, audio_in=args.audio_in, camera=args.camera, outs=args.out,
                 fps=args.fps, midi_map=args.midi_map)
    if args.preset:
        from bridge.control.presets import read_preset
        data = read_preset(args.preset)
        stored = dict(data.get("session", {}), model=data.get("preset", {}).get("model"))
        for key, value in stored.items():
            if given.get(key) is None and value not in (None, ""):
                given[key] = value
    audio_in = given["audio_in"] or "default"
    return LiveSettings(model=given["model"] or DEFAULT_MODEL,
                        audio_in=None if audio_in == "none" else audio_in,
                        camera=given["camera"], outs=given["outs"] or ["window"],
                        fps=given["fps"] or 30.0, size=args.size, runtime=args.runtime,
                        threads=args.threads, device=args.device, smoothing=args.smoothing, block=args.block,
                        channel=args.channel, mode=args.mode, mix=args.mix, walk=args.walk,
                        walk_params=parse_key_values(args.walk_param, "--walk-param"), seed=args.seed,
                        idle_after=args.idle, idle_detector=args.idle_detector, osc_port=args.osc_port,
                        osc_host=args.osc_host, osc_reply=args.osc_reply, osc_allow=args.osc_allow or [],
                        preset=args.preset, midi_in=args.midi_in, midi_out=args.midi_out,
                        midi_map=given["midi_map"], midi_api=args.midi_api, record=args.record,
                        replay=args.replay, degrade=args.degrade, isolate=args.isolate,
                        keep_warm=args.keep_warm, preload=args.preload,
                        mix_models=models[1:], mix_mode=args.mix_mode, out_size=args.out_size,
                        upscale=args.upscale, fit=args.fit)


def cmd_run(args) -> int:
    from bridge.live import LiveSession

    settings = run_settings(args)
    # optimized plays uncompiled from the first frame (bridge.live: play while compiling); the
    # others warm up first: auto and int8 time and calibrate, an isolated worker compiles
    at_once = settings.runtime in ("optimized", "reference") and not settings.isolate
    print(f"vjbridge: loading {settings.model}" + ("" if at_once else " and warming it up (the first run on a "
                                                   "machine compiles it, which can take a minute)"), file=sys.stderr)
    with LiveSession(settings) as session:
        _SESSIONS.append(session)
        print(f"vjbridge {__version__}: model {settings.model}, audio {settings.audio_in}, camera "
              f"{settings.camera}, out {', '.join(settings.outs)}, {settings.fps:g} fps; Ctrl-C stops",
              file=sys.stderr)
        for line in session.describe():
            print(f"vjbridge: {line}", file=sys.stderr)
        try:
            summary = session.run(duration=args.duration)
        except KeyboardInterrupt:
            summary = session.engine.stats.summary()
    print(json.dumps(summary))
    return 0


def cmd_render(args) -> int:
    from bridge.config import parse_key_values
    from bridge.generators.base import load_model
    from bridge.live import prepare_model
    from bridge.render import render
    from bridge.runtime import make_runner

    model = load_model(args.model, device=args.device)
    prepare_model(model, args.mode, args.mix, has_audio=True, has_image=args.video is not None,
                  image_option="--video FILE")
    runner = make_runner(model, runtime=args.runtime, device=args.device, threads=args.threads)
    replay = None
    if args.replay:
        from bridge.control.recorder import Recording
        replay = Recording.load(args.replay)
        for note in replay.differences(model=args.model, fps=args.fps, seed=args.seed, walk=args.walk):
            print(f"vjbridge: {note}", file=sys.stderr)
    result = render(model, args.audio, args.out, fps=args.fps, video_path=args.video, seconds=args.seconds,
                    runner=runner, output_size=args.size, smoothing=args.smoothing, walk=args.walk,
                    walk_params=parse_key_values(args.walk_param, "--walk-param"), seed=args.seed,
                    mux=args.mux, replay=replay)
    print(json.dumps(result.summary()))
    return 0


def cmd_demo(args) -> int:
    from bridge.generators.base import load_model
    from bridge.live import LiveSession, LiveSettings
    from bridge.render import render
    from bridge.runtime import Runner

    model = load_model(args.model)
    print(f"demo: model {args.model} ({model.family}, input '{getattr(model.config, 'input', '?')}', "
          f"{model.output_size}²), audio {DEMO_AUDIO.name} (CC0, sonic-pi samples)", file=sys.stderr)
    result = render(model, DEMO_AUDIO, args.out, fps=args.fps, runner=Runner(model))
    stats = result.summary()
    print(f"rendered {result.frames} frames ({result.audio_seconds:.1f} s of audio) to {result.path} "
          f"in {result.wall_seconds:.1f} s: {result.speed:.2f}x real time, {result.frame_ms_p50:.1f} ms per frame",
          file=sys.stderr)
    if args.live_seconds > 0:
        print(f"live: the file as if it were line-in, to a null output; the model plays from the first frame "
              f"while it compiles, and {args.live_seconds:g} s are measured once it has settled", file=sys.stderr)
        settings = LiveSettings(model=args.model, audio_in=str(DEMO_AUDIO), outs=["null"], fps=args.fps)
        with LiveSession(settings) as session:
            _SESSIONS.append(session)
            live = stats["live"] = session.run(settled_window=args.live_seconds)
        print(_settled_line(live), file=sys.stderr)
    print(json.dumps(stats))
    return 0


def _settled_line(live: dict) -> str:
    """What `demo` says of its live seconds (LiveSession.run with a settled window)."""
    def ms(key: str) -> str:
        return "--" if live.get(key) is None else f"{live[key]:.0f}"
    settling = live.get("settling") or {}
    if live["settle_s"] is not None:
        head = (f"live: settled (compiled, threads chosen) in {live['settle_s']:g} s while playing "
                f"(repeated {settling.get('repeated', 0)}, stalled {settling.get('stalled', 0)}); then")
    elif live["window_s"] > 0:
        head = "live: not settled in time, measured as it played:"
    else:
        return "live: stopped before the model settled (figures of the whole run in the JSON)"
    return (f"{head} {live['window_s']:g} s at {live['fps']:.1f} fps, latency p50 {ms('latency_ms_p50')} ms "
            f"p95 {ms('latency_ms_p95')} ms, model {ms('generate_ms_p50')} ms, repeated {live['repeated']} "
            f"stalled {live['stalled']}")


def cmd_devices(args) -> int:
    from bridge.doctor import list_devices

    print(json.dumps(list_devices(), indent=2) if args.json else _format_devices(list_devices()))
    return 0


def _format_devices(devices: dict) -> str:
    lines = []
    for kind, entries in devices.items():
        lines.append(f"{kind}:")
        if isinstance(entries, str):
            lines.append(f"  ({entries})")
        elif not entries:
            lines.append("  (none)")
        for e in entries if isinstance(entries, list) else []:
            lines.append("  " + ", ".join(f"{k} {v}" for k, v in e.items()))
    return "\n".join(lines)


def _describe_bundle(family: str, c: dict) -> str:
    """One line from a bundle's config, without building the model."""
    size = c.get("size") or c.get("image_size")
    parts = [family]
    if c.get("input"):
        parts.append(f"input {c['input']}")
    if size:
        parts.append(f"{size}²")
    latent = c.get("latent_dim") or c.get("image_latent")
    if latent:
        parts.append(f"latent {latent}")
    if c.get("n_anchors"):
        parts.append(f"{c['n_anchors']} anchors")
    return ", ".join(parts)


def cmd_models(args) -> int:
    from bridge.generators.base import list_bundles, read_bundle_config

    rows = []
    for path in list_bundles():
        try:
            cfg = read_bundle_config(path)
            rows.append({"name": path.name, "family": cfg["family"],
                         "summary": _describe_bundle(cfg["family"], cfg["config"]),
                         "config": cfg["config"], "path": str(path)})
        except BridgeError as e:
            rows.append({"name": path.name, "error": str(e), "path": str(path)})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['name']:<24} {r.get('error') or r['summary']}  ({r['path']})")
    return 0


def cmd_doctor(args) -> int:
    from bridge.doctor import run_checks

    ok = True
    for name, passed, detail in run_checks():
        ok &= passed or name.startswith("optional")
        print(f"{'ok  ' if passed else 'FAIL'} {name}: {detail}")
    return 0 if ok else 1


def _tick_inputs(text: str) -> tuple[str, ...]:
    from bridge.analysis import REPRESENTATIONS
    from bridge.errors import ConfigError
    inputs = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in inputs if name not in (*REPRESENTATIONS, "image")]
    if unknown or not inputs:
        raise ConfigError(f"--tick-inputs: {', '.join(unknown) or 'none given'}: choose from "
                          f"{', '.join(REPRESENTATIONS)}, image")
    return inputs


def cmd_bench(args) -> int:
    from bridge.bench import FAMILIES, bundle_cases, default_cases, format_table, run_bench
    from bridge.errors import ConfigError

    if args.threads is not None:  # the whole bench at this count (recorded as torch_threads)
        import torch
        from bridge.runtime import parse_threads
        threads = parse_threads(args.threads)
        if threads == "auto":
            raise ConfigError("bench --threads takes a count: auto chooses on live frames (vjbridge run)")
        torch.set_num_threads(threads)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    variants = tuple(args.variants.split(","))
    names = [n.strip() for n in (args.models or "").split(",") if n.strip()]
    if args.models is not None and not names:
        raise ConfigError("bench --models wants bundle names or folders, comma-separated")
    chosen = args.families or ("all" if not names else "")  # --models alone: those bundles only
    families = FAMILIES if chosen == "all" else tuple(f.strip() for f in chosen.split(",") if f.strip())
    cases = (bundle_cases(names) if names else []) + default_cases(sizes, variants, families)
    int8 = args.int8
    if int8 is None:  # the int8 row by default wherever it can run
        import importlib.util
        int8 = args.device == "cpu" and importlib.util.find_spec("onnxruntime") is not None
    report = run_bench(cases, device=args.device,
                       iterations=args.iterations, progress=lambda m: print(f"bench: {m}", file=sys.stderr),
                       interleave=not args.sequential, sound="sound" in families,
                       analysis="analysis" in families, int8=int8,
                       mix=tuple((size, variant) for size in sizes for variant in variants) if "mix" in families else (),
                       upscale="upscale" in families, pictures=sizes if "pictures" in families else (),
                       tick=sizes if "tick" in families else (), tick_inputs=_tick_inputs(args.tick_inputs))
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    if args.plot:
        from bridge.bench import plot
        plot(report, args.plot)
    print(text if args.json else format_table(report))
    return 0


def cmd_export(args) -> int:
    from bridge.train.export import export_fp16, export_onnx

    if not (args.fp16 or args.onnx):
        raise BridgeError("say what to export: --fp16, --onnx or both")
    report = {}
    if args.fp16:
        path, parity = export_fp16(args.bundle, args.out if not args.onnx else None)
        report["fp16"] = {"path": str(path), "parity": parity.summary()}
    if args.onnx:
        path, parity = export_onnx(args.bundle, args.out if not args.fp16 else None)
        report["onnx"] = {"path": str(path), "parity": parity.summary() if parity else None}
    print(json.dumps(report))
    return 0


def cmd_midi_ports(args) -> int:
    from bridge.control.midi import list_ports

    ports = list_ports(args.midi_api)
    print(f"MIDI backend: {ports['api']}")
    print("in:  " + (", ".join(ports["in"]) or "none"))
    print("out: " + (", ".join(ports["out"]) or "none"))
    return 0


def cmd_protocol(args) -> int:
    from bridge.control.protocol import PROTOCOL_FILE, render, write

    if args.write:
        print(f"wrote {write()} and the README's OSC tables")
        return 0
    if args.check:
        stale = PROTOCOL_FILE.read_text() != render()
        print(f"{PROTOCOL_FILE} is {'stale: run vjbridge protocol --write' if stale else 'up to date'}")
        return int(stale)
    sys.stdout.write(render())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vjbridge", description="Learned, audio-reactive visuals for "
                                     "TouchDesigner: models in, frames out over NDI/Spout/Syphon.")
    parser.add_argument("--version", action="version", version=f"vjbridge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="play live: audio/camera in, frames out")
    p.add_argument("--model", action="append", help=f"bundle name (see `vjbridge models`) or folder (default "
                   f"{DEFAULT_MODEL}); up to 4 times to play several models at once, mixed (the first "
                   "follows the knobs and walks; weights /vjbridge/param/mix_1..4, blend mix_mode)")
    p.add_argument("--mix-mode", choices=("mix", "add", "screen", "lighten"),
                   help="how several --model blend (default mix: a weighted average)")
    p.add_argument("--out-size", metavar="WxH", help="output resolution, e.g. 1920x1080 or 3840x2160: "
                   "the picture is upscaled to it (default: the model's square)")
    p.add_argument("--upscale", choices=("bilinear", "bicubic", "lanczos"), default="bicubic",
                   help="how --out-size upscales (lanczos: sharper, slower on the CPU)")
    p.add_argument("--fit", choices=("cover", "contain", "stretch"), default="cover",
                   help="a square picture in a wide frame: cover crops, contain adds black bars")
    p.add_argument("--audio-in", metavar="SRC", help=SOURCE_HELP + "; 'none' for no audio (default: default)")
    p.add_argument("--camera", metavar="SRC", help="camera index or name, a video file, or a URL")
    p.add_argument("--out", action="append", metavar="SINK", help=SINK_HELP + " (default: window)")
    p.add_argument("--fps", type=float, help="output frame rate (default 30)")
    p.add_argument("--size", type=int, help="output size in pixels (default: the model's)")
    p.add_argument("--smoothing", type=float, default=0.0, help="temporal smoothing 0..0.95 (default 0)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--block", type=int, default=512, help="audio block size in samples")
    p.add_argument("--channel", type=int, help="use one input channel instead of the mix")
    p.add_argument("--idle", type=float, metavar="SECONDS",
                   help="idle mode: after this long with nobody at the camera, show the model's training "
                        "pictures until someone steps in (off by default)")
    p.add_argument("--idle-detector", choices=("motion", "face"), default="motion",
                   help="how idle mode sees people: motion, or OpenCV's face cascade")
    p.add_argument("--osc-port", type=int, help="listen for OSC on this UDP port (off by default)")
    p.add_argument("--osc-host", default="127.0.0.1",
                   help="address OSC listens on (default 127.0.0.1; 0.0.0.0 opens it to the network)")
    p.add_argument("--osc-reply", metavar="HOST:PORT", help="send heartbeat, fps, latency and parameter "
                   "feedback here")
    p.add_argument("--osc-allow", action="append", metavar="IP", help="accept OSC only from these senders")
    p.add_argument("--preset", metavar="NAME", help="recall presets/NAME.toml at start (its model, inputs "
                   "and outputs fill in options not given here); re-applied whenever the file is saved")
    p.add_argument("--midi-in", metavar="PATTERN", help="MIDI input ports whose name contains PATTERN "
                   "('*' for all; off by default); ports plugged in later are opened too")
    p.add_argument("--midi-out", metavar="PATTERN", help="MIDI feedback ports (LED rings, motor faders)")
    p.add_argument("--midi-map", metavar="NAME", help="MIDI mapping presets/midi/NAME.toml")
    p.add_argument("--midi-api", help="MIDI backend: alsa, jack, coremidi, winmm (default: the system's)")
    p.add_argument("--record", metavar="FILE", help="record every control event (OSC, MIDI, presets) to FILE")
    p.add_argument("--replay", metavar="FILE", help="play a recording's control events back")
    p.add_argument("--degrade", metavar="LEVELS", help="when the model misses the frame rate, play it at a "
                   "lower internal resolution and upscale, and back up when there is room: 'auto' "
                   "(full, 3/4, 1/2, 1/4) or scales like 1,0.75,0.5 (default: off; pix2pix only)")
    p.add_argument("--isolate", action="store_true", help="run the model's network in a worker process: "
                   "if it crashes or hangs, the last good frame plays on while a new worker starts")
    p.add_argument("--keep-warm", type=int, default=2, metavar="N",
                   help="models switched away from (or cued with /vjbridge/model/cue) kept loaded and "
                   "warmed, so switching back lands at the next frame (default 2; 0: none, least memory)")
    p.add_argument("--preload", action="append", default=[], metavar="NAME",
                   help="also load and warm this model at start, ready to switch to at once (repeatable; "
                   "kept warm whatever --keep-warm)")
    _add_generation(p)
    _add_runtime(p)
    _add_threads(p, "auto")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("render", help="offline: audio (+video) file to an mp4 with the audio muxed")
    p.add_argument("audio", help="audio or video file (anything ffmpeg reads)")
    p.add_argument("--video", help="video whose frames feed an image-input model")
    p.add_argument("--model", default=DEFAULT_MODEL, help="bundle name or folder")
    p.add_argument("--out", required=True, help="output .mp4")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--size", type=int, help="output size (default: the model's)")
    p.add_argument("--seconds", type=float, help="render only the first S seconds")
    p.add_argument("--smoothing", type=float, default=0.0)
    p.add_argument("--mux", choices=("auto", "input", "generated"), default="auto",
                   help="sound in the mp4: the input, a sound model's generated sound, or auto "
                        "(generated when the model makes sound)")
    p.add_argument("--replay", metavar="FILE", help="apply a recording's control events (run --record) "
                   "at their frame times: the same file renders the same frames")
    _add_generation(p)
    _add_runtime(p)
    _add_threads(p, None)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("demo", help="bundled model + bundled CC0 audio -> demo.mp4, with stats")
    p.add_argument("--out", default="demo.mp4")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--live-seconds", type=float, default=5.0,
                   help="then play live, and measure this long once the model has compiled and chosen its threads "
                        "(0: skip)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("devices", help="audio inputs/outputs, cameras, NDI sources")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("models", help="model bundles found in models/ and the user models directory")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("doctor", help="check this machine: libraries, outputs, models")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("bench", help="reference vs optimized speed of every model, as JSON or a table")
    p.add_argument("--json", action="store_true", help="print the JSON report")
    p.add_argument("--out", help="also write the JSON report to this file")
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", default="256", help="comma-separated sizes (256,512)")
    p.add_argument("--variants", default="lite,full", help="pix2pix variants: lite (ngf 32), full (ngf 64)")
    p.add_argument("--families",
                   help="comma-separated: pix2pix, vae_associator, realnvp, cvae, sound (the mel-to-audio "
                        "voice), analysis (ms per hop), pictures (drawing the audio pictures), mix (four "
                        "models at once), tick (whole ticks of models on --tick-inputs, the picture made on "
                        "the host or inside the network's call), upscale (to 1080p and 4K), or all (default, "
                        "unless --models is given)")
    p.add_argument("--models", metavar="NAMES",
                   help="your own bundles (names or folders, comma-separated), timed on the inputs they "
                        "see live, in each live mode, with the frame rate each runtime holds; alone, only "
                        "these (add --families to time those too)")
    p.add_argument("--tick-inputs", default="bands,spectrogram,image",
                   help="the tick family's models' inputs: audio pictures (bands, mel, spectrogram, waveform, "
                        "history, bands_history) and image (a camera frame); default bands,spectrogram,image")
    p.add_argument("--int8", action=argparse.BooleanOptionalAction, default=None,
                   help="also time the int8 runtime (pix2pix on the CPU), with its PSNR against fp32; "
                        "default: yes on the CPU when onnxruntime is installed")
    p.add_argument("--plot", metavar="PNG", help="also draw each runtime's fps as a PNG")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--threads", help="torch threads for the whole bench (default torch's own: all the cores)")
    p.add_argument("--sequential", action="store_true",
                   help="time all reference calls, then all optimized ones (default: alternate them)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("midi", help="MIDI tools: list the ports (`vjbridge midi ports`)")
    midi_sub = p.add_subparsers(dest="midi_command", required=True, metavar="MIDI_COMMAND")
    q = midi_sub.add_parser("ports", help="MIDI input and output ports this machine has")
    q.add_argument("--midi-api", help="alsa, jack, coremidi, winmm (default: the system's)")
    q.set_defaults(func=cmd_midi_ports)

    p = sub.add_parser("protocol", help="the OSC/parameter manifest TouchDesigner reads (td/protocol.json)")
    p.add_argument("--write", action="store_true", help="regenerate td/protocol.json and the README's OSC tables")
    p.add_argument("--check", action="store_true", help="exit 1 when td/protocol.json differs from the code")
    p.set_defaults(func=cmd_protocol)

    p = sub.add_parser("export", help="fp16 and/or ONNX copies of a bundle, with their parity vs fp32")
    p.add_argument("bundle", help="bundle name or folder")
    p.add_argument("--fp16", action="store_true", help="write BUNDLE-fp16 (half-precision weights)")
    p.add_argument("--onnx", action="store_true", help="write ./BUNDLE.onnx (the live entry point)")
    p.add_argument("--out", help="where to write when exporting one kind: a bundle folder (--fp16) "
                   "or an .onnx file (--onnx)")
    p.set_defaults(func=cmd_export)

    try:
        from bridge.train import commands as train_commands
    except ImportError:  # training extras not installed: the live bridge still works
        train_commands = None
    if train_commands is not None:
        train_commands.register(sub)
    return parser


_SESSIONS: list = []  # the live sessions this program ran (see `program`)


def program() -> None:
    """The `vjbridge` program (`main` is its body, which tests call in-process). A live session
    stopped while a model still compiled (or built) on its loader thread: Python would wait at
    exit until that compile reaches a point where it can stop (up to a minute on a fresh
    machine), so with everything of the session closed already the process ends at once. Nothing
    is lost: the outputs are closed, a recording finished, and Inductor writes its cache files
    whole or not at all."""
    code = main()
    busy = [what for what in (session.still_loading() for session in _SESSIONS) if what]
    if busy:
        print(f"vjbridge: stopped during {busy[0]}; not waiting for it", file=sys.stderr)
        runtime = sys.modules.get("bridge.runtime")
        if runtime is not None:  # what exit would have run (os._exit runs nothing)
            runtime.mark_cache_used()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="vjbridge: %(levelname)s %(message)s")
    try:
        return args.func(args)
    except BridgeError as e:
        print(f"vjbridge: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
