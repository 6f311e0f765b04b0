"""What a peer can make a Bond send: NACK-driven resends and NACKs are bounded."""

from braid.core import wire
from braid.core.bond import Bond
from braid.core.link import LinkConfig
from braid.core.recovery import NACK_BURST
from tests.helpers import udp_packet


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes]] = []

    def __call__(self, link_id: int, plaintext: bytes) -> int:
        self.sent.append((link_id, plaintext))
        return len(self.sent) - 1  # the counter


def _bond_with_history(n: int) -> tuple[Bond, Recorder]:
    rec = Recorder()
    bond = Bond([LinkConfig("a", 0)], 0.0, rec, warmup=False)
    for i in range(3):  # the peer's probes: the link is up
        bond.on_plaintext(0, wire.encode_plaintext(0, [wire.Probe(0)]), 100, i, 0.01 * i)
    t, counter = 0.05, 3
    for i in range(n):
        bond.on_tun_packet(udp_packet(i, size=200), t)
        t += 0.001
        if i % 20 == 0:  # the peer keeps talking and answering (acknowledging nothing): it stays up
            answer = wire.Feedback(0, i, i * 200, int((t - 0.01) * 1e6), 0, int(t * 1e6), 0, 0)
            bond.on_plaintext(0, wire.encode_plaintext(0, [answer, wire.Probe(0)]), 100, counter, t)
            counter += 1
        bond.on_timer(t)
    return bond, rec


def test_one_datagram_of_nacks_resends_at_most_one_frame_worth():
    bond, rec = _bond_with_history(300)
    sent, resent = len(rec.sent), bond.stats["resent"]
    nacks = [wire.Nack(0, tuple(range(5 + 32 * k, 5 + 32 * (k + 1)))) for k in range(7)]
    bond.on_plaintext(0, wire.encode_plaintext(0, nacks), 1500, 100, 0.351)
    bond.on_timer(0.352)
    assert 24 <= bond.stats["resent"] - resent <= wire.NACK_MAX  # of the 224 named (some: probes)
    assert len(rec.sent) - sent <= wire.NACK_MAX + 2


def test_counter_gaps_from_the_peer_cannot_make_it_send_nacks_without_bound():
    bond, rec = _bond_with_history(0)
    sent = len(rec.sent)
    for i in range(5000):  # every datagram skips a counter, all within 50 ms
        bond.on_plaintext(0, wire.encode_plaintext(0, [wire.Probe(0)]), 100, 10 + 2 * i,
                          0.1 + i * 1e-5)
    nack_datagrams = len(rec.sent) - sent
    assert bond.stats["nacks_sent"] <= NACK_BURST + 1000 * 0.06
    assert bond.stats["nacks_limited"] > 0
    assert nack_datagrams <= 2 * bond.stats["nacks_sent"] + 10
    # each gap, NACKed or rate-limited, is stamped for the send-health rule (core/health.py)
    assert bond.links[0].report.last_gap == 0.1 + 4999 * 1e-5
