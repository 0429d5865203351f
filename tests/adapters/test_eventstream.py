"""The AWS event-stream framer: messages whole, byte by byte and split at every position; CRC and
length faults; a body that ends inside a message.  Fixtures come from the emulator's independent
encoder (struct + zlib), the decoder is botocore's."""

from __future__ import annotations

import struct

import pytest

from adapters.errors import ProxyError
from adapters.eventstream import EventStreamParser
from loadtest.emulators import eventstream as enc
from tests.adapters.stream_support import cuts

BODY = b"".join([
    enc.event("messageStart", {"role": "assistant"}),
    enc.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "héllo ✓"}}),
    enc.exception("throttlingException", "slow down"),
])
EXPECTED = [
    ({":event-type": "messageStart", ":content-type": "application/json", ":message-type": "event"},
     b'{"role": "assistant"}'),
    ({":event-type": "contentBlockDelta", ":content-type": "application/json", ":message-type": "event"},
     '{"contentBlockIndex": 0, "delta": {"text": "h\\u00e9llo \\u2713"}}'.encode()),
    ({":exception-type": "throttlingException", ":content-type": "application/json", ":message-type": "exception"},
     b'{"message": "slow down"}'),
]


def frames(pieces) -> list[tuple[dict, bytes]]:
    p = EventStreamParser()
    out = [f for piece in pieces for f in p.feed(piece)] + p.close()
    return [(f.headers, f.payload) for f in out]


def test_whole_bytewise_and_every_split():
    for how, pieces in cuts(BODY):
        assert frames(pieces) == EXPECTED, how


def test_a_message_arrives_only_when_complete():
    p = EventStreamParser()
    first = enc.event("messageStart", {"role": "assistant"})
    assert p.feed(first[:-1]) == []
    assert len(p.feed(first[-1:])) == 1


def test_bad_message_crc_is_a_protocol_error():
    with pytest.raises(ProxyError) as e:
        frames([enc.corrupt(enc.event("messageStart", {}))])
    assert e.value.kind == "upstream_protocol"


def test_bad_prelude_crc_is_a_protocol_error():
    msg = bytearray(enc.event("messageStart", {}))
    msg[8] ^= 0xFF
    with pytest.raises(ProxyError, match="malformed event stream"):
        frames([bytes(msg)])


def test_impossible_lengths_are_a_protocol_error():
    prelude = struct.pack(">II", 14, 10)  # shorter than its own prelude and headers
    import zlib

    msg = prelude + struct.pack(">I", zlib.crc32(prelude)) + b"\0" * 2
    with pytest.raises(ProxyError) as e:
        frames([msg])
    assert e.value.kind == "upstream_protocol"


def test_body_ending_inside_a_message():
    p = EventStreamParser()
    p.feed(BODY[:-3])
    with pytest.raises(ProxyError, match="inside a message"):
        p.close()
