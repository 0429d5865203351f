"""SSE and NDJSON framing: the WHATWG checklist, and identical events for every split of the input."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.sse import NDJSONParser, SSEEvent, SSEParser, encode_event


def parse_whole(data: bytes) -> list[SSEEvent]:
    p = SSEParser()
    return p.feed(data) + p.close()


def parse_bytewise(data: bytes) -> list[SSEEvent]:
    p = SSEParser()
    out = []
    for i in range(len(data)):
        out += p.feed(data[i : i + 1])
    return out + p.close()


def parse_split(data: bytes, cut: int) -> list[SSEEvent]:
    p = SSEParser()
    return p.feed(data[:cut]) + p.feed(data[cut:]) + p.close()


def assert_all_splits(data: bytes, expected: list[SSEEvent]) -> None:
    assert parse_whole(data) == expected
    assert parse_bytewise(data) == expected
    for cut in range(len(data) + 1):
        assert parse_split(data, cut) == expected, cut


CHECKLIST = [
    (b"data: a\n\n", [SSEEvent(b"a")]),
    (b"data: a\r\n\r\n", [SSEEvent(b"a")]),
    (b"data: a\r\r", [SSEEvent(b"a")]),
    (b"data: a\r\n\r\ndata: b\r\n\r\n", [SSEEvent(b"a"), SSEEvent(b"b")]),
    (b'data: {"x":\ndata: 1}\n\n', [SSEEvent(b'{"x":\n1}')]),
    (b": keepalive\n\n", []),
    (b":\n\n", []),
    (b"event: ping\ndata: {}\n\n", [SSEEvent(b"{}", "ping")]),
    ("data: 🦙🦙\n\n".encode(), [SSEEvent("🦙🦙".encode())]),
    (b"data:x\n\n", [SSEEvent(b"x")]),
    (b"data:  x\n\n", [SSEEvent(b" x")]),
    ('data: {"t":"a\u2028b"}\n\n'.encode(), [SSEEvent('{"t":"a\u2028b"}'.encode())]),
    (b"data: tail-without-blank-line", [SSEEvent(b"tail-without-blank-line")]),
    (b"retry: abc\ndata: r\n\n", [SSEEvent(b"r")]),
    (b"id: a\0b\ndata: r\n\n", [SSEEvent(b"r")]),
    (b"id: 7\ndata: r\n\ndata: s\n\n", [SSEEvent(b"r", id="7"), SSEEvent(b"s", id="7")]),
    (b"event: only-event\n\ndata: d\n\n", [SSEEvent(b"d")]),
    (b"data\n\n", [SSEEvent(b"")]),
    (b"\xef\xbb\xbfdata: bom\n\n", [SSEEvent(b"bom")]),
    (b"data: a\rdata: b\n\n", [SSEEvent(b"a\nb")]),
    (b"data: mixed\r\n\ndata: endings\r\r", [SSEEvent(b"mixed"), SSEEvent(b"endings")]),
    (b"unknown: field\ndata: u\n\n", [SSEEvent(b"u")]),
]


def test_checklist_every_split():
    for data, expected in CHECKLIST:
        assert_all_splits(data, expected)


def test_unterminated_is_flagged():
    p = SSEParser()
    assert p.feed(b"data: x") == []
    assert p.close() == [SSEEvent(b"x")]
    assert p.unterminated
    q = SSEParser()
    q.feed(b"data: x\n\n")
    q.close()
    assert not q.unterminated


def test_retry_field_digits_only():
    p = SSEParser()
    p.feed(b"retry: 1500\n\n")
    assert p.retry == 1500


sse_line = st.one_of(
    st.builds(lambda v: b"data: " + v, st.binary(max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b)),
    st.sampled_from([b"", b": ping", b"event: x", b"id: 3", b"data", "data: é🦙".encode()]),
)
line_end = st.sampled_from([b"\n", b"\r\n", b"\r"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(sse_line, line_end), max_size=12), st.data())
def test_any_split_yields_same_events(lines, data):
    stream = b"".join(line + end for line, end in lines)
    expected = parse_whole(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    p = SSEParser()
    got, prev = [], 0
    for c in cuts + [len(stream)]:
        got += p.feed(stream[prev:c])
        prev = c
    assert got + p.close() == expected
    assert parse_bytewise(stream) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(sse_line, line_end), max_size=12))
def test_one_read_per_event_yields_the_same_events(lines):
    """Reads cut after every blank line (the parser's one-event path) give what byte-wise reads give."""
    stream = b"".join(line + end for line, end in lines)
    reads = [r for r in re.split(rb"(?<=\n\n)", stream) if r]
    p = SSEParser()
    assert [ev for r in reads for ev in p.feed(r)] + p.close() == parse_bytewise(stream)


@pytest.mark.parametrize(
    ("reads", "expected"),
    [
        ([b"data: x\n\n", b"data: y\n\n"], [SSEEvent(b"x"), SSEEvent(b"y")]),
        ([b"data: x\n\n", b"event: e\ndata: y\n\n"], [SSEEvent(b"x"), SSEEvent(b"y", "e")]),
        ([b"data: x\n\n", b"event: e\n", b"data: y\n\n"], [SSEEvent(b"x"), SSEEvent(b"y", "e")]),  # name held
        ([b"data: x\n\n", b"data: a", b"data: y\n\n"], [SSEEvent(b"x"), SSEEvent(b"adata: y")]),  # line held
        ([b"data: x\n\n", b"data: a\r", b"data: y\n\n"], [SSEEvent(b"x"), SSEEvent(b"a\ny")]),  # CR held
        ([b"data: x\n\n", b"data: a\n", b"data: y\n\n"], [SSEEvent(b"x"), SSEEvent(b"a\ny")]),  # data held
        ([b"id: 7\ndata: x\n\n", b"data: y\n\n"], [SSEEvent(b"x", id="7"), SSEEvent(b"y", id="7")]),
        ([b"data: x\n\n", b"event: e\nid: 2\n\n", b"data: y\n\n"], [SSEEvent(b"x"), SSEEvent(b"y", id="2")]),
    ],
)
def test_whole_event_reads_after_pending_state(reads, expected):
    p = SSEParser()
    assert [ev for r in reads for ev in p.feed(r)] + p.close() == expected


def test_encode_roundtrip_multiline():
    raw = encode_event(b"line1\nline2", "output") + encode_event(b'{"a":1}')
    assert parse_whole(raw) == [SSEEvent(b"line1\nline2", "output"), SSEEvent(b'{"a":1}')]


def test_ndjson_every_split():
    data = b'{"a":1}\n\n{"b":"\xc3\xa9"}\r\n{"c":3}'
    expected = [b'{"a":1}', b'{"b":"\xc3\xa9"}', b'{"c":3}']
    for cut in range(len(data) + 1):
        p = NDJSONParser()
        assert p.feed(data[:cut]) + p.feed(data[cut:]) + p.close() == expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([b"data: x", b"", b"\xf0\x9f\xa6\x99", b":c", b"event: e"]),
                       st.sampled_from([b"\n", b"\r\n", b"\r"])), max_size=12),
    st.binary(max_size=6),
    st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)  # fmt: skip
