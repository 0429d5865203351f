"""IR -> Gemini `generateContent` request body (the backend's request side).

What is renamed, merged, dropped or refused (the module docstring of `adapters.gemini_backend` lists them
for the whole adapter); the non-obvious rules:
- Roles: assistant -> `model`; tool results -> `functionResponse` parts in a `user` content; system
  messages anywhere are lifted into `systemInstruction`.  Consecutive contents of the same role are
  merged (Gemini wants turns to alternate), and the function responses of one run are put in the
  order of the calls of the model turn before them.
- functionResponse needs the function *name*: from the result, else recovered from the history;
  the response must be an object: `{"output": text}`, or `{"error": text}` for a failed call.  Ids
  are not sent (the Developer API pairs calls and answers by name and order; ids it did not issue
  are not guaranteed to be accepted).  Images inside tool results follow as inlineData parts.
- Images: base64 / data: URLs -> inlineData; other URLs (Files API, gs://, http) -> fileData with the
  MIME type guessed from the path (refused when it cannot be guessed: adapters do no I/O, so nothing
  is downloaded).
- Reasoning: only Gemini's own thought parts go back (with their signature); an empty signed one puts
  its `thoughtSignature` on the next part (see gemini_request).  Other providers' reasoning is dropped.
"""

from __future__ import annotations

import mimetypes
from typing import Any
from urllib.parse import urlparse

from . import ir
from .common import parse_tool_arguments, tool_names_by_id
from .errors import bad_request, unsupported

MAX_STOP = 5  # Gemini's limit on stopSequences: the first five are sent

_TOOL_MODE = {"auto": "AUTO", "none": "NONE", "required": "ANY", "tool": "ANY"}

# reasoning effort -> thinkingBudget (-1 = the model decides).  Sizes follow README §2.12 and stay
# within gemini-2.5-flash's 24576 limit.
EFFORT_BUDGET = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}


def _image(img: ir.Image) -> dict[str, Any]:
    if img.data:
        return {"inlineData": {"mimeType": img.media_type or "image/png", "data": img.data}}
    url = img.url or ""
    if url.startswith("data:"):
        header, sep, data = url.partition(",")
        if not sep or not header.endswith(";base64"):
            raise bad_request("image data URLs must be base64-encoded", param="messages")
        return {"inlineData": {"mimeType": header[5:].split(";")[0] or "image/png", "data": data}}
    mime = img.media_type or mimetypes.guess_type(urlparse(url).path)[0]
    if not mime:
        raise unsupported(
            "the gemini backend needs images inline or with a known type; the type of this image URL cannot be "
            "told from its path, and URLs are not downloaded",
            param="messages",
        )
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def _function_response(res: ir.ToolResult, names: dict[str, str]) -> dict[str, Any]:
    name = res.name or names.get(res.tool_call_id)
    if not name:
        raise bad_request(
            f"tool result {res.tool_call_id!r} answers no tool call in the history (Gemini needs the function name)",
            param="messages",
        )
    text = "\n".join(p.text for p in res.content if isinstance(p, ir.Text))
    return {"functionResponse": {"name": name, "response": {"error" if res.is_error else "output": text}}}


