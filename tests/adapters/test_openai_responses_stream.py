"""Responses API stream encoder: event order and nesting, sequence numbers, interleaved IR blocks,
finish rows, errors; every stream is parsed back, validated with the SDK's event models and fed to the
SDK's own accumulator (lib/streaming/responses ResponseStreamState)."""

import pydantic
import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent

from adapters import ir, jsonio
from adapters.errors import ProxyError
from adapters.openai_responses_frontend import ResponsesFrontend
from adapters.openai_responses_reasoning import open_envelope
from adapters.openai_responses_stream import ResponsesStreamEncoder
from adapters.sse import SSEParser

_EVENT = pydantic.TypeAdapter(ResponseStreamEvent)
REQ = ir.ChatRequest(model="m", stream=True, tools=[ir.ToolDef("f")], tool_choice=ir.ToolChoice("tool", "f"),
                     temperature=0.5, max_tokens=99, response_format=ir.ResponseFormat("json_object"))


def encode(events, req=REQ, error=None):
    enc = ResponsesStreamEncoder(req, "client-model")
    out = b"".join(enc.feed(ev) for ev in events)
    if error is not None:
        out += enc.error(error)
    return out


def parse(data: bytes) -> list[dict]:
    """SSE back to dicts; the `event:` name must equal the JSON `type`."""
    parser = SSEParser()
    frames = parser.feed(data) + parser.close()
    assert not parser.unterminated
    out = []
    for f in frames:
        obj = jsonio.loads(f.data)
        assert f.event == obj["type"]
        out.append(obj)
    return out


def check(data: bytes) -> list[dict]:
    """Well-formedness: sequence numbers 0..n, items added once and done before the next is added,
    parts inside their item; every event valid for the SDK; the SDK accumulator accepts the stream."""
    events = parse(data)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    open_item = None
    next_index = 0
    state = ResponseStreamState(input_tools=omit, text_format=omit)
    for e in events:
        t = e["type"]
        state.handle_event(_EVENT.validate_python(e))
        if t == "response.output_item.added":
            assert open_item is None and e["output_index"] == next_index
            open_item = e["item"]["id"]
            next_index += 1
        elif t == "response.output_item.done":
            assert e["item"]["id"] == open_item
            open_item = None
        elif "item_id" in e:
            assert e["item_id"] == open_item
    assert open_item is None
    return events


def types(events):
    return [e["type"] for e in events]


TEXT = [ir.Start(id="up"), ir.BlockStart(0, "text"), ir.TextDelta(0, "Hel"), ir.TextDelta(0, "lo"), ir.BlockEnd(0),
        ir.Finish("stop"), ir.UsageEvent(ir.Usage(input_tokens=4, output_tokens=2, cached_input_tokens=1)), ir.End()]


def test_text_sequence():
    events = check(encode(TEXT))
    assert types(events) == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    assert events[2]["item"]["status"] == "in_progress" and events[2]["item"]["content"] == []
    assert events[6]["text"] == "Hello" and events[7]["part"]["text"] == "Hello"
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["id"] == events[0]["response"]["id"]
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"]["input_tokens"] == 4 and final["usage"]["total_tokens"] == 6
    assert final["usage"]["input_tokens_details"]["cached_tokens"] == 1
    assert final["model"] == "client-model"


def test_request_fields_are_echoed():
    r = parse(encode(TEXT))[0]["response"]
    assert r["tools"] == [{"type": "function", "name": "f", "description": None,
                           "parameters": {"type": "object", "properties": {}}, "strict": None}]
    assert r["tool_choice"] == {"type": "function", "name": "f"}
    assert (r["temperature"], r["max_output_tokens"], r["text"]) == (0.5, 99, {"format": {"type": "json_object"}})


def test_sdk_accumulator_gives_the_final_response():
    events = parse(encode(TEXT))
    state = ResponseStreamState(input_tools=omit, text_format=omit)
    for e in events:
        state.handle_event(_EVENT.validate_python(e))
    assert state._completed_response.output_text == "Hello"


TOOLS = [ir.Start(), ir.BlockStart(0, "tool_call", tool_call_id="call_A", tool_name="w"),
         ir.ToolArgsDelta(0, "{\"c\":"), ir.ToolArgsDelta(0, "1}"), ir.BlockEnd(0),
         ir.BlockStart(1, "tool_call", tool_call_id="call_B", tool_name="t"), ir.ToolArgsDelta(1, "{}"), ir.BlockEnd(1),
         ir.Finish("tool_calls"), ir.End()]


