"""The internal representation (IR): one provider-agnostic shape for requests, responses and streams.

Every inbound format is parsed into these types and every backend format is rendered from them, so
N formats need N adapters.  The IR is deliberately richer than any single format (reasoning with
signatures, cache hints, tool results with error flags) so lossy steps happen only at the edges.

Conventions every adapter relies on:
- Tool-call arguments are kept as the raw JSON *string* (`ToolCall.arguments`) exactly as received, so
  the OpenAI -> OpenAI path is lossless even for invalid JSON; object-based formats parse at render.
- Usage is canonical: `input_tokens` counts *all* prompt tokens (cache reads and writes included) and
  `output_tokens` all generated tokens (reasoning included).  Convert at the edges.
- Finish reasons are one of FINISH_REASONS; the raw value is kept for logs and same-format rendering.
- A stream is a sequence of `Event`s for choice 0.  Blocks are numbered 0, 1, 2 ... in order of their
  `BlockStart`; deltas of *different open blocks may interleave* (OpenAI backends do this), and
  encoders must cope.  A non-streaming response is the fold of the same events (`fold_events`).
"""

from __future__ import annotations

import operator
from typing import Any, Literal, Union

import msgspec
from msgspec import Struct, field

FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter", "pause", "error")
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "pause", "error"]


# --------------------------------------------------------------------------------------------------
# Content parts


class Text(Struct, tag="text", omit_defaults=True):
    text: str
    cache_control: dict[str, Any] | None = None  # Anthropic prompt-caching hint, kept for same-family


class Image(Struct, tag="image", omit_defaults=True):
    """An image given either by URL (`url`) or inline (`media_type` + base64 `data`)."""

    url: str | None = None
    media_type: str | None = None
    data: str | None = None
    detail: str | None = None  # OpenAI only; dropped elsewhere


class ToolCall(Struct, tag="tool_call", omit_defaults=True):
    id: str
    name: str
    arguments: str  # raw JSON text, exactly as the producer sent it


class ToolResult(Struct, tag="tool_result", omit_defaults=True):
    tool_call_id: str
    content: list[Union[Text, Image]] = field(default_factory=list)
    is_error: bool = False
    name: str | None = None  # recovered from the history when the source format has no name


class Reasoning(Struct, tag="reasoning", omit_defaults=True):
    """Model reasoning.  `provider` tags where a signature came from: never forward it elsewhere."""

    text: str = ""
    signature: str | None = None
    redacted_data: str | None = None
    provider: str | None = None


Part = Union[Text, Image, ToolCall, ToolResult, Reasoning]

Role = Literal["system", "user", "assistant", "tool"]


class Message(Struct, omit_defaults=True):
    role: Role
    parts: list[Part] = field(default_factory=list)
    name: str | None = None


# --------------------------------------------------------------------------------------------------
# Request


class ToolDef(Struct, omit_defaults=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class ToolChoice(Struct, omit_defaults=True):
    mode: Literal["auto", "none", "required", "tool"]
    name: str | None = None  # with mode == "tool"


class ResponseFormat(Struct, omit_defaults=True):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class ReasoningConfig(Struct, omit_defaults=True):
    enabled: bool | None = None
    effort: str | None = None  # low | medium | high | ...
    budget_tokens: int | None = None


class ChatRequest(Struct, omit_defaults=True):
    """A chat (or legacy text-completion, when `prompt` is set) request in provider-agnostic form."""

    model: str
    messages: list[Message] = field(default_factory=list)
    system: list[Text] = field(default_factory=list)
    prompt: str | None = None  # /v1/completions: a raw prompt, sent without a chat template
    tools: list[ToolDef] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    response_format: ResponseFormat | None = None
    reasoning: ReasoningConfig | None = None
    n: int = 1
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    stream: bool = False
    include_usage: bool = False
    # Fields the inbound format had that the IR does not model (vLLM's `repetition_penalty`,
    # `guided_json`, Anthropic's `container`, ...).  A backend adapter of the same family as
    # `source_format` merges them into its body; others ignore them.
    extra: dict[str, Any] = field(default_factory=dict)
    source_format: str = "openai"
    # What the client asked for that no backend reached through the IR can do (the Responses API's
    # built-in tools, `tools:web_search`): the model's unsupported-params policy drops or refuses it.
    unhonoured: list[str] = field(default_factory=list)

    def sampling_params_set(self) -> list[str]:
        """Names (IR spelling) of the optional parameters the client actually set."""
        names = [name for name, v in zip(OPTIONAL_PARAMS, _optional_values(self)) if v is not None and v not in _EMPTY]
        if self.n != 1:
            names.append("n")
        return names


# IR fields a backend may be unable to honour: the unsupported-parameter policy checks these.
OPTIONAL_PARAMS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "seed",
    "stop",
    "response_format",
    "reasoning",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "user",
    "metadata",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
)
# Read in one C call per request (the policy checks every request); an empty list or dict is unset.
_optional_values = operator.attrgetter(*OPTIONAL_PARAMS)
_EMPTY = ([], {})


