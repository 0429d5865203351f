"""Probes for OpenAI-compatible servers (`--url` ends in `/v1`): chat core, streaming, tools, extras.

Each probe owns one rule, so a server that breaks a rule fails exactly the probe named after it: the
stream probes read the stream leniently except for the one thing they check, the tool-argument probe
accumulates fragments even when `index` or `id` are misplaced (that is `tools.stream_deltas`' finding).
"""

from __future__ import annotations

from typing import Any

from adapters import jsonio

from .http import Session, StreamReply
from .probe import REFUSAL_STATUSES, Fail, Unsupported, expect, expect_not_found, probe, short

CHAT = "/chat/completions"
MAX_TOKENS = 64  # bounds every answer a probe does not need long
FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter", "function_call")
UNKNOWN_MODEL = "no-such-model-conformance-probe"


def request_headers(api_key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


def _tool(name: str, description: str) -> dict[str, Any]:
    params = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": params}}


WEATHER = _tool("get_weather", "Current weather for a city")
TIME = _tool("get_time", "Current local time in a city")
CALL_WEATHER = "Call the get_weather tool for Paris."


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


def tool_calls(msg: dict[str, Any]) -> list[dict[str, Any]]:
    value = msg.get("tool_calls")
    return [c for c in value if isinstance(c, dict)] if isinstance(value, list) else []


def call_name(call: dict[str, Any]) -> Any:
    fn = call.get("function")
    return fn.get("name") if isinstance(fn, dict) else None


def call_arguments(call: dict[str, Any], sent: str) -> Any:
    fn = call.get("function") if isinstance(call.get("function"), dict) else {}
    args = fn.get("arguments")
    expect(isinstance(args, str), f"{sent} -> function.arguments is {short(args)}, not a JSON string")
    try:
        return jsonio.loads(args)
    except jsonio.DecodeError:
        raise Fail(f"{sent} -> function.arguments is not JSON: {short(args)}") from None


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


# --------------------------------------------------------------------------------------------------
# Tools


async def _tool_answer(s: Session, prompt: str, tools: list[dict[str, Any]],
                       **fields: Any) -> tuple[dict[str, Any], dict[str, Any], str]:
    data, sent = await chat(s, [user(prompt)], optional=True, tools=tools, max_tokens=MAX_TOKENS, **fields)
    return data, message_of(data, sent), sent


@probe("openai", "tools.call", "tools")
async def tools_call(s: Session) -> str:
    """Asked to use an offered function, the answer has `tool_calls[0]` with an id, type `function`,
    the function's name and `arguments` as a JSON string of an object; finish_reason is `tool_calls`.

    Agent loops dispatch on finish_reason and the call's name, and parse the arguments string."""
    data, msg, sent = await _tool_answer(s, CALL_WEATHER, [WEATHER])
    calls = tool_calls(msg)
    expect(calls, f"{sent} -> no tool_calls; content {short(msg.get('content'))}")
    call = calls[0]
    expect(isinstance(call.get("id"), str) and call["id"], f"{sent} -> tool call id={short(call.get('id'))}")
    expect(call.get("type") == "function", f"{sent} -> tool call type={short(call.get('type'))}")
    expect(call_name(call) == "get_weather", f"{sent} -> function.name={short(call_name(call))}")
    args = call_arguments(call, sent)
    expect(isinstance(args, dict), f"{sent} -> arguments decode to {short(args)}, not an object")
    finish = data["choices"][0].get("finish_reason")
    expect(finish == "tool_calls", f"{sent} -> finish_reason={short(finish)}, want 'tool_calls'")
    return f"{sent} -> get_weather({short(args, 40)}) finish_reason=tool_calls"


@probe("openai", "tools.choice_none", "tools")
async def tools_choice_none(s: Session) -> str:
    """`tool_choice: "none"` gets a text answer and no tool call, even when the prompt asks for one.

    Clients use it to make the model summarise after a tool loop; a call then is never executed."""
    _, msg, sent = await _tool_answer(s, CALL_WEATHER, [WEATHER], tool_choice="none")
    expect(not tool_calls(msg), f"{sent} -> tool_calls {short(tool_calls(msg))}")
    expect(isinstance(msg.get("content"), str), f"{sent} -> content={short(msg.get('content'))}")
    return f"{sent} -> text, no tool call"


@probe("openai", "tools.choice_required", "tools")
async def tools_choice_required(s: Session) -> str:
    """`tool_choice: "required"` gets at least one call to an offered function, even for a question
    that does not name one.

    Extraction pipelines force a call and read its arguments; a text answer leaves them nothing."""
    _, msg, sent = await _tool_answer(s, "What is the weather like in Paris?", [WEATHER, TIME],
                                      tool_choice="required")
    names = [call_name(c) for c in tool_calls(msg)]
    expect(names, f"{sent} -> no tool call; content {short(msg.get('content'))}")
    expect(set(names) <= {"get_weather", "get_time"}, f"{sent} -> calls {short(names)}")
    return f"{sent} -> calls {names}"


@probe("openai", "tools.choice_named", "tools")
async def tools_choice_named(s: Session) -> str:
    """`tool_choice: {"type": "function", "function": {"name": "get_time"}}` calls exactly that function.

    Forcing a named function is how clients get structured output from servers without json_schema."""
    choice = {"type": "function", "function": {"name": "get_time"}}
    _, msg, sent = await _tool_answer(s, "What is the weather like in Paris?", [WEATHER, TIME], tool_choice=choice)
    names = [call_name(c) for c in tool_calls(msg)]
    expect(names and set(names) == {"get_time"}, f"{sent} -> calls {short(names)}, want get_time")
    return f"{sent} -> calls {names}"


@probe("openai", "tools.parallel", "tools")
async def tools_parallel(s: Session) -> str:
    """Asked for two functions at once, the answer holds both calls, each with its own id.

    Clients run parallel calls concurrently and answer each by id; one shared id loses a result."""
    _, msg, sent = await _tool_answer(s, "Call get_weather and get_time for Paris, both at once.", [WEATHER, TIME])
    calls = tool_calls(msg)
    if len(calls) < 2:
        raise Unsupported(f"{sent} -> {len(calls)} tool call(s): the model makes no parallel calls")
    ids = [c.get("id") for c in calls]
    expect(all(isinstance(i, str) and i for i in ids) and len(set(ids)) == len(ids), f"{sent} -> ids {short(ids)}")
    return f"{sent} -> {len(calls)} calls {[call_name(c) for c in calls]} with distinct ids"


@probe("openai", "tools.round_trip", "tools")
async def tools_round_trip(s: Session) -> str:
    """A history holding an assistant `tool_calls` turn and the matching `tool` message is accepted and
    answered with text.

    This is the second half of every agent loop: the tool's result must reach the model."""
    call = {"id": "call_conformance_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    msgs = [user("What is the weather like in Paris?"), {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_conformance_1", "content": '{"temperature_c": 21}'}]
    data, sent = await chat(s, msgs, optional=True, tools=[WEATHER], max_tokens=MAX_TOKENS)
    content = message_of(data, sent).get("content")
    expect(isinstance(content, str) and content, f"{sent} -> content={short(content)}")
    return f"{sent} -> 200 content {short(content, 40)}"


