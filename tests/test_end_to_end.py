"""The whole bridge as a user runs it: the `vjbridge run` command capturing line-in from a
PulseAudio null sink through PyAudio, sending NDI, received by a separate NDI receiver process."""
import json
import os
import signal
import subprocess
import sys
import uuid

import numpy as np
import torch

from bridge.generators.base import save_bundle
from bridge.generators.pix2pix import Pix2Pix, Pix2PixConfig
from tests.helpers.ndi import NdiReceiverProcess
from tests.helpers.procs import stop_with

AMEN = "/usr/share/sonic-pi/samples/loop_amen.flac"


def test_line_in_to_ndi(pulse_null_sink, tmp_path):
    torch.manual_seed(0)
    save_bundle(Pix2Pix(Pix2PixConfig(size=64, ngf=4, input="bands")), tmp_path / "models" / "e2e")
    name = f"vjb-e2e-{uuid.uuid4().hex[:6]}"
    pulse_null_sink.play(AMEN, loops=20)
    env = dict(os.environ, VJBRIDGE_MODELS=str(tmp_path / "models"))
    # The bridge plays until the receiver has its frames, then gets Ctrl-C (it prints its summary
    # and exits 0): on a loaded 2-core CI machine, start-up plus NDI discovery can take most of a
    # fixed duration, so the run's length must not be what decides whether frames arrive.
    bridge = subprocess.Popen(
        [sys.executable, "-m", "bridge", "run", "--model", "e2e", "--audio-in", "default",
         "--out", f"ndi:{name}", "--fps", "25", "--duration", "90", "--runtime", "reference"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with NdiReceiverProcess(name, n_frames=40, timeout_s=60) as rx:
            capture = rx.result()
        assert bridge.poll() is None, "the bridge stopped before the receiver was done"
        out, err = stop_with(bridge, signal.SIGINT)
    finally:
        if bridge.poll() is None:
            bridge.kill()
    assert bridge.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["sent"] >= 40 and summary["errors"] == 0
    assert "audio ok" in err  # the status line saw real line-in
    assert name in capture.source_name
    frames = capture.frames
    assert frames[0].shape == (64, 64, 4)
    # The picture moves with the drums coming in through line-in.
    changes = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(frames, frames[1:])]
    assert max(changes) > 1.0
