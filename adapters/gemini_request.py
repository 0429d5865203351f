"""Gemini `generateContent` request bodies -> IR (the Gemini frontend's parsing side).

The wire Structs follow the camelCase JSON that google-genai 3.6.1 sends (`models.py`
`_GenerateContentParameters_to_mldev`, `_Part_to_mldev`, `_GenerateContentConfig_to_mldev`).  Unknown
fields inside known objects are ignored; unknown *top-level* fields (`safetySettings`, `cachedContent`,
`labels`, ...) are kept in `ChatRequest.extra`.  The model and the stream flag are in the URL, not the
body: the proxy fills `req.model` and `req.stream` (see `GeminiFrontend.request_target`).

Conventions shared with the backend side (`gemini_build`) so thought signatures survive:
- a `thought: true` part is an IR `Reasoning(provider="gemini")`; consecutive thought parts of one
  content merge into one Reasoning (a streamed thought arrives as several parts, the signature on the
  last), so a client that appends streamed chunks to its history round-trips them;
- a `thoughtSignature` on any other part (functionCall, text) becomes an empty-text, signed Reasoning
  *immediately before* that part, and the backend puts it back on the part that follows it.
Function calls without an `id` (Gemini rarely sends one) get deterministic ids (`call_<content>_<part>`,
stable across requests so backend prompt caches still hit); a functionResponse takes the id of the
first unanswered call of the same name, which keeps Gemini's "answers in call order" pairing.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from . import ir, jsonio
from .jsonio import TopLevel
from .common import decode_client_body
from .errors import bad_request, unsupported


def strip_models(model: str) -> str:
    """`models/gemini-2.5-flash` -> `gemini-2.5-flash` (the API accepts both spellings)."""
    return model[len("models/"):] if model.startswith("models/") else model


# --------------------------------------------------------------------------------------------------
# Wire Structs


class Blob(Struct):
    mimeType: str = ""
    data: str = ""


class FileData(Struct):
    fileUri: str
    mimeType: str | None = None


class FunctionCall(Struct):
    name: str
    args: dict[str, Any] | None = None
    id: str | None = None


class FunctionResponse(Struct):
    name: str
    response: dict[str, Any] | None = None
    id: str | None = None


class Part(Struct):
    text: str | None = None
    thought: bool | None = None
    thoughtSignature: str | None = None
    inlineData: Blob | None = None
    fileData: FileData | None = None
    functionCall: FunctionCall | None = None
    functionResponse: FunctionResponse | None = None
    executableCode: Any = None
    codeExecutionResult: Any = None


class Content(Struct):
    parts: list[Part] = []
    role: str | None = None


class FunctionDeclaration(Struct):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    parametersJsonSchema: Any = None
    # google-genai 3.6.1 dumps FunctionDeclaration with its Python field names (protobuf JSON parsers
    # accept both spellings, so the real API does too): `parameters_json_schema`, and snake_case
    # keys inside `parameters` (max_items, any_of, property_ordering), handled by schema_to_json.
    parameters_json_schema: Any = None


class Tool(Struct):
    functionDeclarations: list[FunctionDeclaration] | None = None
    # Built-in tools run inside Gemini: no other backend can execute them.
    googleSearch: Any = None
    googleSearchRetrieval: Any = None
    codeExecution: Any = None
    urlContext: Any = None


class FunctionCallingConfig(Struct):
    mode: str | None = None
    allowedFunctionNames: list[str] | None = None


class ToolConfig(Struct):
    functionCallingConfig: FunctionCallingConfig | None = None


class ThinkingConfig(Struct):
    thinkingBudget: int | None = None
    thinkingLevel: str | None = None
    includeThoughts: bool | None = None


class GenerationConfig(Struct):
    temperature: float | None = None
    topP: float | None = None
    topK: int | None = None
    candidateCount: int | None = None
    maxOutputTokens: int | None = None
    stopSequences: list[str] | None = None
    presencePenalty: float | None = None
    frequencyPenalty: float | None = None
    seed: int | None = None
    responseMimeType: str | None = None
    responseSchema: dict[str, Any] | None = None
    responseJsonSchema: Any = None
    responseLogprobs: bool | None = None
    logprobs: int | None = None
    thinkingConfig: ThinkingConfig | None = None


class GenerateContentRequest(Struct):
    contents: list[Content]
    systemInstruction: Content | None = None
    tools: list[Tool] | None = None
    toolConfig: ToolConfig | None = None
    generationConfig: GenerationConfig | None = None


KNOWN_FIELDS = frozenset(GenerateContentRequest.__struct_fields__)
_request_decoder = jsonio.decoder(GenerateContentRequest)


# --------------------------------------------------------------------------------------------------
# Gemini's Schema subset -> JSON Schema

_SCHEMA_NESTED = ("items",)
_SCHEMA_LISTS = ("anyOf",)
_SCHEMA_DROP = ("propertyOrdering",)


def _camel(key: str) -> str:
    """`max_items` -> `maxItems` (the SDK's spelling -> the wire's, which JSON Schema shares)."""
    if "_" not in key:
        return key
    head, *rest = key.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def schema_to_json(schema: Any) -> Any:
    """Gemini `Schema` (OpenAPI subset, upper-case `type`, `nullable`) as standard JSON Schema, so
    other backends accept it.  Keywords JSON Schema shares (enum, format, minItems, ...) pass as is."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        key = _camel(key)
        if key in _SCHEMA_DROP or key == "nullable":
            continue
        if key == "type" and isinstance(value, str):
            out[key] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out[key] = {k: schema_to_json(v) for k, v in value.items()}
        elif key in _SCHEMA_NESTED:
            out[key] = schema_to_json(value)
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [schema_to_json(v) for v in value]
        else:
            out[key] = value
    if schema.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


