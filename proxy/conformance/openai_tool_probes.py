"""OpenAI tool probes: a call with id, name and JSON arguments, `tool_choice` none / required /
named, parallel calls, a round trip with a tool result, and streamed calls (`index` on every delta,
id and name on the first, fragments joining to the same JSON as the non-streamed arguments).
Registered with the other OpenAI probes (`openai_probes` imports this module)."""

from __future__ import annotations

from typing import Any

from adapters import jsonio

from .http import Session
from .openai_probes import MAX_TOKENS, chat, chat_stream, delta, message_of, stream_text, user
from .probe import Fail, Unsupported, expect, probe, short

def _tool(name: str, description: str) -> dict[str, Any]:
    params = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": params}}


WEATHER = _tool("get_weather", "Current weather for a city")
TIME = _tool("get_time", "Current local time in a city")
CALL_WEATHER = "Call the get_weather tool for Paris."


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
