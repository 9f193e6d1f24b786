"""The contract TouchDesigner builds on, checked against a running bridge over real UDP: every
parameter and trigger address td/protocol.json lists is accepted (no error back) and echoed in
the feedback with the value sent."""
from __future__ import annotations

import json
import time

from pythonosc.udp_client import SimpleUDPClient

from bridge.control.protocol import PROTOCOL_FILE
from tests.helpers.osc import Inbox


def _a_value_other_than_the_default(entry: dict):
    kind, default = entry["type"], entry["default"]
    if kind == "bool":
        return not default
    if kind == "choice":
        # the latent walk must be one this model has: realnvp-faces walks with magellan
        preferred = "magellan" if entry["name"] == "walk" else None
        return preferred or next(c for c in entry["choices"] if c != default)
    low, high = entry["min"], entry["max"]
    if kind == "int":
        return int(low) if default != low else int(low) + 1  # anchors: realnvp-faces has 8
    value = round(low + (high - low) * 0.37, 3)
    return value if value != default else round(low + (high - low) * 0.61, 3)


def test_every_protocol_address_is_accepted_and_echoed_by_a_running_bridge():
    from bridge.live import LiveSession, LiveSettings

    protocol = json.loads(PROTOCOL_FILE.read_text())
    inbox = Inbox()
    settings = LiveSettings(model="realnvp-faces", audio_in="silence", outs=["null"], fps=30,
                            runtime="reference", osc_port=0, osc_reply=f"127.0.0.1:{inbox.port}")
    try:
        with LiveSession(settings) as session:
            client = SimpleUDPClient("127.0.0.1", session.osc.port)
            sent = {}
            for entry in protocol["params"]:
                sent[entry["address"]] = _a_value_other_than_the_default(entry)
                client.send_message(entry["address"], sent[entry["address"]])
                time.sleep(0.005)
            for entry in protocol["triggers"]:
                client.send_message(entry["address"], 2 if entry["arg"] == "int" else [])
                time.sleep(0.005)
            end = time.monotonic() + 5.0
            wanted = set(sent) | {t["address"] for t in protocol["triggers"]}
            while time.monotonic() < end and not wanted <= {a for a, _ in inbox.messages}:
                time.sleep(0.05)
            errors = [args for a, args in inbox.messages if a == "/vjbridge/error"]
            assert errors == []
            echoed = {}
            for address, args in inbox.messages:  # the first echo (the freeze trigger flips it later)
                echoed.setdefault(address, args)
            for address, value in sent.items():
                assert address in echoed, f"{address} was not echoed"
                got = echoed[address][0]
                assert got == value or abs(got - value) < 1e-6, (address, value, got)
            for entry in protocol["triggers"]:
                assert entry["address"] in echoed, f"{entry['address']} was not echoed"
            assert echoed["/vjbridge/trigger/anchor"] == [2]
    finally:
        inbox.close()
