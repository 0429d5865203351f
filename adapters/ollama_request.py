"""Client requests in Ollama's native format -> IR: `POST /api/chat`, `/api/generate`, `/api/embed`.

The Structs mirror Ollama's `api/types.go` (checked against ollama-python's `_types.py`).  Decisions
(what the IR cannot hold, and what we do):
- `stream` absent means *true* (Ollama streams by default); `include_usage` is always on, since every
  Ollama answer ends with its counts.
- Leading `system` messages become the system prompt; later ones stay system messages in place.
- `images` are raw base64: the media type is guessed from the magic bytes (PNG, JPEG, GIF, WebP),
  `image/png` when unknown; a `data:` URL is tolerated.  Text that is not base64 is a 400.
- Assistant `tool_calls` carry argument *objects*: they become the IR's compact JSON string.  Calls
  without an `id` (older clients, ollama-python) get deterministic ids `call_<message>_<call>`, so the
  same history yields the same ids on every turn.
- Tool results name the function (`tool_name`), and only newer clients send `tool_call_id`.  A known
  `tool_call_id` wins; otherwise the result answers the first unanswered call of the latest assistant
  turn with that name, else the first unanswered call (order).  A tool result with no call to answer
  is a 400: OpenAI and Anthropic backends would refuse it with a less helpful message.
- `thinking` on assistant messages -> unsigned ir.Reasoning; `think` -> ReasoningConfig (true/false ->
  enabled, "low" / "medium" / "high" / "max" -> effort).
- `format`: "json" -> json_object, a schema object -> json_schema, "" -> none.
- `options`: temperature, top_p, top_k, min_p, seed, num_predict (-> max_tokens; negative values mean
  "no limit" in Ollama and set none), stop, repeat_penalty (-> repetition_penalty), presence_penalty,
  frequency_penalty map to the IR; every other option (num_ctx, typical_p, mirostat, ...) is kept in
  `extra["options"]`, and `keep_alive`, `logprobs`, `truncate`, `shift` ... in `extra` by name.  No
  current backend merges extras of the "ollama" source format, so they are carried, not honoured.
- `/api/generate`: with `raw: true` the prompt is sent verbatim (`ChatRequest.prompt`, as a legacy
  completion); images cannot go with a raw prompt (400).  Without `raw` Ollama applies the model's chat
  template, so the prompt becomes one user message (with `images`) and `system` the system prompt:
  every backend, chat-only ones included, can then answer it.  `template`, `suffix` and `context` go
  to `extra` (not honoured).
- An empty `/api/generate` prompt or empty `/api/chat` messages is Ollama's "load the model" call;
  the gateway loads nothing, so it answers 400 saying so rather than sending an empty prompt upstream.
- `/api/embed`: `input` is a string or a list of strings (an empty list is a 400); `truncate`,
  `keep_alive` and `options` have no IR slot and are dropped.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

import msgspec
from msgspec import Struct

from . import ir, jsonio
from .jsonio import TopLevel
from .common import decode_client_body, validation_error
from .errors import bad_request, unsupported

# --------------------------------------------------------------------------------------------------
# Wire types


class FunctionIn(Struct):
    name: str
    arguments: dict[str, Any] = {}
    index: int | None = None


class ToolCallIn(Struct):
    function: FunctionIn
    id: str | None = None
    type: str | None = None


class MessageIn(Struct):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    images: list[str] | None = None
    thinking: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class ToolFunctionIn(Struct):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolIn(Struct):
    function: ToolFunctionIn
    type: str = "function"


class Options(Struct):
    """The options the IR models; the rest of the `options` object goes to `extra["options"]`."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    num_predict: int | None = None
    stop: str | list[str] | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


_OPTION_FIELDS = frozenset(Options.__struct_fields__)

Think = bool | Literal["low", "medium", "high", "max"]


class _Common(Struct):
    model: str
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    stream: bool | None = None
    think: Think | None = None


class ChatIn(_Common):
    messages: list[MessageIn] = []
    tools: list[ToolIn] | None = None


class GenerateIn(_Common):
    prompt: str | None = None
    system: str | None = None
    images: list[str] | None = None
    raw: bool | None = None


class EmbedIn(Struct):
    model: str
    input: str | list[str]
    dimensions: int | None = None
    truncate: bool | None = None
    keep_alive: str | float | None = None
    options: dict[str, Any] | None = None


