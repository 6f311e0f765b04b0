"""mac1/mac2 and cookie replies (WireGuard's design), and the per-source rate limiter."""

import os

from braid.core import noise, timers, wire
from braid.core.cookie import CookieChecker, CookieJar, MacChecker, RateLimiter, with_macs
from braid.core.gateway import HANDSHAKE_LOAD, GatewayCore, GatewayParams
from braid.core.handshake import PROLOGUE, InitPayload

ADDR = ("198.51.100.7", 40211)


def test_mac1_proves_knowledge_of_the_receivers_public_key():
    pub = os.urandom(32)
    msg = with_macs(b"\x01" + os.urandom(120), pub, None)
    checker = MacChecker(pub)
    assert checker.mac1_ok(msg)
    assert not MacChecker(os.urandom(32)).mac1_ok(msg)
    for i in (0, 60, len(msg) - 17):
        bad = bytearray(msg)
        bad[i] ^= 1
        assert not checker.mac1_ok(bytes(bad))
    assert not checker.mac1_ok(b"")


def test_a_cookie_opens_only_for_the_initiation_it_answers_and_binds_mac2_to_the_address():
    pub = os.urandom(32)
    gw = CookieChecker(pub, os.urandom, 0.0)
    jar = CookieJar(pub)
    sent = jar.seal(0, b"\x01" + os.urandom(120), 0.0)
    assert not gw.mac2_ok(sent, ADDR, 0.0)  # no cookie yet: mac2 is zeros
    nonce, sealed = gw.reply(sent, ADDR, 0.0)
    other = jar.seal(0, b"\x01" + os.urandom(120), 0.0)
    assert not jar.on_reply(0, other, nonce, sealed, 0.1)  # aad = the answered mac1
    assert jar.on_reply(0, sent, nonce, sealed, 0.1)
    again = jar.seal(0, b"\x01" + os.urandom(120), 0.2)
    assert gw.mac2_ok(again, ADDR, 0.2)
    assert not gw.mac2_ok(again, ("198.51.100.8", 40211), 0.2)  # another source
    assert not gw.mac2_ok(jar.seal(1, b"\x01" + os.urandom(120), 0.2), ADDR, 0.2)  # other link
    assert not gw.mac2_ok(again, ADDR, timers.COOKIE_SECRET_LIFE + 1)  # the secret rotated
    assert len(wire.CookieReply(1, nonce, sealed).encode()) == wire.COOKIE_REPLY_LEN < len(sent)


def test_the_rate_limiter_refills_and_never_grows_past_its_table():
    limiter = RateLimiter(rate=10.0, burst=2.0, max_keys=4)
    assert [limiter.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow("a", 0.1)  # one token back after 0.1 s
    for i in range(100):
        limiter.allow(i, 0.2)
    assert len(limiter) <= 4
    assert limiter.allow("new", 10.0)  # idle entries are pruned to make room


def _initiation(gw_public: bytes, client_private: bytes, wall: int) -> bytes:
    payload = InitPayload(wall, 1, 0, ("l0",)).encode()
    e, s, p, _ = noise.initiator_write(client_private, gw_public, os.urandom(32), payload, PROLOGUE)
    return with_macs(wire.HandshakeInit(wall & 0xFFFF, e, s, p).encode_body(), gw_public, None)


def test_under_load_initiations_without_a_cookie_get_a_cookie_reply_and_no_diffie_hellman():
    gw_key = os.urandom(32)
    gw_public = noise.public_key(gw_key)
    gw = GatewayCore(GatewayParams(gw_key, ()), 0.0, random=os.urandom)
    flood = [_initiation(gw_public, os.urandom(32), w) for w in range(20)]
    junk = [b"\x01" + os.urandom(180) for _ in range(20)]
    for i in range(15_000):  # one second of a 15,000/s flood, half junk, half unknown keys
        t = i / 15_000
        gw.on_datagram((f"203.0.113.{i % 200}", 1000 + i % 7), (flood if i % 2 else junk)[i % 20], t)
    replies = gw.datagrams_to_send(t)
    diffie_hellman = gw.counters["unknown_client"] + gw.counters["handshake_failed"]
    print(f"of 15,000 initiations in one second: {diffie_hellman} reached Diffie-Hellman, "
          f"{gw.counters['bad_mac']} failed mac1, {gw.counters['cookie_replies']} cookie replies")
    assert gw.counters["bad_mac"] == 7_500
    assert diffie_hellman <= HANDSHAKE_LOAD + 1
    # 200 sources, each answered at most its burst plus 20/s: the rest silently dropped
    assert 200 * 10 <= gw.counters["cookie_replies"] <= 200 * (10 + 20)
    assert gw.counters["cookie_replies"] + gw.counters["rate_limited"] >= 7_500 - HANDSHAKE_LOAD - 1
    assert all(dg.data[0] == wire.COOKIE_REPLY for dg in replies)
    received = sum(len((flood if i % 2 else junk)[i % 20]) for i in range(15_000))
    assert sum(len(dg.data) for dg in replies) < received / 2  # no amplification


def test_a_client_completes_its_handshake_through_a_flood_with_the_cookie():
    from braid.testing.fakenet import FakeLink, FakeNet

    net = FakeNet({"a": FakeLink(), "b": FakeLink()}, seed=3, warmup=False)
    net.run_until(0.5)
    flood = [_initiation(net.gateway_public, os.urandom(32), w) for w in range(10)]
    net.restart_client()
    start = t = net.now
    n = 0
    while not net.client.peer.established and t < start + 5.0:
        for _ in range(15):  # 15,000/s from unknown keys, among the client's own datagrams
            net.gateway.on_datagram((f"203.0.113.{n % 50}", 999), flood[n % 10], t)
            n += 1
        t += 0.001
        net.run_until(t)
    print(f"handshake under a 15,000/s flood took {(t - start) * 1000:.0f} ms (virtual time), "
          f"{net.client.counters['cookies']} cookie(s) used")
    assert net.client.peer.established
    assert net.client.counters["cookies"] >= 1
    assert net.gateway.counters["cookie_replies"] > 1000