class EmbeddingRequest(Struct, omit_defaults=True):
    model: str
    input: list[str] | list[list[int]]
    dimensions: int | None = None
    encoding_format: str | None = None  # "float" | "base64"; the frontend re-encodes
    user: str | None = None


# --------------------------------------------------------------------------------------------------
# Response


class Usage(Struct, omit_defaults=True):
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


class Choice(Struct, omit_defaults=True):
    index: int = 0
    parts: list[Union[Text, Reasoning, ToolCall]] = field(default_factory=list)
    finish_reason: FinishReason = "stop"
    raw_finish_reason: str | None = None
    stop_sequence: str | None = None


class ChatResponse(Struct, omit_defaults=True):
    id: str
    model: str
    created: int
    choices: list[Choice] = field(default_factory=list)
    usage: Usage | None = None


class EmbeddingResponse(Struct, omit_defaults=True):
    model: str
    data: list[list[float]]
    usage: Usage | None = None


# --------------------------------------------------------------------------------------------------
# Stream events


class Start(Struct, tag="start", omit_defaults=True):
    id: str | None = None
    model: str | None = None
    created: int | None = None


class BlockStart(Struct, tag="block_start", omit_defaults=True):
    index: int
    kind: Literal["text", "reasoning", "tool_call"]
    tool_call_id: str | None = None
    tool_name: str | None = None
    provider: str | None = None  # reasoning blocks: whose signature may follow (see Reasoning)


class TextDelta(Struct, tag="text_delta"):
    index: int
    text: str


class ReasoningDelta(Struct, tag="reasoning_delta"):
    index: int
    text: str


class ReasoningSignature(Struct, tag="reasoning_signature"):
    index: int
    signature: str


class RedactedReasoning(Struct, tag="redacted_reasoning"):
    index: int
    data: str


class ToolArgsDelta(Struct, tag="tool_args_delta"):
    index: int
    fragment: str


class BlockEnd(Struct, tag="block_end"):
    index: int


class Finish(Struct, tag="finish", omit_defaults=True):
    reason: FinishReason
    raw: str | None = None
    stop_sequence: str | None = None


class UsageEvent(Struct, tag="usage"):
    usage: Usage


class End(Struct, tag="end"):
    pass


Event = Union[
    Start,
    BlockStart,
    TextDelta,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    ToolArgsDelta,
    BlockEnd,
    Finish,
    UsageEvent,
    End,
]
# Errors travel as `adapters.errors.ProxyError` exceptions raised by a decoder's feed()/close(), not
# as events: the relay catches them and asks the client-side encoder for an in-stream error.


# --------------------------------------------------------------------------------------------------
# Folding a stream into a response


def fold_events(events: list[Event], *, model: str, id: str, created: int) -> ChatResponse:
    """The non-streaming response that a complete event sequence describes (stream -> non-stream)."""
    parts: dict[int, Text | Reasoning | ToolCall] = {}
    finish = Finish(reason="stop")
    usage: Usage | None = None
    # Dispatch on the exact type (no event Struct is subclassed), deltas first: no isinstance calls.
    for ev in events:
        t = type(ev)
        if t is TextDelta or t is ReasoningDelta:
            parts[ev.index].text += ev.text  # type: ignore[union-attr]
        elif t is ToolArgsDelta:
            parts[ev.index].arguments += ev.fragment  # type: ignore[union-attr]
        elif t is BlockStart:
            if ev.kind == "text":
                parts[ev.index] = Text(text="")
            elif ev.kind == "reasoning":
                parts[ev.index] = Reasoning(text="", provider=ev.provider)
            else:
                parts[ev.index] = ToolCall(id=ev.tool_call_id or "", name=ev.tool_name or "", arguments="")
        elif t is Start:
            id = ev.id or id
            model = ev.model or model
            created = ev.created or created
        elif t is ReasoningSignature:
            part = parts[ev.index]
            part.signature = (part.signature or "") + ev.signature  # type: ignore[union-attr]
        elif t is RedactedReasoning:
            parts[ev.index] = Reasoning(redacted_data=ev.data, provider="anthropic")
        elif t is Finish:
            finish = ev
        elif t is UsageEvent:
            usage = ev.usage
    ordered = [parts[i] for i in sorted(parts)]
    return ChatResponse(
        id=id,
        model=model,
        created=created,
        choices=[
            Choice(
                index=0,
                parts=ordered,
                finish_reason=finish.reason,
                raw_finish_reason=finish.raw,
                stop_sequence=finish.stop_sequence,
            )
        ],
        usage=usage,
    )


def consistent_finish(reason: FinishReason, saw_tool_call: bool) -> FinishReason:
    """Apply the cross-format consistency rule: tool calls emitted => tool_calls; none => never."""
    if saw_tool_call and reason == "stop":
        return "tool_calls"
    if not saw_tool_call and reason == "tool_calls":
        return "stop"
    return reason


def to_builtins(obj: Any) -> Any:
    """Plain dict/list view of an IR value (for tests and debug logs)."""
    return msgspec.to_builtins(obj)
