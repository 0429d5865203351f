"""ConverseStream -> IR events: text, tools, Claude reasoning with signatures, finish rows, usage,
in-stream exceptions, truncation; each stream fed whole, byte by byte and split at every position.
Fixtures are encoded with the emulator's own encoder (not the decoder's library)."""

from __future__ import annotations

import pytest

from adapters import bedrock_stream, ir
from adapters.bedrock_stream import BedrockStreamDecoder
from adapters.errors import ProxyError
from loadtest.emulators.eventstream import event, exception, message
from tests.adapters.stream_support import cuts


@pytest.fixture(autouse=True)
def fixed_ids(monkeypatch):
    monkeypatch.setattr(bedrock_stream, "synth_id", lambda prefix="call_", length=24: prefix + "X")


def delta(i, d):
    return event("contentBlockDelta", {"contentBlockIndex": i, "delta": d, "p": "abc"})


def stop(i):
    return event("contentBlockStop", {"contentBlockIndex": i})


USAGE = {"inputTokens": 10, "outputTokens": 7, "totalTokens": 21, "cacheReadInputTokens": 3, "cacheWriteInputTokens": 1}
STREAM = b"".join([
    event("messageStart", {"role": "assistant", "p": "xyz"}),
    delta(0, {"reasoningContent": {"text": "Let me "}}),
    delta(0, {"reasoningContent": {"text": "think ✓"}}),
    delta(0, {"reasoningContent": {"signature": "U0lH"}}),
    stop(0),
    delta(1, {"text": "Hé"}),
    delta(1, {"text": "llo"}),
    stop(1),
    event("contentBlockStart", {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather"}}}),
    delta(2, {"toolUse": {"input": '{"city"'}}),
    delta(2, {"toolUse": {"input": ': "Paris"}'}}),
    stop(2),
    event("messageStop", {"stopReason": "tool_use"}),
    event("metadata", {"usage": USAGE, "metrics": {"latencyMs": 5}}),
])
EVENTS = [
    ir.Start(id="bedrock-X"),
    ir.BlockStart(0, "reasoning", provider="anthropic"), ir.ReasoningDelta(0, "Let me "), ir.ReasoningDelta(0, "think ✓"),
    ir.ReasoningSignature(0, "U0lH"), ir.BlockEnd(0),
    ir.BlockStart(1, "text"), ir.TextDelta(1, "Hé"), ir.TextDelta(1, "llo"), ir.BlockEnd(1),
    ir.BlockStart(2, "tool_call", tool_call_id="tooluse_1", tool_name="get_weather"),
    ir.ToolArgsDelta(2, '{"city"'), ir.ToolArgsDelta(2, ': "Paris"}'), ir.BlockEnd(2),
    ir.Finish(reason="tool_calls", raw="tool_use"),
    ir.UsageEvent(ir.Usage(input_tokens=14, output_tokens=7, cached_input_tokens=3, cache_write_tokens=1)),
    ir.End(),
]


def decode(pieces, claude=True) -> list[ir.Event]:
    d = BedrockStreamDecoder(claude)
    out: list[ir.Event] = []
    for p in pieces:
        out += d.feed(p)
    return out + d.close()


def test_whole_bytewise_and_every_split():
    for how, pieces in cuts(STREAM):
        assert decode(pieces) == EVENTS, how


def test_folds_to_what_a_client_sends_back():
    parts = ir.fold_events(decode([STREAM]), model="m", id="x", created=0).choices[0].parts
    assert parts == [ir.Reasoning(text="Let me think ✓", signature="U0lH", provider="anthropic"), ir.Text(text="Héllo"),
                     ir.ToolCall(id="tooluse_1", name="get_weather", arguments='{"city": "Paris"}')]


def test_reasoning_of_other_models_carries_no_provider():
    events = decode([event("messageStart", {}), delta(0, {"reasoningContent": {"text": "hm"}}), stop(0),
                     event("messageStop", {"stopReason": "end_turn"}), event("metadata", {"usage": USAGE})], claude=False)
    assert events[1] == ir.BlockStart(0, "reasoning")


def test_redacted_reasoning():
    events = decode([event("messageStart", {}), delta(0, {"reasoningContent": {"redactedContent": "QUJD"}}), stop(0),
                     event("messageStop", {"stopReason": "end_turn"}), event("metadata", {"usage": USAGE})])
    assert ir.RedactedReasoning(0, "QUJD") in events


@pytest.mark.parametrize("raw,reason", [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "stop"),
    ("guardrail_intervened", "content_filter"), ("content_filtered", "content_filter"),
    ("malformed_model_output", "error"), ("malformed_tool_use", "error"),
    ("model_context_window_exceeded", "length"),
])
def test_finish_rows(raw, reason):
    # "tool_use" without a tool block is made consistent (stop), as everywhere in the IR
    events = decode([event("messageStart", {}), delta(0, {"text": "x"}), stop(0),
                     event("messageStop", {"stopReason": raw}), event("metadata", {"usage": USAGE})])
    assert ir.Finish(reason=reason, raw=raw) in events and events[-1] == ir.End()


def test_matched_stop_sequence_from_additional_fields():
    events = decode([event("messageStart", {}), delta(0, {"text": "x"}),
                     event("messageStop", {"stopReason": "stop_sequence", "additionalModelResponseFields": {"stop_sequence": "END"}}),
                     event("metadata", {"usage": USAGE})])
    assert ir.Finish(reason="stop", raw="stop_sequence", stop_sequence="END") in events
    assert ir.BlockEnd(0) in events  # a block left open is closed at messageStop


def test_exception_event_after_deltas_raises_after_them():
    body = event("messageStart", {}) + delta(0, {"text": "partial"}) + exception("throttlingException", "Too many tokens")
    d = BedrockStreamDecoder(True)
    events = d.feed(body)
    assert ir.TextDelta(0, "partial") in events
    with pytest.raises(ProxyError) as e:
        d.feed(b"")
    assert e.value.kind == "rate_limit" and e.value.message == "Too many tokens"


@pytest.mark.parametrize("name,kind", [("internalServerException", "server"), ("modelStreamErrorException", "server"),
                                       ("validationException", "invalid_request"),
                                       ("serviceUnavailableException", "overloaded")])
def test_exception_rows(name, kind):
    with pytest.raises(ProxyError) as e:
        decode([event("messageStart", {}) + exception(name, "boom")])
    assert e.value.kind == kind


def test_error_message_type():
    err = message({":message-type": "error", ":error-code": "InternalFailure", ":error-message": "it broke"}, b"")
    with pytest.raises(ProxyError, match="it broke"):
        decode([event("messageStart", {}) + err])


def test_metadata_missing_still_ends_cleanly():
    events = decode([event("messageStart", {}), delta(0, {"text": "x"}), event("messageStop", {"stopReason": "end_turn"})])
    assert events[-2:] == [ir.Finish(reason="stop", raw="end_turn"), ir.End()]
    assert not any(isinstance(e, ir.UsageEvent) for e in events)


def test_truncated_before_message_stop():
    d = BedrockStreamDecoder(True)
    d.feed(event("messageStart", {}) + delta(0, {"text": "x"}))
    with pytest.raises(ProxyError) as e:
        d.close()
    assert e.value.kind == "upstream_protocol"


def test_payload_that_is_not_json():
    bad = message({":message-type": "event", ":event-type": "contentBlockDelta"}, b"{not json")
    with pytest.raises(ProxyError, match="cannot be parsed"):
        decode([bad])


def test_tool_delta_for_an_unstarted_block_is_a_protocol_error():
    with pytest.raises(ProxyError, match="tool_call delta"):
        decode([event("messageStart", {}) + delta(0, {"toolUse": {"input": "{}"}})])
