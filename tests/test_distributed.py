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
    assert run.returncode == 0, run.stderr[-2000:]
    model = load_model(out)
    recipe = model.bundle_config["training"]["recipe"]
    assert recipe["processes"] == 2
    assert model.bundle_config["training"]["epochs"] == 2
    # 8 pairs, 2 processes, batch 2: two steps per process per epoch, not four.
    assert model.bundle_config["training"]["steps"] == 4
    with torch.no_grad():
        picture = model.generate(torch.zeros(1, 3, 32, 32))
    assert torch.isfinite(picture).all()
