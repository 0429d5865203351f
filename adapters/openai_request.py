"""Client requests in OpenAI format -> IR: /v1/chat/completions, /v1/completions, /v1/embeddings.

The msgspec Structs mirror openai-python's `*_create_params` types and are strict where OpenAI is
(roles, part types, tool_choice forms), so a bad request fails with a 400 naming the field path.

Decisions (what the IR cannot hold, and what we do):
- `input_audio` and `file` content parts: rejected (400 `unsupported`), the IR has no audio/file part.
- `custom` tools and `custom` tool_choice (free-text tools): rejected, not portable.
- `tool_choice: {"type":"allowed_tools", ...}`: the tool list is narrowed to the allowed tools and the
  mode (`auto` / `required`) kept -- the model can then call exactly what OpenAI would let it call.
- Deprecated `functions` / `function_call` become tools / tool_choice; the deprecated `function` role
  and assistant `function_call` get synthesised ids (`call_fn_<message index>`), paired by name.
- `refusal` (assistant history) becomes text; `reasoning_content` / `reasoning` become ir.Reasoning;
  a tool call's `extra_content.google.thought_signature` becomes Gemini's signed reasoning just before
  the call, and `reasoning_details` entries of format `anthropic-claude-v1` Anthropic's thinking blocks
  (the unsigned `reasoning_content` text is then not repeated) (`openai_signatures`).
- `reasoning_effort` -> ReasoningConfig(effort=...); "none" also sets enabled=False.
- Fields the IR does not model (`store`, `service_tier`, `prediction`, vLLM `guided_*`,
  `structured_outputs`, `chat_template_kwargs`, ...) are kept verbatim in `req.extra`.
- /v1/completions: `prompt` must be one string (or a one-string list); `max_tokens` defaults to 16;
  `echo`, `suffix`, `best_of` go to `extra` (honoured by OpenAI-family backends, ignored by others);
  the integer `logprobs` becomes logprobs=True + top_logprobs=N.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from msgspec import Struct

from . import ir, jsonio
from .jsonio import TopLevel
from .common import decode_client_body
from .errors import ProxyError, bad_request, unsupported
from .openai_signatures import ExtraContent, ReasoningDetail, details_parts, signature_part
from .openai_tools import (CustomTool, FunctionDef, FunctionName, FunctionTool, JsonObjectFormat, JsonSchemaFormat,
                           TextFormat, ToolChoiceIn, response_format_to_ir, tool_choice_to_ir, tools_to_ir)

# --------------------------------------------------------------------------------------------------
# Content parts


class _Part(Struct, tag_field="type"):
    pass


class TextPart(_Part, tag="text"):
    text: str


class ImageURL(Struct):
    url: str
    detail: str | None = None


class ImagePart(_Part, tag="image_url"):
    image_url: ImageURL


class AudioPart(_Part, tag="input_audio"):
    input_audio: dict[str, Any]


class FilePart(_Part, tag="file"):
    file: dict[str, Any]


class RefusalPart(_Part, tag="refusal"):
    refusal: str


UserPart = Union[TextPart, ImagePart, AudioPart, FilePart]
AssistantPart = Union[TextPart, RefusalPart]

# --------------------------------------------------------------------------------------------------
# Messages


class FunctionCall(Struct):
    name: str
    arguments: str = ""


class ToolCallIn(Struct):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"
    extra_content: ExtraContent | None = None  # Google's convention for thought signatures


class _Msg(Struct, tag_field="role"):
    pass


class SystemMsg(_Msg, tag="system"):
    content: str | list[TextPart]
    name: str | None = None


class DeveloperMsg(_Msg, tag="developer"):
    content: str | list[TextPart]
    name: str | None = None


class UserMsg(_Msg, tag="user"):
    content: str | list[UserPart]
    name: str | None = None


class AssistantMsg(_Msg, tag="assistant"):
    content: str | list[AssistantPart] | None = None
    tool_calls: list[ToolCallIn] | None = None
    function_call: FunctionCall | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    reasoning_details: list[ReasoningDetail] | None = None  # OpenRouter's convention (openai_signatures)
    name: str | None = None


class ToolMsg(_Msg, tag="tool"):
    tool_call_id: str
    content: str | list[TextPart]


class FunctionMsg(_Msg, tag="function"):
    name: str
    content: str | None = None


Msg = Union[SystemMsg, DeveloperMsg, UserMsg, AssistantMsg, ToolMsg, FunctionMsg]

class StreamOptions(Struct):
    include_usage: bool | None = None


# --------------------------------------------------------------------------------------------------
# Requests


class _Sampling(Struct):
    """Fields /v1/chat/completions and /v1/completions share (vLLM's extras included)."""

    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    seed: int | None = None
    user: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None


class ChatRequestIn(_Sampling):
    messages: list[Msg] = []
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: Union[TextFormat, JsonObjectFormat, JsonSchemaFormat, None] = None
    tools: list[Union[FunctionTool, CustomTool]] | None = None
    tool_choice: ToolChoiceIn | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDef] | None = None
    function_call: Union[Literal["none", "auto"], FunctionName, None] = None
    reasoning_effort: str | None = None
    metadata: dict[str, Any] | None = None


