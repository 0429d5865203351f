"""IR -> OpenAI Chat Completions / Completions request bodies, shaped by a backend's `Preset` (see
`openai_backend` for the table of presets and what each one changes)."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

from . import ir
from .base import Target
from .common import image_url_part, merge_client_extra

if TYPE_CHECKING:
    from .openai_backend import Preset

# --------------------------------------------------------------------------------------------------
# IR -> request body


_NINE_ALNUM = re.compile(r"[A-Za-z0-9]{9}")
_B62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def mistral_tool_id(call_id: str) -> str:
    """A 9-alphanumeric id for Mistral: kept when already valid, else a digest of the original."""
    if _NINE_ALNUM.fullmatch(call_id):
        return call_id
    n = int.from_bytes(hashlib.blake2b(call_id.encode(), digest_size=8).digest(), "big")
    out = []
    for _ in range(9):
        n, r = divmod(n, 62)
        out.append(_B62[r])
    return "".join(out)


def _same(call_id: str) -> str:
    return call_id


def _content(parts: list[ir.Part]) -> str | list[dict[str, Any]]:
    shown = [p for p in parts if isinstance(p, (ir.Text, ir.Image))]
    if all(isinstance(p, ir.Text) for p in shown) and len(shown) <= 1:
        return shown[0].text if shown else ""  # type: ignore[union-attr]
    return [{"type": "text", "text": p.text} if isinstance(p, ir.Text) else image_url_part(p) for p in shown]


def _message(m: ir.Message, fix_id: Any) -> list[dict[str, Any]]:
    """One IR message -> OpenAI messages (tool results split out, one `tool` message each)."""
    out: list[dict[str, Any]] = []
    results = [p for p in m.parts if isinstance(p, ir.ToolResult)]
    for r in results:
        text = "".join(c.text for c in r.content if isinstance(c, ir.Text))
        out.append({"role": "tool", "tool_call_id": fix_id(r.tool_call_id), "content": text})
    rest = [p for p in m.parts if not isinstance(p, (ir.ToolResult, ir.Reasoning))]
    if m.role == "assistant":
        calls = [p for p in rest if isinstance(p, ir.ToolCall)]
        texts = [p.text for p in rest if isinstance(p, ir.Text)]
        msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
        if calls:
            msg["tool_calls"] = [{"id": fix_id(c.id), "type": "function",
                                  "function": {"name": c.name, "arguments": c.arguments}} for c in calls]
        out.append(msg)
    elif rest or not results:
        msg = {"role": "user" if m.role == "tool" else m.role, "content": _content(rest)}
        out.append(msg)
    if m.name and out and out[-1]["role"] != "tool":
        out[-1]["name"] = m.name
    return out


def _messages(req: ir.ChatRequest, fix_id: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if req.system:
        out.append({"role": "system", "content": "\n\n".join(t.text for t in req.system)})
    for m in req.messages:
        out += _message(m, fix_id)
    return out


def _response_format(rf: ir.ResponseFormat, style: str) -> dict[str, Any] | None:
    if style == "tgi":
        if rf.type == "text":
            return None
        return {"type": "json", "value": rf.schema or {"type": "object"}}
    if rf.type != "json_schema":
        return {"type": rf.type}
    spec: dict[str, Any] = {"name": rf.name or "response", "schema": rf.schema or {"type": "object"}}
    if rf.strict is not None:
        spec["strict"] = rf.strict
    if rf.description:
        spec["description"] = rf.description
    return {"type": "json_schema", "json_schema": spec}


def _tool(t: ir.ToolDef) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": t.name, "parameters": t.parameters}
    if t.description is not None:
        fn["description"] = t.description
    if t.strict is not None:
        fn["strict"] = t.strict
    return {"type": "function", "function": fn}


def _tool_choice(tc: ir.ToolChoice, preset: Preset) -> Any:
    if tc.mode == "tool":
        return {"type": "function", "function": {"name": tc.name}}
    return preset.required_choice if tc.mode == "required" else tc.mode


def _effort(r: ir.ReasoningConfig) -> str | None:
    if r.effort:
        return r.effort
    if r.budget_tokens:
        return "low" if r.budget_tokens <= 1024 else "medium" if r.budget_tokens <= 8192 else "high"
    return None


_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                    "repetition_penalty", "seed", "logit_bias", "user")


def _sampling(req: ir.ChatRequest) -> dict[str, Any]:
    body = {k: v for k in _SAMPLING_FIELDS if (v := getattr(req, k)) is not None}
    if req.stop:
        body["stop"] = list(req.stop)
    if req.n != 1:
        body["n"] = req.n
    return body


def _chat_fields(req: ir.ChatRequest, preset: Preset, fix_id: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": _messages(req, fix_id), **_sampling(req)}
    if req.max_tokens is not None:
        body[preset.max_tokens_field] = req.max_tokens
    if req.tools:
        body["tools"] = [_tool(t) for t in req.tools]
    if req.tool_choice is not None:
        body["tool_choice"] = _tool_choice(req.tool_choice, preset)
    if req.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.response_format is not None and (rf := _response_format(req.response_format, preset.response_format)):
        body["response_format"] = rf
    if req.reasoning is not None and (effort := _effort(req.reasoning)):
        body["reasoning_effort"] = effort
    if req.logprobs is not None:
        body["logprobs"] = req.logprobs
    if req.top_logprobs is not None:
        body["top_logprobs"] = req.top_logprobs
    if req.metadata is not None:
        body["metadata"] = req.metadata
    return body


def _completion_fields(req: ir.ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": req.prompt, **_sampling(req)}
    if req.max_tokens is not None:
        body["max_tokens"] = req.max_tokens
    if req.logprobs:
        body["logprobs"] = req.top_logprobs or 0  # /v1/completions takes an integer
    return body


_GUIDED = {"guided_json": "json", "guided_regex": "regex", "guided_choice": "choice",
           "guided_grammar": "grammar", "guided_whitespace_pattern": "whitespace_pattern"}


def move_guided_fields(body: dict[str, Any]) -> None:
    """vLLM >= 0.12 ignores `guided_*`: move them into `structured_outputs` (in place)."""
    keys = [k for k in body if k.startswith("guided_")]
    if not keys:
        return
    so = dict(body.get("structured_outputs") or {})
    for k in keys:
        value = body.pop(k)
        if k in _GUIDED:
            so.setdefault(_GUIDED[k], value)
    body["structured_outputs"] = so


def build_body(req: ir.ChatRequest, target: Target, preset: Preset) -> dict[str, Any]:
    fix_id = mistral_tool_id if preset.tool_ids == "mistral" else _same
    fields = _completion_fields(req) if req.prompt is not None else _chat_fields(req, preset, fix_id)
    body: dict[str, Any] = {"model": target.model}
    for key, value in fields.items():
        body[preset.renames.get(key, key)] = value
    merge_client_extra(body, req, "openai")
    body.update(target.params)
    if preset.structured_outputs:
        move_guided_fields(body)
    if req.stream:
        body["stream"] = True
        if preset.stream_options:
            body["stream_options"] = {"include_usage": True}
    return body


def fix_passthrough_ids(body: dict[str, Any]) -> None:
    for m in body.get("messages") or ():
        if isinstance(m, dict):
            if isinstance(m.get("tool_call_id"), str):
                m["tool_call_id"] = mistral_tool_id(m["tool_call_id"])
            for tc in m.get("tool_calls") or ():
                if isinstance(tc, dict) and isinstance(tc.get("id"), str):
                    tc["id"] = mistral_tool_id(tc["id"])
