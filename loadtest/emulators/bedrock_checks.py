"""What the emulated Bedrock refuses, and how: AWS's error shape (`{"message"}` with the exception in
`x-amzn-ErrorType`) and Converse's request validation, written from the Bedrock API reference and
botocore's service model (see bedrock.py)."""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from typing import Any

from aiohttp import web

STATUS_EXCEPTIONS = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
EXCEPTION_STATUS = {**{v: k for k, v in STATUS_EXCEPTIONS.items()}, "ModelNotReadyException": 429,
                    "ServiceQuotaExceededException": 400, "ModelStreamErrorException": 424}
CONVERSE_FIELDS = frozenset({
    "messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig", "additionalModelRequestFields",
    "additionalModelResponseFieldPaths", "promptVariables", "requestMetadata", "performanceConfig", "serviceTier",
    "outputConfig",
})
INFERENCE_FIELDS = frozenset({"maxTokens", "temperature", "topP", "stopSequences"})
BLOCK_MEMBERS = frozenset({"text", "image", "document", "video", "audio", "toolUse", "toolResult", "guardContent",
                           "cachePoint", "reasoningContent", "citationsContent", "searchResult"})
IMAGE_FORMATS = frozenset({"png", "jpeg", "gif", "webp"})
TOOL_USE_ID = re.compile(r"[a-zA-Z0-9_.:-]{1,64}")

def error_response(name: str, message: str, status: int | None = None, retry_after: float | None = None) -> web.Response:
    headers = {"x-amzn-ErrorType": f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/",
               "x-amzn-RequestId": str(uuid.uuid4())}
    if retry_after is not None:
        headers["Retry-After"] = f"{retry_after:g}"
    return web.json_response({"message": message}, status=status or EXCEPTION_STATUS.get(name, 400), headers=headers)


def invalid(message: str) -> web.Response:
    return error_response("ValidationException", message, 400)


# --------------------------------------------------------------------------------------------------
# Converse validation


def _check_block(block: Any, where: str, role: str) -> web.Response | None:
    if not isinstance(block, dict) or len(block) != 1 or next(iter(block)) not in BLOCK_MEMBERS:
        return invalid(f"The model returned the following errors: {where} must have exactly one member of "
                       f"{', '.join(sorted(BLOCK_MEMBERS))}")
    kind, value = next(iter(block.items()))
    if kind == "text" and (not isinstance(value, str) or not value.strip()):
        return invalid(f"The text field in the ContentBlock object at {where} is blank. Add text to the text field, "
                       "and try again.")
    if kind == "image":
        source = value.get("source") if isinstance(value, dict) else None
        if not isinstance(source, dict) or value.get("format") not in IMAGE_FORMATS:
            return invalid(f"{where}.image: format must be one of png, jpeg, gif, webp and source is required")
        if "bytes" in source:
            try:
                base64.b64decode(source["bytes"], validate=True)
            except (binascii.Error, TypeError, ValueError):
                return invalid(f"{where}.image.source.bytes is not valid base64")
    if kind == "toolUse":
        if role != "assistant":
            return invalid(f"{where}: toolUse blocks are only allowed in assistant messages")
        if not isinstance(value, dict) or not TOOL_USE_ID.fullmatch(str(value.get("toolUseId", ""))) \
                or not isinstance(value.get("input"), (dict, list, str, int, float, bool)):
            return invalid(f"{where}.toolUse: toolUseId must match [a-zA-Z0-9_.:-]{{1,64}}, name and input are required")
    if kind == "toolResult" and (role != "user" or not isinstance(value, dict) or not isinstance(value.get("content"), list)):
        return invalid(f"{where}.toolResult: only in user messages, with a content list")
    if kind == "reasoningContent" and role != "assistant":
        return invalid(f"{where}: reasoningContent blocks are only allowed in assistant messages")
    return None


def _check_turns(messages: list[Any], has_tool_config: bool) -> web.Response | None:
    previous_uses: list[str] = []
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("user", "assistant") or not isinstance(m.get("content"), list) or not m["content"]:
            return invalid(f"messages.{i}: role must be user or assistant and content a non-empty list")
        if i == 0 and role != "user":
            return invalid("A conversation must start with a user message. Try again with a conversation that starts "
                           "with a user message.")
        if i and messages[i - 1].get("role") == role:
            return invalid("A conversation must alternate between user and assistant roles. Make sure the conversation "
                           "alternates between user and assistant roles and try again.")
        for j, block in enumerate(m["content"]):
            bad = _check_block(block, f"messages.{i}.content.{j}", role)
            if bad is not None:
                return bad
        kinds = {next(iter(b)) for b in m["content"]}
        if kinds & {"toolUse", "toolResult"} and not has_tool_config:
            return invalid("The toolConfig field must be defined when using toolUse and toolResult content blocks.")
        results = [b["toolResult"].get("toolUseId") for b in m["content"] if "toolResult" in b]
        if role == "user" and sorted(map(str, results)) != sorted(previous_uses) and (results or previous_uses):
            return invalid(f"Expected toolResult blocks at messages.{i}.content for the following Ids: "
                           f"{', '.join(previous_uses) or '(none)'}")
        previous_uses = [b["toolUse"]["toolUseId"] for b in m["content"] if "toolUse" in b]
    return None


def check_converse(body: dict[str, Any]) -> web.Response | None:
    unknown = sorted(set(body) - CONVERSE_FIELDS)
    if unknown:
        return invalid(f"Malformed input request: extraneous key [{unknown[0]}] is not permitted, please reformat "
                       "your input and try again.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return invalid("1 validation error detected: Value at 'messages' failed to satisfy constraint: Member must "
                       "not be null")
    inference = body.get("inferenceConfig") or {}
    if set(inference) - INFERENCE_FIELDS or int(inference.get("maxTokens", 1)) < 1:
        return invalid("inferenceConfig accepts maxTokens (>= 1), temperature, topP and stopSequences only")
    output = body.get("outputConfig")
    if output is not None and output_schema(output) is None:
        return invalid("outputConfig.textFormat must be {type: json_schema, structure: {jsonSchema: {schema: "
                       "<a JSON schema as a string>}}}")
    tool_config = body.get("toolConfig")
    if tool_config is not None:
        tools = tool_config.get("tools") if isinstance(tool_config, dict) else None
        if not isinstance(tools, list) or not tools or not all(isinstance(t, dict) and "toolSpec" in t for t in tools):
            return invalid("toolConfig.tools must be a non-empty list of toolSpec entries")
    return _check_turns(messages, tool_config is not None)


def output_schema(output: Any) -> dict[str, Any] | None:
    """The JSON schema of a structured-output request (outputConfig), or None when malformed."""
    fmt = output.get("textFormat") if isinstance(output, dict) else None
    try:
        definition = fmt["structure"]["jsonSchema"]
        schema = json.loads(definition["schema"]) if fmt["type"] == "json_schema" else None
    except (KeyError, TypeError, ValueError):
        return None
    return schema if isinstance(schema, dict) else None