# --------------------------------------------------------------------------------------------------
# Contents -> IR messages


def _image(p: Part, path: str) -> ir.Image:
    if p.inlineData is not None:
        mime = p.inlineData.mimeType
        if not mime.startswith("image/"):
            raise unsupported(f"inline data of type {mime!r} cannot be translated; only images are", param=f"{path}.inlineData")
        return ir.Image(media_type=mime, data=p.inlineData.data)
    fd = p.fileData
    assert fd is not None
    if fd.mimeType and not fd.mimeType.startswith("image/"):
        raise unsupported(f"file data of type {fd.mimeType!r} cannot be translated; only images are", param=f"{path}.fileData")
    return ir.Image(url=fd.fileUri, media_type=fd.mimeType)


def function_result(fr: FunctionResponse, call_id: str) -> ir.ToolResult:
    """`{"output": ...}` is the result, `{"error": ...}` a failed call (google-genai's convention);
    any other object is the output itself, as JSON text."""
    resp = fr.response or {}
    is_error = set(resp) == {"error"}
    value = resp["error"] if is_error else resp["output"] if set(resp) == {"output"} else resp
    text = value if isinstance(value, str) else jsonio.dumps_str(value)
    return ir.ToolResult(tool_call_id=call_id, content=[ir.Text(text=text)] if text else [], is_error=is_error, name=fr.name)