def _tool_deltas(chunks: list[dict[str, Any]]) -> list[Any]:
    out: list[Any] = []
    for chunk in chunks:
        value = delta(chunk).get("tool_calls")
        if isinstance(value, list):
            out += value
    return out


async def _streamed_calls(s: Session, **fields: Any) -> tuple[list[Any], str]:
    _, chunks, sent = await chat_stream(s, [user(CALL_WEATHER)], optional=True, tools=[WEATHER],
                                        max_tokens=MAX_TOKENS, **fields)
    deltas = _tool_deltas(chunks)
    expect(deltas, f"{sent} -> no tool_calls deltas; text {short(stream_text(chunks))}")
    return deltas, sent


@probe("openai", "tools.stream_deltas", "tools")
async def tools_stream_deltas(s: Session) -> str:
    """In a stream, every `tool_calls` delta has an integer `index`, and the first delta of each index
    carries the call's id, type `function` and function name.

    The SDKs accumulate fragments by `index` and take id and name from the first fragment only."""
    deltas, sent = await _streamed_calls(s)
    seen: set[int] = set()
    for n, d in enumerate(deltas):
        expect(isinstance(d, dict) and isinstance(d.get("index"), int), f"{sent} -> delta {n} without index: {short(d)}")
        if d["index"] in seen:
            continue
        seen.add(d["index"])
        fn = d.get("function") if isinstance(d.get("function"), dict) else {}
        ok = isinstance(d.get("id"), str) and d["id"] and d.get("type") == "function" and fn.get("name")
        expect(ok, f"{sent} -> first delta of call {d['index']} lacks id/type/name: {short(d, 90)}")
    return f"{sent} -> {len(deltas)} deltas, indexes {sorted(seen)}, id and name first"


