"""How a request tells an emulator what to do: a scenario in the model name or the `x-emulate` header.

    model = "llama::status=429,retry_after=2"     -> answer 429 with Retry-After: 2
    model = "llama::tools,chunks=20"              -> a tool call, streamed in 20 chunks
    header  x-emulate: hang                       -> never answer

One emulator serves every scenario, so tests and the demo configure behaviour through routing alone
(a proxy model name mapped to a backend model that carries the scenario).  Keys:

    status=N          reply with HTTP error N in the format's own error shape
    retry_after=S     with status: a Retry-After header
    context_length    a 400 whose message is the format's context-length wording
    chunks=N          number of content chunks when streaming (default 4)
    text=WORDS        reply text (`_` stands for a space); default echoes the last user text
    tools             answer with a tool call (to the first tool offered, else `get_weather`); without
                      it the emulators steer like a model: see `tools_to_call`
    reasoning         include reasoning / thinking output where the format has it
    redacted          with thinking (Anthropic): a redacted_thinking block after the thinking block
    first_byte=S      delay before the response headers (slow first byte)
    chunk_delay=S     delay between stream chunks
    hang              accept the request and never answer
    reset_after=N     streaming: drop the TCP connection after N chunks
    truncate_after=N  streaming: end the body cleanly after N chunks, without the terminal event
    error_after=N     streaming: an in-band error event after N chunks
    malformed         a body / chunk that is not valid JSON
    max_tokens        stop with the format's "length" finish reason
    usage_in=N,usage_out=N   token counts to report (defaults derive from the text)
    defect=NAME       break one protocol rule on purpose (loadtest/emulators/defects.py), so that
                      `llm-proxy conformance` can be shown to catch it

Whatever the scenario, the emulators honour the request as a model server would: the max-tokens limit
cuts the reply (finish "length"), a stop string ends it before the string (`cut_reply`), and a model
named `no-such-model...` does not exist (404 in the format's shape; `UNKNOWN_MODEL_PREFIX`).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

SEPARATOR = "::"
HEADER = "x-emulate"


@dataclass
class Behaviour:
    status: int | None = None
    retry_after: float | None = None
    context_length: bool = False
    chunks: int = 4
    text: str | None = None
    tools: bool = False
    reasoning: bool = False
    redacted: bool = False
    first_byte: float = 0.0
    chunk_delay: float = 0.0
    hang: bool = False
    reset_after: int | None = None
    truncate_after: int | None = None
    error_after: int | None = None
    malformed: bool = False
    max_tokens: bool = False
    usage_in: int | None = None
    usage_out: int | None = None
    defect: str = ""

    @classmethod
    def parse(cls, spec: str) -> "Behaviour":
        b = cls()
        types = {f.name: f.type for f in fields(cls)}
        for item in filter(None, (s.strip() for s in spec.split(","))):
            key, _, value = item.partition("=")
            if key not in types:
                continue  # unknown keys are ignored so scenarios stay forward compatible
            typ = types[key]
            if "bool" in typ:
                setattr(b, key, value.lower() not in ("0", "false", "no") if value else True)
            elif "int" in typ:
                setattr(b, key, int(value))
            elif "float" in typ:
                setattr(b, key, float(value))
            else:  # in text, `_` stands for a space (a model name cannot hold one)
                setattr(b, key, value.replace("_", " ") if key == "text" else value)
        return b


def behaviour_for(model: str | None, headers) -> Behaviour:
    """The scenario from the model name's `::` suffix, overridden by the `x-emulate` header."""
    spec = ""
    if model and SEPARATOR in model:
        spec = model.split(SEPARATOR, 1)[1]
    header = headers.get(HEADER) if headers is not None else None
    if header:
        spec = f"{spec},{header}" if spec else header
    return Behaviour.parse(spec)


def split_text(text: str, n: int) -> list[str]:
    """Split `text` into `n` non-empty pieces (fewer if the text is shorter) that join back exactly."""
    n = max(1, min(n, len(text))) if text else 1
    size, rem = divmod(len(text), n)
    out, pos = [], 0
    for i in range(n):
        step = size + (1 if i < rem else 0)
        out.append(text[pos : pos + step])
        pos += step
    return out


def cut_at_stop(text: str, stops) -> tuple[str, str | None]:
    """A model stops before the first stop sequence it would generate: (text up to it, which one)."""
    found = [(text.index(s), s) for s in stops or [] if isinstance(s, str) and s and s in text]
    if not found:
        return text, None
    at, stop = min(found)
    return text[:at], stop


def reply_text(b: Behaviour, user_text: str) -> str:
    if b.text is not None:
        return b.text
    return f"echo: {user_text}" if user_text else "Hello from the emulator."


_LAST_USER = [
    re.compile(p, re.S)
    for p in (
        r"<\|start_header_id\|>user<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>",
        r"<\|im_start\|>user\n(.*?)<\|im_end\|>",
        r"\[INST\]\s?(.*?)\[/INST\]",
        r"<start_of_turn>user\n(.*?)<end_of_turn>",
        r"<\|user\|>\n(.*?)<\|end\|>",
    )
]


def last_user_text(prompt: str) -> str:
    """The last user turn of a prompt rendered with a chat template (Llama 3, ChatML, [INST], Gemma,
    Phi-3), else the whole prompt: what prompt-only emulators echo."""
    for pattern in _LAST_USER:
        found = pattern.findall(prompt)
        if found:
            return found[-1].strip()
    return prompt.strip()


