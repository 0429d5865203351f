"""The gateway's reasoning envelope: what a Responses `reasoning` item carries in `encrypted_content`
so that signed reasoning survives a client's round trip.

Why: Anthropic with extended thinking answers 400 to a tool-loop turn whose last assistant message
lacks the signed `thinking` block it produced (text and signature verbatim, or the
`redacted_thinking` data), and Gemini 3 answers 400 to a history whose function call lacks the
`thoughtSignature` it produced.  A Responses client (Codex, the Vercel AI SDK, the openai SDK in a
manual loop) keeps only output items, so the gateway puts what the next turn needs into the one
opaque slot a reasoning item has -- `encrypted_content` -- and reads it back from the input.

Format: `llm-proxy.r1.` followed by the base64url (no padding) of a compact JSON object

    {"p": provider, "t": reasoning text, "s": signature, "r": redacted data}

`p` is the IR provider tag (`anthropic`, `gemini`, ...) so the part only ever goes back to the
provider that signed it (the backend adapters drop other providers' reasoning); `t` is omitted
when empty; at least one of `s` / `r` is present.  One envelope holds one IR `Reasoning` part:
Anthropic's thinking block (text + signature), its redacted_thinking block (`r`), Gemini's thought
(text + signature), or a Gemini signature that sat on a function call or a text part (no text: the
Gemini backend puts it back on the part that follows it, see `gemini_request`).  The `r1` in the
prefix is the format version: a later format gets a new prefix, and this decoder refuses unknown
fields rather than guess.

It is not encrypted and not signed by the gateway: it holds only what the provider already showed
the client (its thinking text) and the provider's own opaque signatures, which the provider itself
verifies -- a tampered envelope is refused by the provider exactly as a tampered Anthropic
`thinking` block sent to the Anthropic frontend would be.  It needs no key, so replicas and
restarts read each other's envelopes.  Size is bounded (MAX_ENVELOPE characters, far above what a
thinking budget produces); a value with the prefix that does not decode is a 400 naming the item.
Anything else in `encrypted_content` (OpenAI's own ciphertext) is not ours: the item is dropped.
"""

from __future__ import annotations

import base64
from typing import Annotated

import msgspec
from msgspec import Meta, Struct

from . import ir, jsonio
from .errors import ProxyError, bad_request

__all__ = ["MAX_ENVELOPE", "PREFIX", "open_envelope", "seal"]

PREFIX = "llm-proxy.r1."
MAX_ENVELOPE = 4 * 1024 * 1024  # characters of encrypted_content


class _Envelope(Struct, omit_defaults=True, forbid_unknown_fields=True):
    p: Annotated[str, Meta(min_length=1, max_length=32, pattern="^[a-z0-9_.-]+$")]
    t: str = ""
    s: str | None = None
    r: str | None = None


_decoder = jsonio.decoder(_Envelope)


def seal(part: ir.Reasoning) -> str | None:
    """The envelope for a reasoning part that a provider signed or redacted, else None (plain
    reasoning text carries nothing a provider needs back)."""
    if part.provider is None or (not part.signature and part.redacted_data is None):
        return None
    env = _Envelope(p=part.provider, t=part.text, s=part.signature or None, r=part.redacted_data)
    raw = jsonio.dumps(msgspec.to_builtins(env))  # omit_defaults: no empty text, no absent fields
    return PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def open_envelope(value: object, param: str) -> ir.Reasoning | None:
    """The reasoning part inside a reasoning item's `encrypted_content`: None when the value is not
    the gateway's envelope; a 400 naming `param` when it is one but is malformed or too large."""
    if not isinstance(value, str) or not value.startswith(PREFIX):
        return None
    if len(value) > MAX_ENVELOPE:
        raise bad_request(f"encrypted_content is larger than {MAX_ENVELOPE} characters", param=param)
    body = value[len(PREFIX):]
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_", validate=True)
        env = _decoder.decode(raw)
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise _malformed(param) from None
    if env.s is None and env.r is None:
        raise _malformed(param)
    return ir.Reasoning(text=env.t, signature=env.s, redacted_data=env.r, provider=env.p)


def _malformed(param: str) -> ProxyError:
    return bad_request("encrypted_content is not a valid reasoning envelope from this gateway (send the reasoning "
                       "item back exactly as it was returned)", param=param)
