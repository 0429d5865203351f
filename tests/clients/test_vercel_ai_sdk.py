"""The Vercel AI SDK (npm `ai` + `@ai-sdk/openai`, pinned in package.json) with its default settings
(the Responses API, `store` on): `generateText` and `streamText` with a tool whose `execute` runs in
the script (vercel_tool_loop.mjs), so the SDK itself sends the result back: a two-step tool loop, on
each backend family."""

from __future__ import annotations

import json

import pytest

from tests.clients.conftest import BACKENDS, HERE, base_env, installed, run
from tests.conftest import proxy_url

REASONING = {"agent-openai-reasoning": ("openai", "llama-3.1-8b::reasoning")}


async def tool_loop(emulated_gateway, tmp_path, models: dict, model: str, mode: str) -> dict:
    installed("ai")
    _, version = installed("@ai-sdk/openai")
    print(f"client: @ai-sdk/openai {version}")
    server = await emulated_gateway(models)
    rc, out, err = await run(["node", str(HERE / "vercel_tool_loop.mjs"), proxy_url(server, "/v1"), model, mode],
                             base_env(tmp_path / "home"), HERE)
    assert rc == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["text", "stream"])
@pytest.mark.parametrize("model", list(BACKENDS))
async def test_tool_loop(emulated_gateway, tmp_path, model, mode):
    result = await tool_loop(emulated_gateway, tmp_path, {model: BACKENDS[model]}, model, mode)
    assert result["calls"] and set(result["calls"][0]) == {"city"}  # the tool ran with the model's input
    assert result["steps"] == 2 and result["text"].startswith("echo: ")  # the answer to the tool result


@pytest.mark.parametrize("mode", ["text", "stream"])
async def test_tool_loop_on_a_reasoning_model_with_store_on(emulated_gateway, tmp_path, mode):
    # Its second step refers to the first step's reasoning item by id (item_reference).
    (model,) = REASONING
    result = await tool_loop(emulated_gateway, tmp_path, REASONING, model, mode)
    assert result["steps"] == 2 and result["calls"]
