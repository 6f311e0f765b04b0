"""The daemons read the wall clock only for kernel arrival stamps and the first handshake
timestamp: a clock set while running moves neither delays nor handshakes."""

import json

from braid.daemon.common import arrival_time
from braid.io.state import StateFile


def test_an_arrival_stamp_across_a_clock_jump_is_not_believed():
    now = 1000.0
    offset = now - 1.7e9  # monotonic - wall, read just now
    assert abs(arrival_time(1.7e9 - 0.004, offset, now) - (now - 0.004)) < 1e-6  # a normal stamp
    assert arrival_time(1.7e9 - 3600, offset, now) == now  # the clock jumped forward an hour
    assert arrival_time(1.7e9 + 3600, offset, now) == now  # ... or back
    assert arrival_time(None, offset, now) == now


def test_the_state_file_survives_a_restart_and_garbage(tmp_path):
    state = StateFile("braid-t0", tmp_path)
    assert state.load() == {}
    state.save({"handshake_wall_us": 123})
    assert StateFile("braid-t0", tmp_path).load() == {"handshake_wall_us": 123}
    state.path.write_text("{not json")
    assert state.load() == {}
    state.path.write_text(json.dumps([1, 2]))
    assert state.load() == {}
