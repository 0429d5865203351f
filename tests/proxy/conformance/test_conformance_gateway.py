"""`llm-proxy conformance` through the gateway: its OpenAI face (/v1) and Anthropic face (root), with
client auth on, on every backend kind behind one gateway (loadtest/conformance_matrix.py).  Every core
probe passes; every tools probe passes on backends with tool calling and is "not supported" (a 400 in
the client's format) on prompt-only ones.  What a backend's own API cannot express is listed in KNOWN
and asserted to still fail, so a fix shows up here.  docs/CONFORMANCE.md is checked to be current."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_asyncio

from loadtest.conformance_matrix import BACKENDS, FACES, emulator_reports, gateway_reports, render, start_stack
from proxy.conformance.probe import FAIL, PASS, UNSUPPORTED

pytestmark = pytest.mark.asyncio(loop_scope="module")
DOC = Path(__file__).resolve().parents[3] / "docs" / "CONFORMANCE.md"

# (backend, face) -> {probe: the backend API's limit that makes it fail}
KNOWN = {
    ("replicate", "openai"): {"stream.include_usage": "Replicate streams carry no token counts"},
    ("ollama", "anthropic"): {"messages.stop_sequence": "Ollama's done_reason does not say which stop string fired"},
    ("gemini", "anthropic"): {"messages.stop_sequence": "Gemini's finishReason STOP does not say which sequence fired"},
    ("replicate", "anthropic"): {"messages.stop_sequence": "Replicate reports no finish reason at all"},
    ("vertex-gemini", "anthropic"): {"messages.stop_sequence": "Gemini's finishReason STOP does not say which sequence fired"},
}
# Ollama has no tool_choice: forcing a call is refused (400), not silently ignored.
NO_TOOL_CHOICE = {"tools.choice_required", "tools.choice_named", "tools.choice_any", "tools.choice_tool"}
# The Cohere emulator makes one call per turn, so parallel calls are "not supported" there.
NOT_SUPPORTED = {("ollama", p) for p in NO_TOOL_CHOICE} | {("cohere", "tools.parallel")}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runs():
    stack = await start_stack()
    try:
        yield await gateway_reports(stack), await emulator_reports(stack)
    finally:
        await stack.close()


@pytest.mark.parametrize("face", list(FACES))
@pytest.mark.parametrize("row", list(BACKENDS))
async def test_gateway_face_passes_core_and_tools(runs, row, face):
    report = runs[0][row, face]
    known = KNOWN.get((row, face), {})
    has_tools = BACKENDS[row][5]
    for r in report["results"]:
        if r["id"] in known:
            assert r["status"] == FAIL, (r["id"], "passes now: remove it from KNOWN", r["evidence"])
        elif r["level"] == "core":
            assert r["status"] == PASS, (r["id"], r["evidence"])
        elif r["level"] == "tools" and not has_tools:
            assert r["status"] == UNSUPPORTED and " 400 " in r["evidence"], (r["id"], r["evidence"])
        elif (row, r["id"]) in NOT_SUPPORTED:
            assert r["status"] == UNSUPPORTED, (r["id"], r["evidence"])
        elif r["level"] == "tools":
            assert r["status"] == PASS, (r["id"], r["evidence"])
    assert report["ok"] == (not any(p in known for p in [r["id"] for r in report["results"] if r["level"] == "core"]))


async def test_docs_conformance_is_current(runs):
    gateway, emulators = runs
    assert DOC.read_text() == render(emulators, gateway), (
        "docs/CONFORMANCE.md is stale: python -m loadtest.conformance_matrix --write docs/CONFORMANCE.md")
