"""The access log: one JSON line per request with ids, route, model, backend, status and durations;
never prompt text, keys or backend URLs; written in whole lines no larger than PIPE_BUF."""

from __future__ import annotations

import io
import json

import openai
import pytest

from proxy import accesslog
from proxy.accesslog import ACCESS, PIPE_BUF, AccessLog
from tests.conftest import proxy_url

SECRET_PROMPT = "my secret prompt text"
BACKEND_KEY = "sk-backend-secret-key"


@pytest.fixture
def captured(monkeypatch):
    out = io.BytesIO()
    monkeypatch.setattr(ACCESS, "stream", out)
    monkeypatch.setattr(ACCESS, "enabled", True)
    return out


async def test_one_line_per_request_without_secrets(start_emulator, start_proxy, captured):
    emu = await start_emulator("openai")
    server = await start_proxy({
        "backends": {"emu": {"provider": "openai", "base_url": emu + "/v1", "api_key": BACKEND_KEY}},
        "models": [{"name": "m", "backend": "emu"}, {"name": "bad", "backend": "emu", "model": "x::status=500"}],
    })
    client = openai.AsyncOpenAI(base_url=proxy_url(server, "/v1"), api_key="client-key", max_retries=0)
    await client.chat.completions.create(model="m", messages=[{"role": "user", "content": SECRET_PROMPT}],
                                         extra_headers={"x-request-id": "rid-1"})
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="bad", messages=[{"role": "user", "content": SECRET_PROMPT}])
    await client.close()
    ACCESS.flush()
    text = captured.getvalue().decode()
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 2
    ok, failed = lines
    assert ok["request_id"] == "rid-1" and ok["route"] == "/v1/chat/completions" and ok["model"] == "m"
    assert ok["backend"] == "emu" and ok["status"] == 200 and ok["logger"] == "llm_proxy.access"
    assert ok["duration_ms"] >= ok["added_ms"] >= 0 and ok["prompt_tokens"] > 0
    assert failed["status"] == 500 and failed["error"] == "server"
    for secret in (SECRET_PROMPT, BACKEND_KEY, "client-key", emu, "127.0.0.1"):
        assert secret not in text


def test_writes_whole_lines_within_pipe_buf():
    out = io.BytesIO()
    writes: list[bytes] = []
    log = AccessLog(out)
    out.write = lambda b: writes.append(bytes(b)) or len(b)  # type: ignore[method-assign]
    for i in range(200):
        log.emit({"request_id": f"r{i}", "pad": "x" * 100})  # no loop running: flushed at once
    log._buf = [accesslog.jsonio.dumps({"n": i}) + b"\n" for i in range(300)]
    log.flush()
    assert all(w.endswith(b"\n") for w in writes)
    assert all(len(w) <= PIPE_BUF for w in writes)
    assert sum(w.count(b"\n") for w in writes) == 500


async def test_prompts_logged_only_when_explicitly_enabled(start_emulator, start_proxy, captured):
    emu = await start_emulator("openai")
    server = await start_proxy({
        "server": {"log_prompts": True},
        "backends": {"emu": {"provider": "openai", "base_url": emu + "/v1"}},
        "models": [{"name": "m", "backend": "emu"}],
    })
    client = openai.AsyncOpenAI(base_url=proxy_url(server, "/v1"), api_key="k", max_retries=0)
    await client.chat.completions.create(model="m", messages=[{"role": "user", "content": SECRET_PROMPT}])
    await client.close()
    ACCESS.flush()
    (line,) = [json.loads(x) for x in captured.getvalue().splitlines()]
    assert SECRET_PROMPT in line["request_body"]
