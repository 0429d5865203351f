"""Shared fixtures: emulated backends and the gateway, on 127.0.0.1 random ports."""

from __future__ import annotations

import importlib
from typing import Any

import aiohttp
import pytest

from proxy import serve
from proxy.app import create_app
from proxy.config import load_config_dict


@pytest.fixture
def start_emulator(aiohttp_server):
    """`await start_emulator("openai")` -> root URL of a running emulator of that format."""

    async def _start(fmt: str, profile: Any = None) -> str:
        module = importlib.import_module(f"loadtest.emulators.{fmt}")
        server = await aiohttp_server(module.create_app(profile))
        return str(server.make_url("")).rstrip("/")

    return _start


@pytest.fixture
async def start_proxy(tmp_path):
    """`await start_proxy(config_dict)` -> the running gateway, served as `llm-proxy serve` serves it
    (proxy/serve.py: the raw server unless `server.http` says aiohttp); stopped after the test.
    Without a `state` section its state store is a file in the test's directory (stored responses
    would otherwise land in the working directory)."""
    running: list[serve.Served] = []

    async def _start(config: dict[str, Any], env: dict[str, str] | None = None) -> serve.Served:
        config = {"state": {"url": f"sqlite:///{tmp_path}/state.db"}, **config}
        cfg = load_config_dict(config, env=env or {})
        running.append(await serve.start(cfg, create_app(cfg), "127.0.0.1", 0))
        return running[-1]

    yield _start
    for served in reversed(running):
        await served.close()


@pytest.fixture
async def gateway_client():
    """`await gateway_client(server, **ClientSession options)` -> a session whose relative URLs go to
    the gateway `start_proxy` returned (what `aiohttp_client` is to an aiohttp test server)."""
    sessions: list[aiohttp.ClientSession] = []

    async def _client(server: serve.Served, **options: Any) -> aiohttp.ClientSession:
        sessions.append(aiohttp.ClientSession(base_url=server.make_url("/"), **options))
        return sessions[-1]

    yield _client
    for session in sessions:
        await session.close()


# Backend kind -> (emulator, base-url suffix, backend keys): how a test gateway reaches each emulated
# native backend.  The backend is named after its kind.
EMULATED = {
    "openai": ("openai", "/v1", {"api_key": "oai-key"}),
    "anthropic": ("anthropic", "", {"api_key": "ant-key"}),
    "gemini": ("gemini", "", {"api_key": "gem-key"}),
    "ollama": ("ollama", "", {}),
    "tgi": ("tgi", "", {}),
    "llamacpp": ("llamacpp", "", {}),
    "cohere": ("cohere", "", {"api_key": "co-key"}),
}


@pytest.fixture
def emulated_gateway(start_emulator, start_proxy):
    """`await emulated_gateway({"m-openai": ("openai", "llama-3.1-8b"), ...}, **config)` -> the running
    gateway with one emulator per backend kind the models name; each model entry is (kind, backend
    model with its emulator scenario) or (kind, backend model, extra model keys)."""

    async def _start(models: dict[str, tuple], **config: Any):
        backends = {}
        for kind in dict.fromkeys(spec[0] for spec in models.values()):
            emulator, suffix, keys = EMULATED[kind]
            backends[kind] = {"provider": kind, "base_url": await start_emulator(emulator) + suffix, **keys}
        entries = [{"name": name, "backend": spec[0], "model": spec[1], **(spec[2] if len(spec) > 2 else {})}
                   for name, spec in models.items()]
        return await start_proxy({"backends": backends, "models": entries, **config})

    return _start


def proxy_url(server, suffix: str = "") -> str:
    return str(server.make_url(suffix)).rstrip("/")


@pytest.fixture(scope="session")
def redis_session():
    from tests.redis_support import RedisServer

    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_session) -> str:
    """URL of a real, empty Redis (one server per test session, flushed for each test)."""
    redis_session.flush()
    return redis_session.url


@pytest.fixture
def own_redis():
    """A Redis server of the test's own (it may stop it)."""
    from tests.redis_support import RedisServer

    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def state_url(request, tmp_path) -> str:
    """Each state store in turn: an SQLite file in the test's directory, then a real Redis."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    return request.getfixturevalue("redis_url")