class _Turns:
    """Builds IR messages from Gemini contents; holds the unanswered calls (name -> ids in order)."""

    __slots__ = ("messages", "pending")

    def __init__(self) -> None:
        self.messages: list[ir.Message] = []
        self.pending: dict[str, list[str]] = {}

    def model_turn(self, c: Content, i: int) -> None:
        parts: list[ir.Part] = []
        for j, p in enumerate(c.parts):
            path = f"contents[{i}].parts[{j}]"
            if p.thought:
                last = parts[-1] if parts else None
                if isinstance(last, ir.Reasoning) and last.provider == "gemini" and last.signature is None:
                    last.text += p.text or ""
                    last.signature = p.thoughtSignature
                else:
                    parts.append(ir.Reasoning(text=p.text or "", signature=p.thoughtSignature, provider="gemini"))
                continue
            if p.thoughtSignature:
                parts.append(ir.Reasoning(signature=p.thoughtSignature, provider="gemini"))
            if p.functionCall is not None:
                fc = p.functionCall
                call_id = fc.id or f"call_{i}_{j}"
                self.pending.setdefault(fc.name, []).append(call_id)
                parts.append(ir.ToolCall(id=call_id, name=fc.name, arguments=jsonio.dumps_str(fc.args or {})))
            elif p.text is not None:
                parts.append(ir.Text(text=p.text))
            else:
                parts.append(self._other(p, path, "model"))
        self.messages.append(ir.Message(role="assistant", parts=parts))

    def user_turn(self, c: Content, i: int) -> None:
        """Each functionResponse becomes its own `tool` message, in order; other parts are grouped
        into user messages around them."""
        pending: list[ir.Part] = []
        for j, p in enumerate(c.parts):
            path = f"contents[{i}].parts[{j}]"
            if p.functionResponse is not None:
                if pending:
                    self.messages.append(ir.Message(role="user", parts=pending))
                    pending = []
                fr = p.functionResponse
                waiting = self.pending.get(fr.name) or []
                call_id = fr.id or (waiting[0] if waiting else f"call_{i}_{j}")
                if call_id in waiting:
                    waiting.remove(call_id)
                self.messages.append(ir.Message(role="tool", parts=[function_result(fr, call_id)]))
            elif p.text is not None:
                pending.append(ir.Text(text=p.text))
            elif p.functionCall is not None:
                raise bad_request("functionCall parts belong in model turns", param=path)
            else:
                pending.append(self._other(p, path, "user"))
        if pending:
            self.messages.append(ir.Message(role="user", parts=pending))

    @staticmethod
    def _other(p: Part, path: str, role: str) -> ir.Image:
        if p.inlineData is not None or p.fileData is not None:
            return _image(p, path)
        if p.executableCode is not None or p.codeExecutionResult is not None:
            raise unsupported("code execution parts can only be sent to Gemini itself", param=path)
        if p.functionResponse is not None:
            raise bad_request(f"functionResponse parts are not allowed in {role} turns", param=path)
        raise bad_request("a part needs one data field (text, inlineData, fileData, functionCall, functionResponse)", param=path)


def contents_to_ir(contents: list[Content]) -> list[ir.Message]:
    turns = _Turns()
    for i, c in enumerate(contents):
        if c.role == "model":
            turns.model_turn(c, i)
        elif c.role in (None, "user", "function", "tool"):  # older SDKs sent function results as "function"
            turns.user_turn(c, i)
        else:
            raise bad_request(f"role must be 'user' or 'model', not {c.role!r}", param=f"contents[{i}].role")
    return turns.messages


def system_to_ir(system: Content | None) -> list[ir.Text]:
    if system is None:
        return []
    for j, p in enumerate(system.parts):
        if p.text is None:
            raise bad_request("systemInstruction may contain only text parts", param=f"systemInstruction.parts[{j}]")
    return [ir.Text(text=p.text or "") for p in system.parts]


# --------------------------------------------------------------------------------------------------
# Tools, config


def _tools_to_ir(tools: list[Tool]) -> list[ir.ToolDef]:
    out: list[ir.ToolDef] = []
    for i, t in enumerate(tools):
        for builtin in ("googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext"):
            if getattr(t, builtin) is not None:
                raise unsupported(f"the built-in tool {builtin!r} can only run on Gemini itself", param=f"tools[{i}].{builtin}")
        for fd in t.functionDeclarations or []:
            json_schema = fd.parametersJsonSchema if fd.parametersJsonSchema is not None else fd.parameters_json_schema
            if json_schema is not None:
                params = json_schema
            elif fd.parameters is not None:
                params = schema_to_json(fd.parameters)
            else:
                params = {"type": "object", "properties": {}}
            out.append(ir.ToolDef(name=fd.name, description=fd.description, parameters=params))
    return out