class CompletionRequestIn(_Sampling):
    prompt: Any = None
    logprobs: int | None = None


class EmbeddingRequestIn(Struct):
    model: str
    input: str | list[Any]  # msgspec allows one array type per union; items are checked below
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = None
    user: str | None = None


_chat_decoder = jsonio.decoder(ChatRequestIn)
_completion_decoder = jsonio.decoder(CompletionRequestIn)
_embedding_decoder = jsonio.decoder(EmbeddingRequestIn)
_CHAT_FIELDS = frozenset(ChatRequestIn.__struct_fields__)
_COMPLETION_FIELDS = frozenset(CompletionRequestIn.__struct_fields__)


# --------------------------------------------------------------------------------------------------
# Messages -> IR


def _texts(content: str | list[TextPart]) -> list[ir.Text]:
    if isinstance(content, str):
        return [ir.Text(text=content)]
    return [ir.Text(text=p.text) for p in content]


def image_from_url(url: str, detail: str | None = None) -> ir.Image:
    """An OpenAI image URL (http(s), or a base64 data URL split into media type and data) as IR."""
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if sep and encoding == "base64":
            return ir.Image(media_type=media_type or None, data=data, detail=detail)
    return ir.Image(url=url, detail=detail)


def _user_parts(content: str | list[UserPart], path: str) -> list[ir.Part]:
    if isinstance(content, str):
        return [ir.Text(text=content)]
    parts: list[ir.Part] = []
    for j, p in enumerate(content):
        if isinstance(p, TextPart):
            parts.append(ir.Text(text=p.text))
        elif isinstance(p, ImagePart):
            parts.append(image_from_url(p.image_url.url, p.image_url.detail))
        else:
            kind = "input_audio" if isinstance(p, AudioPart) else "file"
            raise unsupported(f"content parts of type {kind!r} are not supported", param=f"{path}[{j}]")
    return parts


def _assistant_parts(m: AssistantMsg, i: int) -> list[ir.Part]:
    parts: list[ir.Part] = list(details_parts(m.reasoning_details))
    thought = m.reasoning_content or m.reasoning
    if thought and not parts:  # signed details already hold the reasoning text
        parts.append(ir.Reasoning(text=thought))
    if isinstance(m.content, str):
        if m.content:
            parts.append(ir.Text(text=m.content))
    elif m.content:
        parts += [ir.Text(text=p.text if isinstance(p, TextPart) else p.refusal) for p in m.content]
    if m.refusal and not m.content:
        parts.append(ir.Text(text=m.refusal))
    for tc in m.tool_calls or ():
        signed = signature_part(tc.extra_content)
        if signed is not None:  # the IR places a call's signature just before the call
            parts.append(signed)
        parts.append(ir.ToolCall(id=tc.id, name=tc.function.name, arguments=tc.function.arguments))
    if m.function_call is not None:
        fc = m.function_call
        parts.append(ir.ToolCall(id=f"call_fn_{i}", name=fc.name, arguments=fc.arguments))
    return parts


def _messages(msgs: list[Msg]) -> tuple[list[ir.Text], list[ir.Message]]:
    """(leading system prompt, the rest).  Tool results get their function name from the history."""
    system: list[ir.Text] = []
    out: list[ir.Message] = []
    names: dict[str, str] = {}  # tool_call_id -> function name
    fn_ids: dict[str, str] = {}  # deprecated function_call: name -> latest synthesised id
    for i, m in enumerate(msgs):
        path = f"messages[{i}].content"
        if isinstance(m, (SystemMsg, DeveloperMsg)):
            texts = _texts(m.content)
            if not out:
                system += texts
            else:
                out.append(ir.Message(role="system", parts=list(texts), name=m.name))
        elif isinstance(m, UserMsg):
            out.append(ir.Message(role="user", parts=_user_parts(m.content, path), name=m.name))
        elif isinstance(m, AssistantMsg):
            parts = _assistant_parts(m, i)
            for p in parts:
                if isinstance(p, ir.ToolCall):
                    names[p.id] = p.name
                    if p.id == f"call_fn_{i}":
                        fn_ids[p.name] = p.id
            out.append(ir.Message(role="assistant", parts=parts, name=m.name))
        elif isinstance(m, ToolMsg):
            result = ir.ToolResult(
                tool_call_id=m.tool_call_id, content=list(_texts(m.content)), name=names.get(m.tool_call_id)
            )
            out.append(ir.Message(role="tool", parts=[result]))
        else:
            call_id = fn_ids.get(m.name, f"call_fn_{i}")
            content = [ir.Text(text=m.content)] if m.content else []
            result = ir.ToolResult(tool_call_id=call_id, content=content, name=m.name)
            out.append(ir.Message(role="tool", parts=[result]))
    return system, out


