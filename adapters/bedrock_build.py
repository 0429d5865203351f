"""IR -> a Bedrock Converse / ConverseStream request body.

- Messages alternate user/assistant: system messages are lifted into `system`, tool results go into
  user turns (results first), consecutive same-role turns are merged, empty text blocks (which
  Converse refuses as blank) and empty turns dropped.
- Images must be inline (base64 `bytes` with a png/jpeg/gif/webp format) or `s3://` locations: URLs
  are not fetched.
- `toolUseId` must match `[a-zA-Z0-9_.:-]{1,64}`: other characters become `_`, the same way for a
  call and its result.  Converse needs `toolConfig` whenever the history has toolUse/toolResult
  blocks, so a follow-up without `tools` gets minimal specs for the tools the history names, and
  `tool_choice: none` (Converse has no such choice) keeps the tools without a choice (lossy).
- `response_format` becomes `outputConfig.textFormat` (a JSON schema; JSON mode, which Converse
  lacks, the schema of any object).
- `top_k` and Claude's `thinking` go through `additionalModelRequestFields`; Claude's signed
  reasoning (and redacted reasoning) from earlier turns goes back as `reasoningContent`, anyone
  else's reasoning is dropped.
"""

from __future__ import annotations

import re
from typing import Any

from . import ir, jsonio
from .anthropic_build import thinking
from .common import alternating_turns, inline_image, parse_tool_arguments
from .errors import bad_request, unsupported

IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
_BAD_ID_CHARS = re.compile(r"[^a-zA-Z0-9_.:-]")
EMPTY_SCHEMA = {"type": "object", "properties": {}}


def tool_use_id(raw: str, index: int) -> str:
    """An id Converse accepts; the same input always gives the same id."""
    return _BAD_ID_CHARS.sub("_", raw)[:64] if raw else f"tooluse_{index:08d}"


def is_claude(model: str) -> bool:
    """Anthropic's models (also behind inference profiles `us.anthropic...` and ARNs)."""
    return "anthropic.claude" in model


def _image(img: ir.Image, index: int) -> dict[str, Any]:
    url = img.url or ""
    if img.data is None and url.startswith("s3://"):
        fmt = IMAGE_FORMATS.get(img.media_type or "") or IMAGE_FORMATS.get("image/" + url.rsplit(".", 1)[-1].lower())
        if fmt is None:
            raise bad_request(f"messages[{index}]: the image format of {url.rsplit('/', 1)[-1]!r} is not known",
                              param=f"messages[{index}]")
        return {"image": {"format": fmt, "source": {"s3Location": {"uri": url}}}}
    media, data = inline_image(img, "bedrock", f"messages[{index}]")
    fmt = IMAGE_FORMATS.get(media)
    if fmt is None:
        raise bad_request(f"messages[{index}]: image type {media!r} is not accepted by Bedrock (png, jpeg, gif, webp)",
                          param=f"messages[{index}]")
    return {"image": {"format": fmt, "source": {"bytes": data}}}


def _result_content(part: ir.ToolResult, index: int) -> list[dict[str, Any]]:
    content = [{"text": p.text} if isinstance(p, ir.Text) else _image(p, index)
               for p in part.content if not (isinstance(p, ir.Text) and not p.text)]
    return content or [{"text": ""}]


def _blocks(part: ir.Part, index: int, keep_reasoning: bool) -> list[dict[str, Any]]:
    if isinstance(part, ir.Text):
        return [{"text": part.text}] if part.text else []
    if isinstance(part, ir.Image):
        return [_image(part, index)]
    if isinstance(part, ir.ToolCall):
        args = parse_tool_arguments(part.arguments, part.name)
        return [{"toolUse": {"toolUseId": tool_use_id(part.id, index), "name": part.name, "input": args}}]
    if isinstance(part, ir.ToolResult):
        return [{"toolResult": {"toolUseId": tool_use_id(part.tool_call_id, index),
                                "content": _result_content(part, index),
                                "status": "error" if part.is_error else "success"}}]
    # Reasoning: only Claude's own signed blocks may go back (to a Claude model).
    if not keep_reasoning or part.provider != "anthropic":
        return []
    if part.redacted_data is not None:
        return [{"reasoningContent": {"redactedContent": part.redacted_data}}]
    if part.signature:
        return [{"reasoningContent": {"reasoningText": {"text": part.text, "signature": part.signature}}}]
    return []


