"""td/protocol.json: what TouchDesigner's side needs to build its parameter pages and talk OSC,
generated from the one parameter declaration (bridge.params) so the two cannot drift apart.
`vjbridge protocol --write` regenerates it; a test fails when the file and the code differ."""
from __future__ import annotations

import json
from pathlib import Path

from bridge.control.osc import HEARTBEAT_S, PREFIX
from bridge.params import PARAMS, TRIGGERS

PROTOCOL_FILE = Path(__file__).resolve().parents[2] / "td" / "protocol.json"
PROTOCOL_VERSION = 1


def protocol() -> dict:
    params = []
    for p in PARAMS:
        entry = {"name": p.name, "address": p.address, "type": p.kind, "default": p.default,
                 "smoothing_s": p.smoothing_s, "unit": p.unit, "doc": p.doc}
        if p.kind in ("float", "int"):
            entry.update(min=p.low, max=p.high)
        if p.kind == "choice":
            entry["choices"] = list(p.choices)
        params.append(entry)
    triggers = []
    for t in TRIGGERS:
        entry = {"name": t.name, "address": t.address, "arg": t.arg, "doc": t.doc}
        if t.arg == "int":
            entry.update(min=t.low, max=t.high)
        triggers.append(entry)
    return {
        "version": PROTOCOL_VERSION,
        "osc": {
            "prefix": PREFIX,
            "in": {"param": f"{PREFIX}/param/<name> VALUE", "trigger": f"{PREFIX}/trigger/<name> [N]",
                   "model": f"{PREFIX}/model NAME", "preset_load": f"{PREFIX}/preset/load NAME",
                   "preset_save": f"{PREFIX}/preset/save NAME",
                   "preset_morph": f"{PREFIX}/preset/morph NAME BEATS",
                   "midi_learn": f"{PREFIX}/midi/learn NAME", "query": f"{PREFIX}/query"},
            "out": {"heartbeat": f"{PREFIX}/heartbeat N", "every_s": HEARTBEAT_S,
                    "fps": f"{PREFIX}/fps F", "latency_ms": f"{PREFIX}/latency_ms F",
                    "model": f"{PREFIX}/model NAME", "param": f"{PREFIX}/param/<name> VALUE",
                    "error": f'{PREFIX}/error "message"'},
        },
        "params": params,
        "triggers": triggers,
    }


def render() -> str:
    return json.dumps(protocol(), indent=2) + "\n"


def write(path: Path = PROTOCOL_FILE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render())
    return path
