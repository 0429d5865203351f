"""`llm-proxy demo`: the gateway in front of built-in emulated backends, with no config and no keys.

Every emulator runs in this process on a free loopback port; the gateway maps one demo model name to
each, so a newcomer can try every translation path with the OpenAI or Anthropic SDK at once.
"""

from __future__ import annotations

import asyncio
import importlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from adapters import registry
from loadtest.emulators.server import start

from . import upstream_auth
from .app import create_app
from .config import load_config_dict

# demo model name -> (emulator module, provider, base-url suffix, backend model, extra backend keys)
DEMO_MODELS: dict[str, tuple[str, str, str, str, dict[str, Any]]] = {
    "demo-openai": ("openai", "openai", "/v1", "llama-3.1-8b-instruct", {}),
    "demo-anthropic": ("anthropic", "anthropic", "", "claude-sonnet-4-5", {"api_key": "demo"}),
    "demo-ollama": ("ollama", "ollama", "", "llama3.1:8b", {}),
    "demo-tgi": ("tgi", "tgi", "", "meta-llama/Llama-3.1-8B-Instruct", {}),
    "demo-llamacpp": ("llamacpp", "llamacpp", "", "llama-3.1-8b", {}),
    "demo-replicate": ("replicate", "replicate", "", "meta/meta-llama-3-8b-instruct", {"api_key": "demo"}),
    "demo-gemini": ("gemini", "gemini", "", "gemini-2.5-flash", {"api_key": "demo"}),
    "demo-cohere": ("cohere", "cohere", "", "command-r-plus-08-2024", {"api_key": "demo"}),
    "demo-vertex-gemini": ("vertex", "vertex", "", "gemini-2.0-flash", {}),
    "demo-vertex-claude": ("vertex", "vertex", "", "claude-3-5-sonnet-v2@20241022", {}),
    "demo-bedrock": ("bedrock", "bedrock", "", "anthropic.claude-3-5-sonnet-20241022-v2:0", {"region": "us-east-1"}),
}

TEMPLATES = {"demo-tgi": "llama3", "demo-llamacpp": "llama3", "demo-replicate": "llama3"}


def _usable(provider: str) -> bool:
    """Whether the gateway can serve this provider here: its optional extra (Bedrock's botocore,
    Vertex's google-auth) is installed."""
    try:
        scheme = registry.provider_class(provider).auth_scheme
    except KeyError:  # the adapter itself needs the extra
        return False
    if scheme is None:
        return True
    try:
        importlib.import_module(upstream_auth.SCHEMES[scheme][0].partition(":")[0])
    except ImportError:
        return False
    return True


async def start_emulators(workdir: Path) -> tuple[list[web.AppRunner], dict[str, str], dict[str, dict[str, str]]]:
    """Start every available emulator; returns the runners, format -> root URL and format -> backend
    keys an emulator hands out (`demo_credentials`: e.g. a service-account file it trusts, in `workdir`)."""
    runners, urls, keys = [], {}, {}
    for fmt, provider in dict.fromkeys((v[0], v[1]) for v in DEMO_MODELS.values()):
        try:
            module = importlib.import_module(f"loadtest.emulators.{fmt}")
        except ImportError:
            continue
        if not _usable(provider):
            continue
        app = module.create_app()
        runner, url = await start(app)
        runners.append(runner)
        urls[fmt] = url
        if hasattr(module, "demo_credentials"):
            keys[fmt] = module.demo_credentials(app, url, workdir)
    return runners, urls, keys


def demo_config(urls: dict[str, str], host: str, port: int, keys: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    backends, models = {}, []
    for name, (fmt, provider, suffix, backend_model, extra) in DEMO_MODELS.items():
        if fmt not in urls:
            continue
        backends[f"emu-{fmt}"] = {"provider": provider, "base_url": urls[fmt] + suffix, **extra, **(keys or {}).get(fmt, {})}
        entry = {"name": name, "backend": f"emu-{fmt}", "model": backend_model}
        if name in TEMPLATES:
            entry["chat_template"] = TEMPLATES[name]
        models.append(entry)
    return {"server": {"host": host, "port": port}, "backends": backends, "models": models}


async def start_demo(host: str = "127.0.0.1", port: int = 4000) -> tuple[list[web.AppRunner], str, list[str]]:
    workdir = Path(tempfile.mkdtemp(prefix="llm-proxy-demo-"))  # throwaway credentials, removed at shutdown
    runners, urls, keys = await start_emulators(workdir)
    # Stored responses and conversations are throwaway too: the state store lives in the workdir.
    doc = {**demo_config(urls, host, port, keys), "state": {"url": f"sqlite:///{workdir}/state.db"}}
    cfg = load_config_dict(doc, env={})
    app = create_app(cfg)
    app.on_cleanup.append(lambda _app: asyncio.to_thread(shutil.rmtree, workdir, True))
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return [runner, *runners], f"http://{host}:{bound}", [m.name for m in cfg.models]


def banner(url: str, models: list[str]) -> str:
    return f"""
OpenCode-LLM-proxy demo is running at {url}  (Ctrl-C to stop)
Emulated backends behind it; models: {", ".join(models)}

  curl {url}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "demo-ollama", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  curl -N {url}/v1/messages -H 'Content-Type: application/json' -H 'anthropic-version: 2023-06-01' \\
    -d '{{"model": "demo-openai", "max_tokens": 64, "stream": true, "messages": [{{"role": "user", "content": "Hi"}}]}}'

  python -c "from openai import OpenAI; c = OpenAI(base_url='{url}/v1', api_key='demo'); \\
print(c.chat.completions.create(model='demo-anthropic', messages=[{{'role': 'user', 'content': 'Hi'}}]).choices[0].message.content)"

  python -c "import anthropic; c = anthropic.Anthropic(base_url='{url}', api_key='demo'); \\
print(c.messages.create(model='demo-tgi', max_tokens=64, messages=[{{'role': 'user', 'content': 'Hi'}}]).content[0].text)"

Append a scenario to any backend model to see failure handling, e.g. in a config:
  model: "llama::status=429,retry_after=2"   (see loadtest/emulators/behaviour.py)
Metrics: {url}/metrics   Health: {url}/health/ready
"""


async def run_demo(host: str, port: int) -> None:
    from .accesslog import setup_logging

    setup_logging("info")
    runners, url, models = await start_demo(host, port)
    print(banner(url, models), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        for r in runners:
            await r.cleanup()
