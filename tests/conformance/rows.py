"""The conformance table: one row per provider in `adapters.registry.PROVIDERS`, one per frontend in
`adapters.registry.FRONTENDS`.  A new provider adds its row here and its recorded fixtures under
`fixtures/<provider>/` (`python -m tests.conformance.record <provider>` writes them from its
emulator); the suite fails, naming what to add, until it has both."""

from __future__ import annotations

from dataclasses import dataclass, field

from adapters import ir

USER = "hello world"
TOOLS = [ir.ToolDef(name="get_weather", description="Weather for a city",
                    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})]

# case -> emulator scenario (loadtest/emulators/behaviour.py) the fixture was recorded with
CASES = {
    "text": "text=Hello_brave_new_world,chunks=4,usage_in=9,usage_out=5",
    "tool": "tools,usage_in=20,usage_out=7",
    "length": "max_tokens",
    "error": "error_after=2",
    "truncated": "truncate_after=2",
    "malformed": "malformed",
}
TEXT = "Hello brave new world"


@dataclass(frozen=True)
class BackendRow:
    """How one provider's decoder is exercised.  `fixtures`: whose recorded streams it reads (a
    provider that speaks another's wire format, like Azure, shares them).  `config`: the backend's
    config block as in a gateway config (no base_url needed: nothing is sent).  `skip`: case ->
    why this provider cannot have it (an explicit, reviewed gap)."""

    fixtures: str
    config: dict = field(default_factory=dict)
    model: str = "m"
    usage: ir.Usage | None = ir.Usage(input_tokens=9, output_tokens=5)
    error_kind: str = "server"
    skip: dict[str, str] = field(default_factory=dict)


PROMPT_ONLY = "a prompt-only backend: tools go into the prompt through the chat template and come back as text"

BACKENDS: dict[str, BackendRow] = {
    "openai": BackendRow("openai"),
    "azure": BackendRow("openai", {"api_style": "v1"}),
    "anthropic": BackendRow("anthropic", error_kind="overloaded"),  # the emulator's in-band overloaded_error
    "gemini": BackendRow("gemini"),
    "vertex": BackendRow("gemini", {"project": "p"}, model="gemini-2.0-flash"),  # Gemini models decode as Gemini
    "ollama": BackendRow("ollama"),
    "tgi": BackendRow("tgi", skip={"tool": PROMPT_ONLY}),
    "huggingface": BackendRow("tgi", skip={"tool": PROMPT_ONLY}),
    "llamacpp": BackendRow("llamacpp", skip={"tool": PROMPT_ONLY}),
    "replicate": BackendRow("replicate", usage=None, skip={
        "tool": PROMPT_ONLY,
        "length": "Replicate's stream has no finish reason (`done` carries none for a length stop)"}),
    # usage.tokens (what the adapter reports) counts the prompt template too: billed 9 -> 16 tokens.
    "cohere": BackendRow("cohere", usage=ir.Usage(input_tokens=16, output_tokens=5)),
    "bedrock": BackendRow("bedrock", {"region": "us-east-1"}, model="anthropic.claude-3-5-sonnet-20241022-v2:0"),
}


@dataclass(frozen=True)
class FrontendRow:
    """How one frontend's encoder output is read back: `decoded_by` names the provider whose stream
    decoder speaks the format (None, with `why`, when none does); `text_only`: operations whose format
    has no slot for tool calls in a stream."""

    decoded_by: str | None
    why: str = ""
    text_only: frozenset[str] = frozenset()


FRONTENDS: dict[str, FrontendRow] = {
    "openai": FrontendRow("openai", text_only=frozenset({"completions"})),
    "anthropic": FrontendRow("anthropic"),
    "gemini": FrontendRow("gemini"),
    "ollama": FrontendRow("ollama", text_only=frozenset({"generate"})),
    "openai-responses": FrontendRow(None, why="no backend speaks the Responses API; its events are checked "
                                             "with the SDK's accumulator in tests/adapters/test_openai_responses_stream.py"),
}
