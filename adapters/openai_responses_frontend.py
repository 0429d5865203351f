"""The OpenAI Responses API (`POST /v1/responses`) as a client-facing frontend, translated through the IR.

Stateful as on OpenAI: `store` defaults to true and the answer with its input items is stored for the
caller's key; `previous_response_id`, `conversation` and `item_reference` items continue stored state
(`openai_responses_state` says what is stored and how it is listed; `proxy/stored.py` reads it before
`build_request` and stores the finished turn).  There is no same-format pass-through (no backend
speaks the Responses API), so this frontend is not a `base.Passthrough`.  Request Structs mirror
openai-python's `types/responses/response_create_params.py` / `response_input_param.py`; the input
items are read by `openai_responses_input`, the output side is in `openai_responses_stream`.

Decisions (what the IR cannot hold, and what we do):
- `instructions` and leading `system` / `developer` messages -> the IR system prompt; later ones
  stay system messages in place.  `output_text` / `refusal` parts of assistant history -> text.
- `input_image` with `image_url` (URL or base64 data URL) -> ir.Image; by `file_id` and
  `input_file` parts: 400 unsupported (the IR has no file references).
- `function_call` / `custom_tool_call` items join the assistant message before them (call_id -> the
  IR tool-call id; a namespaced call -> its flat name, a custom call's `input` -> `{"input": ...}`);
  each `function_call_output` / `custom_tool_call_output` is one IR tool message.  Other item types
  (the built-in tools' calls: `web_search_call`, `local_shell_call`, ...) follow the model's
  `unsupported_params` policy, like the built-in tools themselves.
- `reasoning` items carrying the gateway's envelope in `encrypted_content` (`openai_responses_reasoning`)
  become the signed IR reasoning they came from (Anthropic thinking / redacted_thinking, Gemini
  thought signatures), joined to the assistant turn with the calls and text after them, so a tool
  loop's next turn is accepted; provider tags keep them away from other providers.  A malformed
  envelope is a 400 naming the item.  Other reasoning items are dropped: OpenAI's ciphertext and
  bare summaries mean nothing to any backend the gateway reaches through the IR.
- Tools: function, namespace and custom tools are flattened to IR function tools and mapped back
  on the answer; built-in tools (web_search, file_search, code_interpreter, mcp, ...) and
  tool_choice forms naming them follow the model's `unsupported_params` policy (see
  `openai_responses_tools`).  `tool_choice: {"type":"allowed_tools"}` narrows the tool list.
- `previous_response_id` / `conversation`: the stored items they name come first (`context`), then
  `input`.  `item_reference` items are replaced by the stored item; a reference to reasoning that
  was not stored (`rs_...`, the prefix of OpenAI's and the gateway's reasoning items) is dropped like
  the reasoning item itself would be, any other unknown id is a 404 naming it.
- `prompt` (stored templates) and `background: true` (polled later): 400.
- `include`, `truncation`, `service_tier`, `prompt_cache_key`, `prompt_cache_retention`,
  `max_tool_calls`, `stream_options`, `text.verbosity`, `reasoning.summary` are ignored.
- `reasoning.effort` -> ReasoningConfig(effort=...) ("none" also sets enabled=False);
  `top_logprobs` -> logprobs=True + top_logprobs; `safety_identifier` -> `user` when `user` is unset.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

from msgspec import Struct

from . import ir, jsonio
from .base import BEARER, X_RATELIMIT, ApiRoute, ChatOp, InBody, Route, StoreRoute
from .common import decode_client_body, synth_id
from .errors import ProxyError, bad_request
from .jsonio import TopLevel
from .openai_response import error_object
from .openai_responses_input import WHAT, History
from .openai_responses_reasoning import seal
from .openai_responses_state import STORE_ROUTES, ResponsesState
from .openai_responses_stream import (
    STATUS_FROM_IR,
    ResponsesStreamEncoder,
    failed_error,
    message_item,
    reasoning_item,
    request_echo,
    response_object,
)
from .openai_responses_tools import (
    TOOLS_KEY,
    ToolSet,
    builtin_name,
    call_item,
    client_tools,
    flat_name,
    is_custom,
)

__all__ = ["ResponsesFrontend", "parse_request"]


# --------------------------------------------------------------------------------------------------
# Wire types (client request)


class _Format(Struct, tag_field="type"):
    pass


class TextFormat(_Format, tag="text"):
    pass


class JsonObjectFormat(_Format, tag="json_object"):
    pass


class JsonSchemaFormat(_Format, tag="json_schema"):
    name: str
    schema: dict[str, Any]
    description: str | None = None
    strict: bool | None = None


class TextConfig(Struct):
    format: TextFormat | JsonObjectFormat | JsonSchemaFormat | None = None


class ReasoningIn(Struct):
    effort: str | None = None


class RequestIn(Struct):
    model: str
    input: str | list[dict[str, Any]] = []  # items are typed one by one (messages may omit `type`)
    instructions: str | None = None
    tools: list[dict[str, Any]] = []  # typed one by one: built-in tools get a 400 naming them
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_logprobs: int | None = None
    text: TextConfig | None = None
    reasoning: ReasoningIn | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    stream: bool | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: Any = None
    background: bool | None = None


_decoder = jsonio.decoder(RequestIn)


# --------------------------------------------------------------------------------------------------
# tools, tool_choice, text format, the whole request


def _tool_choice(tc: Any, tools: ToolSet) -> tuple[ir.ToolChoice | None, list[ir.ToolDef]]:
    if tc is None or isinstance(tc, str):
        return (ir.ToolChoice(mode=tc) if tc else None), tools.defs
    kind = tc.get("type")
    if kind in ("function", "custom") and isinstance(tc.get("name"), str):
        return ir.ToolChoice("tool", tc["name"]), tools.defs
    if kind == "allowed_tools" and tc.get("mode") in ("auto", "required") and isinstance(tc.get("tools"), list):
        allowed = {flat_name(t.get("name"), t.get("namespace")) for t in tc["tools"]
                   if isinstance(t, dict) and t.get("type") in ("function", "custom")}
        return ir.ToolChoice(mode=tc["mode"]), [t for t in tools.defs if t.name in allowed]
    if kind in ("function", "custom", "allowed_tools"):
        raise bad_request(f"invalid tool_choice of type {kind!r}", param="tool_choice")
    tools.builtins.append(builtin_name(kind, "tool_choice", "tool_choice.type"))
    return None, tools.defs


def _response_format(text: TextConfig | None) -> ir.ResponseFormat | None:
    f = text.format if text is not None else None
    if f is None:
        return None
    if isinstance(f, JsonSchemaFormat):
        return ir.ResponseFormat(
            "json_schema", name=f.name, schema=f.schema, strict=f.strict, description=f.description
        )
    return ir.ResponseFormat("json_object" if isinstance(f, JsonObjectFormat) else "text")


def _refuse_state(r: RequestIn) -> None:
    if r.prompt is not None:
        raise bad_request("prompt is not supported: the gateway stores no prompt templates; send the prompt in "
                          "instructions and input", param="prompt")
    if r.background:
        raise bad_request("background is not supported: the gateway answers while the request is open and cannot "
                          "be polled later", param="background")


def parse_request(body: bytes) -> ir.ChatRequest:
    """A request that continues nothing stored (see `build_request`)."""
    return build_request(decode_request(body), [], {})[0]


def decode_request(body: bytes) -> RequestIn:
    r: RequestIn = decode_client_body(_decoder, body, WHAT)
    _refuse_state(r)
    return r


def build_request(r: RequestIn, context: list[dict[str, Any]],
                  found: dict[str, dict[str, Any]]) -> tuple[ir.ChatRequest, list[dict[str, Any]]]:
    """(the IR request, its own input items) from the decoded body, after the stored items it
    continues (`context`: a previous response's chain or a conversation), with `item_reference`s
    resolved from `found`."""
    history = History(r.instructions)
    history.found = found
    for i, raw in enumerate(context):
        history.item(raw, i, own=False, where="context")
    if isinstance(r.input, str):
        history.item({"type": "message", "role": "user", "content": r.input}, 0)
    else:
        for i, raw in enumerate(r.input):
            history.item(raw, i)
    if not history.messages:
        raise bad_request("input must contain at least one message or item", param="input")
    toolset = ToolSet()
    toolset.add_all(r.tools)
    tool_choice, tools = _tool_choice(r.tool_choice, toolset)
    reasoning = None
    if r.reasoning is not None and r.reasoning.effort is not None:
        off = r.reasoning.effort == "none"
        reasoning = ir.ReasoningConfig(effort=r.reasoning.effort, enabled=False if off else None)
    return ir.ChatRequest(
        model=r.model,
        messages=history.messages,
        system=history.system,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=r.parallel_tool_calls,
        max_tokens=r.max_output_tokens,
        temperature=r.temperature,
        top_p=r.top_p,
        logprobs=True if r.top_logprobs else None,
        top_logprobs=r.top_logprobs or None,
        response_format=_response_format(r.text),
        reasoning=reasoning,
        metadata=r.metadata,
        user=r.user if r.user is not None else r.safety_identifier,
        stream=bool(r.stream),
        include_usage=bool(r.stream),  # response.completed always carries usage
        extra={TOOLS_KEY: toolset.client} if toolset.client else {},
        source_format="openai-responses",
        unhonoured=toolset.builtins + history.unhonoured,
    ), history.inputs


# --------------------------------------------------------------------------------------------------
# IR response -> Response object


def _output(choice: ir.Choice, req: ir.ChatRequest | None) -> list[dict[str, Any]]:
    """IR parts in order; adjacent text parts share one message item."""
    items: list[dict[str, Any]] = []
    texts: list[str] = []
    tools = client_tools(req)

    def flush() -> None:
        if texts:
            items.append(message_item(synth_id("msg_"), ["".join(texts)]))
            texts.clear()

    for p in choice.parts:
        if isinstance(p, ir.Text):
            texts.append(p.text)
            continue
        flush()
        if isinstance(p, ir.ToolCall):
            items.append(call_item(tools, synth_id("ctc_" if is_custom(tools, p.name) else "fc_"), p.id, p.name,
                                   p.arguments))
        else:
            sealed = seal(p)
            if p.text or sealed:
                items.append(reasoning_item(synth_id("rs_"), [p.text] if p.text else [], sealed))
    flush()
    return items


STATE = ResponsesState(decode_request, build_request)


class ResponsesFrontend:
    """OpenAI Responses API for clients (`client.responses.create`, the Agents SDK), with stored responses
    and conversations (`STORE_ROUTES`)."""

    name: ClassVar[str] = "openai-responses"
    stream_content_type: ClassVar[str] = "text/event-stream"
    client_key = (BEARER,)
    rate_limit_headers = (X_RATELIMIT,)
    error_prefixes: ClassVar[tuple[str, ...]] = ()

    def routes(self) -> list[Route]:
        op = ChatOp("responses", self.parse_chat, self.render_chat, self.stream_encoder, (("max_output_tokens",),),
                    render_with_request=self.render_chat, stored=STATE)
        stored = [StoreRoute(method, path, action, STATE) for method, path, action in STORE_ROUTES]
        return [ApiRoute("/v1/responses", InBody(op)), *stored]

    def parse_chat(self, body: bytes, raw: TopLevel | None = None) -> ir.ChatRequest:
        return parse_request(body)  # unknown fields are ignored, so the split is not needed

    def render_chat(self, resp: ir.ChatResponse, model: str, req: ir.ChatRequest | None = None) -> bytes:
        choice = resp.choices[0] if resp.choices else ir.Choice()
        saw_tool = any(isinstance(p, ir.ToolCall) for p in choice.parts)
        status, reason = STATUS_FROM_IR[ir.consistent_finish(choice.finish_reason, saw_tool)]
        error = None
        if status == "failed":
            error = failed_error(ProxyError("server", f"the upstream stopped generating "
                                                      f"({choice.raw_finish_reason or 'error'})"))
        turn = STATE.turn(req)
        obj = response_object(turn.response_id if turn is not None else synth_id("resp_"), model,
                              resp.created or int(time.time()), request_echo(req), output=_output(choice, req),
                              status=status, usage=resp.usage, incomplete_reason=reason, error=error)
        if turn is not None and error is None:
            turn.final = obj
        return jsonio.dumps(obj)

    def stream_encoder(self, req: ir.ChatRequest, model: str) -> ResponsesStreamEncoder:
        return ResponsesStreamEncoder(req, model)

    def render_error(self, err: ProxyError) -> tuple[int, bytes]:
        return err.status, jsonio.dumps({"error": error_object(err)})
