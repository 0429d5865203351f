"""IR request -> Anthropic Messages body (the backend direction), and the structured-output strategy.

Structured output (`response_format`):
- `json_schema`: the forced-tool trick, which every Anthropic model and API version supports.  A tool
  named after the schema (`SchemaTool.name`) takes the schema as `input_schema`; with no client tools
  `tool_choice` forces it.  Answers come back as a tool_use block, which the decoders turn into a plain
  text block holding the JSON (and finish "stop").  `input_schema` must be an object schema, so any
  other root (array, string, ...) is wrapped as `{"value": <schema>}` and unwrapped on the way back.
  With client tools present the schema tool is only offered next to them (forcing it would forbid
  the client's tools).  Forced tool use is incompatible with extended thinking on Anthropic's side.
- `json_object`: Anthropic has no JSON mode, so a system instruction asks for one JSON object only.
"""

from __future__ import annotations

import re
from typing import Any

from . import ir
from .anthropic_request import bad_arguments, tool_id
from .common import alternating_turns, arguments_object, merge_client_extra
from .errors import bad_request

JSON_OBJECT_INSTRUCTION = "Respond with a single valid JSON object and nothing else: no prose, no code fences."

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"^data:([^;,]+)(?:;[^,]*)?;base64,(.*)$", re.S)

# Effort -> thinking budget (no standard exists; README §2.12): clamped below max_tokens.
EFFORT_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768, "max": 32768}
MIN_THINKING_BUDGET = 1024  # Anthropic rejects smaller budgets


class SchemaTool:
    """The forced tool that carries a json_schema response format (see the module docstring)."""

    __slots__ = ("name", "wrapped", "schema")

    def __init__(self, fmt: ir.ResponseFormat) -> None:
        base = re.sub(r"[^a-zA-Z0-9_-]", "_", fmt.name or "json_response")[:64]
        self.name = base or "json_response"
        schema = fmt.schema or {"type": "object"}
        self.wrapped = schema.get("type") != "object"
        self.schema = (
            {"type": "object", "properties": {"value": schema}, "required": ["value"]} if self.wrapped else schema
        )

    @classmethod
    def of(cls, req: ir.ChatRequest) -> "SchemaTool | None":
        fmt = req.response_format
        return cls(fmt) if fmt is not None and fmt.type == "json_schema" else None

    def tool(self, description: str | None) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": description or "Give the final answer as the input of this tool.",
            "input_schema": self.schema,
        }

    def unwrap(self, value: Any) -> Any:
        return value.get("value") if self.wrapped and isinstance(value, dict) else value


def _image_block(img: ir.Image, index: int) -> dict[str, Any]:
    if img.data is not None:
        media, data = img.media_type or "", img.data
    else:
        url = img.url or ""
        m = _DATA_URL.match(url)
        if m is None:
            if url.startswith(("http://", "https://")):
                return {"type": "image", "source": {"type": "url", "url": url}}
            raise bad_request(f"messages[{index}]: image URLs must be http(s) or base64 data URLs", param=f"messages[{index}]")
        media, data = m.group(1), m.group(2)
    if media not in IMAGE_TYPES:
        raise bad_request(
            f"messages[{index}]: image type {media!r} is not accepted by Anthropic (jpeg, png, gif, webp only)",
            param=f"messages[{index}]",
        )
    return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}


def _text_block(t: ir.Text) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": t.text}
    if t.cache_control is not None:
        block["cache_control"] = t.cache_control
    return block


def _part_blocks(part: ir.Part, index: int) -> list[dict[str, Any]]:
    """The Anthropic blocks for one IR part (empty text and foreign reasoning give none)."""
    if isinstance(part, ir.Text):
        return [_text_block(part)] if part.text else []
    if isinstance(part, ir.Image):
        return [_image_block(part, index)]
    if isinstance(part, ir.ToolCall):
        args = arguments_object(part.arguments)
        if args is None:
            raise bad_arguments(index)
        return [{"type": "tool_use", "id": tool_id(part.id, index), "name": part.name, "input": args}]
    if isinstance(part, ir.ToolResult):
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_id(part.tool_call_id, index)}
        content = [b for p in part.content for b in _part_blocks(p, index)]
        if content:
            block["content"] = content
        if part.is_error:
            block["is_error"] = True
        return [block]
    # Reasoning: only Anthropic's own signed blocks may go back; anything else would be rejected.
    if part.provider != "anthropic":
        return []
    if part.redacted_data is not None:
        return [{"type": "redacted_thinking", "data": part.redacted_data}]
    if part.signature:
        return [{"type": "thinking", "thinking": part.text, "signature": part.signature}]
    return []


