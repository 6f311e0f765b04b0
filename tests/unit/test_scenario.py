from pathlib import Path

import pytest

from braid.lab.scenario import ScenarioError, load, parse

SHARED = Path(__file__).resolve().parents[3] / "shared" / "scenarios"
BUILTIN = Path(__file__).resolve().parents[2] / "src" / "braid" / "lab" / "scenarios"

GOOD = """name = "t"
duration_s = 5
[[link]]
name = "fibre"
rate_mbit = 40
delay_ms = 4
[[link]]
name = "lte"
up_mbit = 12
down_mbit = 25
loss = 0.01
[[event]]
at_s = 2.0
link = "fibre"
set = { up = false }
[workload]
kind = "tcp"
direction = "both"
"""


def test_every_shipped_scenario_parses():
    files = list(BUILTIN.glob("*.toml")) + (list(SHARED.glob("*.toml")) if SHARED.is_dir() else [])
    assert files
    for f in files:
        sc = load(f)
        assert sc.links and sc.duration_s > 0


def test_good_scenario_values():
    sc = parse(GOOD, Path("t.toml"))
    assert sc.links[0].up_mbit == sc.links[0].down_mbit == 40
    assert (sc.links[1].up_mbit, sc.links[1].down_mbit) == (12, 25)
    assert sc.workload.directions() == ["up", "down"]
    assert sc.events[0].changes == {"up": False}
    assert sc.links[0].apply({"rate_mbit": 20}).down_mbit == 20


@pytest.mark.parametrize(("old", "new", "key", "line"), [
    ("delay_ms = 4", "delay_ms = 4\ncolour = 1", "link[0].colour", 7),
    ("loss = 0.01", "loss = 1.5", "link[1].loss", 11),
    ('direction = "both"', 'direction = "sideways"', "workload.direction", 18),
    ('link = "fibre"', 'link = "wifi"', "event[0].link", 14),
    ("set = { up = false }", "set = { up = 3 }", "event[0].set.up", 15),
    ("duration_s = 5", "duration_s = -1", "duration_s", 2),
    ("rate_mbit = 40", "rate_mbit = \"fast\"", "link[0].rate_mbit", 5),
])
def test_errors_name_file_line_and_key(old, new, key, line):
    text = GOOD.replace(old, new)
    with pytest.raises(ScenarioError) as info:
        parse(text, Path("sc.toml"))
    msg = str(info.value)
    assert msg.startswith(f"sc.toml:{line}: {key}: "), msg


def test_missing_rate_and_unknown_top_level_key():
    with pytest.raises(ScenarioError, match="rate_mbit: give rate_mbit"):
        parse(GOOD.replace("rate_mbit = 40\n", ""), Path("s.toml"))
    with pytest.raises(ScenarioError, match="speed: unknown key"):
        parse("speed = 3\n" + GOOD, Path("s.toml"))