def _accumulate(deltas: list[Any]) -> dict[int, str]:
    """Arguments per call; a delta without an index continues the current call (lenient on purpose)."""
    args: dict[int, str] = {}
    current = 0
    for d in deltas:
        if not isinstance(d, dict):
            continue
        if isinstance(d.get("index"), int):
            current = d["index"]
        fn = d.get("function") if isinstance(d.get("function"), dict) else {}
        args[current] = args.get(current, "") + str(fn.get("arguments") or "")
    return args


@probe("openai", "tools.stream_arguments", "tools")
async def tools_stream_arguments(s: Session) -> str:
    """The `arguments` fragments of a streamed call concatenate to JSON equal to the non-streamed call's
    arguments (one fragment holding the whole string is legal).

    Clients concatenate the fragments and parse once; cumulative or re-sent fragments give broken JSON."""
    data, msg, sent = await _tool_answer(s, CALL_WEATHER, [WEATHER], temperature=0)
    calls = tool_calls(msg)
    expect(calls, f"{sent} -> the non-streamed request made no tool call")
    whole = call_arguments(calls[0], sent)
    deltas, sent = await _streamed_calls(s, temperature=0)
    joined = _accumulate(deltas).get(min(_accumulate(deltas)), "")
    try:
        streamed = jsonio.loads(joined)
    except jsonio.DecodeError:
        raise Fail(f"{sent} -> concatenated arguments are not JSON: {short(joined)}") from None
    expect(streamed == whole, f"{sent} -> streamed {short(streamed, 40)} != non-streamed {short(whole, 40)}")
    return f"{sent} -> {len(deltas)} deltas join to {short(streamed, 40)}, same as non-streamed"


# --------------------------------------------------------------------------------------------------
# Extras


def _json_content(msg: dict[str, Any], sent: str) -> Any:
    content = msg.get("content")
    try:
        return jsonio.loads(content) if isinstance(content, str) else None
    except jsonio.DecodeError:
        raise Fail(f"{sent} -> content is not JSON: {short(content)}") from None


@probe("openai", "extras.json_object", "extras")
async def extras_json_object(s: Session) -> str:
    """`response_format: {"type": "json_object"}` makes the content a JSON object.

    Clients json.loads the content without a retry loop when they asked for JSON mode."""
    msgs = [{"role": "system", "content": "Answer in JSON."}, user('Return a JSON object with key "city" set to "Paris".')]
    data, sent = await chat(s, msgs, optional=True, response_format={"type": "json_object"}, max_tokens=MAX_TOKENS)
    value = _json_content(message_of(data, sent), sent)
    expect(isinstance(value, dict), f"{sent} -> content decodes to {short(value)}, not an object")
    return f"{sent} -> {short(value, 40)}"


CITY_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
               "additionalProperties": False}


@probe("openai", "extras.json_schema", "extras")
async def extras_json_schema(s: Session) -> str:
    """`response_format: {"type": "json_schema", ...}` makes the content JSON matching the schema
    (here an object with a string `city`).

    Structured-output clients (the SDKs' `parse()`) validate the content against the schema."""
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "strict": True, "schema": CITY_SCHEMA}}
    msgs = [user('Return a JSON object with key "city" set to "Paris".')]
    data, sent = await chat(s, msgs, optional=True, response_format=fmt, max_tokens=MAX_TOKENS)
    value = _json_content(message_of(data, sent), sent)
    ok = isinstance(value, dict) and isinstance(value.get("city"), str)
    expect(ok, f"{sent} -> content {short(value)} does not match the schema")
    return f"{sent} -> {short(value, 40)}"


@probe("openai", "extras.logprobs", "extras")
async def extras_logprobs(s: Session) -> str:
    """`logprobs: true, top_logprobs: 2` returns `choices[0].logprobs.content`: one entry per token with
    token, logprob and a top_logprobs list.

    Evaluation and confidence tooling reads these; a silent null looks like an empty answer."""
    data, sent = await chat(s, [user("Say hello.")], optional=True, logprobs=True, top_logprobs=2, max_tokens=16)
    lp = data["choices"][0].get("logprobs")
    if lp is None:
        raise Unsupported(f"{sent} -> logprobs: null (ignored)")
    content = lp.get("content") if isinstance(lp, dict) else None
    expect(isinstance(content, list) and content, f"{sent} -> logprobs {short(lp)}")
    bad = [e for e in content if not (isinstance(e, dict) and isinstance(e.get("token"), str)
                                      and isinstance(e.get("logprob"), (int, float))
                                      and isinstance(e.get("top_logprobs"), list))]
    expect(not bad, f"{sent} -> logprobs entry {short(bad[:1])}")
    return f"{sent} -> {len(content)} token logprobs"


