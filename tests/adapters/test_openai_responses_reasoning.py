"""The reasoning envelope (`encrypted_content` of the gateway's reasoning items): round trips row by
row, what is not sealed, what is not ours, and every malformed row a 400 naming the item."""

import base64

import orjson
import pytest

from adapters import ir
from adapters.errors import ProxyError
from adapters.openai_responses_reasoning import MAX_ENVELOPE, PREFIX, open_envelope, seal

PARAM = "input[3].encrypted_content"


@pytest.mark.parametrize("part", [
    ir.Reasoning(text="Let me think.", signature="EqQBCkYIBxgCKkD", provider="anthropic"),
    ir.Reasoning(redacted_data="EmwKAhgBEgy3va3pzix", provider="anthropic"),
    ir.Reasoning(signature="CsIBAVSoXO4=", provider="gemini"),
    ir.Reasoning(text="**Planning**\n\nünïcode ✓", signature="c2ln", provider="gemini"),
    ir.Reasoning(text="", signature="x" * 100_000, provider="bedrock"),
], ids=["anthropic-thinking", "anthropic-redacted", "gemini-call-signature", "gemini-thought", "long-signature"])
def test_round_trip(part):
    sealed = seal(part)
    assert sealed is not None and sealed.startswith(PREFIX) and sealed.isascii()
    assert "=" not in sealed and "+" not in sealed and "/" not in sealed  # base64url, unpadded
    assert open_envelope(sealed, PARAM) == part


@pytest.mark.parametrize("part", [
    ir.Reasoning(text="plain reasoning text"),  # vLLM / Ollama reasoning: nothing to send back
    ir.Reasoning(text="unsigned", provider="anthropic"),
    ir.Reasoning(signature="sig"),  # a signature of nobody's: never forwarded anywhere
], ids=["unsigned", "anthropic-unsigned", "no-provider"])
def test_only_signed_or_redacted_provider_reasoning_is_sealed(part):
    assert seal(part) is None


@pytest.mark.parametrize("value", [None, 1, "", "gAAAAABoZ2V0dGluZyBvcGVuYWk=", "llm-proxy.r2.e30", "LLM-PROXY.R1.e30"],
                         ids=["null", "number", "empty", "openai-ciphertext", "other-version", "other-case"])
def test_values_that_are_not_our_envelope_are_not_ours(value):
    assert open_envelope(value, PARAM) is None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize("body", [
    "!!!not base64!!!",
    "e30=x",  # data after padding
    _b64(b"not json"),
    _b64(b"[1, 2]"),
    _b64(orjson.dumps({"t": "x", "s": "sig"})),  # no provider
    _b64(orjson.dumps({"p": "anthropic", "t": "x"})),  # neither signature nor redacted data
    _b64(orjson.dumps({"p": "Anthropic Inc", "s": "sig"})),  # not a provider tag
    _b64(orjson.dumps({"p": "a" * 33, "s": "sig"})),
    _b64(orjson.dumps({"p": "anthropic", "s": 5})),
    _b64(orjson.dumps({"p": "anthropic", "s": "sig", "extra": 1})),  # a format this version does not know
    "ünïcode",
], ids=["garbage", "after-padding", "not-json", "not-an-object", "no-provider", "nothing-signed", "bad-provider",
        "long-provider", "signature-type", "unknown-field", "non-ascii"])
def test_malformed_envelope_is_a_400_naming_the_item(body):
    with pytest.raises(ProxyError) as info:
        open_envelope(PREFIX + body, PARAM)
    err = info.value
    assert (err.kind, err.status, err.param) == ("invalid_request", 400, PARAM)
    assert "reasoning envelope" in err.message


def test_tampered_envelope_that_still_decodes_carries_the_tampered_text():
    """The gateway does not sign envelopes: the provider verifies its own signature (the emulated
    Anthropic backend refuses a thinking text that does not match its signature)."""
    sealed = seal(ir.Reasoning(text="original", signature="sig", provider="anthropic"))
    assert sealed is not None
    raw = orjson.loads(base64.urlsafe_b64decode(sealed[len(PREFIX):] + "=="))
    tampered = PREFIX + _b64(orjson.dumps({**raw, "t": "edited"}))
    assert open_envelope(tampered, PARAM) == ir.Reasoning(text="edited", signature="sig", provider="anthropic")


def test_oversized_envelope_is_refused_before_decoding():
    with pytest.raises(ProxyError) as info:
        open_envelope(PREFIX + "A" * MAX_ENVELOPE, PARAM)
    assert info.value.param == PARAM and str(MAX_ENVELOPE) in info.value.message
