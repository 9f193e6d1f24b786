"""`vjbridge export BUNDLE --fp16 --onnx`: smaller and portable copies of any family's bundle.

fp16   a bundle folder (BUNDLE-fp16) whose weights are stored in half precision: half the size on
       disk, rebuilt in fp32 on load (or run in half on a GPU). Seed 000 shipped its model this way.
onnx   ./BUNDLE.onnx (or --out): the live entry point `generate` (`generate_with_sound` for
       sound models) with the model's own input shapes, for runtimes outside PyTorch (TouchDesigner's
       ONNX-capable tools, onnxruntime, TensorRT).
Both report their numeric parity against the fp32 PyTorch model on the same inputs, so an export
that changed the pictures is seen at once, not on stage.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from bridge.errors import ConfigError, ModelLoadError
from bridge.generators.base import Generator, load_model, save_bundle
from bridge.runtime import example_inputs

ONNX_OPSET = 17


@dataclass
class Parity:
    max_abs: float  # largest difference of any output value (pictures are in [-1, 1])
    psnr_db: float  # of the picture, peak-to-peak 2.0
    sound_max_abs_db: float | None = None  # of the generated mel, for sound models

    def summary(self) -> dict:
        # JSON has no infinity: identical outputs report psnr_db null and max_abs 0.
        psnr = round(self.psnr_db, 1) if math.isfinite(self.psnr_db) else None
        out = {"max_abs": float(f"{self.max_abs:.3g}"), "psnr_db": psnr}
        if self.sound_max_abs_db is not None:
            out["sound_max_abs_db"] = float(f"{self.sound_max_abs_db:.3g}")
        return out


def _outputs(model: Generator, cond, latent) -> tuple[torch.Tensor, torch.Tensor | None]:
    with torch.inference_mode():
        if model.makes_sound:
            picture, mel = model.generate_with_sound(cond, latent)
            return picture.float(), mel.float()
        return model.generate(cond, latent).float(), None


def compare(reference: tuple, other: tuple) -> Parity:
    picture_ref, mel_ref = reference
    picture, mel = other
    diff = (picture_ref - picture).abs()
    mse = float(diff.pow(2).mean())
    psnr = 10 * math.log10(4.0 / mse) if mse > 0 else float("inf")
    sound = float((mel_ref - mel).abs().max()) if mel_ref is not None else None
    return Parity(max_abs=float(diff.max()), psnr_db=psnr, sound_max_abs_db=sound)


def export_fp16(name_or_path: str | Path, out: str | Path | None = None) -> tuple[Path, Parity]:
    """Write a half-precision copy of a bundle; returns its folder and its parity with fp32."""
    model = load_model(name_or_path)
    source = Path(model.bundle_path)
    out = Path(out) if out else source.with_name(source.name + "-fp16")
    if out.resolve() == source.resolve():
        raise ConfigError(f"--out {out} is the bundle itself; choose another folder")
    cond, latent = example_inputs(model)
    reference = _outputs(model, cond, latent)
    card = (source / "card.md").read_text() if (source / "card.md").is_file() else ""
    card += f"\n\nExported from `{source.name}` with `vjbridge export {source.name} --fp16`.\n"
    training = dict(model.bundle_config.get("training", {}))
    training["exported_from"] = source.name
    save_bundle(model, out, training=training, card=card, weights_dtype=torch.float16)
    half = load_model(out)
    return out, compare(reference, _outputs(half, cond, latent))


class _Entry(torch.nn.Module):
    """The live entry point as a module with flat tensor inputs, which ONNX needs."""

    def __init__(self, model: Generator, cond_parts: int, has_latent: bool):
        super().__init__()
        self.model = model
        self.cond_parts = cond_parts
        self.has_latent = has_latent

    def forward(self, *inputs):
        cond = inputs[:self.cond_parts]
        cond = cond if self.cond_parts > 1 else cond[0]
        latent = inputs[self.cond_parts] if self.has_latent else None
        if self.model.makes_sound:
            return self.model.generate_with_sound(cond, latent)
        return self.model.generate(cond, latent)


def export_onnx(name_or_path: str | Path, out: str | Path | None = None,
                check: bool = True) -> tuple[Path, Parity | None]:
    """Write model.onnx for a bundle's live entry point; with `check`, run it in onnxruntime and
    return its parity with the fp32 PyTorch model."""
    import warnings

    model = load_model(name_or_path).eval()
    out = Path(out) if out else Path.cwd() / f"{Path(model.bundle_path).name}.onnx"
    cond, latent = example_inputs(model)
    parts = tuple(cond) if isinstance(cond, (tuple, list)) else (cond,)
    names = [f"cond{i}" if len(parts) > 1 else "cond" for i in range(len(parts))]
    inputs = parts + ((latent,) if latent is not None else ())
    if latent is not None:
        names.append("latent")
    outputs = ["picture", "mel_db"] if model.makes_sound else ["picture"]
    entry = _Entry(model, len(parts), latent is not None).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
            torch.onnx.export(entry, inputs, str(out), dynamo=False, input_names=names,
                              output_names=outputs, opset_version=ONNX_OPSET)
    except Exception as e:  # an operator ONNX lacks: say which model and why, in one line
        raise ModelLoadError(f"cannot export {name_or_path} to ONNX: {type(e).__name__}: "
                             f"{' '.join(str(e).split())[:300]}") from None
    if not check:
        return out, None
    import onnxruntime as ort

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feed = {n: t.detach().cpu().numpy() for n, t in zip(names, inputs) if t.numel() > 0
            and n in {i.name for i in session.get_inputs()}}
    results = session.run(None, feed)
    got = (torch.from_numpy(results[0]), torch.from_numpy(results[1]) if model.makes_sound else None)
    return out, compare(_outputs(model, cond, latent), got)
