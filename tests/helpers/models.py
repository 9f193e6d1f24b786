"""Small real model bundles for live-session tests."""
from __future__ import annotations

import pytest


@pytest.fixture
def tiny_models(tmp_path, monkeypatch):
    """Two small pix2pix bundles (different weights), presets and MIDI maps in a folder of their own."""
    import torch

    from bridge.generators.base import save_bundle
    from bridge.generators.pix2pix import Pix2Pix, Pix2PixConfig

    monkeypatch.setenv("VJBRIDGE_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("VJBRIDGE_PRESETS", str(tmp_path / "presets"))
    for i, name in enumerate(("tiny-a", "tiny-b")):
        torch.manual_seed(i)
        save_bundle(Pix2Pix(Pix2PixConfig(size=32, ngf=4, input="bands")), tmp_path / "models" / name)
    return tmp_path
