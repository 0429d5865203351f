"""Helpers shared by several adapters (adapters/common.py)."""

from __future__ import annotations

import re

import pytest

from adapters import ir
from adapters.common import (FramedStreamDecoder, arguments_object, bearer_auth, json_headers, merge_params,
                             parse_tool_arguments, synth_id, tool_names_by_id)
from adapters.errors import ProxyError
from adapters.sse import NDJSONParser, SSEEvent, SSEParser


def test_synth_id_shape():
    assert re.fullmatch(r"call_[A-Za-z0-9]{24}", synth_id())
    assert re.fullmatch(r"msg_[A-Za-z0-9]{8}", synth_id("msg_", 8))


def test_headers():
    assert bearer_auth(None) == {} and bearer_auth("") == {}
    assert bearer_auth("k") == {"authorization": "Bearer k"}
    assert json_headers("k", {"x-team": "a"}) == {"content-type": "application/json", "authorization": "Bearer k",
                                                  "x-team": "a"}
    # configured headers come last and win
    assert json_headers("k", {"authorization": "Token t"})["authorization"] == "Token t"


def test_merge_params_replaces_fields_and_merges_the_nested_one():
    body = {"model": "m", "options": {"num_ctx": 1, "seed": 2}, "keep": 1}
    merge_params(body, {"options": {"seed": 3}, "model": "n"}, nested="options")
    assert body == {"model": "n", "options": {"num_ctx": 1, "seed": 3}, "keep": 1}
    merge_params(body, {"options": {"x": 1}})
    assert body["options"] == {"x": 1}


@pytest.mark.parametrize(
    "raw, expected",
    [("", {}), ("  ", {}), ('{"a": 1}', {"a": 1}), ("[1]", None), ('"s"', None), ("{bad", None)],
)
def test_arguments_object(raw, expected):
    assert arguments_object(raw) == expected


def test_parse_tool_arguments_refuses_what_is_not_an_object():
    assert parse_tool_arguments('{"city": "Paris"}', "f") == {"city": "Paris"}
    for raw in ("[1]", "{bad"):
        with pytest.raises(ProxyError) as info:
            parse_tool_arguments(raw, "get_weather")
        assert info.value.kind == "invalid_request" and "get_weather" in info.value.message


def test_tool_names_by_id():
    messages = [
        ir.Message(role="assistant", parts=[ir.ToolCall(id="c1", name="a", arguments=""), ir.Text("x")]),
        ir.Message(role="assistant", parts=[ir.ToolCall(id="c2", name="b", arguments="{}")]),
    ]
    assert tool_names_by_id(messages) == {"c1": "a", "c2": "b"}


def _toy(data: bytes, d: FramedStreamDecoder, out: list[ir.Event]) -> None:
    """A toy format: `err` is an in-band error, `end` the terminal event, anything else a text delta."""
    if data == b"err":
        raise ProxyError("server", "boom")
    if data == b"end":
        d.done = True
        out.append(ir.End())
    else:
        out.append(ir.TextDelta(0, data.decode()))


class _Lines(FramedStreamDecoder):
    truncated = "no end line"
    hold_errors = True

    def __init__(self) -> None:
        super().__init__(NDJSONParser())

    def _frame(self, line: bytes, out: list[ir.Event]) -> None:
        _toy(line, self, out)


class _Events(FramedStreamDecoder):
    def __init__(self) -> None:
        super().__init__(SSEParser())

    def _frame(self, ev: SSEEvent, out: list[ir.Event]) -> None:
        _toy(ev.data, self, out)


def test_line_decoder_delivers_events_before_an_error_in_the_same_chunk():
    d = _Lines()
    assert d.feed(b"a\nb\nerr\n") == [ir.TextDelta(0, "a"), ir.TextDelta(0, "b")]
    with pytest.raises(ProxyError, match="boom"):
        d.feed(b"")
    d = _Lines()
    with pytest.raises(ProxyError, match="boom"):
        d.feed(b"err\n")


def test_line_decoder_close_needs_the_terminal_event():
    d = _Lines()
    assert d.feed(b"a\nend") == [ir.TextDelta(0, "a")]  # the last line may lack its newline
    assert d.close() == [ir.End()]
    d = _Lines()
    d.feed(b"a\n")
    with pytest.raises(ProxyError) as info:
        d.close()
    assert info.value.kind == "upstream_protocol" and info.value.message == "no end line"


class _HoldingEvents(_Events):
    hold_errors = True


def test_sse_decoder_raises_an_inband_error_at_once_by_default():
    d = _Events()
    with pytest.raises(ProxyError, match="boom"):
        d.feed(b"data: a\n\ndata: err\n\n")


def test_holding_decoder_gives_the_same_events_whole_or_byte_by_byte():
    body = b"data: a\n\ndata: b\n\ndata: err\n\n"
    whole = _HoldingEvents()
    got = whole.feed(body)
    with pytest.raises(ProxyError, match="boom"):
        whole.close()
    split, pieces = _HoldingEvents(), []
    with pytest.raises(ProxyError, match="boom"):
        for i in range(len(body)):
            pieces += split.feed(body[i : i + 1])
    assert got == pieces == [ir.TextDelta(0, "a"), ir.TextDelta(0, "b")]
