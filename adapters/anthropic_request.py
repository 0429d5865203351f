"""Anthropic Messages requests, client side: the wire Structs and client body -> IR (the frontend's
parsing).  The backend builds its bodies in `anthropic_build`.

The wire Structs below follow anthropic-python's `types/*_param.py`.  Unknown fields inside known
objects are ignored (newer API versions add many); unknown *top-level* fields are kept in
`ChatRequest.extra` by the frontend.  Content-block and source unions are tagged on `type`, so a block
type the IR cannot hold fails validation with its JSON path (`messages[0].content[1].type`).
"""

from __future__ import annotations

import re
from typing import Any, Literal, Union

from msgspec import Struct

from . import ir, jsonio
from .common import decode_client_body
from .errors import ProxyError, bad_request, unsupported

# --------------------------------------------------------------------------------------------------
# Wire Structs (requests)


class _Base64Source(Struct, tag="base64", tag_field="type"):
    media_type: str
    data: str


class _UrlSource(Struct, tag="url", tag_field="type"):
    url: str


class _FileSource(Struct, tag="file", tag_field="type"):
    file_id: str


class _TextSource(Struct, tag="text", tag_field="type"):
    data: str
    media_type: str = "text/plain"


class TextBlock(Struct, tag="text", tag_field="type"):
    text: str
    cache_control: dict[str, Any] | None = None


class ImageBlock(Struct, tag="image", tag_field="type"):
    source: Union[_Base64Source, _UrlSource, _FileSource]
    cache_control: dict[str, Any] | None = None


class _ContentSource(Struct, tag="content", tag_field="type"):
    content: Union[str, list[Union[TextBlock, ImageBlock]]]


class DocumentBlock(Struct, tag="document", tag_field="type"):
    source: Union[_Base64Source, _UrlSource, _FileSource, _TextSource, _ContentSource]
    title: str | None = None
    context: str | None = None
    cache_control: dict[str, Any] | None = None


class ToolUseBlock(Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, Any]
    cache_control: dict[str, Any] | None = None


class ToolResultBlock(Struct, tag="tool_result", tag_field="type"):
    tool_use_id: str
    content: Union[str, list[Union[TextBlock, ImageBlock, DocumentBlock]]] = ""
    is_error: bool = False
    cache_control: dict[str, Any] | None = None


class ThinkingBlock(Struct, tag="thinking", tag_field="type"):
    thinking: str
    signature: str = ""


class RedactedThinkingBlock(Struct, tag="redacted_thinking", tag_field="type"):
    data: str


Block = Union[
    TextBlock, ImageBlock, DocumentBlock, ToolUseBlock, ToolResultBlock, ThinkingBlock, RedactedThinkingBlock
]


class WireMessage(Struct):
    role: Literal["user", "assistant", "system"]  # "system" inside messages: newer API versions
    content: Union[str, list[Block]]


class WireTool(Struct):
    name: str
    input_schema: dict[str, Any] | None = None
    description: str | None = None
    type: str | None = None  # absent or "custom" for client tools; versioned names for server tools
    strict: bool | None = None


class _ChoiceAuto(Struct, tag="auto", tag_field="type"):
    disable_parallel_tool_use: bool | None = None


class _ChoiceAny(Struct, tag="any", tag_field="type"):
    disable_parallel_tool_use: bool | None = None


class _ChoiceTool(Struct, tag="tool", tag_field="type"):
    name: str
    disable_parallel_tool_use: bool | None = None


class _ChoiceNone(Struct, tag="none", tag_field="type"):
    pass


class _ThinkingEnabled(Struct, tag="enabled", tag_field="type"):
    budget_tokens: int


class _ThinkingDisabled(Struct, tag="disabled", tag_field="type"):
    pass


class _ThinkingAdaptive(Struct, tag="adaptive", tag_field="type"):
    pass


class _OutputFormat(Struct):
    type: str
    schema: dict[str, Any] | None = None


class _OutputConfig(Struct):
    effort: str | None = None
    format: _OutputFormat | None = None


class _Metadata(Struct):
    user_id: str | None = None


class WireRequest(Struct):
    """`POST /v1/messages` (and, without `max_tokens`, `/v1/messages/count_tokens`)."""

    model: str
    messages: list[WireMessage]
    max_tokens: int | None = None  # required for messages; checked by the caller with a clear error
    system: Union[str, list[TextBlock], None] = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    tools: list[WireTool] | None = None
    tool_choice: Union[_ChoiceAuto, _ChoiceAny, _ChoiceTool, _ChoiceNone, None] = None
    thinking: Union[_ThinkingEnabled, _ThinkingDisabled, _ThinkingAdaptive, None] = None
    metadata: _Metadata | None = None
    output_config: _OutputConfig | None = None