def example_value(schema: Any) -> Any:
    """A value that satisfies a simple JSON schema (first enum value, typed placeholders): the
    arguments emulators put in the tool calls they answer with."""
    if not isinstance(schema, dict):
        return "Paris"
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {k: example_value(v) for k, v in (schema.get("properties") or {}).items()}
    return {"integer": 1, "number": 1.5, "boolean": True, "array": [], "null": None}.get(kind, "Paris")


def unit_vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector for `text` (what embedding emulators answer)."""
    import hashlib
    import math

    seed = hashlib.sha256(text.encode()).digest()
    raw = [(seed[i % len(seed)] - 127.5) / 127.5 + i * 1e-3 for i in range(dims)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


UNKNOWN_MODEL_PREFIX = "no-such-model"


def unknown_model(model: object) -> bool:
    return isinstance(model, str) and model.startswith(UNKNOWN_MODEL_PREFIX)


def schema_example(schema: Any, name: str = "value") -> Any:
    """A value of a simple JSON schema: objects by property, `<key>-value` strings, typed placeholders."""
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind == "object":
        return {k: schema_example(v, k) for k, v in (schema.get("properties") or {}).items()}
    return {"integer": 1, "number": 1.5, "boolean": True, "array": []}.get(str(kind), f"{name}-value")


def json_reply(text: str, schema: Any) -> str:
    """What a server with constrained decoding answers when asked for JSON: a value of `schema`, or
    `{"answer": text}` for plain JSON mode (no schema, or the empty schema)."""
    if isinstance(schema, dict) and schema:
        return json.dumps(schema_example(schema))
    return json.dumps({"answer": text})


def cut_reply(text: str, stops: object, max_tokens: object) -> tuple[str, str | None, str | None]:
    """(text, reason, stop string) as a server returns the reply: cut before the first stop string found
    (reason "stop", and which string), else to `max_tokens` tokens when it is longer (reason "length");
    reason None when nothing cut it."""
    cut, stop = cut_at_stop(text, [stops] if isinstance(stops, str) else stops if isinstance(stops, list) else [])
    if stop is not None:
        return cut, "stop", stop
    if isinstance(max_tokens, int) and max_tokens >= 0 and count_tokens(text) > max_tokens:
        return text[: max_tokens * 4], "length", None
    return text, None, None


def tools_to_call(offered: list[str], mode: str, last_user: str | None, forced: bool) -> list[str]:
    """Which offered tools the emulated model calls, steered the way a real model is:

        mode "none"        no call (the scenario's `tools` key included)
        mode "required"    the tools the last user turn names, else the first offered
        mode <tool name>   that tool
        mode "auto"        the tools the last user turn names (none after a tool result: last_user None)
        forced (`tools`)   as "required"; `get_weather` when the request offers no tools
    """
    named = [t for t in offered if last_user and t in last_user]
    if mode == "none":
        return []
    if mode not in ("auto", "required"):
        return [mode] if mode in offered else []
    if mode == "required" or forced:
        return named or offered[:1] or (["get_weather"] if forced else [])
    return named


def count_tokens(text: str) -> int:
    """A stable stand-in for a tokenizer: about four characters a token, at least one."""
    return max(1, (len(text) + 3) // 4)


@dataclass(frozen=True)
class LatencyProfile:
    """Upstream latency to emulate: first-byte delay drawn from a log-normal fitted to p50/p95, and a
    token rate for streams.  `name` labels it in benchmark reports."""

    name: str = "zero"
    p50: float = 0.0
    p95: float = 0.0
    tokens_per_s: float = 0.0  # 0 = chunks back to back

    def first_byte_delay(self, rng: random.Random) -> float:
        if self.p50 <= 0:
            return 0.0
        import math

        sigma = math.log(max(self.p95, self.p50) / self.p50) / 1.645 if self.p95 > self.p50 else 0.0
        return self.p50 * math.exp(rng.gauss(0.0, sigma)) if sigma else self.p50

    def chunk_gap(self) -> float:
        return 1.0 / self.tokens_per_s if self.tokens_per_s > 0 else 0.0


async def sleep_if(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


async def before_first_byte(b: Behaviour, profile: LatencyProfile, rng: random.Random) -> None:
    """The scenario's and the profile's first-byte delay; then, under `hang`, wait until cancelled."""
    await sleep_if(b.first_byte + profile.first_byte_delay(rng))
    if b.hang:
        await asyncio.Event().wait()


async def write_stream(
    request: web.Request,
    resp: web.StreamResponse,
    b: Behaviour,
    frames: list[bytes],
    gap: float,
    error_frame: bytes,
    malformed_frame: bytes,
) -> bool:
    """Write `frames` to a prepared stream response, `gap` seconds apart, with the scenario's stream
    faults, then end the body.  Faults count frames from 0 and strike before frame N:

        reset_after=N     the connection is aborted (no clean end)
        truncate_after=N  the body ends cleanly
        error_after=N     `error_frame` is written and the body ends
        malformed         `malformed_frame` is written in place of the last frame

    Whatever a format sends before its first counted frame (or inside one, like Anthropic's block
    events around a delta) is the caller's to write or to group.  Returns False when a fault cut the
    stream short (reset, truncate, error), True when it ran to its last frame.
    """
    for n, frame in enumerate(frames):
        if n:
            await sleep_if(gap)
        if b.reset_after is not None and n >= b.reset_after:
            if request.transport is not None:
                request.transport.abort()
            return False
        if b.truncate_after is not None and n >= b.truncate_after:
            await resp.write_eof()
            return False
        if b.error_after is not None and n >= b.error_after:
            await resp.write(error_frame)
            await resp.write_eof()
            return False
        await resp.write(malformed_frame if b.malformed and n == len(frames) - 1 else frame)
    await resp.write_eof()
    return True
