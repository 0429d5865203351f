"""deploy/config.yaml really works: with the compose hostnames pointed at local emulators, every model
answers in both client formats (the flaky one through its retry and fallback)."""

from __future__ import annotations

from pathlib import Path

import anthropic
import openai
import yaml

from tests.conftest import proxy_url

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "config.yaml"


async def test_every_stack_model_answers(start_emulator, start_proxy):
    urls = {"emulator-openai:8000": await start_emulator("openai"),
            "emulator-anthropic:8001": await start_emulator("anthropic")}
    text = CONFIG.read_text()
    for host, url in urls.items():
        text = text.replace(f"http://{host}", url)
    doc = yaml.safe_load(text)
    doc["server"].pop("workers")
    server = await start_proxy(doc, env={"PROXY_KEY": "k"})
    oai = openai.AsyncOpenAI(base_url=proxy_url(server, "/v1"), api_key="k", max_retries=0)
    ant = anthropic.AsyncAnthropic(base_url=proxy_url(server), api_key="k", max_retries=0)
    for model in [m["name"] for m in doc["models"]]:
        r = await oai.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert "hi" in r.parse().choices[0].message.content
        m = await ant.messages.create(model=model, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
        assert "hi" in m.content[0].text
        if model == "demo-claude-flaky":
            assert r.headers["x-llm-proxy-deployment"].startswith("emu-anthropic/")  # fell back
    await oai.close()
    await ant.close()