def _tool_choice_to_ir(tc: ToolConfig | None, tools: list[ir.ToolDef]) -> tuple[ir.ToolChoice | None, list[ir.ToolDef]]:
    """(tool_choice, tools).  ANY with one allowed name is a named choice; with several, `required`
    over only those tools (the others are withheld, which is what the restriction means)."""
    fcc = tc.functionCallingConfig if tc is not None else None
    if fcc is None or fcc.mode in (None, "MODE_UNSPECIFIED"):
        return None, tools
    mode = fcc.mode.upper()
    if mode == "NONE":
        return ir.ToolChoice(mode="none"), tools
    if mode in ("AUTO", "VALIDATED"):  # VALIDATED (schema-checked calls) has no equivalent: lossy
        return ir.ToolChoice(mode="auto"), tools
    if mode != "ANY":
        raise bad_request(f"unknown functionCallingConfig mode {fcc.mode!r}", param="toolConfig.functionCallingConfig.mode")
    names = fcc.allowedFunctionNames or []
    if len(names) == 1:
        return ir.ToolChoice(mode="tool", name=names[0]), tools
    if names:
        tools = [t for t in tools if t.name in names]
    return ir.ToolChoice(mode="required"), tools


def _response_format(g: GenerationConfig) -> ir.ResponseFormat | None:
    mime = (g.responseMimeType or "").lower()
    if mime in ("", "text/plain"):
        return None
    if mime != "application/json":
        raise unsupported(f"responseMimeType {g.responseMimeType!r} cannot be translated", param="generationConfig.responseMimeType")
    if g.responseJsonSchema is not None:
        return ir.ResponseFormat(type="json_schema", name="response", schema=g.responseJsonSchema)
    if g.responseSchema is not None:
        return ir.ResponseFormat(type="json_schema", name="response", schema=schema_to_json(g.responseSchema))
    return ir.ResponseFormat(type="json_object")


def _reasoning(t: ThinkingConfig | None) -> ir.ReasoningConfig | None:
    """thinkingBudget 0 = off, -1 = automatic (enabled, no budget), N = a budget; thinkingLevel is the
    effort.  includeThoughts has no IR slot: translated answers show whatever reasoning comes back."""
    if t is None or (t.thinkingBudget is None and t.thinkingLevel is None):
        return None
    if t.thinkingBudget == 0:
        return ir.ReasoningConfig(enabled=False)
    budget = t.thinkingBudget if t.thinkingBudget is not None and t.thinkingBudget > 0 else None
    return ir.ReasoningConfig(enabled=True, budget_tokens=budget, effort=t.thinkingLevel.lower() if t.thinkingLevel else None)


def request_to_ir(w: GenerateContentRequest, extra: dict[str, Any]) -> ir.ChatRequest:
    g = w.generationConfig or GenerationConfig()
    tools = _tools_to_ir(w.tools or [])
    tool_choice, tools = _tool_choice_to_ir(w.toolConfig, tools)
    if g.candidateCount is not None and g.candidateCount < 1:
        raise bad_request("candidateCount must be at least 1", param="generationConfig.candidateCount")
    return ir.ChatRequest(
        model="",
        messages=contents_to_ir(w.contents),
        system=system_to_ir(w.systemInstruction),
        tools=tools,
        tool_choice=tool_choice,
        max_tokens=g.maxOutputTokens,
        temperature=g.temperature,
        top_p=g.topP,
        top_k=g.topK,
        presence_penalty=g.presencePenalty,
        frequency_penalty=g.frequencyPenalty,
        seed=g.seed,
        stop=list(g.stopSequences or []),
        response_format=_response_format(g),
        reasoning=_reasoning(g.thinkingConfig),
        n=g.candidateCount or 1,
        logprobs=g.responseLogprobs,
        top_logprobs=g.logprobs,
        include_usage=True,  # Gemini streams always carry usageMetadata: ask backends for usage
        extra=extra,
        source_format="gemini",
    )


def parse_request(body: bytes, raw: TopLevel | None = None) -> ir.ChatRequest:
    wire: GenerateContentRequest = decode_client_body(_request_decoder, body, "generateContent request")
    return request_to_ir(wire, jsonio.unknown_fields(body, KNOWN_FIELDS, raw))