def build_messages(req: ir.ChatRequest, claude: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, messages) in Converse's shape."""
    return alternating_turns(req, lambda part, i: _blocks(part, i, claude), lambda t: {"text": t.text},
                             lambda b: "toolResult" in b)


def _history_tools(turns: list[dict[str, Any]]) -> tuple[bool, list[str]]:
    """(whether the history has tool blocks, the tool names its calls use, in order)."""
    names: dict[str, None] = {}
    has_blocks = False
    for turn in turns:
        for block in turn["content"]:
            if "toolUse" in block:
                names[block["toolUse"]["name"]] = None
            has_blocks = has_blocks or "toolUse" in block or "toolResult" in block
    return has_blocks, list(names)


def build_tool_config(req: ir.ChatRequest, turns: list[dict[str, Any]]) -> dict[str, Any] | None:
    has_blocks, used = _history_tools(turns)
    specs = [
        {"toolSpec": {"name": t.name, **({"description": t.description} if t.description else {}),
                      "inputSchema": {"json": t.parameters or EMPTY_SCHEMA}}}
        for t in req.tools
    ]
    offered = {t.name for t in req.tools}
    if has_blocks:  # Converse refuses tool blocks without a toolConfig naming their tools
        specs += [{"toolSpec": {"name": n, "inputSchema": {"json": EMPTY_SCHEMA}}} for n in used if n not in offered]
    if not specs:
        return None
    tc = req.tool_choice
    if tc is not None and tc.mode == "none":
        return {"tools": specs} if has_blocks else None
    config: dict[str, Any] = {"tools": specs}
    if tc is not None and req.tools:
        config["toolChoice"] = {"auto": {}} if tc.mode == "auto" else {"any": {}} if tc.mode == "required" \
            else {"tool": {"name": tc.name}}
    return config


def build_body(req: ir.ChatRequest, model: str, default_max_tokens: int | None) -> dict[str, Any]:
    if req.prompt is not None:
        raise unsupported("the bedrock backend has no raw-prompt completion endpoint (Converse is chat only)",
                          param="prompt")
    claude = is_claude(model)
    system, messages = build_messages(req, claude)
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    inference: dict[str, Any] = {}
    additional: dict[str, Any] = {}
    max_tokens = req.max_tokens if req.max_tokens is not None else default_max_tokens
    if claude and req.reasoning is not None:
        think, grown = thinking(req, max_tokens or 4096, req.max_tokens is not None)
        if think is not None:
            additional["thinking"] = think
            max_tokens = grown
    if max_tokens is not None:
        inference["maxTokens"] = max_tokens
    if req.temperature is not None:
        inference["temperature"] = req.temperature
    if req.top_p is not None:
        inference["topP"] = req.top_p
    if req.stop:
        inference["stopSequences"] = req.stop
    if inference:
        body["inferenceConfig"] = inference
    if req.top_k is not None:
        additional["top_k"] = req.top_k
    if additional:
        body["additionalModelRequestFields"] = additional
    if claude and req.stop:
        # Which stop sequence matched is only reported when asked for (Anthropic models).
        body["additionalModelResponseFieldPaths"] = ["/stop_sequence"]
    tool_config = build_tool_config(req, messages)
    if tool_config is not None:
        body["toolConfig"] = tool_config
    output = output_config(req.response_format)
    if output is not None:
        body["outputConfig"] = output
    return body


def output_config(fmt: ir.ResponseFormat | None) -> dict[str, Any] | None:
    """`response_format` as Converse's structured output: a JSON schema (sent as a string); JSON mode,
    which Converse lacks, as the schema of any object."""
    if fmt is None or fmt.type == "text":
        return None
    schema = fmt.schema if fmt.type == "json_schema" and fmt.schema is not None else {"type": "object"}
    definition: dict[str, Any] = {"schema": jsonio.dumps(schema).decode(), "name": fmt.name or "response"}
    if fmt.description:
        definition["description"] = fmt.description
    return {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}}
