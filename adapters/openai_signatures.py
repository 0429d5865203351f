"""Signed reasoning in the OpenAI Chat Completions format, by the conventions clients already use.

Anthropic with extended thinking refuses a tool loop's next turn without the signed thinking blocks
it produced, and Gemini 3 one whose function call lost its `thoughtSignature`.  Chat Completions has
no standard slot for either; two conventions exist and the gateway speaks both, in answers
(streamed and not) and in the assistant history a client sends back, so a client that keeps the
assistant message as returned (the openai SDK's `messages.append(completion.choices[0].message)`
keeps unknown fields) closes the loop:

- Gemini (Google's own OpenAI-compatible endpoint): the signature rides on its tool call as
  `tool_calls[i].extra_content.google.thought_signature` (streamed: on the call's first delta).
  IR form (see `gemini_request`): an empty-text `Reasoning(provider="gemini", signature=...)`
  immediately before that `ToolCall`.
- Anthropic (OpenRouter's `reasoning_details`): a thinking block is `{"type": "reasoning.text",
  "text", "signature", "format": "anthropic-claude-v1", "index"}`, a redacted one
  `{"type": "reasoning.encrypted", "data", "format": "anthropic-claude-v1", "index"}`, in the
  message's `reasoning_details` list (streamed: one whole entry per block, in a delta after the
  block's `reasoning_content` text).  Entries of other formats are ignored.

Signatures on Gemini thought or text parts have no slot here (the Responses API carries them all,
`openai_responses_reasoning`); Gemini does not require them back.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from . import ir

__all__ = ["ExtraContent", "ReasoningDetail", "call_signature", "details_parts", "extra_content", "reasoning_detail",
           "signature_part"]

_GEMINI = "gemini"
_ANTHROPIC = "anthropic"
_ANTHROPIC_FORMAT = "anthropic-claude-v1"


class GoogleExtra(Struct):
    thought_signature: str | None = None


class ExtraContent(Struct):
    google: GoogleExtra | None = None


class ReasoningDetail(Struct):
    type: str
    format: str | None = None
    text: str | None = None
    signature: str | None = None
    data: str | None = None


def call_signature(part: ir.Part) -> str | None:
    """The signature a part holds when it is the IR form of a Gemini call signature."""
    if isinstance(part, ir.Reasoning) and part.provider == _GEMINI and not part.text and part.signature:
        return part.signature
    return None


def extra_content(signature: str) -> dict[str, Any]:
    """The `extra_content` of a tool call that carries `signature`."""
    return {"google": {"thought_signature": signature}}


def signature_part(extra: ExtraContent | None) -> ir.Reasoning | None:
    """A client's `extra_content` on a tool call -> the IR signature part to put before the call."""
    if extra is None or extra.google is None or not extra.google.thought_signature:
        return None
    return ir.Reasoning(signature=extra.google.thought_signature, provider=_GEMINI)


def reasoning_detail(part: ir.Reasoning, index: int) -> dict[str, Any] | None:
    """The `reasoning_details` entry of Anthropic's signed or redacted thinking, else None."""
    if part.provider != _ANTHROPIC:
        return None
    if part.redacted_data is not None:
        return {"type": "reasoning.encrypted", "data": part.redacted_data, "format": _ANTHROPIC_FORMAT, "index": index}
    if part.signature:
        return {"type": "reasoning.text", "text": part.text, "signature": part.signature, "format": _ANTHROPIC_FORMAT,
                "index": index}
    return None


def details_parts(details: list[ReasoningDetail] | None) -> list[ir.Reasoning]:
    """A client's `reasoning_details` -> Anthropic's thinking blocks, in order (other formats ignored)."""
    parts: list[ir.Reasoning] = []
    for d in details or ():
        if d.format != _ANTHROPIC_FORMAT:
            continue
        if d.type == "reasoning.encrypted" and d.data:
            parts.append(ir.Reasoning(redacted_data=d.data, provider=_ANTHROPIC))
        elif d.type == "reasoning.text" and d.signature:
            parts.append(ir.Reasoning(text=d.text or "", signature=d.signature, provider=_ANTHROPIC))
    return parts
