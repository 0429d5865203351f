"""Shared by the hardening tests: a gateway with one wildcard model per emulated backend, the routes of
every client format, and the check that an error body is in the caller's own format."""

from __future__ import annotations

import json
from typing import Any

# wildcard prefix -> (emulator, provider, base-url suffix, extra backend keys, extra model keys)
BACKENDS: dict[str, tuple[str, str, str, dict[str, Any], dict[str, Any]]] = {
    "oa": ("openai", "openai", "/v1", {}, {}),
    "an": ("anthropic", "anthropic", "", {"api_key": "sk-ant-test"}, {}),
    "ol": ("ollama", "ollama", "", {}, {}),
    "ge": ("gemini", "gemini", "", {"api_key": "gm-test"}, {}),
    "tg": ("tgi", "tgi", "", {}, {"chat_template": "chatml"}),
}


async def hostile_config(start_emulator, **top: Any) -> dict[str, Any]:
    """A config serving `<prefix>-*` on every emulated backend (a dash, so Gemini's URL can name it)."""
    backends, models = {}, []
    for prefix, (emu, provider, suffix, extra, model_keys) in BACKENDS.items():
        url = await start_emulator(emu)
        backends[prefix] = {"provider": provider, "base_url": url + suffix, **extra}
        models.append({"name": f"{prefix}-*", "backend": prefix, **model_keys})
    return {"backends": backends, "models": models, **top}


def error_format(path: str) -> str:
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/api/"):
        return "ollama"
    if path.startswith("/v1beta/") or (path.startswith("/v1/models/") and ":" in path):
        return "gemini"
    return "openai"


def assert_caller_error(path: str, status: int, body: bytes) -> dict[str, Any]:
    """`body` is an error in the format of the client that calls `path`, consistent with `status`."""
    assert 400 <= status < 600, (path, status)
    doc = json.loads(body)
    fmt = error_format(path)
    if fmt == "openai":
        err = doc["error"]
        assert set(err) >= {"message", "type", "param", "code"} and isinstance(err["message"], str), doc
    elif fmt == "anthropic":
        assert doc["type"] == "error" and isinstance(doc["error"]["type"], str), doc
        assert isinstance(doc["error"]["message"], str), doc
    elif fmt == "ollama":
        assert isinstance(doc["error"], str), doc
    else:
        err = doc["error"]
        assert err["code"] == status and isinstance(err["message"], str) and isinstance(err["status"], str), doc
    return doc


def error_message(path: str, doc: dict[str, Any]) -> str:
    err = doc["error"]
    return err if isinstance(err, str) else err["message"]
