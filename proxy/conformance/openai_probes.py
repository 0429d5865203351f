"""Probes for OpenAI-compatible servers (`--url` ends in `/v1`): chat core, streaming and error shapes
(tools in `openai_tool_probes`, extras in `openai_extra_probes`).

Each probe owns one rule, so a server that breaks a rule fails exactly the probe named after it: the
stream probes read the stream leniently except for the one thing they check, the tool-argument probe
accumulates fragments even when `index` or `id` are misplaced (that is `tools.stream_deltas`' finding).
"""

from __future__ import annotations

from typing import Any


from .http import Session, StreamReply
from .probe import REFUSAL_STATUSES, Unsupported, expect, expect_not_found, probe, short

CHAT = "/chat/completions"
MAX_TOKENS = 64  # bounds every answer a probe does not need long
FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter", "function_call")
UNKNOWN_MODEL = "no-such-model-conformance-probe"


def request_headers(api_key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _describe(fields: dict[str, Any]) -> str:
    def value(k: str, v: Any) -> str:
        if k == "tools":  # the names say enough; the schemas are the probe's constants
            return "[" + ",".join(str((t.get("function") or {}).get("name")) for t in v) + "]"
        return short(v, 40)

    return " ".join(f"{k}={value(k, v)}" for k, v in fields.items() if k not in ("model", "messages"))


def _sent(path: str, messages: list[dict[str, Any]], fields: dict[str, Any]) -> str:
    roles = ",".join(m["role"] for m in messages)
    return f"POST {path} [{roles}] {_describe(fields)}".rstrip()


async def chat(s: Session, messages: list[dict[str, Any]], optional: bool = False,
               **fields: Any) -> tuple[dict[str, Any], str]:
    """A non-streamed chat call: (the decoded answer, the evidence prefix).  `optional`: a refusal
    status means the feature is not supported rather than broken."""
    sent = _sent(CHAT, messages, fields)
    reply = await s.post(CHAT, {"model": s.model, "messages": messages, **fields})
    if optional and reply.status in REFUSAL_STATUSES:
        raise Unsupported(f"{sent} {reply.brief()}")
    expect(reply.status == 200, f"{sent} {reply.brief()}")
    data = reply.json
    ok = isinstance(data, dict) and isinstance(data.get("choices"), list) and data["choices"]
    expect(ok and isinstance(data["choices"][0], dict), f"{sent} -> 200 without choices[0]: {short(data)}")
    return data, sent


def message_of(data: dict[str, Any], sent: str) -> dict[str, Any]:
    msg = data["choices"][0].get("message")
    expect(isinstance(msg, dict), f"{sent} -> choices[0].message is {short(msg)}")
    return msg


async def chat_stream(s: Session, messages: list[dict[str, Any]], optional: bool = False,
                      **fields: Any) -> tuple[StreamReply, list[dict[str, Any]], str]:
    """A streamed chat call: (the reply, its JSON chunks that are objects, the evidence prefix)."""
    fields["stream"] = True
    sent = _sent(CHAT, messages, fields)
    reply = await s.stream(CHAT, {"model": s.model, "messages": messages, **fields})
    if optional and reply.status in REFUSAL_STATUSES:
        raise Unsupported(f"{sent} {reply.brief()}")
    expect(reply.status == 200, f"{sent} {reply.brief()}")
    return reply, [p for p in reply.payloads() if isinstance(p, dict)], sent


def choices(chunk: dict[str, Any]) -> list[Any]:
    value = chunk.get("choices")
    return value if isinstance(value, list) else []


def delta(chunk: dict[str, Any]) -> dict[str, Any]:
    first = choices(chunk)[0] if choices(chunk) else {}
    value = first.get("delta") if isinstance(first, dict) else None
    return value if isinstance(value, dict) else {}


def stream_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(str(delta(c).get("content") or "") for c in chunks)


# --------------------------------------------------------------------------------------------------
# Chat core


@probe("openai", "chat.basic", "core")
async def chat_basic(s: Session) -> str:
    """A plain question gets a `chat.completion`: id, created, model, and choices[0] with index 0, a
    message of role `assistant` with string content, and a known finish_reason.

    Every client reads `choices[0].message.content`; the SDKs' typed models need the envelope fields."""
    data, sent = await chat(s, [user("Say hello.")], max_tokens=MAX_TOKENS)
    missing = [k for k in ("id", "created", "model") if k not in data]
    expect(not missing, f"{sent} -> 200 without {missing}")
    expect(data.get("object") == "chat.completion", f"{sent} -> object={short(data.get('object'))}")
    choice, msg = data["choices"][0], message_of(data, sent)
    expect(choice.get("index") == 0, f"{sent} -> choices[0].index={short(choice.get('index'))}")
    expect(msg.get("role") == "assistant", f"{sent} -> message.role={short(msg.get('role'))}")
    content = msg.get("content")
    expect(isinstance(content, str) and content, f"{sent} -> message.content={short(content)}")
    finish = choice.get("finish_reason")
    expect(finish in FINISH_REASONS, f"{sent} -> finish_reason={short(finish)}")
    return f"{sent} -> 200 content {short(content, 40)} finish_reason={finish}"


async def _answered(s: Session, msgs: list[dict[str, Any]]) -> str:
    """The conversation gets a 200 with string content (what the history probes check)."""
    data, sent = await chat(s, msgs, max_tokens=MAX_TOKENS)
    content = message_of(data, sent).get("content")
    expect(isinstance(content, str) and content, f"{sent} -> message.content={short(content)}")
    return f"{sent} -> 200 content {short(content, 40)}"


@probe("openai", "chat.system", "core")
async def chat_system(s: Session) -> str:
    """A `system` message before the user turn is accepted and answered.

    Nearly every application sends a system prompt; a server that refuses the role breaks them all."""
    return await _answered(s, [{"role": "system", "content": "You are terse."}, user("Say hello.")])


@probe("openai", "chat.multi_turn", "core")
async def chat_multi_turn(s: Session) -> str:
    """A conversation (user, assistant, user) is accepted and answered.

    Chat clients resend the whole history every turn, including the assistant's earlier answers."""
    return await _answered(s, [user("My name is Ada."), {"role": "assistant", "content": "Hello Ada."},
                               user("What is my name?")])


@probe("openai", "chat.max_tokens", "core")
async def chat_max_tokens(s: Session) -> str:
    """An answer cut by `max_tokens` ends with finish_reason `length`.

    Clients continue or warn on `length`; a server that says `stop` makes a truncated answer look whole."""
    data, sent = await chat(s, [user("Count from one to one hundred in words, separated by spaces.")],
                            max_tokens=5)
    finish = data["choices"][0].get("finish_reason")
    expect(finish == "length", f"{sent} -> finish_reason={short(finish)}, want 'length'")
    return f"{sent} -> 200 finish_reason=length"


@probe("openai", "chat.stop", "core")
async def chat_stop(s: Session) -> str:
    """A `stop` string ends the answer: the text excludes it and finish_reason is `stop`.

    Agents use stop strings as delimiters; a server that returns the delimiter corrupts their parsing."""
    data, sent = await chat(s, [user("Reply with exactly these words: alpha beta gamma delta")],
                            stop=["gamma"], max_tokens=MAX_TOKENS)
    content = message_of(data, sent).get("content")
    finish = data["choices"][0].get("finish_reason")
    expect(isinstance(content, str), f"{sent} -> message.content={short(content)}")
    expect("gamma" not in content, f"{sent} -> the stop string is in the text: {short(content)}")
    expect(finish == "stop", f"{sent} -> finish_reason={short(finish)}, want 'stop'")
    return f"{sent} -> 200 content {short(content, 40)} finish_reason=stop"


@probe("openai", "chat.usage", "core")
async def chat_usage(s: Session) -> str:
    """A non-streamed answer reports `usage` with integer prompt_tokens (> 0), completion_tokens and
    total_tokens = prompt + completion.

    Billing, quotas and context-window bookkeeping all read these three numbers."""
    data, sent = await chat(s, [user("Say hello.")], max_tokens=MAX_TOKENS)
    usage = data.get("usage")
    expect(isinstance(usage, dict), f"{sent} -> usage={short(usage)}")
    counts = {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    expect(all(isinstance(v, int) for v in counts.values()), f"{sent} -> usage {short(counts, 90)}")
    expect(counts["prompt_tokens"] > 0, f"{sent} -> prompt_tokens={counts['prompt_tokens']}")
    expect(counts["total_tokens"] == counts["prompt_tokens"] + counts["completion_tokens"],
           f"{sent} -> total_tokens != prompt + completion: {short(counts, 90)}")
    return f"{sent} -> 200 usage {counts['prompt_tokens']}+{counts['completion_tokens']}={counts['total_tokens']}"


@probe("openai", "models.list", "core")
async def models_list(s: Session) -> str:
    """`GET /models` lists the served models: `{"object": "list", "data": [{"id", "object": "model"}]}`.

    Clients and UIs pick a model from this list, and health checks call it."""
    reply = await s.get("/models")
    expect(reply.status == 200, f"GET /models {reply.brief()}")
    data = reply.json
    items = data.get("data") if isinstance(data, dict) else None
    expect(isinstance(items, list) and data.get("object") == "list", f"GET /models -> {short(data)}")
    bad = [m for m in items if not (isinstance(m, dict) and isinstance(m.get("id"), str) and m.get("object") == "model")]
    expect(not bad, f"GET /models -> entry without id / object 'model': {short(bad[:1])}")
    ids = [m["id"] for m in items]
    listed = "listed" if s.model in ids else "not listed"
    return f"GET /models -> 200 {len(ids)} models ({s.model} {listed})"


# --------------------------------------------------------------------------------------------------
# Error shapes


@probe("openai", "errors.unknown_model", "core")
async def errors_unknown_model(s: Session) -> str:
    """A model the server does not serve is answered 404 (`NotFoundError` in the SDKs).

    Clients fall back to another model on 404; a 500 makes them retry a request that cannot succeed."""
    return await expect_not_found(s, CHAT, {"model": UNKNOWN_MODEL, "messages": [user("Say hello.")], "max_tokens": 8})


@probe("openai", "errors.invalid_body", "core")
async def errors_invalid_body(s: Session) -> str:
    """An invalid body (no `messages`) is answered 400 with `{"error": {"message": str, "type": str, ...}}`.

    The SDKs build their exception from `error.message`; another shape surfaces as an unreadable error."""
    sent = f"POST {CHAT} without messages"
    reply = await s.post(CHAT, {"model": s.model})
    expect(reply.status == 400, f"{sent} {reply.brief()}, want 400")
    err = reply.json.get("error") if isinstance(reply.json, dict) else None
    ok = isinstance(err, dict) and isinstance(err.get("message"), str) and isinstance(err.get("type"), str)
    expect(ok, f"{sent} {reply.brief()}: not {{'error': {{'message', 'type'}}}}")
    return f"{sent} -> 400 error.type={err['type']!r}"


# --------------------------------------------------------------------------------------------------
# Streaming


async def _hello_stream(s: Session, **fields: Any) -> tuple[StreamReply, list[dict[str, Any]], str]:
    return await chat_stream(s, [user("Say hello.")], max_tokens=MAX_TOKENS, **fields)


@probe("openai", "stream.framing", "core")
async def stream_framing(s: Session) -> str:
    """`stream: true` answers `text/event-stream` whose events are `data:` lines holding
    `chat.completion.chunk` JSON, ending with `data: [DONE]` and nothing after it.

    The SDKs stop reading at [DONE]; without it they wait for the connection to close, or report a cut stream."""
    reply, _, sent = await _hello_stream(s)
    expect(reply.content_type == "text/event-stream", f"{sent} -> content-type {reply.content_type!r}")
    expect(not reply.unterminated, f"{sent} -> the body ended inside an event (no blank line)")
    done = reply.done_index
    expect(done is not None, f"{sent} -> {len(reply.events)} events, no data: [DONE]")
    expect(done == len(reply.events) - 1, f"{sent} -> {len(reply.events) - 1 - done} events after [DONE]")
    for n, payload in enumerate(reply.payloads()):
        expect(isinstance(payload, dict), f"{sent} -> event {n} is not a JSON object: {short(reply.events[n].data)}")
        expect("error" not in payload, f"{sent} -> in-band error event: {short(payload)}")
        expect(payload.get("object") == "chat.completion.chunk", f"{sent} -> event {n} object={short(payload.get('object'))}")
    return f"{sent} -> 200 text/event-stream, {done} chunks + [DONE]"


def _first_with_choices(chunks: list[dict[str, Any]]) -> int | None:
    return next((i for i, c in enumerate(chunks) if choices(c)), None)


@probe("openai", "stream.role_first", "core")
async def stream_role_first(s: Session) -> str:
    """The first chunk with a choice carries `delta.role: "assistant"`.

    Accumulating clients take the message role from the first delta; without it they build a role-less message."""
    _, chunks, sent = await _hello_stream(s)
    first = _first_with_choices(chunks)
    expect(first is not None, f"{sent} -> no chunk with a choice")
    role = delta(chunks[first]).get("role")
    expect(role == "assistant", f"{sent} -> first delta {short(delta(chunks[first]))}, no role 'assistant'")
    return f"{sent} -> first delta role=assistant"


@probe("openai", "stream.finish_last", "core")
async def stream_finish_last(s: Session) -> str:
    """Exactly one chunk carries a finish_reason, the last chunk with a choice, with a known value.

    Clients end their read loop and decide whether the answer was cut on that chunk."""
    _, chunks, sent = await _hello_stream(s)
    with_choice = [c for c in chunks if choices(c)]
    finishes = [(i, choices(c)[0].get("finish_reason")) for i, c in enumerate(with_choice)
                if isinstance(choices(c)[0], dict) and choices(c)[0].get("finish_reason") is not None]
    expect(finishes, f"{sent} -> {len(with_choice)} chunks, none with a finish_reason")
    expect(len(finishes) == 1, f"{sent} -> finish_reason in {len(finishes)} chunks: {short(finishes)}")
    index, value = finishes[0]
    expect(index == len(with_choice) - 1, f"{sent} -> finish_reason in chunk {index} of {len(with_choice)}")
    expect(value in FINISH_REASONS, f"{sent} -> finish_reason={short(value)}")
    return f"{sent} -> finish_reason={value} in the last chunk"


@probe("openai", "stream.include_usage", "core")
async def stream_include_usage(s: Session) -> str:
    """With `stream_options: {"include_usage": true}` the last chunk before [DONE] carries `usage`
    (prompt_tokens, completion_tokens, total_tokens as integers).

    Streaming clients bill and budget from this chunk; there is no other way to get counts for a stream."""
    _, chunks, sent = await _hello_stream(s, stream_options={"include_usage": True})
    expect(chunks, f"{sent} -> no chunks")
    usage = chunks[-1].get("usage")
    expect(isinstance(usage, dict), f"{sent} -> last chunk usage={short(usage)}")
    counts = [usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")]
    expect(all(isinstance(v, int) for v in counts), f"{sent} -> usage {short(usage, 90)}")
    where = "choices: []" if choices(chunks[-1]) == [] else "with a choice"
    return f"{sent} -> usage chunk ({where}) {counts[0]}+{counts[1]}={counts[2]}"


@probe("openai", "stream.no_empty_choices", "core")
async def stream_no_empty_choices(s: Session) -> str:
    """No chunk with an empty (or missing) `choices` comes before the first content chunk.

    Code that reads `chunk.choices[0]` unguarded (most hand-written clients) crashes on such a chunk."""
    _, chunks, sent = await _hello_stream(s)
    first = _first_with_choices(chunks)
    expect(first is not None, f"{sent} -> no chunk with a choice")
    expect(first == 0, f"{sent} -> {first} chunk(s) without choices before the first content: {short(chunks[0])}")
    return f"{sent} -> the first chunk has a choice"
