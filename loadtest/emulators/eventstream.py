"""Encoding AWS's binary event stream (`application/vnd.amazon.eventstream`), written from the
format's description (prelude, typed headers, payload, two CRC32s) with struct and zlib only, so
that it can disagree with the gateway's decoder (botocore's).

    [total_length u32][headers_length u32][prelude_crc u32][headers][payload][message_crc u32]

Headers here are all strings (value type 7, u16 length), which is what Bedrock sends.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

STRING = 7


def _headers(headers: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        out += struct.pack(">B", len(raw_name)) + raw_name + struct.pack(">BH", STRING, len(raw_value)) + raw_value
    return bytes(out)


def message(headers: dict[str, str], payload: bytes) -> bytes:
    head = _headers(headers)
    prelude = struct.pack(">II", 12 + len(head) + len(payload) + 4, len(head))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + head + payload
    return body + struct.pack(">I", zlib.crc32(body))


def event(event_type: str, payload: dict[str, Any]) -> bytes:
    return message({":event-type": event_type, ":content-type": "application/json", ":message-type": "event"},
                   json.dumps(payload).encode())


def exception(exception_type: str, text: str) -> bytes:
    return message({":exception-type": exception_type, ":content-type": "application/json",
                    ":message-type": "exception"}, json.dumps({"message": text}).encode())


def corrupt(msg: bytes) -> bytes:
    """The same message with a wrong message CRC (what a decoder must refuse)."""
    return msg[:-4] + struct.pack(">I", (struct.unpack(">I", msg[-4:])[0] ^ 0xFFFFFFFF))
