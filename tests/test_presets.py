"""Presets as TOML files: round trip, all-or-nothing recall, clear errors with the line, names that
cannot leave the folder, and save/load over real OSC."""
from __future__ import annotations

import time

import pytest
from pythonosc.udp_client import SimpleUDPClient

from bridge.control.osc import OscControl
from bridge.control.presets import apply_preset, preset_path, save_preset
from bridge.errors import ConfigError, ControlError
from bridge.params import ParamStore


@pytest.fixture(autouse=True)
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("VJBRIDGE_PRESETS", str(tmp_path))
    return tmp_path


def test_round_trip():
    store = ParamStore()
    store.set("smoothing", 0.4)
    store.set("freeze", True)
    path = save_preset("warm-up", store, {"model": "realnvp-faces", "walk": "magellan"})
    fresh = ParamStore()
    info, notes = apply_preset("warm-up", fresh)
    assert fresh.values() == store.values() and notes == []
    assert info == {"model": "realnvp-faces", "walk": "magellan"}
    assert 'model = "realnvp-faces"' in path.read_text()


def test_malformed_file_names_the_line_and_changes_nothing(folder):
    (folder / "broken.toml").write_text("[params]\nsmoothing = 0.2\nbrightness = = 3\n")
    store = ParamStore()
    with pytest.raises(ConfigError, match=r"broken.toml.*line 3"):
        apply_preset("broken", store)
    assert store.values() == ParamStore().values()


def test_one_bad_value_changes_nothing(folder):
    (folder / "half.toml").write_text('[params]\nsmoothing = 0.5\nfreeze = "sometimes"\n')
    store = ParamStore()
    with pytest.raises(ControlError, match="freeze.*nothing was changed"):
        apply_preset("half", store)
    assert store.get("smoothing") == 0.0


def test_names_stay_inside_the_folder_and_missing_ones_list_the_others(folder):
    for bad in ("../etc/passwd", "a/b", "", ".hidden"):
        with pytest.raises(ControlError, match="preset name"):
            preset_path(bad)
    save_preset("known", ParamStore())
    with pytest.raises(ControlError, match="available: known"):
        apply_preset("unknown", ParamStore())


def test_save_and_load_over_osc(folder):
    store = ParamStore()
    with OscControl(store, port=0) as osc:
        c = SimpleUDPClient("127.0.0.1", osc.port)
        c.send_message("/vjbridge/param/brightness", 1.5)
        c.send_message("/vjbridge/preset/save", "bright")
        deadline = time.monotonic() + 3
        while not (folder / "bright.toml").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        c.send_message("/vjbridge/param/brightness", 0.2)
        c.send_message("/vjbridge/preset/load", "bright")
        while store.get("brightness") != 1.5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.get("brightness") == 1.5
        c.send_message("/vjbridge/preset/load", "../../x")
        time.sleep(0.2)
        assert osc.refused >= 1 and store.get("brightness") == 1.5