def _stop(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def _common(r: _Sampling) -> ir.ChatRequest:
    """The request with the fields chat and completion requests share; the caller sets the rest.
    One Struct built from keywords: no intermediate dict to build and unpack (a few µs a request)."""
    if r.n is not None and r.n < 1:
        raise bad_request("n must be at least 1", param="n")
    return ir.ChatRequest(
        model=r.model,
        temperature=r.temperature,
        top_p=r.top_p,
        top_k=r.top_k,
        min_p=r.min_p,
        presence_penalty=r.presence_penalty,
        frequency_penalty=r.frequency_penalty,
        repetition_penalty=r.repetition_penalty,
        seed=r.seed,
        stop=_stop(r.stop),
        n=r.n or 1,
        logit_bias=r.logit_bias,
        user=r.user,
        stream=bool(r.stream),
        include_usage=bool(r.stream and r.stream_options and r.stream_options.include_usage),
        source_format="openai",
    )


def parse_chat(body: bytes, raw: TopLevel | None = None) -> ir.ChatRequest:
    r: ChatRequestIn = decode_client_body(_chat_decoder, body, "chat completion request")
    if not r.messages:
        raise bad_request("messages must contain at least one message", param="messages")
    system, messages = _messages(r.messages)
    tool_choice, tools = tool_choice_to_ir(r, tools_to_ir(r))
    reasoning = None
    if r.reasoning_effort is not None:
        off = r.reasoning_effort == "none"
        reasoning = ir.ReasoningConfig(effort=r.reasoning_effort, enabled=False if off else None)
    req = _common(r)
    req.messages, req.system, req.tools, req.tool_choice = messages, system, tools, tool_choice
    req.parallel_tool_calls = r.parallel_tool_calls
    req.max_tokens = r.max_completion_tokens if r.max_completion_tokens is not None else r.max_tokens
    req.response_format = response_format_to_ir(r.response_format)
    req.reasoning = reasoning
    req.logprobs, req.top_logprobs, req.metadata = r.logprobs, r.top_logprobs, r.metadata
    req.extra = jsonio.unknown_fields(body, _CHAT_FIELDS, raw)
    return req


def _prompt(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    raise ProxyError(
        "unsupported", "prompt must be a string or a list holding exactly one string", param="prompt",
        code="unsupported_parameter",
    )


def parse_completion(body: bytes, raw: TopLevel | None = None) -> ir.ChatRequest:
    r: CompletionRequestIn = decode_client_body(_completion_decoder, body, "completion request")
    if r.prompt is None:
        raise bad_request("prompt is required", param="prompt")
    req = _common(r)
    req.prompt = _prompt(r.prompt)
    req.max_tokens = 16 if r.max_tokens is None else r.max_tokens
    req.logprobs = True if r.logprobs is not None else None
    req.top_logprobs = r.logprobs or None
    req.extra = jsonio.unknown_fields(body, _COMPLETION_FIELDS, raw)
    return req


def _embedding_inputs(inp: str | list[Any]) -> list[str] | list[list[int]]:
    """string | string[] | token ids | token-id arrays -> a list of strings or of token-id lists."""
    if isinstance(inp, str):
        return [inp]
    if not inp:
        raise bad_request("input must not be empty", param="input")
    if all(isinstance(x, str) for x in inp):
        return inp
    if all(isinstance(x, int) and not isinstance(x, bool) for x in inp):
        return [inp]
    if all(isinstance(x, list) and x and all(isinstance(t, int) for t in x) for x in inp):
        return inp
    raise bad_request("input must be a string, a list of strings, or token ids", param="input")


def parse_embeddings(body: bytes) -> ir.EmbeddingRequest:
    r: EmbeddingRequestIn = decode_client_body(_embedding_decoder, body, "embeddings request")
    inputs = _embedding_inputs(r.input)
    return ir.EmbeddingRequest(
        model=r.model, input=inputs, dimensions=r.dimensions, encoding_format=r.encoding_format, user=r.user
    )