def test_line_splitter_any_endings_any_cuts_match_splitlines(lines, tail, cuts):
    """LF-only reads take a one-split fast path, reads with a CR the general one: in any mix, and
    whatever a read's boundaries, the lines are those of splitlines() over the whole stream."""
    from adapters.sse import _LineSplitter

    data = b"".join(text + end for text, end in lines) + tail.replace(b"\r", b"").replace(b"\n", b"")
    splitter, got, pos = _LineSplitter(), [], 0
    for cut in sorted(min(c, len(data)) for c in cuts) + [len(data)]:
        got += splitter.feed(data[pos:cut])
        pos = cut
    rest = splitter.finish()
    # A leading BOM is not part of the first line (the splitter drops it, as the SSE spec says).
    assert got + ([rest] if rest is not None else []) == data.removeprefix(b"\xef\xbb\xbf").splitlines()


# -- bounds: an upstream that never ends a line or an event cannot grow the parser's memory ---------


from adapters import sse  # noqa: E402
from adapters.errors import ProxyError  # noqa: E402


def _feed_until_refused(parser, piece: bytes, limit: int) -> tuple[int, str]:
    """Feed `piece` repeatedly: (bytes fed, including the refused piece; the error's message).  The
    parser must refuse within 4x the limit."""
    fed = 0
    with pytest.raises(ProxyError) as info:
        while fed < 4 * limit:
            fed += len(piece)
            parser.feed(piece)
    assert info.value.kind == "upstream_protocol"
    return fed, info.value.message


@pytest.mark.parametrize("make", [SSEParser, NDJSONParser])
def test_a_line_without_end_is_refused_past_the_bound(monkeypatch, make):
    monkeypatch.setattr(sse, "MAX_EVENT_BYTES", 4096)
    parser = make()
    parser.feed(b'data: {"a": 1}\n\n' if make is SSEParser else b'{"a": 1}\n')  # complete frames are fine
    fed, message = _feed_until_refused(parser, b"x" * 1000, 4096)
    assert fed == 5000 and message == "the backend's stream sent a line without a line end over 4096 bytes"


def test_an_event_without_its_blank_line_is_refused_past_the_bound(monkeypatch):
    monkeypatch.setattr(sse, "MAX_EVENT_BYTES", 4096)
    fed, message = _feed_until_refused(SSEParser(), b"data: " + b"y" * 994 + b"\n", 4096)  # lines end, the event never
    assert fed == 5 * 1001 and message == "the backend's stream sent an event over 4096 bytes"  # 5 x 994 data bytes


def test_an_event_at_the_bound_passes_whole_and_byte_by_byte(monkeypatch):
    monkeypatch.setattr(sse, "MAX_EVENT_BYTES", 4096)
    data = b"z" * 4090
    frame = b"data: " + data + b"\n\n"  # the line is 4096 bytes, the event's data 4090
    assert parse_whole(frame) == parse_bytewise(frame) == [SSEEvent(data)]


def test_an_ndjson_line_at_the_bound_passes_whole_and_byte_by_byte(monkeypatch):
    monkeypatch.setattr(sse, "MAX_EVENT_BYTES", 4096)
    line = b"z" * 4096
    for pieces in ([line + b"\n"], [bytes([b]) for b in line + b"\n"]):
        parser = NDJSONParser()
        assert [x for piece in pieces for x in parser.feed(piece)] + parser.close() == [line]
