"""Claude Code (`claude -p`, npm @anthropic-ai/claude-code, pinned in package.json) pointed at the
gateway with ANTHROPIC_BASE_URL, plain and with `--output-format stream-json`.  The emulated model
calls `Read` because the prompt names it; Claude Code runs it and sends the tool result back, and the
model answers: a two-step tool loop, on each backend family."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.clients.conftest import BACKENDS, base_env, installed, run, served
from tests.conftest import proxy_url

PROMPT = "please use Read on README.md"


def claude_env(tmp_path, server, model: str) -> dict[str, str]:
    """The README's setup, plus no update check or telemetry (nothing leaves the machine)."""
    return {**base_env(tmp_path / "home"), "ANTHROPIC_BASE_URL": proxy_url(server), "ANTHROPIC_API_KEY": "any",
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,  # its background calls go to the same gateway model
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"}


async def loop(tmp_path, emulated_gateway, model: str, *flags: str) -> tuple[str, int]:
    claude, version = installed("@anthropic-ai/claude-code", "claude")
    print(f"client: @anthropic-ai/claude-code {version}")
    server = await emulated_gateway({model: BACKENDS[model]})
    work = tmp_path / "work"
    work.mkdir()
    (work / "README.md").write_text("hello from the workspace\n")
    async with aiohttp.ClientSession() as session:
        before = await served(session, server, "/v1/messages")
        rc, out, err = await run([str(claude), "-p", "--model", model, *flags, PROMPT],
                                 claude_env(tmp_path, server, model), work)
        assert rc == 0, (out + err)[-2000:]
        return out, await served(session, server, "/v1/messages") - before


@pytest.mark.parametrize("model", list(BACKENDS))
async def test_claude_print_completes_a_tool_loop(emulated_gateway, tmp_path, model):
    out, requests = await loop(tmp_path, emulated_gateway, model)
    assert out.startswith("echo: "), out[-2000:]
    assert requests >= 2, out  # the Read call, then the answer


@pytest.mark.parametrize("model", list(BACKENDS))
async def test_claude_stream_json_shows_the_tool_loop(emulated_gateway, tmp_path, model):
    out, requests = await loop(tmp_path, emulated_gateway, model, "--output-format", "stream-json", "--verbose")
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    blocks = [(e["type"], b) for e in events if e["type"] in ("assistant", "user")
              for b in e["message"]["content"] if isinstance(b, dict)]
    uses = [b for kind, b in blocks if kind == "assistant" and b["type"] == "tool_use"]
    results = [b for kind, b in blocks if kind == "user" and b["type"] == "tool_result"]
    assert [u["name"] for u in uses] == ["Read"], out[-3000:]
    assert [r["tool_use_id"] for r in results] == [uses[0]["id"]]
    texts = [b["text"] for kind, b in blocks if kind == "assistant" and b["type"] == "text"]
    assert texts and texts[-1].startswith("echo: ")
    assert events[-1]["type"] == "result" and events[-1]["subtype"] == "success" and not events[-1]["is_error"]
    assert requests >= 2
