"""core/session.py Peer: packet numbers per link that new keys do not restart, stamped and
sealed when pulled, and what a restarted peer's old keys still bring."""

import os

from braid.core import wire
from braid.core.link import LinkConfig
from braid.core.noise import Keys
from braid.core.session import Keypair, Peer


def _keys(a: bytes, b: bytes) -> tuple[Keys, Keys]:
    return Keys(a, b, b""), Keys(b, a, b"")


def _pair(created: float) -> tuple[Keypair, Keypair]:
    mine, theirs = _keys(os.urandom(32), os.urandom(32))
    return Keypair(mine, 1, 2, created), Keypair(theirs, 2, 1, created)


def _peer() -> Peer:
    return Peer("site", [LinkConfig("a", 0), LinkConfig("b", 1)], 0.0)


def _open(keypair: Keypair, data: bytes) -> tuple[int, bytes]:
    header = wire.decode_outer(data)
    assert isinstance(header, wire.TransportHeader)
    plain = keypair.open(header, data)
    assert plain is not None
    return header.counter, plain


def test_packet_numbers_go_on_under_new_keys_per_link():
    peer = _peer()
    assert peer.transmit(0, b"x") == -1  # no keys yet: nothing is numbered
    first, first_remote = _pair(0.0)
    peer.install(first, confirmed=True)
    assert [peer.transmit(0, b"x"), peer.transmit(0, b"x"), peer.transmit(1, b"x")] == [0, 1, 0]
    assert [_open(first_remote, d.data)[0] for d in peer.datagrams_to_send(0.1)] == [0, 1, 0]
    second, second_remote = _pair(120.0)
    peer.install(second, confirmed=True)
    assert peer.transmit(1, b"y") == 1 and peer.transmit(0, b"y") == 2
    sent = peer.datagrams_to_send(120.0)
    assert [d.link_id for d in sent] == [0, 1]  # grouped by link
    assert [_open(second_remote, d.data)[0] for d in sent] == [2, 1]  # sealed with the new keys


def test_datagrams_are_stamped_when_pulled_not_when_made():
    peer = _peer()
    kp, remote = _pair(0.0)
    peer.install(kp, confirmed=True)
    peer.transmit(0, wire.encode_frame(wire.Probe(7)))
    (dg,) = peer.datagrams_to_send(2.5)
    ts, frames = wire.decode_plaintext(_open(remote, dg.data)[1])
    assert ts == 2_500_000 and frames == [wire.Probe(7)]
    assert peer.datagrams_to_send(2.6) == []  # each once


def test_datagrams_left_when_the_keys_expire_are_counted_not_sent():
    peer = _peer()
    kp, _ = _pair(0.0)
    peer.install(kp, confirmed=True)
    peer.transmit(0, b"x")
    peer.current = None
    assert peer.datagrams_to_send(1.0) == [] and peer.stats.unsent == 1


def _datagram_from(keypair: Keypair, counter: int) -> tuple[wire.TransportHeader, bytes]:
    """A PROBE sealed by the other end with `keypair` (its side of the keys)."""
    data = keypair.seal(0, counter, wire.INNER_TS.pack(0) + wire.encode_frame(wire.Probe(0)))
    header = wire.decode_outer(data)
    assert isinstance(header, wire.TransportHeader)
    return header, data


def test_a_restarted_peers_old_keys_bring_nothing_once_its_new_life_has_spoken():
    peer = _peer()
    mine, theirs = _keys(os.urandom(32), os.urandom(32))
    old, old_remote = Keypair(mine, 1, 2, 0.0, instance=1), Keypair(theirs, 2, 1, 0.0)
    peer.install(old, confirmed=True)
    assert peer.on_transport(old, *_datagram_from(old_remote, 500), 0.1)
    assert peer.bond.links[0].report.highest_counter == 500
    mine, theirs = _keys(os.urandom(32), os.urandom(32))
    new, new_remote = Keypair(mine, 3, 4, 1.0, instance=2), Keypair(theirs, 4, 3, 1.0)
    assert peer.set_remote_instance(1) is False and peer.set_remote_instance(2) is True
    peer.install(new, confirmed=True)
    assert peer.on_transport(old, *_datagram_from(old_remote, 501), 1.1)  # its new life is silent yet
    assert peer.on_transport(new, *_datagram_from(new_remote, 0), 1.2)
    assert peer.bond.links[0].report.highest_counter == 0  # its numbers start over here
    assert not peer.on_transport(old, *_datagram_from(old_remote, 502), 1.3)  # sent before it died
    assert peer.stats.stale == 1 and peer.bond.links[0].report.highest_counter == 0


def test_handshakes_of_another_instance_do_not_cut_off_the_confirmed_one():
    """Initiations with the client's key and other instance ids (a flood, or a twin that
    never completes) must not make the live session's datagrams count as stale."""
    peer = _peer()
    mine, theirs = _keys(os.urandom(32), os.urandom(32))
    live, live_remote = Keypair(mine, 1, 2, 0.0, instance=1), Keypair(theirs, 2, 1, 0.0)
    peer.set_remote_instance(1)
    peer.install(live, confirmed=True)
    for instance in range(2, 50):
        peer.set_remote_instance(instance)
        peer.install(Keypair(*_keys(os.urandom(32), os.urandom(32))[:1], 9, 9, 0.5,
                             instance=instance), confirmed=False)
    assert peer.on_transport(live, *_datagram_from(live_remote, 7), 1.0)
    assert peer.stats.stale == 0
