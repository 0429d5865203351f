"""Probes for Anthropic Messages servers (`--url` is the root; requests go to /v1/messages): message
core, the streaming event protocol, tools, thinking and count_tokens.

As for OpenAI, each probe owns one rule: the stream probes check order, block indexes and usage
separately, and the tool-stream probe joins `input_json_delta` fragments whatever the event order.
"""

from __future__ import annotations

from typing import Any

from adapters import jsonio

from .http import Session, StreamReply
from .probe import REFUSAL_STATUSES, Fail, Unsupported, expect, expect_not_found, probe, short

MESSAGES = "/v1/messages"
VERSION = "2023-06-01"
MAX_TOKENS = 64
STOP_REASONS = ("end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal")
UNKNOWN_MODEL = "no-such-model-conformance-probe"
BLOCK_DELTAS = {"text": {"text_delta", "citations_delta"}, "tool_use": {"input_json_delta"},
                "thinking": {"thinking_delta", "signature_delta"}, "redacted_thinking": set()}


def request_headers(api_key: str | None) -> dict[str, str]:
    headers = {"anthropic-version": VERSION}
    if api_key:
        headers["x-api-key"] = api_key
    return headers


def _tool(name: str, description: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    return {"name": name, "description": description, "input_schema": schema}


WEATHER = _tool("get_weather", "Current weather for a city")
TIME = _tool("get_time", "Current local time in a city")
CALL_WEATHER = "Call the get_weather tool for Paris."


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _sent(messages: list[dict[str, Any]], fields: dict[str, Any]) -> str:
    def value(k: str, v: Any) -> str:
        return "[" + ",".join(str(t.get("name")) for t in v) + "]" if k == "tools" else short(v, 40)

    roles = ",".join(m["role"] for m in messages)
    return f"POST {MESSAGES} [{roles}] " + " ".join(f"{k}={value(k, v)}" for k, v in fields.items())


async def create(s: Session, messages: list[dict[str, Any]], optional: bool = False,
                 **fields: Any) -> tuple[dict[str, Any], str]:
    """A non-streamed message: (the decoded answer, the evidence prefix)."""
    fields.setdefault("max_tokens", MAX_TOKENS)
    sent = _sent(messages, fields)
    reply = await s.post(MESSAGES, {"model": s.model, "messages": messages, **fields})
    if optional and reply.status in REFUSAL_STATUSES:
        raise Unsupported(f"{sent} {reply.brief()}")
    expect(reply.status == 200, f"{sent} {reply.brief()}")
    data = reply.json
    expect(isinstance(data, dict) and isinstance(data.get("content"), list), f"{sent} -> 200 without content: {short(data)}")
    return data, sent


async def create_stream(s: Session, messages: list[dict[str, Any]], optional: bool = False,
                        **fields: Any) -> tuple[StreamReply, list[tuple[str | None, dict[str, Any]]], str]:
    """A streamed message: (the reply, its (event name, JSON object) pairs, the evidence prefix)."""
    fields.setdefault("max_tokens", MAX_TOKENS)
    fields["stream"] = True
    sent = _sent(messages, fields)
    reply = await s.stream(MESSAGES, {"model": s.model, "messages": messages, **fields})
    if optional and reply.status in REFUSAL_STATUSES:
        raise Unsupported(f"{sent} {reply.brief()}")
    expect(reply.status == 200, f"{sent} {reply.brief()}")
    events = [(ev.event, data) for ev, data in zip(reply.events, reply.payloads()) if isinstance(data, dict)]
    return reply, events, sent


def blocks(data: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [b for b in data["content"] if isinstance(b, dict) and b.get("type") == kind]


def text_of(data: dict[str, Any]) -> str:
    return "".join(str(b.get("text", "")) for b in blocks(data, "text"))


def _typed(events: list[tuple[str | None, dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [d for _, d in events if d.get("type") == kind]


# --------------------------------------------------------------------------------------------------
# Message core


@probe("anthropic", "messages.basic", "core")
async def messages_basic(s: Session) -> str:
    """A plain question gets a `message`: id, type `message`, role `assistant`, a text block, a known
    stop_reason, and usage with integer input_tokens and output_tokens.

    The SDK's Message model needs every one of these fields; billing reads the usage."""
    data, sent = await create(s, [user("Say hello.")])
    expect(data.get("type") == "message" and isinstance(data.get("id"), str), f"{sent} -> type/id {short(data)}")
    expect(data.get("role") == "assistant", f"{sent} -> role={short(data.get('role'))}")
    expect(text_of(data), f"{sent} -> no text block: {short(data['content'])}")
    expect(data.get("stop_reason") in STOP_REASONS, f"{sent} -> stop_reason={short(data.get('stop_reason'))}")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    counts = [usage.get("input_tokens"), usage.get("output_tokens")]
    expect(all(isinstance(v, int) for v in counts), f"{sent} -> usage={short(data.get('usage'))}")
    return f"{sent} -> 200 text {short(text_of(data), 40)} stop_reason={data['stop_reason']} usage {counts[0]}/{counts[1]}"


@probe("anthropic", "messages.system", "core")
async def messages_system(s: Session) -> str:
    """A top-level `system` prompt is accepted and the message answered.

    Nearly every application sends a system prompt."""
    data, sent = await create(s, [user("Say hello.")], system="You are terse.")
    expect(text_of(data), f"{sent} -> no text block: {short(data['content'])}")
    return f"{sent} -> 200 text {short(text_of(data), 40)}"


@probe("anthropic", "messages.multi_turn", "core")
async def messages_multi_turn(s: Session) -> str:
    """A conversation (user, assistant, user) is accepted and answered.

    Chat clients resend the whole history every turn."""
    msgs = [user("My name is Ada."), {"role": "assistant", "content": "Hello Ada."}, user("What is my name?")]
    data, sent = await create(s, msgs)
    expect(text_of(data), f"{sent} -> no text block: {short(data['content'])}")
    return f"{sent} -> 200 text {short(text_of(data), 40)}"


@probe("anthropic", "messages.max_tokens", "core")
async def messages_max_tokens(s: Session) -> str:
    """An answer cut by `max_tokens` has stop_reason `max_tokens`.

    Clients continue or warn on `max_tokens`; `end_turn` makes a truncated answer look whole."""
    data, sent = await create(s, [user("Count from one to one hundred in words, separated by spaces.")], max_tokens=5)
    expect(data.get("stop_reason") == "max_tokens", f"{sent} -> stop_reason={short(data.get('stop_reason'))}, want 'max_tokens'")
    return f"{sent} -> 200 stop_reason=max_tokens"


@probe("anthropic", "messages.stop_sequence", "core")
async def messages_stop_sequence(s: Session) -> str:
    """A `stop_sequences` entry ends the answer: the text excludes it, stop_reason is `stop_sequence`
    and `stop_sequence` names it.

    Agents use stop sequences as delimiters and read back which one fired."""
    data, sent = await create(s, [user("Reply with exactly these words: alpha beta gamma delta")],
                              stop_sequences=["gamma"])
    text = text_of(data)
    expect("gamma" not in text, f"{sent} -> the stop sequence is in the text: {short(text)}")
    got = (data.get("stop_reason"), data.get("stop_sequence"))
    expect(got == ("stop_sequence", "gamma"), f"{sent} -> stop_reason/stop_sequence={short(got)}")
    return f"{sent} -> 200 text {short(text, 40)} stop_reason=stop_sequence 'gamma'"


# --------------------------------------------------------------------------------------------------
# Errors


@probe("anthropic", "errors.unknown_model", "core")
async def errors_unknown_model(s: Session) -> str:
    """A model the server does not serve is answered 404 (`NotFoundError` in the SDK).

    Clients fall back to another model on 404; a 500 makes them retry a request that cannot succeed."""
    return await expect_not_found(s, MESSAGES, {"model": UNKNOWN_MODEL, "max_tokens": 8, "messages": [user("Say hello.")]})


@probe("anthropic", "errors.invalid_body", "core")
async def errors_invalid_body(s: Session) -> str:
    """An invalid body (no `max_tokens`) is answered 400 with
    `{"type": "error", "error": {"type": "invalid_request_error", "message": str}}`.

    The SDK builds its exception from `error.message` and `error.type`; another shape is unreadable."""
    sent = f"POST {MESSAGES} without max_tokens"
    reply = await s.post(MESSAGES, {"model": s.model, "messages": [user("Say hello.")]})
    expect(reply.status == 400, f"{sent} {reply.brief()}, want 400")
    data = reply.json if isinstance(reply.json, dict) else {}
    err = data.get("error") if isinstance(data.get("error"), dict) else {}
    ok = data.get("type") == "error" and err.get("type") == "invalid_request_error" and isinstance(err.get("message"), str)
    expect(ok, f"{sent} {reply.brief()}: not {{'type': 'error', 'error': {{'type', 'message'}}}}")
    return f"{sent} -> 400 invalid_request_error"


# --------------------------------------------------------------------------------------------------
# Streaming


async def _hello_stream(s: Session) -> tuple[StreamReply, list[tuple[str | None, dict[str, Any]]], str]:
    return await create_stream(s, [user("Say hello.")])


@probe("anthropic", "stream.event_order", "core")
async def stream_event_order(s: Session) -> str:
    """`stream: true` answers `text/event-stream`: `message_start` first, content block events,
    one `message_delta`, `message_stop` last; each `event:` name equals its data's `type`; no `error`.

    The SDK dispatches on event names and finishes the message on message_stop; without it the stream
    counts as cut."""
    reply, events, sent = await _hello_stream(s)
    expect(reply.content_type == "text/event-stream", f"{sent} -> content-type {reply.content_type!r}")
    expect(len(events) == len(reply.events), f"{sent} -> an event whose data is not a JSON object")
    wrong = [(name, d.get("type")) for name, d in events if name != d.get("type")]
    expect(not wrong, f"{sent} -> event name != data type: {short(wrong[:2])}")
    kinds = [d.get("type") for _, d in events if d.get("type") != "ping"]
    expect("error" not in kinds, f"{sent} -> error event: {short(_typed(events, 'error'))}")
    expect(kinds[:1] == ["message_start"], f"{sent} -> first event {short(kinds[:1])}")
    expect(kinds[-1:] == ["message_stop"], f"{sent} -> last event {short(kinds[-1:])}, no message_stop")
    expect(kinds.count("message_delta") == 1 and kinds[-2] == "message_delta",
           f"{sent} -> message_delta not once and last before message_stop: {short(kinds[-3:])}")
    middle = set(kinds[1:-2]) - {"content_block_start", "content_block_delta", "content_block_stop"}
    expect(not middle, f"{sent} -> unexpected events between start and delta: {sorted(middle)}")
    return f"{sent} -> {len(events)} events, message_start ... message_delta, message_stop"


@probe("anthropic", "stream.blocks", "core")
async def stream_blocks(s: Session) -> str:
    """Content blocks are numbered 0, 1, 2... in order; each has a start, deltas of its own kind
    (text_delta for text, input_json_delta for tool_use, ...) and a stop, and blocks do not overlap.

    The SDK's accumulator indexes the content list by `index`; a gap or overlap corrupts the message."""
    _, events, sent = await _hello_stream(s)
    open_block: tuple[int, str] | None = None
    count = 0
    for _, d in events:
        kind, index = d.get("type"), d.get("index")
        if kind == "content_block_start":
            block_type = (d.get("content_block") or {}).get("type")
            expect(open_block is None and index == count, f"{sent} -> block start index {index}, want {count}")
            open_block, count = (index, str(block_type)), count + 1
        elif kind == "content_block_delta":
            expect(open_block is not None and index == open_block[0], f"{sent} -> delta for block {index} outside it")
            dtype = (d.get("delta") or {}).get("type")
            allowed = BLOCK_DELTAS.get(open_block[1], {dtype})
            expect(dtype in allowed, f"{sent} -> {dtype} in a {open_block[1]} block")
        elif kind == "content_block_stop":
            expect(open_block is not None and index == open_block[0], f"{sent} -> stop for block {index} not open")
            open_block = None
    expect(open_block is None, f"{sent} -> block {open_block} never stopped")
    expect(count, f"{sent} -> no content blocks")
    return f"{sent} -> blocks 0..{count - 1}, each start/deltas/stop"


@probe("anthropic", "stream.usage", "core")
async def stream_usage(s: Session) -> str:
    """`message_start` carries `message.usage` with integer input_tokens, and `message_delta` carries
    `usage.output_tokens`.

    Streaming clients bill from these two events; the SDK's final message takes its usage from them."""
    _, events, sent = await _hello_stream(s)
    start = _typed(events, "message_start")
    usage = ((start[0].get("message") or {}).get("usage") or {}) if start else {}
    expect(isinstance(usage.get("input_tokens"), int), f"{sent} -> message_start usage {short(usage)}")
    deltas = _typed(events, "message_delta")
    out = (deltas[-1].get("usage") or {}).get("output_tokens") if deltas else None
    expect(isinstance(out, int), f"{sent} -> message_delta usage {short(deltas[-1].get('usage') if deltas else None)}")
    return f"{sent} -> input_tokens {usage['input_tokens']} at start, output_tokens {out} in message_delta"


# --------------------------------------------------------------------------------------------------
# Tools


def _tool_uses(data: dict[str, Any]) -> list[dict[str, Any]]:
    return blocks(data, "tool_use")


@probe("anthropic", "tools.call", "tools")
async def tools_call(s: Session) -> str:
    """Asked to use an offered tool, the answer has a `tool_use` block with an id, the tool's name and
    an `input` object; stop_reason is `tool_use`.

    Agent loops dispatch on stop_reason `tool_use` and answer the block's id."""
    data, sent = await create(s, [user(CALL_WEATHER)], optional=True, tools=[WEATHER])
    uses = _tool_uses(data)
    expect(uses, f"{sent} -> no tool_use block: {short(data['content'])}")
    use = uses[0]
    expect(isinstance(use.get("id"), str) and use["id"], f"{sent} -> tool_use id={short(use.get('id'))}")
    expect(use.get("name") == "get_weather", f"{sent} -> tool_use name={short(use.get('name'))}")
    expect(isinstance(use.get("input"), dict), f"{sent} -> tool_use input={short(use.get('input'))}")
    expect(data.get("stop_reason") == "tool_use", f"{sent} -> stop_reason={short(data.get('stop_reason'))}, want 'tool_use'")
    return f"{sent} -> get_weather({short(use['input'], 40)}) stop_reason=tool_use"


@probe("anthropic", "tools.choice_none", "tools")
async def tools_choice_none(s: Session) -> str:
    """`tool_choice: {"type": "none"}` gets text and no tool_use, even when the prompt asks for a call.

    Clients use it to make the model answer after a tool loop."""
    data, sent = await create(s, [user(CALL_WEATHER)], optional=True, tools=[WEATHER], tool_choice={"type": "none"})
    expect(not _tool_uses(data), f"{sent} -> tool_use {short(_tool_uses(data))}")
    return f"{sent} -> text, no tool_use"


@probe("anthropic", "tools.choice_any", "tools")
async def tools_choice_any(s: Session) -> str:
    """`tool_choice: {"type": "any"}` gets at least one tool_use of an offered tool, even for a
    question that names none.

    Extraction pipelines force a call and read its input."""
    data, sent = await create(s, [user("What is the weather like in Paris?")], optional=True, tools=[WEATHER, TIME],
                              tool_choice={"type": "any"})
    names = [u.get("name") for u in _tool_uses(data)]
    expect(names and set(names) <= {"get_weather", "get_time"}, f"{sent} -> tool uses {short(names)}")
    return f"{sent} -> tool uses {names}"


@probe("anthropic", "tools.choice_tool", "tools")
async def tools_choice_tool(s: Session) -> str:
    """`tool_choice: {"type": "tool", "name": "get_time"}` calls exactly that tool.

    Forcing a named tool is the classic way to get structured output from Claude-style APIs."""
    data, sent = await create(s, [user("What is the weather like in Paris?")], optional=True, tools=[WEATHER, TIME],
                              tool_choice={"type": "tool", "name": "get_time"})
    names = [u.get("name") for u in _tool_uses(data)]
    expect(names and set(names) == {"get_time"}, f"{sent} -> tool uses {short(names)}, want get_time")
    return f"{sent} -> tool uses {names}"


@probe("anthropic", "tools.round_trip", "tools")
async def tools_round_trip(s: Session) -> str:
    """A history with an assistant `tool_use` block and the user's matching `tool_result` is accepted
    and answered with text.

    This is the second half of every agent loop: the tool's result must reach the model."""
    use = {"type": "tool_use", "id": "toolu_conformance_1", "name": "get_weather", "input": {"city": "Paris"}}
    result = {"type": "tool_result", "tool_use_id": "toolu_conformance_1", "content": '{"temperature_c": 21}'}
    msgs = [user("What is the weather like in Paris?"), {"role": "assistant", "content": [use]},
            {"role": "user", "content": [result]}]
    data, sent = await create(s, msgs, optional=True, tools=[WEATHER])
    expect(text_of(data), f"{sent} -> no text: {short(data['content'])}")
    return f"{sent} -> 200 text {short(text_of(data), 40)}"


@probe("anthropic", "tools.stream", "tools")
async def tools_stream(s: Session) -> str:
    """A streamed tool call opens a `tool_use` block with id and name (input `{}`), and its
    `input_json_delta` fragments join to JSON equal to the non-streamed call's input.

    The SDK concatenates `partial_json` and parses once at the block's stop."""
    data, sent = await create(s, [user(CALL_WEATHER)], optional=True, tools=[WEATHER], temperature=0)
    uses = _tool_uses(data)
    expect(uses, f"{sent} -> the non-streamed request made no tool call")
    _, events, sent = await create_stream(s, [user(CALL_WEATHER)], optional=True, tools=[WEATHER], temperature=0)
    starts = [d for d in _typed(events, "content_block_start") if (d.get("content_block") or {}).get("type") == "tool_use"]
    expect(starts, f"{sent} -> no tool_use block started")
    block, index = starts[0]["content_block"], starts[0].get("index")
    expect(isinstance(block.get("id"), str) and block["id"] and block.get("name") == "get_weather",
           f"{sent} -> tool_use start {short(block)}")
    joined = "".join(str((d.get("delta") or {}).get("partial_json", "")) for d in _typed(events, "content_block_delta")
                     if d.get("index") == index)
    try:
        streamed = jsonio.loads(joined or "{}")
    except jsonio.DecodeError:
        raise Fail(f"{sent} -> joined partial_json is not JSON: {short(joined)}") from None
    expect(streamed == uses[0].get("input"), f"{sent} -> streamed {short(streamed, 40)} != non-streamed {short(uses[0].get('input'), 40)}")
    return f"{sent} -> tool_use {block['id'][:16]} get_weather, partial_json joins to {short(streamed, 40)}"


# --------------------------------------------------------------------------------------------------
# Extras


THINKING = {"type": "enabled", "budget_tokens": 1024}


@probe("anthropic", "extras.thinking", "extras")
async def extras_thinking(s: Session) -> str:
    """With `thinking: {"type": "enabled"}` the answer starts with a `thinking` block holding the
    thinking text and a `signature`, streamed as thinking_delta then signature_delta.

    Tool loops must send thinking blocks back with their signature; an unsigned block is refused then."""
    data, sent = await create(s, [user("What is 2 + 2?")], optional=True, thinking=THINKING, max_tokens=2048)
    thinking = blocks(data, "thinking")
    if not thinking:
        raise Unsupported(f"{sent} -> no thinking block (not a thinking model)")
    expect(data["content"][0].get("type") == "thinking", f"{sent} -> the thinking block is not first")
    t = thinking[0]
    expect(isinstance(t.get("thinking"), str) and isinstance(t.get("signature"), str) and t["signature"],
           f"{sent} -> thinking block {short(t)}")
    _, events, sent = await create_stream(s, [user("What is 2 + 2?")], thinking=THINKING, max_tokens=2048)
    starts = [d.get("index") for d in _typed(events, "content_block_start")
              if (d.get("content_block") or {}).get("type") == "thinking"]
    expect(starts, f"{sent} -> no thinking block started")
    kinds = [(d.get("delta") or {}).get("type") for d in _typed(events, "content_block_delta") if d.get("index") == starts[0]]
    expect("thinking_delta" in kinds and "signature_delta" in kinds,
           f"{sent} -> thinking block deltas {short(sorted(set(map(str, kinds))))}")
    return f"{sent} -> thinking block with signature; streamed thinking_delta + signature_delta"


@probe("anthropic", "extras.count_tokens", "extras")
async def extras_count_tokens(s: Session) -> str:
    """`POST /v1/messages/count_tokens` answers `{"input_tokens": N}` with N > 0.

    Clients size prompts against the context window before sending them."""
    sent = "POST /v1/messages/count_tokens [user]"
    reply = await s.post("/v1/messages/count_tokens", {"model": s.model, "messages": [user("Say hello.")]})
    if reply.status in REFUSAL_STATUSES:
        raise Unsupported(f"{sent} {reply.brief()}")
    expect(reply.status == 200, f"{sent} {reply.brief()}")
    n = reply.json.get("input_tokens") if isinstance(reply.json, dict) else None
    expect(isinstance(n, int) and n > 0, f"{sent} {reply.brief()}")
    return f"{sent} -> 200 input_tokens={n}"


@probe("anthropic", "extras.models", "extras")
async def extras_models(s: Session) -> str:
    """`GET /v1/models` lists models as `{"data": [{"type": "model", "id": ...}], "has_more": ...}`.

    Model pickers and health checks call it."""
    reply = await s.get("/v1/models")
    if reply.status in REFUSAL_STATUSES:
        raise Unsupported(f"GET /v1/models {reply.brief()}")
    expect(reply.status == 200, f"GET /v1/models {reply.brief()}")
    items = reply.json.get("data") if isinstance(reply.json, dict) else None
    ok = isinstance(items, list) and all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in items)
    expect(ok, f"GET /v1/models -> {short(reply.json)}")
    return f"GET /v1/models -> 200 {len(items)} models"