def _model_parts(parts: list[ir.Part]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    held: str | None = None
    for p in parts:
        if isinstance(p, ir.Reasoning):
            if p.provider != "gemini":
                continue  # never forward another provider's reasoning or signature
            if not p.text:
                held = p.signature or held
            else:
                part = {"text": p.text, "thought": True}
                if p.signature:
                    part["thoughtSignature"] = p.signature
                out.append(part)
            continue
        if isinstance(p, ir.Text):
            part = {"text": p.text}
        elif isinstance(p, ir.ToolCall):
            part = {"functionCall": {"name": p.name, "args": parse_tool_arguments(p.arguments, p.name)}}
        elif isinstance(p, ir.Image):
            part = _image(p)
        else:
            continue
        if held:
            part["thoughtSignature"], held = held, None
        out.append(part)
    return out


def _user_parts(msg: ir.Message, names: dict[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    for p in msg.parts:
        if isinstance(p, ir.ToolResult):
            out.append(_function_response(p, names))
            images += [_image(c) for c in p.content if isinstance(c, ir.Image)]
        elif isinstance(p, ir.Text):
            out.append({"text": p.text})
        elif isinstance(p, ir.Image):
            out.append(_image(p))
        elif isinstance(p, ir.ToolCall):
            raise bad_request("tool calls are only allowed in assistant messages", param="messages")
    return out + images


def _order_responses(parts: list[dict[str, Any]], calls: list[str]) -> list[dict[str, Any]]:
    """Function responses in the order of the calls (by name, one call each); other parts after."""
    responses = [p for p in parts if "functionResponse" in p]
    if len(responses) < 2:
        return parts
    remaining = list(calls)

    def rank(p: dict[str, Any]) -> int:
        name = p["functionResponse"]["name"]
        if name in remaining:
            i = remaining.index(name)
            remaining[i] = None  # type: ignore[call-overload]
            return i
        return len(calls)

    ranked = sorted(((rank(p), n, p) for n, p in enumerate(responses)), key=lambda t: (t[0], t[1]))
    return [p for _, _, p in ranked] + [p for p in parts if "functionResponse" not in p]


def build_contents(req: ir.ChatRequest) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(contents, systemInstruction parts)."""
    names = tool_names_by_id(req.messages)
    system = [{"text": t.text} for t in req.system]
    contents: list[dict[str, Any]] = []
    last_calls: list[str] = []
    for msg in req.messages:
        if msg.role == "system":
            system += [{"text": p.text} for p in msg.parts if isinstance(p, ir.Text)]
            continue
        role = "model" if msg.role == "assistant" else "user"
        parts = _model_parts(msg.parts) if role == "model" else _user_parts(msg, names)
        if role == "model":
            last_calls = [p.name for p in msg.parts if isinstance(p, ir.ToolCall)]
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"] += parts
        else:
            contents.append({"role": role, "parts": parts})
        if role == "user":
            contents[-1]["parts"] = _order_responses(contents[-1]["parts"], last_calls)
    return contents, system


def build_tools(req: ir.ChatRequest) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(tools, toolConfig).  Parameters go as `parametersJsonSchema`: standard JSON Schema, as is."""
    if not req.tools:
        return [], None
    decls = []
    for t in req.tools:
        d: dict[str, Any] = {"name": t.name, "parametersJsonSchema": t.parameters}
        if t.description:
            d["description"] = t.description
        decls.append(d)
    config = None
    if req.tool_choice is not None:
        fcc: dict[str, Any] = {"mode": _TOOL_MODE[req.tool_choice.mode]}
        if req.tool_choice.mode == "tool" and req.tool_choice.name:
            fcc["allowedFunctionNames"] = [req.tool_choice.name]
        config = {"functionCallingConfig": fcc}
    return [{"functionDeclarations": decls}], config


def thinking_config(reasoning: ir.ReasoningConfig | None, include_thoughts: bool) -> dict[str, Any] | None:
    if reasoning is None:
        return None
    if reasoning.enabled is False:
        return {"thinkingBudget": 0}
    if reasoning.budget_tokens is not None:
        budget = reasoning.budget_tokens
    else:
        budget = EFFORT_BUDGET.get((reasoning.effort or "").lower(), -1)
    out: dict[str, Any] = {"thinkingBudget": budget}
    if budget != 0 and include_thoughts:
        out["includeThoughts"] = True
    return out


def generation_config(req: ir.ChatRequest, max_tokens: int | None, include_thoughts: bool) -> dict[str, Any]:
    g: dict[str, Any] = {}
    for field, name in (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"), ("seed", "seed"),
                        ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        value = getattr(req, field)
        if value is not None:
            g[name] = value
    if max_tokens is not None:
        g["maxOutputTokens"] = max_tokens
    if req.stop:
        g["stopSequences"] = list(req.stop[:MAX_STOP])
    rf = req.response_format
    if rf is not None and rf.type != "text":
        g["responseMimeType"] = "application/json"
        if rf.type == "json_schema" and rf.schema is not None:
            g["responseJsonSchema"] = rf.schema
    thinking = thinking_config(req.reasoning, include_thoughts)
    if thinking is not None:
        g["thinkingConfig"] = thinking
    return g
