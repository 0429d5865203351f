"""Ollama native API backend: `/api/chat`, `/api/generate` (legacy prompts) and `/api/embed`.

Quirks of the backend, and what this adapter does about them:
- `stream` defaults to *true* on the server, so it is always sent explicitly.
- `content` is a plain string: text parts are joined with newlines; images move to the message's
  `images` list as raw base64 (a `data:` URL prefix is stripped).  Ollama cannot fetch image URLs and
  adapters do no I/O, so an http(s) image URL is refused (400 `unsupported`).
- Tool-call arguments are JSON *objects*: the IR's raw string is parsed on the way out (invalid JSON or
  a non-object -> 400) and answers are rendered back as one compact JSON string fragment.
- Tool results need the function name (`tool_name`): it is recovered from the request history
  (assistant tool-call id -> name) and sent next to `tool_call_id`.  There is no error flag, so an
  `is_error` result is sent as "Error: <text>".
- There is no `tool_choice`.  `auto` is the default, `none` omits `tools`; `required` and a named tool
  cannot be expressed: with the model's `unsupported_params: error` they are refused (400), with
  `drop` the tools are sent and the model chooses as with `auto`.  (`tool_choice` is therefore in
  `supported_params`: the partial support is decided here, where the mode is known.)
- No `parallel_tool_calls`, `n`, `logit_bias`, `logprobs`, `user`, `metadata`: not in
  `supported_params`, so the shared policy drops or refuses them.
- Renamed: sampling parameters move under `options`; `max_tokens` -> `options.num_predict`,
  `repetition_penalty` -> `options.repeat_penalty`, `stop` -> `options.stop`, `response_format` ->
  `format` ("json" or the schema), `reasoning` -> `think` (bool or an effort level).
- Reasoning parts in the history are sent back as `thinking` only when they carry no signature or
  redacted data (those belong to another provider and are dropped).
- Answers: `message.thinking` -> reasoning block, `message.content` -> text block, tool calls arrive
  whole; ids `call_<24 alnum>` are synthesised when the server sends none (older releases).  The
  finish reason is derived: `stop` + tool calls -> tool_calls; `length` -> length; anything else
  (`load`, `unload`, absent) -> stop.  Ollama never says which stop sequence matched.
- Metrics are `omitempty` in Go: a missing `prompt_eval_count` (prompt fully cached) counts as 0.
- There is no response id: one is synthesised.
- Errors are `{"error": "<string>"}`, also as an NDJSON line after a 200 status.
- Ollama clients on an Ollama backend are relayed byte for byte (family "ollama"): only `model` is
  rewritten, and the configured `keep_alive` / `think` / `num_ctx` / `options` are added where the
  client did not set them (the body is then re-encoded).
- `num_ctx` (backend option) matters: Ollama silently truncates prompts longer than its small
  default context window.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from . import ir, jsonio
from .base import Backend, HttpRequest, Target
from .common import (inline_image, json_headers, merge_client_extra, merge_params, parse_tool_arguments,
                     tool_names_by_id)
from .errors import ProxyError, from_upstream, unsupported
from .ollama_stream import OllamaStream, decode_line, embed_decoder, error_text

# --------------------------------------------------------------------------------------------------
# Request

_SAMPLING = (  # IR field -> Ollama option
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("top_k", "top_k"),
    ("min_p", "min_p"),
    ("seed", "seed"),
    ("repetition_penalty", "repeat_penalty"),
    ("presence_penalty", "presence_penalty"),
    ("frequency_penalty", "frequency_penalty"),
)

# reasoning effort -> Ollama `think` (levels per api/types.go ThinkValue; unknown efforts mean "on")
_EFFORT_THINK: dict[str, bool | str] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
    "max": "max",
}


class Options(msgspec.Struct, forbid_unknown_fields=True):
    keep_alive: str | int | None = None  # "5m", or seconds; 0 unloads after the request
    num_ctx: int | None = None  # context window (the server default silently truncates long prompts)
    think: bool | str | None = None  # used when the request says nothing about reasoning
    options: dict[str, Any] = msgspec.field(default_factory=dict)  # extra Ollama options, always sent


def _think(reasoning: ir.ReasoningConfig | None, default: bool | str | None) -> bool | str | None:
    if reasoning is None:
        return default
    if reasoning.enabled is False:
        return False
    if reasoning.effort:
        return _EFFORT_THINK.get(reasoning.effort.lower(), True)
    return True


def _image_base64(img: ir.Image) -> str:
    return inline_image(img, "ollama", "messages")[1]


def _tool_message(res: ir.ToolResult, names: dict[str, str]) -> dict[str, Any]:
    text = "\n".join(p.text for p in res.content if isinstance(p, ir.Text))
    out: dict[str, Any] = {"role": "tool", "content": f"Error: {text}" if res.is_error else text}
    name = res.name or names.get(res.tool_call_id)
    if name:
        out["tool_name"] = name
    if res.tool_call_id:
        out["tool_call_id"] = res.tool_call_id
    images = [_image_base64(p) for p in res.content if isinstance(p, ir.Image)]
    if images:
        out["images"] = images
    return out


def _message(msg: ir.Message, names: dict[str, str]) -> list[dict[str, Any]]:
    """One IR message -> Ollama messages: each tool result its own `tool` message, results first."""
    out = [_tool_message(p, names) for p in msg.parts if isinstance(p, ir.ToolResult)]
    rest = [p for p in msg.parts if not isinstance(p, ir.ToolResult)]
    if out and not rest:
        return out
    texts, images, calls, thinking = [], [], [], []
    for p in rest:
        if isinstance(p, ir.Text):
            texts.append(p.text)
        elif isinstance(p, ir.Image):
            images.append(_image_base64(p))
        elif isinstance(p, ir.ToolCall):
            args = parse_tool_arguments(p.arguments, p.name)
            call: dict[str, Any] = {"function": {"name": p.name, "arguments": args}}
            if p.id:
                call["id"] = p.id
            calls.append(call)
        elif p.text and p.signature is None and p.redacted_data is None:  # Reasoning
            thinking.append(p.text)
    m: dict[str, Any] = {"role": msg.role, "content": "\n".join(texts)}
    if images:
        m["images"] = images
    if calls:
        m["tool_calls"] = calls
    if thinking:
        m["thinking"] = "".join(thinking)
    out.append(m)
    return out


def _format(rf: ir.ResponseFormat | None) -> Any:
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_schema" and rf.schema is not None:
        return rf.schema
    return "json"


# --------------------------------------------------------------------------------------------------
# Backend


class OllamaBackend(Backend):
    provider: ClassVar[str] = "ollama"
    family: ClassVar[str | None] = "ollama"
    Options: ClassVar[type[msgspec.Struct]] = Options
    supported_params: ClassVar[frozenset[str]] = frozenset(
        {
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "presence_penalty",
            "frequency_penalty",
            "repetition_penalty",
            "seed",
            "stop",
            "response_format",
            "reasoning",
            "tools",
            "tool_choice",  # auto and none only; required / named are decided in chat_request
        }
    )
    renamed_params: ClassVar[Mapping[str, str]] = {
        "max_tokens": "options.num_predict",
        "repetition_penalty": "options.repeat_penalty",
        "temperature": "options.temperature",
        "top_p": "options.top_p",
        "top_k": "options.top_k",
        "min_p": "options.min_p",
        "seed": "options.seed",
        "presence_penalty": "options.presence_penalty",
        "frequency_penalty": "options.frequency_penalty",
        "stop": "options.stop",
        "response_format": "format",
        "reasoning": "think",
    }

    options: Options

    def chat_request(self, req: ir.ChatRequest, target: Target) -> HttpRequest:
        body: dict[str, Any] = {"model": target.model, "stream": req.stream}
        if req.prompt is not None:
            path = "/api/generate"
            body["prompt"] = req.prompt
            body["raw"] = True  # a legacy completion prompt is sent verbatim, without the model's template
        else:
            path = "/api/chat"
            body["messages"] = self._messages(req)
            tools = self._tools(req, target)
            if tools:
                body["tools"] = tools
        fmt = _format(req.response_format)
        if fmt is not None:
            body["format"] = fmt
        options = self._options(req, target)
        if options:
            body["options"] = options
        if self.options.keep_alive is not None:
            body["keep_alive"] = self.options.keep_alive
        think = _think(req.reasoning, self.options.think)
        if think is not None:
            body["think"] = think
        merge_client_extra(body, req, "ollama", nested="options")  # keep_alive, num_ctx, suffix, ...
        merge_params(body, target.params, nested="options")
        return HttpRequest(
            url=self.base_url + path,
            body=jsonio.dumps(body),
            headers=json_headers(self.api_key, self.extra_headers),
            stream=req.stream,
        )

    def _messages(self, req: ir.ChatRequest) -> list[dict[str, Any]]:
        names = tool_names_by_id(req.messages)
        out: list[dict[str, Any]] = []
        if req.system:
            out.append({"role": "system", "content": "\n".join(t.text for t in req.system)})
        for msg in req.messages:
            out += _message(msg, names)
        return out

    @staticmethod
    def _tools(req: ir.ChatRequest, target: Target) -> list[dict[str, Any]]:
        choice = req.tool_choice
        if not req.tools or (choice is not None and choice.mode == "none"):
            return []
        if choice is not None and choice.mode in ("required", "tool") and target.unsupported_params == "error":
            raise unsupported(
                "the ollama backend cannot force tool use (no tool_choice); only 'auto' and 'none' are supported",
                param="tool_choice",
            )
        out = []
        for t in req.tools:
            fn: dict[str, Any] = {"name": t.name, "parameters": t.parameters}
            if t.description is not None:
                fn["description"] = t.description
            out.append({"type": "function", "function": fn})
        return out

    def _options(self, req: ir.ChatRequest, target: Target) -> dict[str, Any]:
        opts = dict(self.options.options)
        if self.options.num_ctx is not None:
            opts["num_ctx"] = self.options.num_ctx
        for field, option in _SAMPLING:
            value = getattr(req, field)
            if value is not None:
                opts[option] = value
        max_tokens = req.max_tokens if req.max_tokens is not None else target.default_max_tokens
        if max_tokens is not None:
            opts["num_predict"] = max_tokens
        if req.stop:
            opts["stop"] = list(req.stop)
        return opts

    def chat_response(self, body: bytes, req: ir.ChatRequest, target: Target) -> ir.ChatResponse:
        decoder = OllamaStream()
        events: list[ir.Event] = []
        decoder.apply(decode_line(body), events)
        if not decoder.done:
            raise ProxyError("upstream_protocol", "ollama answer is not a complete (done) response")
        return ir.fold_events(events, model=target.model, id=decoder.id, created=int(time.time()))

    def stream_decoder(self, req: ir.ChatRequest, target: Target) -> OllamaStream:
        return OllamaStream()

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProxyError:
        try:
            message = error_text(jsonio.loads(body).get("error"))
        except (jsonio.DecodeError, AttributeError):
            message = ""  # not Ollama's shape: the raw body never reaches the client
        return from_upstream(status, message, headers, code="model_not_found" if status == 404 else None)

    # -- embeddings ------------------------------------------------------------------------------
    def embeddings_request(self, req: ir.EmbeddingRequest, target: Target) -> HttpRequest:
        if any(not isinstance(item, str) for item in req.input):
            raise unsupported("the ollama backend embeds text only, not token arrays", param="input")
        body: dict[str, Any] = {"model": target.model, "input": list(req.input)}
        if req.dimensions is not None:
            body["dimensions"] = req.dimensions
        if self.options.keep_alive is not None:
            body["keep_alive"] = self.options.keep_alive
        if self.options.num_ctx is not None:
            body["options"] = {"num_ctx": self.options.num_ctx}
        merge_params(body, target.params, nested="options")
        return HttpRequest(
            url=self.base_url + "/api/embed",
            body=jsonio.dumps(body),
            headers=json_headers(self.api_key, self.extra_headers),
        )

    # -- same-format pass-through ---------------------------------------------------------------------
    def passthrough_request(
        self, op: str, body: bytes, stream: bool, target: Target, client_headers: Mapping[str, str]
    ) -> HttpRequest:
        if op not in _PASSTHROUGH_PATHS:
            raise ProxyError("not_found", f"operation {op!r} is not available on Ollama backends")
        defaults = self._configured_defaults(op)
        if defaults:
            body = _with_defaults(body, defaults)
        return HttpRequest(url=self.base_url + _PASSTHROUGH_PATHS[op], body=body,
                           headers=json_headers(self.api_key, self.extra_headers), stream=stream)

    def _configured_defaults(self, op: str) -> dict[str, Any]:
        o = self.options
        out: dict[str, Any] = {}
        if o.keep_alive is not None:
            out["keep_alive"] = o.keep_alive
        if o.think is not None and op != "embed":
            out["think"] = o.think
        options = {**o.options, **({"num_ctx": o.num_ctx} if o.num_ctx is not None else {})}
        if options:
            out["options"] = options
        return out

    def embeddings_response(self, body: bytes, req: ir.EmbeddingRequest) -> ir.EmbeddingResponse:
        try:
            resp = embed_decoder.decode(body)
        except (jsonio.DecodeError, jsonio.ValidationError):
            raise ProxyError("upstream_protocol", "ollama sent an embeddings answer that cannot be parsed") from None
        usage = ir.Usage(input_tokens=resp.prompt_eval_count or 0)
        return ir.EmbeddingResponse(model=req.model, data=resp.embeddings, usage=usage)


_PASSTHROUGH_PATHS = {"chat": "/api/chat", "generate": "/api/generate", "embed": "/api/embed"}


def _with_defaults(body: bytes, defaults: dict[str, Any]) -> bytes:
    """The client's body with the backend's configured fields added where the client set none
    (`options` merged key by key, the client's keys winning)."""
    try:
        obj = jsonio.loads(body)
    except jsonio.DecodeError:
        raise bad_request("request body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise bad_request("request body must be a JSON object")
    for key, value in defaults.items():
        if key == "options" and isinstance(obj.get("options"), dict):
            obj["options"] = {**value, **obj["options"]}
        else:
            obj.setdefault(key, value)
    return jsonio.dumps(obj)
