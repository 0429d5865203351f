"""Every backend's stream decoder against the same cases, from its own recorded upstream bytes (see
rows.py and record.py): a text answer with usage, a tool call, the length finish, an in-band error, a
truncated stream and a malformed frame -- each fed whole, byte by byte and split at every position
(the failure cases at a sample of positions), giving the same answer every time."""

from __future__ import annotations

import pathlib

import msgspec
import pytest

from adapters import ir, registry
from adapters.base import Backend, Target
from adapters.errors import ProxyError
from tests.adapters.stream_support import cuts

from tests.conformance.rows import BACKENDS, CASES, TEXT, TOOLS, USER, BackendRow

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
PROVIDERS = sorted(registry.PROVIDERS)


def test_every_provider_has_a_row():
    missing = [p for p in PROVIDERS if p not in BACKENDS]
    assert not missing, "\n".join(
        f"provider {p!r} is not in the conformance suite: add `{p!r}: BackendRow({p!r})` to BACKENDS in "
        f"tests/conformance/rows.py, add it to RECORDED in tests/conformance/record.py (its emulator, config and "
        f"model) and run `python -m tests.conformance.record {p}`; a provider speaking another's wire format "
        f"names that provider's fixtures instead (`BackendRow('openai')`)"
        for p in missing
    )
    assert not set(BACKENDS) - set(PROVIDERS), "rows for providers the registry no longer has"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_case_has_a_fixture_or_a_reason(provider):
    row = BACKENDS.get(provider)
    if row is None:
        pytest.skip("no row (test_every_provider_has_a_row fails)")
    for case in CASES:
        assert (FIXTURES / row.fixtures / f"{case}.bin").exists() or case in row.skip, (
            f"tests/conformance/fixtures/{row.fixtures}/{case}.bin is missing: "
            f"run `python -m tests.conformance.record {row.fixtures}`, or give {provider!r} a skip reason for {case!r}")


# --------------------------------------------------------------------------------------------------
# Helpers


def backend(provider: str, row: BackendRow) -> Backend:
    cls = registry.provider_class(provider)
    options = msgspec.convert(row.config, cls.Options)
    return cls("http://127.0.0.1:9", "k", {}, options)


def request(case: str) -> ir.ChatRequest:
    return ir.ChatRequest(model="client-model", messages=[ir.Message("user", [ir.Text(USER)])],
                          tools=TOOLS if case == "tool" else [], stream=True)


def fixture(provider: str, case: str) -> bytes:
    row = BACKENDS[provider]
    if case in row.skip:
        pytest.skip(row.skip[case])
    return (FIXTURES / row.fixtures / f"{case}.bin").read_bytes()


def decode(provider: str, case: str, pieces: list[bytes]) -> list[ir.Event]:
    row = BACKENDS[provider]
    target = Target(model=row.model, chat_template=_template(provider))
    dec = backend(provider, row).stream_decoder(request(case), target)
    events: list[ir.Event] = []
    for piece in pieces:
        events += dec.feed(piece)
    return events + dec.close()


def _template(provider: str):
    if not registry.provider_class(provider).uses_chat_template:
        return None
    from adapters import chat_templates

    return chat_templates.get("chatml")


def summary(events: list[ir.Event]) -> tuple:
    """What a client gets from the events, independent of how the deltas were cut and of synthesised ids;
    also checks the event grammar (Start first, End last, blocks opened before use and all closed)."""
    assert isinstance(events[0], ir.Start) and isinstance(events[-1], ir.End), events[:1] + events[-1:]
    open_blocks: set[int] = set()
    for ev in events:
        if isinstance(ev, ir.BlockStart):
            open_blocks.add(ev.index)
        elif isinstance(ev, ir.BlockEnd):
            open_blocks.remove(ev.index)
        elif hasattr(ev, "index"):
            assert ev.index in open_blocks, ev
    assert not open_blocks
    resp = ir.fold_events(events, model="m", id="", created=0)
    (choice,) = resp.choices
    text = "".join(p.text for p in choice.parts if isinstance(p, ir.Text))
    calls = [(p.name, msgspec.json.decode(p.arguments or "{}")) for p in choice.parts if isinstance(p, ir.ToolCall)]
    return text, calls, choice.finish_reason, resp.usage


def every_cut(data: bytes):
    return [pieces for _, pieces in cuts(data)]


def sample_cuts(data: bytes):
    """Whole, byte by byte, and seven split positions spread over the body (failure cases)."""
    n = len(data)
    return [[data], [data[i:i + 1] for i in range(n)]] + [[data[:i], data[i:]] for i in range(1, n, max(1, n // 7))]


# --------------------------------------------------------------------------------------------------
# The cases


@pytest.mark.parametrize("provider", PROVIDERS)
def test_text_with_usage(provider):
    data = fixture(provider, "text")
    first = summary(decode(provider, "text", [data]))
    text, calls, finish, usage = first
    assert (text, calls, finish) == (TEXT, [], "stop")
    row = BACKENDS[provider]
    if row.usage is not None:
        assert usage is not None and (usage.input_tokens, usage.output_tokens) == (
            row.usage.input_tokens, row.usage.output_tokens)
    for pieces in every_cut(data):
        assert summary(decode(provider, "text", pieces)) == first, len(pieces)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_call(provider):
    data = fixture(provider, "tool")
    first = summary(decode(provider, "tool", [data]))
    _, calls, finish, _ = first
    assert finish == "tool_calls"
    assert [name for name, _ in calls] == ["get_weather"] and isinstance(calls[0][1], dict)
    for pieces in every_cut(data):
        assert summary(decode(provider, "tool", pieces)) == first, len(pieces)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_length_finish(provider):
    data = fixture(provider, "length")
    for pieces in sample_cuts(data):
        assert summary(decode(provider, "length", pieces))[2] == "length"


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", ["error", "truncated", "malformed"])
def test_failures_are_errors_not_answers(provider, case):
    """An in-band error is the upstream's error kind; a cut stream or a frame that does not parse is an
    upstream protocol error -- never a normal-looking end of the answer."""
    data = fixture(provider, case)
    expected = BACKENDS[provider].error_kind if case == "error" else "upstream_protocol"
    for pieces in sample_cuts(data):
        with pytest.raises(ProxyError) as exc:
            decode(provider, case, pieces)
        assert exc.value.kind == expected, (case, exc.value)