def test_function_call_sequence():
    events = check(encode(TOOLS))
    assert types(events)[2:6] == ["response.output_item.added", "response.function_call_arguments.delta",
                                  "response.function_call_arguments.delta", "response.function_call_arguments.done"]
    added = events[2]["item"]
    assert (added["type"], added["call_id"], added["name"], added["arguments"]) == ("function_call", "call_A", "w", "")
    assert events[5]["arguments"] == "{\"c\":1}"
    final = events[-1]["response"]
    assert [(o["call_id"], o["arguments"]) for o in final["output"]] == [("call_A", "{\"c\":1}"), ("call_B", "{}")]
    assert final["status"] == "completed" and final["usage"] is None


def test_interleaved_blocks_give_non_overlapping_items():
    """An OpenAI decoder interleaves text and tool deltas: the tool item stays whole, text resumes after."""
    evs = [ir.Start(), ir.BlockStart(0, "text"), ir.TextDelta(0, "a"),
           ir.BlockStart(1, "tool_call", tool_call_id="c1", tool_name="f"), ir.ToolArgsDelta(1, "{\"x\""),
           ir.TextDelta(0, "b"),
           ir.BlockStart(2, "tool_call", tool_call_id="c2", tool_name="g"), ir.ToolArgsDelta(2, "{}"),
           ir.ToolArgsDelta(1, ":1}"), ir.BlockEnd(0), ir.BlockEnd(1), ir.BlockEnd(2), ir.Finish("tool_calls"), ir.End()]
    events = check(encode(evs))
    out = events[-1]["response"]["output"]
    assert [o["type"] for o in out] == ["message", "function_call", "message", "function_call"]
    assert out[0]["content"][0]["text"] == "a" and out[2]["content"][0]["text"] == "b"
    assert (out[1]["call_id"], out[1]["arguments"]) == ("c1", "{\"x\":1}")
    assert (out[3]["call_id"], out[3]["arguments"]) == ("c2", "{}")


def test_blocks_without_block_end_are_closed_at_end():
    evs = [ir.Start(), ir.BlockStart(0, "tool_call", tool_call_id="c1", tool_name="f"), ir.ToolArgsDelta(0, "{"),
           ir.BlockStart(1, "text"), ir.TextDelta(1, "t"), ir.Finish("tool_calls"), ir.End()]
    out = check(encode(evs))[-1]["response"]["output"]
    assert [o["type"] for o in out] == ["function_call", "message"]


def test_reasoning_becomes_a_summary_item():
    evs = [ir.Start(), ir.BlockStart(0, "reasoning"), ir.ReasoningDelta(0, "th"), ir.ReasoningDelta(0, "ink"),
           ir.ReasoningSignature(0, "sig"), ir.BlockEnd(0), ir.BlockStart(1, "text"), ir.TextDelta(1, "x"),
           ir.BlockEnd(1), ir.Finish("stop"), ir.End()]
    events = check(encode(evs))
    assert types(events)[2:9] == [
        "response.output_item.added", "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta", "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done", "response.output_item.done"]
    out = events[-1]["response"]["output"]
    assert out[0] == {"type": "reasoning", "id": out[0]["id"], "summary": [{"type": "summary_text", "text": "think"}]}


def test_empty_deltas_and_empty_unsigned_reasoning_open_nothing():
    evs = [ir.Start(), ir.BlockStart(0, "text"), ir.TextDelta(0, ""), ir.BlockEnd(0),
           ir.BlockStart(1, "reasoning"), ir.ReasoningDelta(1, ""), ir.BlockEnd(1), ir.Finish("stop"), ir.End()]
    events = check(encode(evs))
    assert types(events) == ["response.created", "response.in_progress", "response.completed"]


# An Anthropic tool-loop turn with thinking: a signed thinking block, a redacted one, a tool call.
ANTHROPIC = [ir.Start(), ir.BlockStart(0, "reasoning", provider="anthropic"), ir.ReasoningDelta(0, "I should "),
             ir.ReasoningDelta(0, "call f."), ir.ReasoningSignature(0, "EqQB"), ir.ReasoningSignature(0, "sig"),
             ir.BlockEnd(0), ir.BlockStart(1, "reasoning", provider="anthropic"), ir.RedactedReasoning(1, "EmwK"),
             ir.BlockEnd(1), ir.BlockStart(2, "tool_call", tool_call_id="toolu_1", tool_name="f"),
             ir.ToolArgsDelta(2, "{}"), ir.BlockEnd(2), ir.Finish("tool_calls"), ir.End()]
