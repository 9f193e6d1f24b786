"""The promises the repository makes about itself: the README's two commands, CI running the
README's test command, a torch range that admits the pinned 2.13.0, models/ under its size cap."""
import configparser
import re
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```sh\n(.*?)```", readme, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_opens_with_two_commands_demo_and_test():
    commands = quickstart_commands()
    assert commands == ["bash setup.sh demo", "bash setup.sh test"]


def test_ci_runs_exactly_the_readme_test_command():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci == [quickstart_commands()[1]]


def test_torch_requirement_admits_the_pinned_wheel():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    requirements = [Requirement(r) for r in cfg["options"]["install_requires"].split("\n") if r.strip()]
    torch = next(r for r in requirements if r.name == "torch")
    assert torch.specifier.contains("2.13.0")
    assert 'torch==2.13.0' in (ROOT / "setup.sh").read_text()


def test_models_folder_stays_under_25_mb():
    size = sum(p.stat().st_size for p in (ROOT / "models").rglob("*") if p.is_file())
    assert size < 25 * 1024 * 1024


def test_bundled_models_cover_every_family_and_their_cards_commands_are_real():
    import shlex

    from bridge.cli import build_parser
    from bridge.generators.base import families, list_bundles, read_bundle_config

    bundled = [p for p in list_bundles() if p.parent == ROOT / "models"]
    assert {read_bundle_config(p)["family"] for p in bundled} == set(families())
    for bundle in bundled:
        lines = [x for x in (bundle / "card.md").read_text().splitlines() if x.startswith("vjbridge ")]
        assert lines, f"{bundle.name}: the card gives no command to rebuild it"
        for line in lines:
            build_parser().parse_args(shlex.split(line)[1:])  # exits (fails) on an unknown option


def test_readme_osc_table_is_the_parameter_declaration():
    from bridge.control.protocol import readme_table
    from bridge.params import PARAMS, TRIGGERS

    readme = (ROOT / "README.md").read_text()
    assert readme_table() in readme, "README's OSC table is stale: run vjbridge protocol --write"
    table = re.findall(r"^\| `(/vjbridge/(?:param|trigger)/\w+)` \|", readme, re.M)
    assert table == [p.address for p in PARAMS] + [t.address for t in TRIGGERS]


def test_td_protocol_is_generated_from_the_parameter_declaration():
    """td/protocol.json drives TouchDesigner's parameter pages; it must be what the code says
    (regenerate with `vjbridge protocol --write`)."""
    import json

    from bridge.control.protocol import PROTOCOL_FILE, protocol, render
    from bridge.params import PARAMS

    assert PROTOCOL_FILE == ROOT / "td" / "protocol.json"
    assert PROTOCOL_FILE.read_text() == render(), "td/protocol.json is stale: run vjbridge protocol --write"
    assert [p["address"] for p in json.loads(PROTOCOL_FILE.read_text())["params"]] == [p.address for p in PARAMS]
    assert protocol()["osc"]["prefix"] == "/vjbridge"
