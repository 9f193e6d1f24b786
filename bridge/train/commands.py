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


def _train(run, out, what: str) -> int:
    """Run a trainer; our errors become one line, Ctrl-C says what was kept."""
    try:
        path = run()
    except BridgeError as e:
        return _fail(e)
    except KeyboardInterrupt:
        print(f"\n{PROG}: {what} interrupted; nothing was written to {out}", file=sys.stderr)
        return 130
    print(f"wrote bundle {path} (load it with --model {path})")
    return 0


def _dtype(fp32: bool):
    import torch
    return torch.float32 if fp32 else torch.float16


def cmd_train_realnvp(args) -> int:
    from bridge.train.realnvp import train_realnvp
    return _train(lambda: train_realnvp(
        args.images, args.out, preset=args.preset, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, device=args.device, anchors=args.anchors, progress=not args.quiet,
        threads=args.threads, overrides=parse_key_values(args.set, "--set"), crop_scale=args.crop_scale,
        limit=args.limit, max_minutes=args.max_minutes, directions=args.directions), args.out, "training")


def cmd_train_cvae(args) -> int:
    from bridge.train.cvae import train_cvae
    widths = [int(w) for w in args.widths.split(",")] if args.widths else None
    extra = {"widths": widths} if widths else {}
    return _train(lambda: train_cvae(
        args.images, args.out, size=args.size, latent_dim=args.latent_dim, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, kld_weight=args.kld_weight, seed=args.seed,
        device=args.device, progress=not args.quiet, threads=args.threads, flip=not args.no_flip,
        limit=args.limit, save_dtype=_dtype(args.fp32_weights), directions=args.directions, **extra),
        args.out, "training")


def cmd_train_vae_associator(args) -> int:
    from bridge.train.vae_associator import train_vae_associator
    return _train(lambda: train_vae_associator(
        args.data, args.out, epochs=args.epochs, associator_epochs=args.associator_epochs,
        batch_size=args.batch_size, seed=args.seed, device=args.device, progress=not args.quiet,
        threads=args.threads, patience=args.patience, vae_lr=args.vae_lr,
        vae_kld_weight=args.vae_kld_weight, associator_lr=args.associator_lr,
        associator_kld_weight=args.associator_kld_weight, val_fraction=args.val_fraction,
        flip=not args.no_flip, n_idle=args.n_idle, model=parse_key_values(args.set, "--set"),
        save_dtype=_dtype(args.fp32_weights), directions=args.directions), args.out, "training")


def cmd_anchors(args) -> int:
    from bridge.train.realnvp import add_anchors
    try:
        path = add_anchors(args.bundle, args.images, args.out)
    except BridgeError as e:
        return _fail(e)
    print(f"wrote anchors from {args.images} into {path}")
    return 0


def cmd_directions(args) -> int:
    from bridge.morph.directions import add_directions
    try:
        path = add_directions(args.bundle, args.images, k=args.k, out=args.out)
    except BridgeError as e:
        return _fail(e)
    print(f"wrote {args.k} principal directions of {args.images}'s latents into {path}")
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