# Gemini: a thought with its signature, then a signature that sat on the function call.
GEMINI = [ir.Start(), ir.BlockStart(0, "reasoning", provider="gemini"), ir.ReasoningDelta(0, "**Plan**"),
          ir.ReasoningSignature(0, "dGhvdWdodA=="), ir.BlockEnd(0), ir.BlockStart(1, "reasoning", provider="gemini"),
          ir.ReasoningSignature(1, "Y2FsbA=="), ir.BlockEnd(1),
          ir.BlockStart(2, "tool_call", tool_call_id="call_1", tool_name="f"), ir.ToolArgsDelta(2, "{}"),
          ir.BlockEnd(2), ir.Finish("tool_calls"), ir.End()]


def test_signed_reasoning_items_carry_the_envelope_when_done():
    events = check(encode(ANTHROPIC))
    added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [i["type"] for i in done] == ["reasoning", "reasoning", "function_call"]
    assert all("encrypted_content" not in i for i in added)  # complete only at .done (as the SDK documents)
    thought, redacted = done[0], done[1]
    assert thought["summary"] == [{"type": "summary_text", "text": "I should call f."}]
    assert open_envelope(thought["encrypted_content"], "p") == ir.Reasoning(
        text="I should call f.", signature="EqQBsig", provider="anthropic")
    assert redacted["summary"] == []
    assert open_envelope(redacted["encrypted_content"], "p") == ir.Reasoning(redacted_data="EmwK",
                                                                             provider="anthropic")
    assert events[-1]["response"]["output"] == done


