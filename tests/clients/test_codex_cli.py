"""The Codex CLI (`codex exec`, npm @openai/codex, pinned in package.json) with its default
configuration plus the README's config.toml (a provider entry pointing at the gateway's Responses
API).  Its default request declares a `namespace` tool, function tools and the built-in `web_search`
(dropped by the gateway).  The emulated model calls `exec_command` because the prompt names it;
Codex runs it and sends the result back, and the model answers: a two-step tool loop, on each
backend family."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.clients.conftest import BACKENDS, base_env, installed, readme_config, run, served
from tests.conftest import proxy_url


@pytest.mark.parametrize("model", list(BACKENDS))
async def test_codex_exec_completes_a_tool_loop(emulated_gateway, tmp_path, model):
    codex, version = installed("@openai/codex", "codex")
    server = await emulated_gateway({model: BACKENDS[model]})
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(readme_config("**Codex CLI**", proxy_url(server), model))
    env = {**base_env(tmp_path / "home"), "CODEX_HOME": str(home), "LLM_PROXY_KEY": "any"}
    work = tmp_path / "work"
    work.mkdir()
    async with aiohttp.ClientSession() as session:
        before = await served(session, server, "/v1/responses")
    rc, out, err = await run([str(codex), "exec", "--json", "--skip-git-repo-check",
                              "run exec_command to list the files"], env, work)
    print(f"client: @openai/codex {version}")
    assert rc == 0, err[-2000:]
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    messages = [e["item"]["text"] for e in events if e["type"] == "item.completed"
                and e["item"]["type"] == "agent_message"]
    assert messages and messages[-1].startswith("echo: "), out[-2000:]
    assert events[-1]["type"] == "turn.completed"
    async with aiohttp.ClientSession() as session:
        assert await served(session, server, "/v1/responses") - before == 2, out  # the call, then the answer
