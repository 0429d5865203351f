"""Sans-IO incremental parsers and encoders for Server-Sent Events and NDJSON.

How this works: `feed(bytes)` takes whatever a socket read produced and returns the events completed
by it.  Only the new bytes are scanned for line ends (`bytes.splitlines` splits on CR, LF and CRLF
only -- never on U+2028 and friends, which may sit unescaped inside JSON).  The incomplete tail line
is kept undecoded, so a multi-byte UTF-8 character split across reads is joined before anyone
decodes it; a trailing lone CR is held until the next byte shows whether it is half of a CRLF.
Event data stays `bytes` (JSON decoders take bytes; the pass-through relay never decodes at all).
Rules follow the WHATWG "event stream interpretation" algorithm (see shared/protocols/sse.md).
Everything a parser holds is bounded: an unterminated line, and an event's data lines together, past
MAX_EVENT_BYTES raise ProxyError (upstream_protocol) -- an upstream that never sends a line end
cannot grow the gateway's memory.  One event never legitimately comes near it (a whole Responses
`response.completed` with images is a few MiB).
"""

from __future__ import annotations

import msgspec

from .errors import ProxyError

_BOM = b"\xef\xbb\xbf"
MAX_EVENT_BYTES = 64 * 1024 * 1024  # one line, or one SSE event's data, held while incomplete


def _too_long(what: str) -> ProxyError:
    return ProxyError("upstream_protocol", f"the backend's stream sent {what} over {MAX_EVENT_BYTES} bytes")


class SSEEvent(msgspec.Struct, gc=False):
    """One dispatched event.  A Struct: built in C (one per upstream event, on every stream path),
    with field-wise equality and a field-wise repr; it holds only bytes and strings, so no cycles."""

    data: bytes
    event: str | None = None  # None means the default type, "message"
    id: str | None = None


class _LineSplitter:
    """Split a byte stream into complete lines (endings removed), scanning each byte once (in C)."""

    __slots__ = ("_partial", "_cr_held", "_started")

    def __init__(self) -> None:
        self._partial = bytearray()  # the current unterminated line
        self._cr_held = False  # the last line ended with a CR that may be half of a CRLF
        self._started = False

    def feed(self, chunk: bytes) -> list[bytes]:
        if not chunk:
            return []
        if self._cr_held:
            self._cr_held = False
            if chunk[0] == 0x0A:  # the LF of a CRLF split across reads
                chunk = chunk[1:]
                if not chunk:
                    return []
        if not self._started:
            # A BOM may itself arrive split; wait until three bytes are in before deciding.
            self._partial += chunk
            if len(self._partial) < 3 and _BOM.startswith(bytes(self._partial)):
                return []
            self._started = True
            chunk = bytes(self._partial)
            self._partial.clear()
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
                if not chunk:
                    return []
        # One C-level split; only the last byte says whether the last line is complete (a CR may be
        # half of a CRLF: the LF is dropped from the next read).
        lines = chunk.splitlines()
        end = chunk[-1]
        if end == 0x0D:
            self._cr_held = True
        elif end != 0x0A:
            tail = lines.pop()
            if lines:
                self._join_partial(lines)
            self._partial += tail
            if len(self._partial) > MAX_EVENT_BYTES:
                raise _too_long("a line without a line end")
            return lines
        self._join_partial(lines)
        return lines

    def _join_partial(self, lines: list[bytes]) -> None:
        """The unterminated line kept from earlier reads is the start of this read's first line."""
        if self._partial:
            self._partial += lines[0]
            lines[0] = bytes(self._partial)
            self._partial.clear()

    def finish(self) -> bytes | None:
        """The unterminated last line at end of stream, if any."""
        if self._partial:
            line = bytes(self._partial)
            self._partial.clear()
            return line
        return None


class SSEParser:
    """Incremental SSE parser.  `unterminated` is set when close() had to dispatch a partial event."""

    __slots__ = ("_lines", "_data", "_size", "_event", "last_event_id", "retry", "unterminated")

    def __init__(self) -> None:
        self._lines = _LineSplitter()
        self._data: list[bytes] = []
        self._size = 0  # bytes in _data
        self._event: str | None = None
        self.last_event_id: str | None = None
        self.retry: int | None = None
        self.unterminated = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        lines = self._lines.feed(chunk)
        if 1 < len(lines) < 4 and not lines[-1] and not self._data and self._event is None:
            one = self._one_event(lines)
            if one is not None:
                return [one]
        out: list[SSEEvent] = []
        for line in lines:
            self._line(line, out)
        return out

    def _one_event(self, lines: list[bytes]) -> SSEEvent | None:
        """The read a token-paced stream makes: one `[event: NAME] / data: DATA / blank` event with
        nothing pending.  The event the line-by-line path would build, without its Python steps per
        line (each a few hundred ns); any other shape returns None and takes that path."""
        data = lines[-2]
        if not data.startswith(b"data: ") or len(data) > MAX_EVENT_BYTES:
            return None
        if len(lines) == 2:
            return SSEEvent(data[6:], None, self.last_event_id)
        if lines[0].startswith(b"event: "):
            return SSEEvent(data[6:], lines[0][7:].decode("utf-8", "replace"), self.last_event_id)
        return None

    def close(self) -> list[SSEEvent]:
        """End of stream.  A pending event without its blank line is dispatched leniently."""
        out: list[SSEEvent] = []
        line = self._lines.finish()
        if line is not None:
            self._line(line, out)
        if self._data:
            self.unterminated = True
            self._dispatch(out)
        return out

    def _line(self, line: bytes, out: list[SSEEvent]) -> None:
        if not line:
            self._dispatch(out)
            return
        if line[0] == 0x3A:  # ':' comment / keep-alive
            return
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._size += len(value)
            if self._size > MAX_EVENT_BYTES:
                raise _too_long("an event")
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self.last_event_id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value.isdigit():
                self.retry = int(value)

    def _dispatch(self, out: list[SSEEvent]) -> None:
        data = self._data
        if data:
            out.append(
                SSEEvent(data[0] if len(data) == 1 else b"\n".join(data), self._event, self.last_event_id)
            )
            self._data = []
            self._size = 0
        self._event = None


class NDJSONParser:
    """Incremental newline-delimited JSON framing: returns complete, non-empty lines as bytes."""

    __slots__ = ("_lines",)

    def __init__(self) -> None:
        self._lines = _LineSplitter()

    def feed(self, chunk: bytes) -> list[bytes]:
        return [line for line in self._lines.feed(chunk) if line and not line.isspace()]  # no stripped copy

    def close(self) -> list[bytes]:
        line = self._lines.finish()
        return [line] if line is not None and line.strip() else []


def encode_event(data: bytes, event: str | None = None) -> bytes:
    """One SSE event.  `data` containing newlines becomes several `data:` lines, as the spec joins them."""
    if b"\n" in data or b"\r" in data:
        body = b"".join(b"data: " + line + b"\n" for line in data.splitlines())
    else:
        body = b"data: " + data + b"\n"
    if event is not None:
        return b"event: " + event.encode() + b"\n" + body + b"\n"
    return body + b"\n"


def encode_data(data: bytes) -> bytes:
    """The common single-line case (compact JSON has no raw newlines): `data: ...` + blank line."""
    return b"data: " + data + b"\n\n"

DONE = b"data: [DONE]\n\n"