def test_signature_only_reasoning_is_an_item_without_summary_events():
    events = check(encode(GEMINI))
    assert types(events)[2:] == [
        "response.output_item.added", "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done", "response.output_item.done",
        "response.output_item.added", "response.output_item.done",  # the signature that sat on the call
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    thought, call_sig, call = events[-1]["response"]["output"]
    assert open_envelope(thought["encrypted_content"], "p") == ir.Reasoning(text="**Plan**", signature="dGhvdWdodA==",
                                                                            provider="gemini")
    assert call_sig["summary"] == [] and open_envelope(call_sig["encrypted_content"], "p") == ir.Reasoning(
        signature="Y2FsbA==", provider="gemini")
    assert call["type"] == "function_call"


def test_stream_and_non_stream_give_the_same_items():
    """The stream's final output equals what the non-streaming renderer makes of the folded events."""
    for evs in (ANTHROPIC, GEMINI):
        streamed = check(encode(evs))[-1]["response"]["output"]
        folded = ir.fold_events(evs, model="m", id="x", created=1)
        rendered = jsonio.loads(ResponsesFrontend().render_chat(folded, "m", REQ))["output"]
        strip = lambda items: [{k: v for k, v in i.items() if k not in ("id", "status")} for i in items]  # noqa: E731
        assert strip(streamed) == strip(rendered)


@pytest.mark.parametrize("finish,terminal,status,reason", [
    ("stop", "response.completed", "completed", None),
    ("tool_calls", "response.completed", "completed", None),
    ("pause", "response.completed", "completed", None),
    ("length", "response.incomplete", "incomplete", "max_output_tokens"),
    ("content_filter", "response.incomplete", "incomplete", "content_filter"),
])
def test_finish_rows(finish, terminal, status, reason):
    events = check(encode([ir.Start(), ir.BlockStart(0, "text"), ir.TextDelta(0, "a"), ir.BlockEnd(0),
                           ir.Finish(finish), ir.End()]))
    last = events[-1]
    assert last["type"] == terminal and last["response"]["status"] == status
    assert (last["response"]["incomplete_details"] or {}).get("reason") == reason


def test_finish_error_ends_with_the_error_sequence():
    events = check(encode([ir.Start(), ir.BlockStart(0, "text"), ir.TextDelta(0, "a"), ir.BlockEnd(0),
                           ir.Finish("error", raw="abort"), ir.End()]))
    assert types(events)[-2:] == ["error", "response.failed"]
    assert events[-1]["response"]["error"]["code"] == "server_error"


@pytest.mark.parametrize("kind,code,failed_code", [
    ("rate_limit", "rate_limit_exceeded", "rate_limit_exceeded"),
    ("server", "server_error", "server_error"),
    ("context_length", "context_length_exceeded", "invalid_prompt"),
    ("timeout", "server_error", "server_error"),
])
def test_error_mid_stream(kind, code, failed_code):
    enc = ResponsesStreamEncoder(REQ, "m")
    data = b"".join(enc.feed(ev) for ev in [ir.Start(), ir.BlockStart(0, "text"), ir.TextDelta(0, "a")])
    data += enc.error(ProxyError(kind, "went wrong"))
    assert enc.feed(ir.TextDelta(0, "more")) == b"" and enc.feed(ir.End()) == b"" and enc.error(ProxyError("server", "x")) == b""
    events = parse(data)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    err, failed = events[-2], events[-1]
    assert (err["type"], err["code"], err["message"], err["param"]) == ("error", code, "went wrong", None)
    assert failed["type"] == "response.failed" and failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": failed_code, "message": "went wrong"}
    for e in events:
        _EVENT.validate_python(e)


def test_error_before_any_event_still_opens_the_response():
    enc = ResponsesStreamEncoder(ir.ChatRequest(model="m"), "m")
    events = parse(enc.error(ProxyError("overloaded", "busy")))
    assert types(events) == ["response.created", "response.in_progress", "error", "response.failed"]
    state = ResponseStreamState(input_tools=omit, text_format=omit)
    for e in events:
        state.handle_event(_EVENT.validate_python(e))  # the SDK accumulator accepts it


def test_nothing_after_completion():
    enc = ResponsesStreamEncoder(REQ, "m")
    for ev in TEXT:
        enc.feed(ev)
    assert enc.feed(ir.End()) == b"" and enc.error(ProxyError("server", "late")) == b""


@pytest.mark.parametrize("events", [TEXT, TOOLS, ANTHROPIC, GEMINI], ids=["text", "tools", "anthropic", "gemini"])
def test_output_parses_the_same_whole_bytewise_and_split(events):
    data = encode(events)
    whole = [(f.event, f.data) for f in SSEParser().feed(data)]
    p = SSEParser()
    bytewise = [(f.event, f.data) for i in range(len(data)) for f in p.feed(data[i:i + 1])]
    assert bytewise == whole
    for cut in range(len(data)):
        p = SSEParser()
        split = [(f.event, f.data) for f in p.feed(data[:cut]) + p.feed(data[cut:])]
        assert split == whole


def test_namespaced_and_custom_calls_stream_as_the_client_declared_them():
    renamed = {"ns__spawn": ("function", "spawn", "ns"), "apply_patch": ("custom", "apply_patch", None)}
    req = ir.ChatRequest(model="m", stream=True, tools=[ir.ToolDef("ns__spawn"), ir.ToolDef("apply_patch")],
                         extra={"responses_tools": renamed})
    evs = [ir.Start(), ir.BlockStart(0, "tool_call", tool_call_id="c1", tool_name="ns__spawn"),
           ir.ToolArgsDelta(0, "{\"t\":"), ir.ToolArgsDelta(0, "1}"), ir.BlockEnd(0),
           ir.BlockStart(1, "tool_call", tool_call_id="c2", tool_name="apply_patch"),
           ir.ToolArgsDelta(1, "{\"input\":\"*** Be"), ir.ToolArgsDelta(1, "gin\\n\"}"), ir.BlockEnd(1),
           ir.Finish("tool_calls"), ir.End()]
    events = check(encode(evs, req=req))
    custom = [e for e in events if e["type"].startswith("response.custom_tool_call_input")]
    assert [e["type"] for e in custom] == ["response.custom_tool_call_input.delta",
                                           "response.custom_tool_call_input.done"]
    assert custom[0]["delta"] == "*** Begin\n" and custom[1]["input"] == "*** Begin\n"
    assert "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta") == "{\"t\":1}"
    spawn, patch = events[-1]["response"]["output"]
    assert (spawn["type"], spawn["name"], spawn["namespace"], spawn["arguments"]) == ("function_call", "spawn", "ns",
                                                                                      "{\"t\":1}")
    assert (patch["type"], patch["name"], patch["input"], patch["call_id"]) == ("custom_tool_call", "apply_patch",
                                                                                "*** Begin\n", "c2")
    assert [(t["type"], t["name"]) for t in events[0]["response"]["tools"]] == [("function", "spawn"),
                                                                                ("custom", "apply_patch")]
