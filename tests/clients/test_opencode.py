"""opencode (`opencode run`) with the README's opencode.json: an OpenAI-compatible provider
(@ai-sdk/openai-compatible, built into opencode) on the gateway's chat completions.  The emulated model
calls `write` because the prompt names it (its arguments are all strings, so every emulator's
placeholder arguments are valid); opencode writes the file, sends the result back, and the model
answers: a two-step tool loop, on each backend family.

package.json pins opencode as its linux x64 build, the binary the `opencode-ai` package installs on
this platform: `opencode-ai` lists every platform's build as optional dependencies and the npm registry
reachable here serves only the linux x64 ones, so its lock file could not satisfy `npm ci`."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.clients.conftest import BACKENDS, base_env, installed, readme_config, run, served
from tests.conftest import proxy_url

PACKAGE = "opencode-linux-x64"


def opencode_env(home) -> dict[str, str]:
    """Nothing leaves the machine: no update check, no models.dev catalogue, and npm offline for the
    @opencode-ai/plugin install it starts in the background in its config directory (it fails, logs a
    warning, and the run goes on: the gateway needs no plugin)."""
    return {**base_env(home), "LLM_PROXY_KEY": "any", "OPENCODE_DISABLE_AUTOUPDATE": "1",
            "OPENCODE_DISABLE_MODELS_FETCH": "1", "npm_config_offline": "true"}


@pytest.mark.parametrize("model", list(BACKENDS))
async def test_opencode_run_completes_a_tool_loop(emulated_gateway, tmp_path, model):
    package, version = installed(PACKAGE)
    print(f"client: opencode {version} (npm {PACKAGE})")
    server = await emulated_gateway({model: BACKENDS[model]})
    work = tmp_path / "work"
    work.mkdir()
    config = readme_config("**opencode**", proxy_url(server), model)
    (work / "opencode.json").write_text(config)
    async with aiohttp.ClientSession() as session:
        before = await served(session, server, "/v1/chat/completions")
        rc, out, err = await run([str(package / "bin" / "opencode"), "run", "--format", "json",
                                  "please use write to save a note"], opencode_env(tmp_path / "home"), work)
        requests = await served(session, server, "/v1/chat/completions") - before
    assert rc == 0, (out + err)[-3000:]
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    tools = [e["part"] for e in events if e["type"] == "tool_use"]
    assert [(t["tool"], t["state"]["status"]) for t in tools] == [("write", "completed")], out[-3000:]
    written = tools[0]["state"]["input"]
    assert (work / written["filePath"]).read_text() == written["content"]  # opencode ran the model's call
    finishes = [e["part"]["reason"] for e in events if e["type"] == "step_finish"]
    assert finishes == ["tool-calls", "stop"], out[-3000:]
    texts = [e["part"]["text"] for e in events if e["type"] == "text"]
    assert texts and texts[-1].startswith("echo: ")  # the answer to the tool result
    assert requests >= 2, out  # the write call, then the answer (plus its title request)
