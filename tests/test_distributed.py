"""Every trainer runs unchanged under torchrun: two CPU processes with the gloo backend train a
tiny model together, split each epoch between them, and rank 0 writes one loadable bundle."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bridge.generators.base import load_model
from bridge.train.distributed import TrainContext

REPO = Path(__file__).resolve().parents[1]


def torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "bridge", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def failed_run(run: subprocess.CompletedProcess) -> str:
    """What a failed torchrun said: the ranks' own lines first (where a rank that aborted says
    why), then the launcher's report at the end."""
    lines = [line for line in run.stderr.splitlines() if "torch/distributed/elastic" not in line]
    return "\n".join(lines[:40])[:3000] + "\n...\n" + run.stderr[-1500:]


def test_shards_are_disjoint_equal_and_cover_all_but_the_remainder():
    items = list(range(11))
    shards = [TrainContext(rank=r, world=3).shard(items) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]  # DDP needs the same number of steps everywhere
    seen = [i for s in shards for i in s]
    assert len(set(seen)) == 9 and set(seen) <= set(items)
    assert TrainContext().shard(items) == items


def _tiny_pix2pix_data(tmp_path: Path) -> Path:
    from bridge.train.dataset import MANIFEST_FILE
    from bridge.train.images import export_sample_images, load_image_folder, to_unit

    # Pairs without a video: sample photos as B, their grey copies as A (an image-input model).
    pictures = tmp_path / "pictures"
    export_sample_images(pictures, "photos", size=32)
    images = load_image_folder(pictures, 32)[:8]
    data = tmp_path / "data"
    (data / "A").mkdir(parents=True)
    (data / "B").mkdir()
    from PIL import Image
    items = []
    for i, picture in enumerate(images):
        rgb = picture.permute(1, 2, 0).numpy()
        grey = rgb.mean(axis=2, keepdims=True).repeat(3, axis=2).astype("uint8")
        name = f"{i:06d}.png"
        Image.fromarray(grey).save(data / "A" / name)
        Image.fromarray(rgb).save(data / "B" / name)
        items.append({"a": f"A/{name}", "b": f"B/{name}", "time": float(i)})
    assert to_unit(images).abs().max() <= 1.0
    manifest = {"version": 1, "representation": "image", "size": 32, "analysis": {}, "pairs": len(items),
                "items": items, "sources": [], "tick_fps": 30.0,
                "pairing": {"mode": "every-nth", "every": 1, "start": 0.0, "end": 8.0, "segment": 1.0}}
    (data / MANIFEST_FILE).write_text(json.dumps(manifest))
    return data


def test_pix2pix_trains_on_two_processes(tmp_path):
    data = _tiny_pix2pix_data(tmp_path)
    out = tmp_path / "bundle"
    run = torchrun("train", "pix2pix", "--data", str(data), "--out", str(out), "--epochs", "2",
                   "--ngf", "4", "--batch-size", "2", "--quiet")
    assert run.returncode == 0, failed_run(run)
    model = load_model(out)
    recipe = model.bundle_config["training"]["recipe"]
    assert recipe["processes"] == 2
    assert model.bundle_config["training"]["epochs"] == 2
    # 8 pairs, 2 processes, batch 2: two steps per process per epoch, not four.
    assert model.bundle_config["training"]["steps"] == 4
    with torch.no_grad():
        picture = model.generate(torch.zeros(1, 3, 32, 32))
    assert torch.isfinite(picture).all()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    from bridge.train.images import export_sample_images

    folder = tmp_path_factory.mktemp("pictures")
    export_sample_images(folder, "photos", size=32)
    return folder


def test_realnvp_trains_on_two_processes(tmp_path, pictures):
    out = tmp_path / "flow"
    run = torchrun("train", "realnvp", "--images", str(pictures), "--out", str(out), "--preset", "lite-32",
                   "--set", "hidden=4", "--epochs", "2", "--batch-size", "4", "--crop-scale", "1.0", "--quiet")
    assert run.returncode == 0, failed_run(run)
    model = load_model(out)
    assert model.family == "realnvp"
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(model.decode(model.encode(x)), x, atol=1e-4)


def test_cvae_trains_on_two_processes(tmp_path, pictures):
    out = tmp_path / "cvae"
    run = torchrun("train", "cvae", "--images", str(pictures), "--out", str(out), "--size", "16",
                   "--widths", "4,8", "--latent-dim", "4", "--epochs", "2", "--batch-size", "4", "--quiet")
    assert run.returncode == 0, failed_run(run)
    model = load_model(out)
    assert model.family == "cvae" and model.latent_dim == 4


def test_vae_associator_trains_on_two_processes(tmp_path, pictures):
    """A mel-pairs dataset written by hand (pictures + real mels of the demo loop)."""
    from PIL import Image
    from safetensors.torch import save_file

    from bridge.analysis import AnalysisConfig, StreamingAnalyzer
    from bridge.sources.audio import decode_audio
    from bridge.train.dataset import MANIFEST_FILE, MELS_FILE, MELS_TENSOR
    from bridge.train.images import load_image_folder

    data = tmp_path / "mels"
    (data / "B").mkdir(parents=True)
    images = load_image_folder(pictures, 16)
    analyzer = StreamingAnalyzer(AnalysisConfig())
    audio = decode_audio(str(REPO / "bridge" / "data" / "demo.ogg"), sample_rate=44_100)
    mels, items = [], []
    for i, picture in enumerate(images):
        analyzer.feed(audio[i * 4410:(i + 1) * 4410])
        mels.append(torch.from_numpy(analyzer.snapshot(i / 10).mel_db.copy()))
        name = f"B/{i:06d}.png"
        Image.fromarray(picture.permute(1, 2, 0).numpy()).save(data / name)
        items.append({"b": name, "mel": i, "time": i / 10, "source": 0})
    save_file({MELS_TENSOR: torch.stack(mels).float()}, str(data / MELS_FILE))
    manifest = {"version": 1, "representation": "mel-pairs", "size": 16, "analysis": {},
                "pairs": len(items), "items": items, "sources": [], "tick_fps": 30.0,
                "pairing": {"mode": "onset", "every": 1, "start": 0.0, "end": 2.0, "segment": 0.1},
                "mels": {"file": MELS_FILE, "tensor": MELS_TENSOR, "shape": [len(items), 128, 9]}}
    (data / MANIFEST_FILE).write_text(json.dumps(manifest))
    out = tmp_path / "mirror"
    tiny = {"image_size": 16, "image_widths": [4, 8], "image_bottleneck": 2, "image_latent": 8,
            "sound_latent": 8, "sound_hidden": [16], "associator_hidden": 8, "associator_latent": 4}
    sets = [x for k, v in tiny.items() for x in ("--set", f"{k}={json.dumps(v)}")]
    run = torchrun("train", "vae_associator", "--data", str(data), "--out", str(out), "--epochs", "2",
                   "--batch-size", "4", "--n-idle", "2", "--val-fraction", "0.25", *sets, "--quiet")
    assert run.returncode == 0, failed_run(run)
    model = load_model(out)
    assert model.family == "vae_associator" and model.idle_images().shape[0] == 2