@probe("openai", "extras.n", "extras")
async def extras_n(s: Session) -> str:
    """`n: 2` returns two choices, with indexes 0 and 1.

    Best-of-n sampling clients read every choice; a server that ignores `n` returns one silently."""
    data, sent = await chat(s, [user("Say hello.")], optional=True, n=2, max_tokens=16)
    indexes = sorted(c.get("index") for c in data["choices"] if isinstance(c, dict))
    expect(indexes == [0, 1], f"{sent} -> choices with indexes {indexes}")
    return f"{sent} -> 2 choices"


@probe("openai", "extras.seed", "extras")
async def extras_seed(s: Session) -> str:
    """The same request with `seed` and `temperature: 0` twice gives the same content.

    Test suites and evaluations rely on reproducible answers."""
    fields = {"seed": 1234, "temperature": 0, "max_tokens": 16}
    first, sent = await chat(s, [user("Name a colour.")], optional=True, **fields)
    second, _ = await chat(s, [user("Name a colour.")], optional=True, **fields)
    a, b = (message_of(d, sent).get("content") for d in (first, second))
    expect(a == b, f"{sent} twice -> {short(a, 30)} then {short(b, 30)}")
    return f"{sent} twice -> the same {short(a, 40)}"


@probe("openai", "extras.reasoning", "extras")
async def extras_reasoning(s: Session) -> str:
    """With `reasoning_effort`, a reasoning model returns its reasoning as a string in
    `message.reasoning_content` (DeepSeek, llama.cpp) or `message.reasoning` (vLLM, Ollama).

    Chat UIs show the reasoning separately; a server that puts it in `content` pollutes the answer."""
    data, sent = await chat(s, [user("What is 2 + 2?")], optional=True, reasoning_effort="low", max_tokens=256)
    msg = message_of(data, sent)
    for name in ("reasoning_content", "reasoning"):
        if isinstance(msg.get(name), str) and msg[name]:
            return f"{sent} -> message.{name} {short(msg[name], 40)}"
    raise Unsupported(f"{sent} -> no reasoning_content / reasoning field (not a reasoning model)")


@probe("openai", "extras.embeddings", "extras")
async def extras_embeddings(s: Session) -> str:
    """`POST /embeddings` with two inputs returns two `embedding` vectors of floats, same length, indexes 0 and 1.

    RAG pipelines send batches and match vectors to inputs by index."""
    model = s.target.embedding_model or s.model
    sent = f"POST /embeddings model={model!r} input=[2 strings]"
    reply = await s.post("/embeddings", {"model": model, "input": ["hello", "world"]})
    if reply.status in REFUSAL_STATUSES:
        raise Unsupported(f"{sent} {reply.brief()}")
    expect(reply.status == 200, f"{sent} {reply.brief()}")
    items = reply.json.get("data") if isinstance(reply.json, dict) else None
    expect(isinstance(items, list) and len(items) == 2, f"{sent} -> data {short(items)}")
    vectors = [i.get("embedding") if isinstance(i, dict) else None for i in items]
    ok = all(isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v) for v in vectors)
    expect(ok and len({len(v) for v in vectors}) == 1, f"{sent} -> embeddings {short(vectors)}")
    expect(sorted(i.get("index") for i in items) == [0, 1], f"{sent} -> indexes {[i.get('index') for i in items]}")
    return f"{sent} -> 200 2 vectors of {len(vectors[0])} floats"


@probe("openai", "extras.completions", "extras")
async def extras_completions(s: Session) -> str:
    """Legacy `POST /completions` with a prompt returns a `text_completion` with `choices[0].text`.

    Older clients, code completion and evaluation harnesses still use the text-completion endpoint."""
    sent = "POST /completions prompt='Say hello.' max_tokens=16"
    reply = await s.post("/completions", {"model": s.model, "prompt": "Say hello.", "max_tokens": 16})
    if reply.status in REFUSAL_STATUSES:
        raise Unsupported(f"{sent} {reply.brief()}")
    expect(reply.status == 200, f"{sent} {reply.brief()}")
    data = reply.json if isinstance(reply.json, dict) else {}
    first = data.get("choices", [None])[0] if isinstance(data.get("choices"), list) and data["choices"] else None
    ok = data.get("object") == "text_completion" and isinstance(first, dict) and isinstance(first.get("text"), str)
    expect(ok, f"{sent} -> {short(data)}")
    return f"{sent} -> 200 text {short(first['text'], 40)}"
