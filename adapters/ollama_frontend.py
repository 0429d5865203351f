"""Ollama's native API for clients (the official `ollama` library, Open WebUI, ...): the gateway's
`/api/chat`, `/api/generate`, `/api/embed`, `/api/tags` and `/api/version`, on any backend.

Requests are parsed in `ollama_request` (its docstring lists those decisions).  Rendering
choices (IR -> Ollama), checked against ollama-python's `_types.py` / `_client.py` and `api/types.go`:
- `done_reason`: IR `length` -> "length", everything else -> "stop" (tool_calls, content_filter and
  pause are not expressible; the native API never says "tool_calls").  A `Finish("error")` mid-stream
  becomes an `{"error": ...}` line.
- Reasoning text of any provider -> `thinking`; signatures and redacted reasoning have no slot
  (dropped), so a client echoing `thinking` back sends unsigned reasoning.
- Tool calls are whole objects: `{"id", "function": {"index", "name", "arguments": {...}}}` as current
  servers send them (`id` and `index` are extras older clients ignore); IR argument text that is not
  a JSON object becomes `{}`.  In streams they are held until their BlockEnd and sent in one line.
- Counts: `prompt_eval_count` = input tokens (cache reads included), `eval_count` = output tokens
  (reasoning included); 0 when the backend reported no usage.  Durations are nanoseconds: a
  non-streamed answer carries 0 for all of them (the gateway did not measure the model); a stream
  measures from its encoder's creation (the upstream stream opening) -- `prompt_eval_duration` up to
  the first output, `eval_duration` from there to the end, `total_duration` both; `load_duration` is 0.
- `created_at` is the gateway's UTC clock (RFC 3339 with microseconds) for every line.
- `/api/generate` answers carry no `context` array (there are no token ids to give back); streamed
  tool calls have no slot there and are dropped.
- Errors: `{"error": "<message>"}` with the status of the error kind, also as a stream line after a 200.
- `/api/tags`: one entry per configured model name, with the values a gateway can know: size 0, a
  digest derived from the name (sha256, stable across restarts), `modified_at` at the epoch, and empty
  details.  `/api/version` reports API_VERSION, a release with streamed tools, `think` and `dimensions`.
- On an Ollama backend (family "ollama") requests and NDJSON answers are relayed byte for byte (only
  `model` rewritten); this frontend then reads only the counts of the final line, for metrics.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone
from typing import Any, ClassVar

import msgspec

from . import ir, jsonio
from .jsonio import TopLevel
from .base import BEARER, X_RATELIMIT, ApiRoute, ChatOp, EmbeddingsOp, InBody, ModelList, Route, StaticInfo
from .common import arguments_object
from .errors import ProxyError
from .ollama_request import parse_chat, parse_embed, parse_generate
from .sse import SSEEvent

__all__ = ["OllamaFrontend", "ChatStreamEncoder", "GenerateStreamEncoder", "API_VERSION"]

API_VERSION = "0.12.0"

_DONE_REASON: dict[str, str] = {"length": "length"}  # every other IR finish reason -> "stop"


def created_at() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def done_reason(reason: str) -> str:
    return _DONE_REASON.get(reason, "stop")


def counts(usage: ir.Usage | None, prompt_ns: int = 0, eval_ns: int = 0) -> dict[str, int]:
    u = usage or ir.Usage()
    return {
        "total_duration": prompt_ns + eval_ns,
        "load_duration": 0,
        "prompt_eval_count": u.input_tokens,
        "prompt_eval_duration": prompt_ns,
        "eval_count": u.output_tokens,
        "eval_duration": eval_ns,
    }


def tool_call(call: ir.ToolCall, index: int) -> dict[str, Any]:
    args = arguments_object(call.arguments) or {}
    return {"id": call.id, "function": {"index": index, "name": call.name, "arguments": args}}


def _texts(parts: list[Any], kind: type) -> str:
    return "".join(p.text for p in parts if isinstance(p, kind))


def _choice(resp: ir.ChatResponse) -> ir.Choice:
    return resp.choices[0] if resp.choices else ir.Choice()


# --------------------------------------------------------------------------------------------------
# Streams


class _StreamEncoder:
    """IR events -> NDJSON lines, one JSON object + "\\n" each.

    How this works: text and reasoning deltas are written at once (`_delta`, shaped by the subclass);
    a tool block's BlockStart opens a buffer keyed by its IR index (deltas of different blocks may
    interleave), its argument fragments are collected, and at its BlockEnd the whole call is written
    (`_tool`).  Finish and Usage only update state; End writes the one `done: true` line with both.
    After End or an error line nothing more is written.
    """

    __slots__ = ("model", "t0", "t_first", "reason", "usage", "tools", "n_tools", "closed")

    def __init__(self, req: ir.ChatRequest, model: str) -> None:
        self.model = model
        self.t0 = time.monotonic_ns()
        self.t_first: int | None = None  # first output, for prompt_eval_duration
        self.reason = "stop"
        self.usage: ir.Usage | None = None
        self.tools: dict[int, tuple[str, str, list[str]]] = {}  # IR block -> (id, name, fragments)
        self.n_tools = 0
        self.closed = False

    def _line(self, obj: dict[str, Any]) -> bytes:
        return jsonio.dumps({"model": self.model, "created_at": created_at(), **obj}) + b"\n"

    def _delta(self, text: str, thinking: str) -> bytes:
        raise NotImplementedError

    def _tool(self, call: ir.ToolCall, index: int) -> bytes:
        raise NotImplementedError

    def _final(self, fields: dict[str, Any]) -> bytes:
        raise NotImplementedError

    def feed(self, ev: ir.Event) -> bytes:
        if self.closed:
            return b""
        if isinstance(ev, (ir.TextDelta, ir.ReasoningDelta)):
            if not ev.text:
                return b""
            self.t_first = self.t_first or time.monotonic_ns()
            return self._delta(ev.text, "") if isinstance(ev, ir.TextDelta) else self._delta("", ev.text)
        if isinstance(ev, ir.BlockStart) and ev.kind == "tool_call":
            self.tools[ev.index] = (ev.tool_call_id or "", ev.tool_name or "", [])
        elif isinstance(ev, ir.ToolArgsDelta) and ev.index in self.tools:
            self.tools[ev.index][2].append(ev.fragment)
        elif isinstance(ev, ir.BlockEnd) and ev.index in self.tools:
            return self._end_tool(ev.index)
        elif isinstance(ev, ir.Finish):
            if ev.reason == "error":
                return self.error(ProxyError("server", f"the upstream stopped generating ({ev.raw or 'error'})"))
            self.reason = done_reason(ev.reason)
        elif isinstance(ev, ir.UsageEvent):
            self.usage = ev.usage
        elif isinstance(ev, ir.End):
            return self._end()
        return b""  # Start, text/reasoning BlockStart and BlockEnd, signatures: nothing to say

    def _end_tool(self, index: int) -> bytes:
        call_id, name, fragments = self.tools.pop(index)
        self.t_first = self.t_first or time.monotonic_ns()
        n, self.n_tools = self.n_tools, self.n_tools + 1
        return self._tool(ir.ToolCall(id=call_id, name=name, arguments="".join(fragments)), n)

    def _end(self) -> bytes:
        self.closed = True
        now = time.monotonic_ns()
        first = self.t_first or now
        fields = {"done": True, "done_reason": self.reason, **counts(self.usage, first - self.t0, now - first)}
        return self._final(fields)

    def error(self, err: ProxyError) -> bytes:
        if self.closed:
            return b""
        self.closed = True
        return jsonio.dumps({"error": err.message}) + b"\n"


class ChatStreamEncoder(_StreamEncoder):
    """`/api/chat` lines: `{"model","created_at","message":{"role":"assistant","content",...},"done"}`."""

    __slots__ = ()

    def _delta(self, text: str, thinking: str) -> bytes:
        msg = {"role": "assistant", "content": text}
        if thinking:
            msg["thinking"] = thinking
        return self._line({"message": msg, "done": False})

    def _tool(self, call: ir.ToolCall, index: int) -> bytes:
        msg = {"role": "assistant", "content": "", "tool_calls": [tool_call(call, index)]}
        return self._line({"message": msg, "done": False})

    def _final(self, fields: dict[str, Any]) -> bytes:
        return self._line({"message": {"role": "assistant", "content": ""}, **fields})


class GenerateStreamEncoder(_StreamEncoder):
    """`/api/generate` lines: `{"model","created_at","response","thinking"?,"done"}`; no tool slot."""

    __slots__ = ()

    def _delta(self, text: str, thinking: str) -> bytes:
        obj: dict[str, Any] = {"response": text}
        if thinking:
            obj["thinking"] = thinking
        obj["done"] = False
        return self._line(obj)

    def _tool(self, call: ir.ToolCall, index: int) -> bytes:
        return b""

    def _final(self, fields: dict[str, Any]) -> bytes:
        return self._line({"response": "", **fields})


# --------------------------------------------------------------------------------------------------
# Frontend


NUM_PREDICT = (("options", "num_predict"),)  # the client's cap on completion tokens


class OllamaFrontend:
    """Ollama's native API for clients.  Stateless."""

    name: ClassVar[str] = "ollama"
    stream_content_type: ClassVar[str] = "application/x-ndjson"
    # ollama-python sends OLLAMA_API_KEY (or a configured header) as a bearer token.
    client_key = (BEARER,)
    rate_limit_headers = (X_RATELIMIT,)
    error_prefixes = ("/api/",)
    stream_framing: ClassVar[str] = "ndjson"
    # Pass-through: only the final line (and non-streamed answers) carry token counts.
    usage_markers: ClassVar[tuple[bytes, ...]] = (b'"eval_count"', b'"prompt_eval_count"')

    def routes(self) -> list[Route]:
        # Ollama streams chat and generate when the request has no "stream".
        return [
            ApiRoute("/api/chat", InBody(ChatOp("chat", self.parse_chat, self.render_chat, self.stream_encoder,
                                                NUM_PREDICT), stream_default=True)),
            ApiRoute("/api/generate", InBody(ChatOp("generate", self.parse_completion, self.render_completion,
                                                    self.completion_stream_encoder, NUM_PREDICT), stream_default=True)),
            ApiRoute("/api/embed", InBody(EmbeddingsOp("embed", self.parse_embeddings, self.render_embeddings))),
            ModelList("/api/tags", self.render_models),
            StaticInfo("/api/version", self.render_version),
        ]

    # -- requests ------------------------------------------------------------------------------------
    def parse_chat(self, body: bytes, raw: TopLevel | None = None) -> ir.ChatRequest:
        return parse_chat(body, raw)

    def parse_completion(self, body: bytes, raw: TopLevel | None = None) -> ir.ChatRequest:
        return parse_generate(body, raw)

    def parse_embeddings(self, body: bytes) -> ir.EmbeddingRequest:
        return parse_embed(body)

    # -- responses -----------------------------------------------------------------------------------
    def render_chat(self, resp: ir.ChatResponse, model: str) -> bytes:
        c = _choice(resp)
        msg: dict[str, Any] = {"role": "assistant", "content": _texts(c.parts, ir.Text)}
        thinking = _texts(c.parts, ir.Reasoning)
        if thinking:
            msg["thinking"] = thinking
        calls = [p for p in c.parts if isinstance(p, ir.ToolCall)]
        if calls:
            msg["tool_calls"] = [tool_call(p, k) for k, p in enumerate(calls)]
        return jsonio.dumps({
            "model": model, "created_at": created_at(), "message": msg,
            "done": True, "done_reason": done_reason(c.finish_reason), **counts(resp.usage),
        })

    def render_completion(self, resp: ir.ChatResponse, model: str) -> bytes:
        c = _choice(resp)
        out: dict[str, Any] = {"model": model, "created_at": created_at(), "response": _texts(c.parts, ir.Text)}
        thinking = _texts(c.parts, ir.Reasoning)
        if thinking:
            out["thinking"] = thinking
        return jsonio.dumps({**out, "done": True, "done_reason": done_reason(c.finish_reason), **counts(resp.usage)})

    def render_embeddings(self, resp: ir.EmbeddingResponse, model: str, encoding_format: str | None = None) -> bytes:
        """`encoding_format` is part of the shared embeddings contract; Ollama has only float lists."""
        u = resp.usage or ir.Usage()
        return jsonio.dumps({
            "model": model, "embeddings": resp.data,
            "total_duration": 0, "load_duration": 0, "prompt_eval_count": u.input_tokens,
        })

    def render_models(self, names: list[str]) -> bytes:
        return jsonio.dumps({"models": [_model_entry(n) for n in names]})

    def render_version(self) -> bytes:
        return jsonio.dumps({"version": API_VERSION})

    # -- streams -------------------------------------------------------------------------------------
    def stream_encoder(self, req: ir.ChatRequest, model: str) -> ChatStreamEncoder:
        return ChatStreamEncoder(req, model)

    def completion_stream_encoder(self, req: ir.ChatRequest, model: str) -> GenerateStreamEncoder:
        return GenerateStreamEncoder(req, model)

    # -- errors --------------------------------------------------------------------------------------
    def render_error(self, err: ProxyError) -> tuple[int, bytes]:
        return err.status, jsonio.dumps({"error": err.message})

    # -- pass-through to Ollama backends: NDJSON lines relayed as they are ----------------------------
    def usage_from_body(self, body: bytes) -> ir.Usage | None:
        return _counts_of(body)

    def usage_from_event(self, data: bytes) -> ir.Usage | None:
        return _counts_of(data)

    # Ollama always reports its counts in the final line: the body is never changed for metrics.
    def prepare_passthrough(self, raw: dict[str, Any], stream: bool) -> bool:
        return False

    def is_stream_end(self, event: SSEEvent) -> bool:
        data = event.data
        return b'"done":true' in data or b'"done": true' in data or data.lstrip().startswith(b'{"error"')

    def is_usage_only(self, data: bytes) -> bool:
        return False


class _Counts(msgspec.Struct):
    prompt_eval_count: int | None = None
    eval_count: int | None = None


_counts_decoder = jsonio.decoder(_Counts)


def _counts_of(data: bytes) -> ir.Usage | None:
    """The token counts of an answer or a final stream line (none on the other lines)."""
    try:
        c = _counts_decoder.decode(data)
    except msgspec.ValidationError:
        return None
    except msgspec.DecodeError:
        raise ProxyError("upstream_protocol", "the backend answered with invalid JSON") from None
    if c.prompt_eval_count is None and c.eval_count is None:
        return None
    return ir.Usage(input_tokens=c.prompt_eval_count or 0, output_tokens=c.eval_count or 0)


def _model_entry(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": "1970-01-01T00:00:00Z",
        "size": 0,
        "digest": hashlib.sha256(name.encode()).hexdigest(),
        "details": {
            "parent_model": "",
            "format": "",
            "family": "",
            "families": None,
            "parameter_size": "",
            "quantization_level": "",
        },
    }
