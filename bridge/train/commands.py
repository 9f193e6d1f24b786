"""The `dataset` and `train` sub-commands: parse, call bridge.train, report. No logic here.

bridge/cli.py calls `register(subparsers)`; each leaf parser sets `func`, a handler that takes the
parsed namespace and returns an exit code (0 ok, 1 a BridgeError, printed as one line).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bridge.config import parse_key_values
from bridge.errors import BridgeError

PROG = "vjbridge"


def _fail(error: BaseException) -> int:
    print(f"{PROG}: {' '.join(str(error).split())}", file=sys.stderr)
    return 1


def _group_help(parser: argparse.ArgumentParser):
    def show(args) -> int:
        parser.print_help(sys.stderr)
        return 2
    return show


# --- handlers ----------------------------------------------------------------------------------

def cmd_dataset_build(args) -> int:
    from bridge.train.dataset import build_dataset
    try:
        manifest = build_dataset(
            args.videos, args.out, representation=args.representation, size=args.size,
            pairing=args.pairing, every=args.every, start=args.start, end=args.end,
            segment=args.segment, analysis=parse_key_values(args.analysis, "--analysis"),
            tick_fps=args.tick_fps, progress=not args.quiet)
    except BridgeError as e:
        return _fail(e)
    print(f"wrote {manifest['pairs']} pairs ({manifest['representation']}, "
          f"{manifest['size']}x{manifest['size']}) to {args.out}")
    return 0


def cmd_dataset_synth(args) -> int:
    from bridge.train.synth import make_synth_video
    try:
        info = make_synth_video(args.audio, args.images, args.out, size=args.size, fps=args.fps,
                                seconds=args.seconds, seed=args.seed, progress=not args.quiet)
    except BridgeError as e:
        return _fail(e)
    print(f"wrote {args.out}: {info['seconds']:.1f} s, {info['frames']} frames, "
          f"{info['cuts']} cuts")
    return 0


def cmd_train_pix2pix(args) -> int:
    import torch

    from bridge.train.pix2pix import train_pix2pix
    try:
        out = train_pix2pix(
            args.data, args.out, epochs=args.epochs, batch_size=args.batch_size, ngf=args.ngf,
            lr=args.lr, beta1=args.beta1, lambda_l1=args.lambda_l1, resume=not args.no_resume,
            device=args.device, seed=args.seed,
            save_dtype=torch.float16 if args.fp16_weights else torch.float32,
            progress=not args.quiet, ndf=args.ndf, augment=not args.no_augment,
            threads=args.threads)
    except BridgeError as e:
        return _fail(e)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; the last finished epoch is in {Path(args.out) / 'checkpoint'}"
              f" (run the same command again to resume)", file=sys.stderr)
        return 130
    print(f"wrote bundle {out} (load it with --model {out})")
    return 0


def cmd_dataset_samples(args) -> int:
    from bridge.train.images import export_sample_images
    try:
        written = export_sample_images(args.out, args.kind, size=args.size)
    except BridgeError as e:
        return _fail(e)
    print(f"wrote {len(written)} pictures to {args.out}")
    return 0


# --- parsers -----------------------------------------------------------------------------------

def register(subparsers) -> None:
    """Add `dataset {build,synth}` and `train {pix2pix}` to a CLI's sub-parsers."""
    from bridge.train.dataset import (DEFAULT_END, DEFAULT_EVERY, DEFAULT_SEGMENT, DEFAULT_START,
                                      DEFAULT_TICK_FPS, PAIRINGS)

    ds = subparsers.add_parser("dataset", help="make training data: synthetic videos, A/B pairs",
                               description="Make training data for the model trainers.")
    ds.set_defaults(func=_group_help(ds))
    ds_sub = ds.add_subparsers(title="dataset commands", metavar="{build,synth,samples}")

    b = ds_sub.add_parser(
        "build", help="pair audio pictures with video frames",
        description="Decode videos, draw their sound with the live analyzer and pair each audio "
                    "picture with the frame at the same time. Writes OUT/A, OUT/B and "
                    "OUT/dataset.json.")
    b.add_argument("videos", nargs="+", metavar="VIDEO", help="video files with a sound track")
    b.add_argument("--out", required=True, metavar="DIR", help="dataset folder to write")
    b.add_argument("--representation", default="spectrogram", metavar="R",
                   help="audio picture: mel, spectrogram, waveform, history, bands, "
                        "bands_history (default: %(default)s)")
    b.add_argument("--size", type=int, default=256, metavar="N",
                   help="picture side in pixels (default: %(default)s)")
    b.add_argument("--pairing", choices=PAIRINGS, default="every-nth",
                   help="every-nth: every Nth frame in [start, end); onset: the frame at the "
                        "strongest onset of each segment (default: %(default)s)")
    b.add_argument("--every", type=int, default=DEFAULT_EVERY, metavar="N",
                   help="with every-nth, take every Nth frame (default: %(default)s)")
    b.add_argument("--start", type=float, default=DEFAULT_START, metavar="S",
                   help="first second used, clamped to each video (default: %(default)s)")
    b.add_argument("--end", type=float, default=DEFAULT_END, metavar="S",
                   help="second where pairing stops, clamped to each video (default: %(default)s)")
    b.add_argument("--segment", type=float, default=DEFAULT_SEGMENT, metavar="S",
                   help="with onset, window length in seconds (default: %(default)s)")
    b.add_argument("--analysis", action="append", metavar="KEY=VALUE",
                   help="an AnalysisConfig setting, e.g. spectrogram_seconds=1.5 (repeatable)")
    b.add_argument("--tick-fps", type=float, default=DEFAULT_TICK_FPS, metavar="F",
                   help="analysis tick rate, as the live engine's fps (default: %(default)s)")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=cmd_dataset_build)

    s = ds_sub.add_parser(
        "synth", help="render an audio-reactive video from audio files and images",
        description="Make a 'music video' whose pictures follow the music (cuts on strong "
                    "onsets, zoom and bloom on the low band and kicks, colour on mid/high), with "
                    "the audio muxed in: training data any machine can remake.")
    s.add_argument("--audio", nargs="+", required=True, metavar="FILE",
                   help="audio files, played in turn (looped to --seconds)")
    s.add_argument("--images", default="skimage", metavar="DIR|skimage",
                   help="folder of pictures, or 'skimage' for scikit-image's sample pictures "
                        "(default: %(default)s)")
    s.add_argument("--out", required=True, metavar="OUT.mp4", help="video file to write")
    s.add_argument("--seconds", type=float, default=None, metavar="S",
                   help="length; the audio loops to fill it (default: the audio's own length)")
    s.add_argument("--size", type=int, default=256, metavar="N",
                   help="frame side in pixels (default: %(default)s)")
    s.add_argument("--fps", type=float, default=30.0, metavar="F",
                   help="frames per second (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="picks the image order (default: %(default)s)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_dataset_synth)

    from bridge.train.images import SAMPLE_KINDS
    m = ds_sub.add_parser(
        "samples", help="write scikit-image's BSD sample pictures into a folder",
        description="Pictures any machine has: scikit-image's sample photographs and its 200 LFW "
                    "faces, as PNG files, e.g. to train RealNVP or the conv-VAE, or as anchors.")
    m.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    m.add_argument("--kind", choices=SAMPLE_KINDS, default="all", help="(default: %(default)s)")
    m.add_argument("--size", type=int, default=None, metavar="N",
                   help="centre-crop and scale to N x N (default: keep their own sizes)")
    m.set_defaults(func=cmd_dataset_samples)

    tr = subparsers.add_parser("train", help="train a model bundle on a dataset",
                               description="Train model bundles.")
    tr.set_defaults(func=_group_help(tr))
    tr_sub = tr.add_subparsers(title="model families", metavar="{pix2pix}")
    p = tr_sub.add_parser(
        "pix2pix", help="audio picture -> frame (conditional GAN)",
        description="Train pix2pix on a dataset from `dataset build`. Resumes from "
                    "OUT/checkpoint when it exists; writes samples/, loss.png and the bundle.")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder (dataset.json)")
    p.add_argument("--out", required=True, metavar="BUNDLE", help="bundle folder to write")
    p.add_argument("--epochs", type=int, default=200, metavar="N",
                   help="total epochs, counting resumed ones (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=1, metavar="N", help="(default: %(default)s)")
    p.add_argument("--ngf", type=int, default=64, metavar="N",
                   help="generator width: 16 tiny, 32 lite, 64 full (default: %(default)s)")
    p.add_argument("--ndf", type=int, default=None, metavar="N",
                   help="discriminator width (default: same as --ngf)")
    p.add_argument("--lr", type=float, default=2e-4, metavar="F",
                   help="Adam learning rate (default: %(default)s)")
    p.add_argument("--beta1", type=float, default=0.5, metavar="F",
                   help="Adam beta1 (default: %(default)s)")
    p.add_argument("--lambda-l1", type=float, default=100.0, metavar="F",
                   help="weight of the L1 loss (default: %(default)s)")
    p.add_argument("--fp16-weights", action="store_true",
                   help="store the bundle's weights in float16 (half the size)")
    p.add_argument("--no-resume", action="store_true",
                   help="start over even if OUT/checkpoint exists")
    p.add_argument("--no-augment", action="store_true", help="no random jitter")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train_pix2pix)
