"""Gemini thought signatures in the OpenAI Chat Completions format, by Google's own convention.

Gemini 3 refuses a tool loop whose function call comes back without the `thoughtSignature` it was
issued with.  Google's OpenAI-compatible endpoint carries that signature on the tool call as
`tool_calls[i].extra_content.google.thought_signature`, in answers (streamed: on the call's first
delta) and in the assistant history a client sends back; the gateway's Chat Completions face does
the same, so a client that keeps the assistant message as returned (the openai SDK's
`messages.append(completion.choices[0].message)`, which keeps unknown fields) closes the loop.

The IR form (see `gemini_request`): a signature that sat on a function call is an empty-text
`Reasoning(provider="gemini", signature=...)` immediately before that `ToolCall`.  Nothing else
has a Chat Completions slot: signatures on thought or text parts, and Anthropic's signed or redacted
thinking, are dropped here (the Responses API carries them all; `openai_responses_reasoning`).
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from . import ir

__all__ = ["ExtraContent", "call_signature", "extra_content", "signature_part"]

_PROVIDER = "gemini"  # the provider tag of the signatures this convention carries


class GoogleExtra(Struct):
    thought_signature: str | None = None


class ExtraContent(Struct):
    google: GoogleExtra | None = None


def call_signature(part: ir.Part) -> str | None:
    """The signature a part holds when it is the IR form of a Gemini call signature."""
    if isinstance(part, ir.Reasoning) and part.provider == _PROVIDER and not part.text and part.signature:
        return part.signature
    return None


def extra_content(signature: str) -> dict[str, Any]:
    """The `extra_content` of a tool call that carries `signature`."""
    return {"google": {"thought_signature": signature}}


def signature_part(extra: ExtraContent | None) -> ir.Reasoning | None:
    """A client's `extra_content` on a tool call -> the IR signature part to put before the call."""
    if extra is None or extra.google is None or not extra.google.thought_signature:
        return None
    return ir.Reasoning(signature=extra.google.thought_signature, provider=_PROVIDER)