def _common_train_options(p, epochs: int, batch_size: int) -> None:
    p.add_argument("--out", required=True, metavar="BUNDLE", help="bundle folder to write")
    p.add_argument("--epochs", type=int, default=epochs, metavar="N", help="(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=batch_size, metavar="N",
                   help="per process under torchrun (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _directions_option(p) -> None:
    p.add_argument("--directions", type=int, default=8, metavar="K",
                   help="principal directions of the training latents stored for the live direction "
                        "knobs (default: %(default)s; 0: none)")


def _register_latent_trainers(tr_sub) -> None:
    from bridge.train import cvae as cvae_train
    from bridge.train import vae_associator as va_train
    from bridge.generators.realnvp import PRESETS

    p = tr_sub.add_parser(
        "realnvp", help="RealNVP flow on a folder of pictures (+ anchors from your pictures)",
        description="Train a RealNVP flow (seed 004) on the pictures in a folder; reports NLL in "
                    "bits per dimension. --anchors inverts a folder of your pictures into the "
                    "bundle's anchors, which the live walks move between.")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of training pictures")
    _common_train_options(p, epochs=40, batch_size=64)
    p.add_argument("--preset", choices=sorted(PRESETS), default="lite-32", help="(default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-3, metavar="F", help="Adam (default: %(default)s)")
    p.add_argument("--anchors", metavar="DIR", help="pictures to invert into anchors at the end")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a RealNVPConfig field")
    p.add_argument("--crop-scale", type=float, default=1.25, metavar="F",
                   help="load at size*F and crop back at random places (default: %(default)s)")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N pictures")
    p.add_argument("--max-minutes", type=float, metavar="M", help="stop after the epoch that passes M minutes")
    _directions_option(p)
    p.set_defaults(func=cmd_train_realnvp)

    p = tr_sub.add_parser(
        "cvae", help="conv-VAE on a folder of pictures (latent linger walk live)",
        description="Train the conv-VAE of seed 002 on the pictures in a folder.")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of training pictures")
    _common_train_options(p, epochs=60, batch_size=64)
    p.add_argument("--size", type=int, default=64, metavar="N", help="(default: %(default)s)")
    p.add_argument("--latent-dim", type=int, default=32, metavar="N", help="(default: %(default)s)")
    p.add_argument("--widths", metavar="C1,C2,...", help="encoder channels per stride-2 step "
                   f"(default: {','.join(str(w) for w in cvae_train.DEFAULT_WIDTHS)})")
    p.add_argument("--lr", type=float, default=1e-3, metavar="F", help="Adam (default: %(default)s)")
    p.add_argument("--kld-weight", type=float, default=1e-4, metavar="F", help="(default: %(default)s)")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N pictures")
    p.add_argument("--fp32-weights", action="store_true", help="store fp32 weights (default fp16)")
    _directions_option(p)
    p.set_defaults(func=cmd_train_cvae)

    p = tr_sub.add_parser(
        "vae_associator", aliases=["vae-associator"], help="cross-modal VAEs + associators on mel pairs (seed 000)",
        description="Train the image VAE and the sound VAE (phase 1), then the image->sound and "
                    "sound->image associators (phase 2) on a `dataset build --representation "
                    "mel-pairs` folder, with seed 000's optimiser settings as defaults.")
    p.add_argument("--data", required=True, metavar="DIR", help="mel-pairs dataset folder")
    _common_train_options(p, epochs=va_train.SEED_EPOCHS, batch_size=va_train.DEFAULT_BATCH)
    p.add_argument("--associator-epochs", type=int, metavar="N", help="phase 2 cap (default: --epochs)")
    p.add_argument("--patience", type=int, default=va_train.PATIENCE, metavar="N",
                   help="early stopping (default: %(default)s)")
    p.add_argument("--vae-lr", type=float, default=va_train.VAE_LR, metavar="F",
                   help="RMSProp, phase 1 (default: %(default)s)")
    p.add_argument("--vae-kld-weight", type=float, default=va_train.VAE_KLD_WEIGHT, metavar="F",
                   help="(default: %(default)s)")
    p.add_argument("--associator-lr", type=float, default=va_train.ASSOCIATOR_LR, metavar="F",
                   help="RMSProp, phase 2 (default: %(default)s)")
    p.add_argument("--associator-kld-weight", type=float, default=va_train.ASSOCIATOR_KLD_WEIGHT,
                   metavar="F", help="(default: %(default)s)")
    p.add_argument("--val-fraction", type=float, default=va_train.VAL_FRACTION, metavar="F",
                   help="held out for early stopping (default: %(default)s)")
    p.add_argument("--n-idle", type=int, default=va_train.N_IDLE, metavar="N",
                   help="training pictures stored for idle mode (default: %(default)s)")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a VAEAssociatorConfig field")
    p.add_argument("--fp32-weights", action="store_true", help="store fp32 weights (default fp16)")
    _directions_option(p)
    p.set_defaults(func=cmd_train_vae_associator)


def register_anchors(subparsers) -> None:
    a = subparsers.add_parser(
        "anchors", help="invert a folder of your pictures into a RealNVP bundle's anchors",
        description="RealNVP is exactly invertible: your pictures become latents the live walks "
                    "(weighted, magellan, explore) move between.")
    a.add_argument("bundle", help="realnvp bundle name or folder")
    a.add_argument("--images", required=True, metavar="DIR", help="folder of pictures")
    a.add_argument("--out", metavar="BUNDLE", help="write a new bundle here (default: replace the anchors in place)")
    a.set_defaults(func=cmd_anchors)

    d = subparsers.add_parser(
        "directions", help="store the principal directions of a latent model's latents (live knobs)",
        description="Encode a folder of pictures with a latent bundle (realnvp, cvae, vae_associator) "
                    "and store the principal directions of their latents: the live direction_1.."
                    "direction_K knobs move along them.")
    d.add_argument("bundle", help="latent bundle name or folder")
    d.add_argument("--images", required=True, metavar="DIR", help="folder of pictures (the training pictures)")
    d.add_argument("--k", type=int, default=8, help="how many directions (default: %(default)s)")
    d.add_argument("--out", metavar="BUNDLE", help="write a new bundle here (default: in place)")
    d.set_defaults(func=cmd_directions)


def register(subparsers) -> None:
    """Add `dataset {build,synth,samples}`, `train {pix2pix,vae_associator,realnvp,cvae}` and
    `anchors` to a CLI's sub-parsers."""
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
                        "bands_history; or mel-pairs (frame + 128x9 mel, for vae_associator) "
                        "(default: %(default)s)")
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
    tr_sub = tr.add_subparsers(title="model families", metavar="{pix2pix,vae_associator,realnvp,cvae}")
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
    _register_latent_trainers(tr_sub)
    register_anchors(subparsers)
