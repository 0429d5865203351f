"""OpenAI extras probes: `response_format` json_object and json_schema, `logprobs`, `n`, `seed`
repeatability, reasoning fields, embeddings and legacy completions.  All optional: a server that
refuses one is "not supported".  Registered with the other OpenAI probes (`openai_probes` imports
this module)."""

from __future__ import annotations

from typing import Any

from adapters import jsonio

from .http import Session
from .openai_probes import MAX_TOKENS, chat, message_of, user
from .probe import REFUSAL_STATUSES, Fail, Unsupported, expect, probe, short



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