def build_messages(req: ir.ChatRequest) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, messages): system messages lifted, tool results in user turns (results first),
    consecutive same-role turns merged, empty turns dropped."""
    system, turns = alternating_turns(req, _part_blocks, _text_block, lambda b: b["type"] == "tool_result")
    if req.response_format is not None and req.response_format.type == "json_object":
        system.append({"type": "text", "text": JSON_OBJECT_INSTRUCTION})
    return system, turns


def build_tools(req: ir.ChatRequest) -> dict[str, Any]:
    """`tools` and `tool_choice` (incl. the structured-output tool and disable_parallel_tool_use)."""
    tools = [
        {
            "name": t.name,
            **({"description": t.description} if t.description else {}),
            "input_schema": t.parameters or {"type": "object", "properties": {}},
        }
        for t in req.tools
    ]
    choice: dict[str, Any] | None = None
    tc = req.tool_choice
    if tc is not None and tools:
        mode = {"auto": "auto", "none": "none", "required": "any", "tool": "tool"}[tc.mode]
        choice = {"type": mode, **({"name": tc.name} if tc.mode == "tool" else {})}
    schema_tool = SchemaTool.of(req)
    if schema_tool is not None:
        fmt = req.response_format
        if not tools:
            choice = {"type": "tool", "name": schema_tool.name}
        tools.append(schema_tool.tool(fmt.description if fmt else None))
    out: dict[str, Any] = {}
    if tools:
        out["tools"] = tools
        if req.parallel_tool_calls is False and (choice is None or choice["type"] != "none"):
            choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
        if choice is not None:
            out["tool_choice"] = choice
    return out


def thinking(req: ir.ChatRequest, max_tokens: int, client_max: bool) -> tuple[dict[str, Any] | None, int]:
    """(`thinking` field, max_tokens): budgets from the effort table, clamped below max_tokens.  When the
    proxy chose max_tokens itself, it grows by the budget so thinking does not eat the answer."""
    r = req.reasoning
    if r is None or (r.enabled is None and r.effort is None and r.budget_tokens is None):
        return None, max_tokens
    if r.enabled is False or r.effort == "none":
        return {"type": "disabled"}, max_tokens
    budget = r.budget_tokens or EFFORT_BUDGETS.get(r.effort or "medium", EFFORT_BUDGETS["medium"])
    if not client_max:
        max_tokens += budget
    budget = min(budget, max_tokens - 1)
    if budget < MIN_THINKING_BUDGET:
        raise bad_request(
            f"reasoning on Anthropic needs max_tokens above {MIN_THINKING_BUDGET} (thinking budget minimum)",
            param="max_tokens",
        )
    return {"type": "enabled", "budget_tokens": budget}, max_tokens


def build_body(req: ir.ChatRequest, model: str, max_tokens: int, client_max: bool) -> dict[str, Any]:
    system, messages = build_messages(req)
    think, max_tokens = thinking(req, max_tokens, client_max)
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": messages}
    if system:
        body["system"] = system
    body.update(build_tools(req))
    if think is not None:
        body["thinking"] = think
    if req.stop:
        body["stop_sequences"] = list(req.stop)
    if req.temperature is not None:
        body["temperature"] = min(1.0, max(0.0, req.temperature))  # Anthropic's range is 0..1
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.top_k is not None:
        body["top_k"] = req.top_k
    if req.user:
        body["metadata"] = {"user_id": req.user}
    if req.stream:
        body["stream"] = True
    merge_client_extra(body, req, "anthropic")
    return body
