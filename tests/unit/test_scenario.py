from pathlib import Path

import pytest

from braid.lab.scenario import ScenarioError, capacity_mbit, load, parse

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


def test_capacity_is_averaged_over_the_events_and_traces(tmp_path):
    """The physical limit a run is scored against: a link counts for nothing while down, at
    each rate and loss for as long as it lasts, and a trace link at its trace's mean."""
    sc = parse(GOOD, Path("t.toml"))
    # fibre: 40 Mbit/s for 2 of 5 s, then down; lte: 1 % loss throughout
    assert capacity_mbit(sc, "up") == pytest.approx({"fibre": 16.0, "lte": 12 * 0.99})
    assert capacity_mbit(sc, "down") == pytest.approx({"fibre": 16.0, "lte": 25 * 0.99})
    text = GOOD.replace('set = { up = false }', 'set = { rate_mbit = 10, loss = 0.5 }')
    text += '[[event]]\nat_s = 4.0\nlink = "fibre"\nset = { up = false }\n'
    text += '[[event]]\nat_s = 4.5\nlink = "fibre"\nset = { up = true }\n'
    # 40 for 2 s, then 10 at half loss for 2 s, down 0.5 s, 10 at half loss again for 0.5 s
    sc = parse(text.replace("[workload]", "[workload]"), Path("t.toml"))
    assert capacity_mbit(sc, "up")["fibre"] == pytest.approx((80 + 10 + 2.5) / 5)
    trace = tmp_path / "cell.trace"
    trace.write_text("# bytes per ms\n" + "1250\n" * 3 + "0\n")  # 10 Mbit/s 3 ms in 4, then the floor
    traced = GOOD.replace('delay_ms = 4', 'delay_ms = 4\ntrace = "cell.trace"')
    sc = parse(traced, tmp_path / "t.toml")
    assert capacity_mbit(sc, "up")["fibre"] == pytest.approx((3 * 10 + 0.008) / 4 * 2 / 5)
