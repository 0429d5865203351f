"""Sans-IO framer for AWS's binary event stream (`application/vnd.amazon.eventstream`).

How this works: botocore's `EventStreamBuffer` (pure: no I/O, no botocore session) buffers bytes
and yields each message once all of its `total_length` bytes are present, after checking both CRCs;
so any split of the body gives the same messages.  This wrapper gives it the framer interface of
`adapters.sse` (`feed(bytes) -> [message]`, `close()`), turns every framing fault (a CRC mismatch,
impossible lengths) into `ProxyError("upstream_protocol")`, and reports a body that ends inside a
message.  Messages come out as `Frame(headers, payload)`; `headers` are `:message-type`,
`:event-type`, `:exception-type`, `:content-type` and friends.
"""

from __future__ import annotations

import struct
from typing import Any

from botocore.eventstream import EventStreamBuffer, ParserError

from .errors import ProxyError

PRELUDE_AND_CRC = 16  # a message is at least its 12-byte prelude and its 4-byte CRC


class Frame:
    __slots__ = ("headers", "payload")

    def __init__(self, headers: dict[str, Any], payload: bytes) -> None:
        self.headers = headers
        self.payload = payload


class EventStreamParser:
    __slots__ = ("_buffer", "_pending")

    def __init__(self) -> None:
        self._buffer = EventStreamBuffer()
        self._pending = 0  # bytes fed and not yet consumed by a complete message

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buffer.add_data(chunk)
        self._pending += len(chunk)
        out = []
        try:
            for message in self._buffer:
                prelude = message.prelude
                if prelude.total_length < PRELUDE_AND_CRC + prelude.headers_length:
                    raise ProxyError("upstream_protocol", "event stream message shorter than its headers")
                self._pending -= prelude.total_length
                out.append(Frame(message.headers, message.payload))
        except (ParserError, struct.error, UnicodeDecodeError, ValueError) as exc:
            raise ProxyError("upstream_protocol", f"malformed event stream ({type(exc).__name__})") from None
        return out

    def close(self) -> list[Frame]:
        if self._pending:
            raise ProxyError("upstream_protocol", "event stream ended inside a message")
        return []