_chat_decoder = jsonio.decoder(ChatIn)
_generate_decoder = jsonio.decoder(GenerateIn)
_embed_decoder = jsonio.decoder(EmbedIn)
# Top-level fields mapped above; the rest go to `extra` (keep_alive, logprobs, template, suffix, ...).
_CHAT_FIELDS = frozenset(ChatIn.__struct_fields__)
_GENERATE_FIELDS = frozenset(GenerateIn.__struct_fields__)


# --------------------------------------------------------------------------------------------------
# Images

# (magic bytes, offset, media type); WebP is "RIFF....WEBP", so its tag sits at offset 8.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF8", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
)


def image(data: str, param: str) -> ir.Image:
    """A raw base64 image (or a base64 `data:` URL) -> ir.Image with a guessed media type."""
    if data.startswith("data:"):
        header, sep, payload = data[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64":
            raise bad_request("image data URLs must be base64-encoded", param=param)
        return ir.Image(media_type=media_type or "image/png", data=payload)
    try:
        head = base64.b64decode(data[:16], validate=True)  # 16 characters -> the first 12 bytes
    except (binascii.Error, ValueError):
        raise bad_request("images must be base64-encoded image data", param=param) from None
    media_type = next((mt for magic, at, mt in _MAGIC if head[at:at + len(magic)] == magic), "image/png")
    return ir.Image(media_type=media_type, data=data)


def _images(images: list[str] | None, param: str) -> list[ir.Part]:
    return [image(d, f"{param}[{k}]") for k, d in enumerate(images or ())]


# --------------------------------------------------------------------------------------------------
# Messages


class _Pending:
    """Tool calls of the latest assistant turn that no tool result has answered yet."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls: list[ir.ToolCall] = []

    def answer(self, m: MessageIn, path: str) -> ir.ToolCall | None:
        """The call a tool result answers (removed from the pending list); None for an unknown id."""
        if m.tool_call_id:
            match = next((c for c in self.calls if c.id == m.tool_call_id), None)
        else:
            match = next((c for c in self.calls if c.name == m.tool_name), None) if m.tool_name else None
            match = match or (self.calls[0] if self.calls else None)
            if match is None:
                raise bad_request(
                    f"{path}: a tool result must follow an assistant message with a tool call it answers",
                    param=path,
                )
        if match is not None:
            self.calls.remove(match)
        return match


def _assistant(m: MessageIn, i: int) -> list[ir.Part]:
    parts: list[ir.Part] = []
    if m.thinking:
        parts.append(ir.Reasoning(text=m.thinking))  # unsigned: no backend forwards it as signed
    if m.content:
        parts.append(ir.Text(text=m.content))
    for j, tc in enumerate(m.tool_calls or ()):
        args = jsonio.dumps_str(tc.function.arguments)
        parts.append(ir.ToolCall(id=tc.id or f"call_{i}_{j}", name=tc.function.name, arguments=args))
    return parts


def _tool_result(m: MessageIn, pending: _Pending, path: str) -> ir.ToolResult:
    call = pending.answer(m, path)
    content: list[ir.Text | ir.Image] = [ir.Text(text=m.content)] if m.content else []
    content += _images(m.images, f"{path}.images")  # type: ignore[arg-type]
    call_id = call.id if call is not None else m.tool_call_id or ""
    return ir.ToolResult(tool_call_id=call_id, content=content, name=call.name if call else m.tool_name)


def messages_to_ir(msgs: list[MessageIn]) -> tuple[list[ir.Text], list[ir.Message]]:
    """(leading system prompt, the rest): one IR message per Ollama message."""
    system: list[ir.Text] = []
    out: list[ir.Message] = []
    pending = _Pending()
    for i, m in enumerate(msgs):
        path = f"messages[{i}]"
        if m.role == "system":
            text = ir.Text(text=m.content or "")
            if out:
                out.append(ir.Message(role="system", parts=[text]))
            else:
                system.append(text)
        elif m.role == "user":
            # An empty message stays one empty text part (backends reject a message without parts).
            parts: list[ir.Part] = [ir.Text(text=m.content or "")] if m.content or not m.images else []
            out.append(ir.Message(role="user", parts=parts + _images(m.images, f"{path}.images")))
        elif m.role == "assistant":
            parts = _assistant(m, i)
            pending.calls = [p for p in parts if isinstance(p, ir.ToolCall)]
            out.append(ir.Message(role="assistant", parts=parts))
        else:
            out.append(ir.Message(role="tool", parts=[_tool_result(m, pending, path)]))
    return system, out


# --------------------------------------------------------------------------------------------------
# Tools, format, options, think


def tools_to_ir(tools: list[ToolIn] | None) -> list[ir.ToolDef]:
    out = []
    for k, t in enumerate(tools or ()):
        if t.type != "function":
            raise unsupported(f"tools of type {t.type!r} are not supported; use function tools", param=f"tools[{k}]")
        fn = t.function
        if fn.parameters is None:
            out.append(ir.ToolDef(name=fn.name, description=fn.description))
        else:
            out.append(ir.ToolDef(name=fn.name, description=fn.description, parameters=fn.parameters))
    return out


def format_to_ir(fmt: str | dict[str, Any] | None) -> ir.ResponseFormat | None:
    if fmt is None or fmt == "":
        return None
    if isinstance(fmt, dict):
        return ir.ResponseFormat("json_schema", schema=fmt)
    if fmt == "json":
        return ir.ResponseFormat("json_object")
    raise bad_request(f"format must be \"json\" or a JSON schema object, not {fmt!r}", param="format")


def think_to_ir(think: Think | None) -> ir.ReasoningConfig | None:
    if think is None:
        return None
    if isinstance(think, bool):
        return ir.ReasoningConfig(enabled=think)
    return ir.ReasoningConfig(enabled=True, effort=think)


def _options(raw: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(IR fields, options the IR does not model) from the `options` object."""
    if not raw:
        return {}, {}
    try:
        o = msgspec.convert({k: v for k, v in raw.items() if k in _OPTION_FIELDS}, Options)
    except msgspec.ValidationError as exc:
        err = validation_error(exc, "options")
        raise bad_request(err.message, param=f"options.{err.param}" if err.param else "options") from None
    fields: dict[str, Any] = {
        "temperature": o.temperature,
        "top_p": o.top_p,
        "top_k": o.top_k,
        "min_p": o.min_p,
        "seed": o.seed,
        "repetition_penalty": o.repeat_penalty,
        "presence_penalty": o.presence_penalty,
        "frequency_penalty": o.frequency_penalty,
        "stop": [o.stop] if isinstance(o.stop, str) else list(o.stop or ()),
    }
    if o.num_predict is not None and o.num_predict >= 0:  # -1 unlimited, -2 fill the context
        fields["max_tokens"] = o.num_predict
    return fields, {k: v for k, v in raw.items() if k not in _OPTION_FIELDS}


def _common(r: _Common, body: bytes, known: frozenset[str], raw: TopLevel | None) -> dict[str, Any]:
    fields, other_options = _options(r.options)
    extra = jsonio.unknown_fields(body, known, raw)
    if other_options:
        extra["options"] = other_options
    return dict(
        model=r.model,
        response_format=format_to_ir(r.format),
        reasoning=think_to_ir(r.think),
        stream=True if r.stream is None else r.stream,
        include_usage=True,
        extra=extra,
        source_format="ollama",
        **fields,
    )


# --------------------------------------------------------------------------------------------------
# Requests


def parse_chat(body: bytes, raw: TopLevel | None = None) -> ir.ChatRequest:
    r: ChatIn = decode_client_body(_chat_decoder, body, "chat request")
    if not r.messages:
        raise bad_request(
            "messages must not be empty (loading a model is not available through this gateway)", param="messages"
        )
    system, messages = messages_to_ir(r.messages)
    return ir.ChatRequest(messages=messages, system=system, tools=tools_to_ir(r.tools),
                          **_common(r, body, _CHAT_FIELDS, raw))


def parse_generate(body: bytes, raw: TopLevel | None = None) -> ir.ChatRequest:
    r: GenerateIn = decode_client_body(_generate_decoder, body, "generate request")
    if not r.prompt and not r.images:
        raise bad_request(
            "prompt must not be empty (loading a model is not available through this gateway)", param="prompt"
        )
    common = _common(r, body, _GENERATE_FIELDS, raw)
    if r.raw:
        if r.images:
            raise unsupported("images cannot be sent with a raw prompt through this gateway", param="images")
        return ir.ChatRequest(prompt=r.prompt or "", **common)
    parts: list[ir.Part] = [ir.Text(text=r.prompt)] if r.prompt else []
    user = ir.Message(role="user", parts=parts + _images(r.images, "images"))
    system = [ir.Text(text=r.system)] if r.system else []
    return ir.ChatRequest(messages=[user], system=system, **common)


def parse_embed(body: bytes) -> ir.EmbeddingRequest:
    r: EmbedIn = decode_client_body(_embed_decoder, body, "embed request")
    inputs = [r.input] if isinstance(r.input, str) else r.input
    if not inputs:
        raise bad_request("input must not be empty", param="input")
    return ir.EmbeddingRequest(model=r.model, input=inputs, dimensions=r.dimensions)