KNOWN_FIELDS = frozenset(WireRequest.__struct_fields__)
_request_decoder = jsonio.decoder(WireRequest)


def decode_request(body: bytes) -> WireRequest:
    """Decode and validate; a ValidationError becomes a 400 naming the field path."""
    return decode_client_body(_request_decoder, body, "request")


# --------------------------------------------------------------------------------------------------
# Client body -> IR


def _image(block: ImageBlock, path: str) -> ir.Image:
    src = block.source
    if isinstance(src, _Base64Source):
        return ir.Image(media_type=src.media_type, data=src.data)
    if isinstance(src, _UrlSource):
        return ir.Image(url=src.url)
    raise unsupported("image sources of type 'file' (Files API) cannot be translated", param=f"{path}.source")


def _document(block: DocumentBlock, path: str) -> list[ir.Text]:
    """Plain-text documents become text (title/context as a header line); PDFs and files cannot."""
    src = block.source
    if isinstance(src, _TextSource):
        texts = [src.data]
    elif isinstance(src, _ContentSource):
        if isinstance(src.content, str):
            texts = [src.content]
        else:
            texts = [b.text for b in src.content if isinstance(b, TextBlock)]
    else:
        raise unsupported(
            "document blocks with a base64, url or file source (PDF) cannot be sent to this backend; "
            "only plain-text documents are translated",
            param=f"{path}.source",
        )
    header = " - ".join(x for x in (block.title, block.context) if x)
    return [ir.Text(text=header + "\n" + t if header else t, cache_control=block.cache_control) for t in texts]


def _result_parts(block: ToolResultBlock, path: str) -> list[ir.Text | ir.Image]:
    if isinstance(block.content, str):
        return [ir.Text(text=block.content)] if block.content else []
    parts: list[ir.Text | ir.Image] = []
    for j, b in enumerate(block.content):
        sub = f"{path}.content[{j}]"
        if isinstance(b, TextBlock):
            parts.append(ir.Text(text=b.text, cache_control=b.cache_control))
        elif isinstance(b, ImageBlock):
            parts.append(_image(b, sub))
        else:
            parts.extend(_document(b, sub))
    return parts


def _user_turn(content: list[Block], path: str, names: dict[str, str]) -> list[ir.Message]:
    """One Anthropic user turn -> IR messages: each tool_result its own `tool` message, in order; other
    blocks grouped into user messages around them (so text after the results follows them)."""
    out: list[ir.Message] = []
    pending: list[ir.Part] = []
    for i, b in enumerate(content):
        p = f"{path}.content[{i}]"
        if isinstance(b, ToolResultBlock):
            if pending:
                out.append(ir.Message(role="user", parts=pending))
                pending = []
            result = ir.ToolResult(
                tool_call_id=b.tool_use_id,
                content=_result_parts(b, p),
                is_error=b.is_error,
                name=names.get(b.tool_use_id),
            )
            out.append(ir.Message(role="tool", parts=[result]))
        elif isinstance(b, TextBlock):
            pending.append(ir.Text(text=b.text, cache_control=b.cache_control))
        elif isinstance(b, ImageBlock):
            pending.append(_image(b, p))
        elif isinstance(b, DocumentBlock):
            pending.extend(_document(b, p))
        else:
            raise bad_request(f"a {b.__struct_config__.tag!r} block is only allowed in assistant turns", param=p)
    if pending:
        out.append(ir.Message(role="user", parts=pending))
    return out


def _assistant_turn(content: list[Block], path: str, names: dict[str, str]) -> ir.Message:
    parts: list[ir.Part] = []
    for i, b in enumerate(content):
        if isinstance(b, TextBlock):
            parts.append(ir.Text(text=b.text, cache_control=b.cache_control))
        elif isinstance(b, ToolUseBlock):
            names[b.id] = b.name
            parts.append(ir.ToolCall(id=b.id, name=b.name, arguments=jsonio.dumps_str(b.input)))
        elif isinstance(b, ThinkingBlock):
            # A block without a signature was not produced by Anthropic (or was stripped): keep the
            # text but untag it, so no backend forwards it as a signed Anthropic thinking block.
            parts.append(
                ir.Reasoning(text=b.thinking, signature=b.signature or None, provider="anthropic" if b.signature else None)
            )
        elif isinstance(b, RedactedThinkingBlock):
            parts.append(ir.Reasoning(redacted_data=b.data, provider="anthropic"))
        else:
            raise bad_request(
                f"a {b.__struct_config__.tag!r} block is not allowed in assistant turns", param=f"{path}.content[{i}]"
            )
    return ir.Message(role="assistant", parts=parts)


