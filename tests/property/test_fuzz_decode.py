"""Fuzz: decoders of network input raise nothing but their one error type."""

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from braid.core import wire
from braid.core.handshake import InitPayload, RespPayload

anything = st.binary(max_size=300)
typed = st.tuples(st.sampled_from([1, 2, 3, 4, 5, 6, 0, 255]), st.binary(max_size=200)).map(
    lambda t: bytes([t[0]]) + t[1])


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(anything, typed))
def test_decode_outer_only_raises_wire_error(raw):
    with contextlib.suppress(wire.WireError):
        wire.decode_outer(raw)


@settings(max_examples=600)
@given(st.one_of(anything, typed.map(lambda b: b"\x00\x00\x00\x01" + b)))
def test_decode_plaintext_only_raises_wire_error(raw):
    with contextlib.suppress(wire.WireError):
        wire.decode_plaintext(raw)


@settings(max_examples=300)
@given(anything)
def test_handshake_payloads_only_raise_wire_error(raw):
    for decoder in (InitPayload.decode, RespPayload.decode):
        with contextlib.suppress(wire.WireError):
            decoder(raw)
