"""The client's handshake state, every state against every event (h11's test_state style).

The state is derived from what the client holds (keys, an initiation awaiting its answer),
so no order of timers, key expiry and late, stale or forged responses can leave it in a
state without a way out, or raise (the crash of issue 12)."""

import ipaddress
import os

import pytest

from braid.core.client import ClientCore, ClientParams
from braid.core.gateway import ClientEntry, GatewayCore, GatewayParams
from braid.core.handshake import HandshakeState, handshake_state
from braid.core.link import LinkConfig
from braid.core.noise import public_key
from braid.core.timers import REJECT_AFTER_TIME, REKEY_RETRY
from tests.helpers import udp_packet

IDLE, SENT, ESTABLISHED = HandshakeState.IDLE, HandshakeState.SENT, HandshakeState.ESTABLISHED
ADDR = ("192.0.2.1", 4000)


@pytest.mark.parametrize(("has_keys", "awaiting", "state"), [
    (False, False, IDLE), (False, True, SENT), (True, False, ESTABLISHED), (True, True, ESTABLISHED)])
def test_the_state_is_total_over_what_the_client_holds(has_keys, awaiting, state):
    assert handshake_state(has_keys, awaiting) is state


class Pair:
    """A client and a gateway core; datagrams move only when a test says so."""

    def __init__(self) -> None:
        gw_key, cl_key = os.urandom(32), os.urandom(32)
        entry = ClientEntry("site", public_key(cl_key), (ipaddress.ip_network("10.77.0.2/32"),))
        self.gateway = GatewayCore(GatewayParams(gw_key, (entry,), warmup=False), 0.0, random=os.urandom)
        links = (LinkConfig("a", 0), LinkConfig("b", 1))
        self.client = ClientCore(ClientParams(cl_key, public_key(gw_key), links, warmup=False), 0.0,
                                 random=os.urandom, wall_offset=1.7e9)
        self.now = 0.0
        self.rounds: list[list[bytes]] = []  # the gateway's responses, one list per round

    def timer(self, dt: float) -> None:
        self.now += dt
        self.client.on_timer(self.now)
        inits = [dg.data for dg in self.client.datagrams_to_send(self.now) if dg.data[0] == 1]
        responses = []
        for data in inits:
            self.gateway.on_datagram(ADDR, data, self.now)
            responses += [dg.data for dg in self.gateway.datagrams_to_send(self.now) if dg.data[0] == 2]
        if inits:
            self.rounds.append(responses)

    def deliver_response(self, round_index: int) -> None:
        if self.rounds and self.rounds[round_index]:
            self.client.on_datagram(0, self.rounds[round_index][0], self.now)
        for dg in self.client.datagrams_to_send(self.now):  # its first datagrams confirm the keys
            if dg.data[0] == 3:
                self.gateway.on_datagram(ADDR, dg.data, self.now)

    def transport_from_gateway(self) -> None:
        self.gateway.on_tun_packet(udp_packet(1, src="10.77.0.1", dst="10.77.0.2", size=100), self.now)
        self.gateway.on_timer(self.now)
        for dg in self.gateway.datagrams_to_send(self.now):
            self.client.on_datagram(dg.link_id, dg.data, self.now)
        self.client.datagrams_to_send(self.now)


def _in_state(name: str) -> Pair:
    pair = Pair()
    if name == "idle":
        return pair
    pair.timer(0.0)  # sends the first initiation
    if name == "sent":
        return pair
    pair.deliver_response(-1)
    pair.transport_from_gateway()
    if name == "established":
        return pair
    pair.timer(REKEY_RETRY + 0.3)  # the gateway said nothing for a while: a new initiation
    if name == "rekeying":
        return pair
    pair.now += REJECT_AFTER_TIME  # "expired": the keys' life ran out, that initiation unanswered
    pair.client.peer.expire_keys(pair.now)
    pair.gateway.on_timer(pair.now)
    assert name == "expired"
    return pair


EVENTS = {
    "timer": lambda p: p.timer(REKEY_RETRY + 0.3),
    "response": lambda p: p.deliver_response(-1),
    "stale-response": lambda p: p.deliver_response(0),
    "forged-response": lambda p: p.client.on_datagram(0, b"\x02" + os.urandom(91), p.now),
    "keys-expire": lambda p: p.timer(REJECT_AFTER_TIME + 1),
    "transport": lambda p: p.transport_from_gateway(),
    "garbage": lambda p: p.client.on_datagram(1, os.urandom(60), p.now),
}

# state before -> event -> state after
EXPECTED = {
    "idle": dict(timer=SENT, response=IDLE, **{"stale-response": IDLE, "forged-response": IDLE,
                 "keys-expire": SENT}, transport=IDLE, garbage=IDLE),
    "sent": dict(timer=SENT, response=ESTABLISHED, **{"stale-response": ESTABLISHED,
                 "forged-response": SENT, "keys-expire": SENT}, transport=SENT, garbage=SENT),
    "established": dict(timer=ESTABLISHED, response=ESTABLISHED, **{
        "stale-response": ESTABLISHED, "forged-response": ESTABLISHED, "keys-expire": SENT},
        transport=ESTABLISHED, garbage=ESTABLISHED),
    "rekeying": dict(timer=ESTABLISHED, response=ESTABLISHED, **{
        "stale-response": ESTABLISHED, "forged-response": ESTABLISHED, "keys-expire": SENT},
        transport=ESTABLISHED, garbage=ESTABLISHED),
    "expired": dict(timer=SENT, response=ESTABLISHED, **{"stale-response": SENT,
                    "forged-response": SENT, "keys-expire": SENT}, transport=SENT, garbage=SENT),
}


@pytest.mark.parametrize("event", sorted(EVENTS))
@pytest.mark.parametrize("state", sorted(EXPECTED))
def test_every_state_and_event(state, event):
    pair = _in_state(state)
    EVENTS[event](pair)
    assert pair.client.state is EXPECTED[state][event]
    pair.client.next_deadline()  # still answers


def test_a_late_answer_to_a_rekey_after_the_keys_expired_establishes_again():
    pair = _in_state("expired")
    assert pair.client.state is SENT
    pair.deliver_response(-1)
    assert pair.client.state is ESTABLISHED
    pair.transport_from_gateway()
    assert pair.client.peer.stats.rx_datagrams >= 1


def test_the_link_table_may_have_gaps_but_not_at_the_sender_nor_twice():
    """A link removed live leaves its id unused ("") so the others keep theirs."""
    import pytest

    from braid.core.handshake import InitPayload
    from braid.core.wire import WireError

    names = ("fibre", "", "wifi")
    assert InitPayload.decode(InitPayload(1, 2, 2, names).encode()).link_names == names
    for bad in (InitPayload(1, 2, 1, names), InitPayload(1, 2, 0, ("a", "a"))):
        with pytest.raises(WireError):
            InitPayload.decode(bad.encode())
