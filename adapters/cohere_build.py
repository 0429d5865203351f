"""IR -> Cohere v2 `/v2/chat` request body.

Cohere refuses unknown fields with 422, so only fields of its schema are ever written: OpenAI's
per-tool `strict` is dropped (Cohere's `strict_tools` is all-or-nothing and a different contract),
`tool_choice` exists only as "REQUIRED" / "NONE" (auto = omitted; a named tool becomes REQUIRED with
only that tool offered), `top_p` / `top_k` are spelled `p` / `k`, `stop` is `stop_sequences`, and a
JSON response format is `{"type": "json_object", "json_schema"?: schema}`.

Messages: the system prompt is one system message; user content is a string, or text / image_url
parts; each tool result is one `tool` message (text only: images in results and `is_error` have no
Cohere slot); an assistant turn with tool calls sends its text as `tool_plan` (the slot Cohere's
answers put it in), one without as content.  Reasoning goes back only when Cohere produced it
(`thinking` content items); other providers' reasoning is dropped.
"""

from __future__ import annotations

from typing import Any

from . import ir
from .common import image_url_part, merge_params
from .errors import bad_request, unsupported

PROVIDER = "cohere"  # the tag on reasoning this backend produced (ir.Reasoning.provider)


def _user_content(parts: list[ir.Part]) -> str | list[dict[str, Any]]:
    shown = [p for p in parts if isinstance(p, (ir.Text, ir.Image))]
    if all(isinstance(p, ir.Text) for p in shown):
        return "".join(p.text for p in shown)  # type: ignore[union-attr]
    return [{"type": "text", "text": p.text} if isinstance(p, ir.Text) else image_url_part(p) for p in shown]


def _tool_message(r: ir.ToolResult) -> dict[str, Any]:
    if any(isinstance(c, ir.Image) for c in r.content):
        raise unsupported("the cohere backend takes text-only tool results", param="messages")
    text = "".join(c.text for c in r.content if isinstance(c, ir.Text))
    # Cohere refuses an empty content list; one empty text item says "no output".
    return {"role": "tool", "tool_call_id": r.tool_call_id, "content": [{"type": "text", "text": text}]}


def _assistant(parts: list[ir.Part]) -> dict[str, Any] | None:
    calls = [p for p in parts if isinstance(p, ir.ToolCall)]
    text = "".join(p.text for p in parts if isinstance(p, ir.Text))
    thinking = [{"type": "thinking", "thinking": p.text} for p in parts
                if isinstance(p, ir.Reasoning) and p.provider == PROVIDER and p.text]
    msg: dict[str, Any] = {"role": "assistant"}
    if calls:
        msg["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments or "{}"}}
                             for c in calls]
        if text:
            msg["tool_plan"] = text
        if thinking:
            msg["content"] = thinking
    elif text or thinking:
        msg["content"] = [*thinking, *([{"type": "text", "text": text}] if text else [])]
    else:
        return None  # an empty assistant turn: Cohere needs content or tool calls
    return msg


def build_messages(req: ir.ChatRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if req.system:
        out.append({"role": "system", "content": "\n\n".join(t.text for t in req.system)})
    for m in req.messages:
        if m.role == "assistant":
            msg = _assistant(m.parts)
            if msg is not None:
                out.append(msg)
            continue
        out += [_tool_message(p) for p in m.parts if isinstance(p, ir.ToolResult)]
        rest = [p for p in m.parts if isinstance(p, (ir.Text, ir.Image))]
        if m.role == "system":
            out.append({"role": "system", "content": "".join(p.text for p in rest if isinstance(p, ir.Text))})
        elif rest:
            out.append({"role": "user", "content": _user_content(rest)})
    if not out:
        raise bad_request("messages: at least one message is required", param="messages")
    return out


def _tools(req: ir.ChatRequest) -> tuple[list[ir.ToolDef], str | None]:
    """The tools to offer and Cohere's tool_choice (None = auto)."""
    tc = req.tool_choice
    if tc is None or tc.mode == "auto":
        return req.tools, None
    if tc.mode == "none":
        return req.tools, "NONE"
    if tc.mode == "tool":
        named = [t for t in req.tools if t.name == tc.name]
        if not named:
            raise bad_request(f"tool_choice names {tc.name!r}, which is not among the tools", param="tool_choice")
        return named, "REQUIRED"
    return req.tools, "REQUIRED"


def _tool(t: ir.ToolDef) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": t.name, "parameters": t.parameters}
    if t.description:
        fn["description"] = t.description
    return {"type": "function", "function": fn}


def _thinking(r: ir.ReasoningConfig) -> dict[str, Any]:
    if r.enabled is False or r.effort == "none" or r.budget_tokens == 0:
        return {"type": "disabled"}
    out: dict[str, Any] = {"type": "enabled"}
    if r.budget_tokens:
        out["token_budget"] = r.budget_tokens
    return out


# IR field -> Cohere field, for the plain scalar sampling parameters.
SCALARS = {
    "temperature": "temperature",
    "top_p": "p",
    "top_k": "k",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "seed": "seed",
}


def build_body(req: ir.ChatRequest, target_model: str, max_tokens: int | None, params: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"model": target_model, "messages": build_messages(req), "stream": req.stream}
    for name, field in SCALARS.items():
        value = getattr(req, name)
        if value is not None:
            body[field] = value
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if req.stop:
        body["stop_sequences"] = req.stop
    if req.tools:
        tools, choice = _tools(req)
        body["tools"] = [_tool(t) for t in tools]
        if choice is not None:
            body["tool_choice"] = choice
    rf = req.response_format
    if rf is not None and rf.type != "text":
        body["response_format"] = {"type": "json_object", **({"json_schema": rf.schema} if rf.schema else {})}
    if req.reasoning is not None:
        body["thinking"] = _thinking(req.reasoning)
    merge_params(body, params)
    return body
