"""Record the conformance fixtures: `python -m tests.conformance.record` (from the repository root).

For every provider with an emulator, each case's request is built by the provider's own adapter,
sent to the emulator of its format with the scenario in the model name, and the raw upstream body is
written to `fixtures/<provider>/<case>.<ext>` exactly as it arrived.  The suite then replays those
bytes into the adapter's stream decoder (whole, byte by byte, split at every position).  Emulators
never import adapters, so the fixtures are the emulated servers' bytes, not the adapters' own.

Run it again after an emulator's wire format changes and commit the files it writes.
"""

from __future__ import annotations

import asyncio
import pathlib
import sys
from typing import Any

from aiohttp.test_utils import TestServer

from adapters import ir
from adapters.base import FollowUp, Target
from loadtest.emulators import bedrock as bedrock_emulator
from proxy.config import load_config_dict
from proxy.pools import build_backends
from proxy.upstream import send

from tests.conformance.rows import CASES, TOOLS, USER

HERE = pathlib.Path(__file__).parent / "fixtures"

# provider -> (emulator, extra backend config, base_url suffix, backend model)
RECORDED: dict[str, tuple[str, dict[str, Any], str, str]] = {
    "openai": ("openai", {"api_key": "k"}, "/v1", "llama-3.1-8b"),
    "anthropic": ("anthropic", {"api_key": "k"}, "", "claude-sonnet-4-5"),
    "gemini": ("gemini", {"api_key": "k"}, "", "gemini-2.5-flash"),
    "ollama": ("ollama", {}, "", "llama3.1:8b"),
    "tgi": ("tgi", {}, "", "tgi-model"),
    "llamacpp": ("llamacpp", {}, "", "llama"),
    "replicate": ("replicate", {"api_key": "k"}, "", "meta/meta-llama-3-8b-instruct"),
    "cohere": ("cohere", {"api_key": "k"}, "", "command-r-plus-08-2024"),
    "bedrock": ("bedrock", {"region": "us-east-1", "aws_session_token": "",
                            "aws_access_key_id": bedrock_emulator.ACCESS_KEY_ID,
                            "aws_secret_access_key": bedrock_emulator.SECRET_ACCESS_KEY}, "",
                "anthropic.claude-3-5-sonnet-20241022-v2:0"),
}


def request(case: str) -> ir.ChatRequest:
    tools = TOOLS if case == "tool" else []
    return ir.ChatRequest(model="m", messages=[ir.Message("user", [ir.Text(USER)])], tools=tools, stream=True,
                          max_tokens=64)


async def record(provider: str) -> None:
    emulator, extra, suffix, model = RECORDED[provider]
    module = __import__(f"loadtest.emulators.{emulator}", fromlist=["create_app"])
    server = TestServer(module.create_app(), host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/") + suffix
    cfg = load_config_dict({"backends": {provider: {"provider": provider, "base_url": base, **extra}},
                            "models": [{"name": "m", "backend": provider, "model": model}]}, env={})
    runtime = build_backends(cfg)[provider]
    runtime.open()
    try:
        out = HERE / provider
        out.mkdir(parents=True, exist_ok=True)
        for case, scenario in CASES.items():
            target = Target(model=f"{model}::{scenario}" if scenario else model,
                            chat_template=_template(runtime.adapter))
            http = runtime.adapter.chat_request(request(case), target)
            while True:
                # The scenario rides in the model name and, for formats without one (TGI, llama.cpp), a header.
                ex = await send(runtime, http, {"x-emulate": scenario} if scenario else {})
                body = await ex.read()
                ex.finish()
                if http.stream:
                    break
                follow = runtime.adapter.chat_response(body, request(case), target)
                assert isinstance(follow, FollowUp), (provider, case, body[:200])
                http = follow.request
            assert ex.status == 200, (provider, case, ex.status, body[:300])
            (out / f"{case}.bin").write_bytes(body)
            print(f"{provider}/{case}.bin: {len(body)} bytes")
    finally:
        await runtime.close()
        await server.close()


def _template(adapter: Any) -> Any:
    if not adapter.uses_chat_template:
        return None
    from adapters import chat_templates

    return chat_templates.get("chatml")


async def main(providers: list[str]) -> None:
    for provider in providers or list(RECORDED):
        await record(provider)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