def messages_to_ir(wire: list[WireMessage]) -> list[ir.Message]:
    out: list[ir.Message] = []
    names: dict[str, str] = {}  # tool_use id -> name, so tool results can carry the name
    for i, m in enumerate(wire):
        path = f"messages[{i}]"
        blocks: list[Block] = [TextBlock(text=m.content)] if isinstance(m.content, str) else m.content
        if m.role == "assistant":
            out.append(_assistant_turn(blocks, path, names))
        elif m.role == "user":
            out.extend(_user_turn(blocks, path, names))
        else:
            texts = [b for b in blocks if isinstance(b, TextBlock)]
            if len(texts) != len(blocks):
                raise bad_request("system messages may contain only text blocks", param=f"{path}.content")
            out.append(ir.Message(role="system", parts=[ir.Text(text=b.text, cache_control=b.cache_control) for b in texts]))
    return out


def _tools_to_ir(tools: list[WireTool]) -> list[ir.ToolDef]:
    out = []
    for i, t in enumerate(tools):
        if t.type not in (None, "custom"):
            raise unsupported(
                f"server tool {t.name!r} (type {t.type!r}) can only run on Anthropic itself", param=f"tools[{i}].type"
            )
        if t.input_schema is None:
            raise bad_request("tools need an input_schema", param=f"tools[{i}].input_schema")
        out.append(ir.ToolDef(name=t.name, description=t.description, parameters=t.input_schema, strict=t.strict))
    return out


def _tool_choice_to_ir(tc) -> tuple[ir.ToolChoice | None, bool | None]:
    """(tool_choice, parallel_tool_calls) for the IR."""
    if tc is None:
        return None, None
    parallel = False if getattr(tc, "disable_parallel_tool_use", None) else None
    if isinstance(tc, _ChoiceAuto):
        return ir.ToolChoice(mode="auto"), parallel
    if isinstance(tc, _ChoiceAny):
        return ir.ToolChoice(mode="required"), parallel
    if isinstance(tc, _ChoiceTool):
        return ir.ToolChoice(mode="tool", name=tc.name), parallel
    return ir.ToolChoice(mode="none"), None


def _reasoning_to_ir(w: WireRequest) -> ir.ReasoningConfig | None:
    effort = w.output_config.effort if w.output_config else None
    th = w.thinking
    if isinstance(th, _ThinkingEnabled):
        return ir.ReasoningConfig(enabled=True, budget_tokens=th.budget_tokens, effort=effort)
    if isinstance(th, _ThinkingDisabled):
        return ir.ReasoningConfig(enabled=False)
    if isinstance(th, _ThinkingAdaptive) or effort:
        return ir.ReasoningConfig(enabled=True, effort=effort)
    return None


def _response_format_to_ir(w: WireRequest) -> ir.ResponseFormat | None:
    fmt = w.output_config.format if w.output_config else None
    if fmt is None:
        return None
    if fmt.type != "json_schema" or fmt.schema is None:
        raise unsupported(f"output_config.format type {fmt.type!r} is not supported", param="output_config.format")
    return ir.ResponseFormat(type="json_schema", schema=fmt.schema)


def system_to_ir(system: Union[str, list[TextBlock], None]) -> list[ir.Text]:
    if system is None:
        return []
    if isinstance(system, str):
        return [ir.Text(text=system)] if system else []
    return [ir.Text(text=b.text, cache_control=b.cache_control) for b in system]


def request_to_ir(w: WireRequest, extra: dict[str, Any]) -> ir.ChatRequest:
    tool_choice, parallel = _tool_choice_to_ir(w.tool_choice)
    return ir.ChatRequest(
        model=w.model,
        messages=messages_to_ir(w.messages),
        system=system_to_ir(w.system),
        tools=_tools_to_ir(w.tools or []),
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        max_tokens=w.max_tokens,
        temperature=w.temperature,
        top_p=w.top_p,
        top_k=w.top_k,
        stop=list(w.stop_sequences or []),
        response_format=_response_format_to_ir(w),
        reasoning=_reasoning_to_ir(w),
        user=w.metadata.user_id if w.metadata else None,
        stream=w.stream,
        include_usage=True,  # Anthropic streams always report usage; ask backends for it
        extra=extra,
        source_format="anthropic",
    )


# --------------------------------------------------------------------------------------------------
# Shared helpers

_BAD_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


def tool_id(raw: str | None, fallback_seed: int) -> str:
    """An id valid for Anthropic (`^[a-zA-Z0-9_-]+$`).  Invalid characters become `_`; the same input
    always gives the same id, so a conversation's tool_use and tool_result ids keep matching."""
    if raw:
        return _BAD_ID_CHARS.sub("_", raw)
    return f"toolu_{fallback_seed:024d}"


def bad_arguments(index: int) -> ProxyError:
    return bad_request(
        f"messages[{index}]: tool call arguments are not a JSON object (Anthropic needs an object input)",
        param=f"messages[{index}]",
    )
