"""proxy/handlers.py at the byte level: header bytes that are not UTF-8 get a clean answer (401, or a
fresh request id) in the caller's format; a client trickling its body gets a 408 after
`server.request_read_timeout`, in its own format, and holds nothing after (slowloris)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time

import aiohttp
import pytest

from proxy.accesslog import ACCESS
from tests.conftest import proxy_url
from tests.proxy.hardening_support import assert_caller_error

KEY = "sk-handlers-client"
BODY = b'{"model":"oa-x","messages":[{"role":"user","content":"hi"}]}'


def config(**server) -> dict:
    return {"auth": {"keys": [KEY]}, "server": server,
            "backends": {"oa": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "models": [{"name": "oa-*", "backend": "oa"}]}


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower().decode(): v.strip().decode("latin-1") for k, _, v in (ln.partition(b":") for ln in lines[1:])}
    return status, headers, body


async def raw_request(server, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(head + body)
    await writer.drain()
    raw = await asyncio.wait_for(read_response(reader), 30)  # by Content-Length, as a client does
    writer.close()
    return parse_response(raw)


def post(path: str, extra: bytes, body: bytes = BODY) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n").encode() + extra + b"\r\n"


@pytest.mark.parametrize("path, header", [
    ("/v1/chat/completions", b"Authorization: Bearer \xff\xfe\r\n"),
    ("/v1/messages", b"x-api-key: caf\xe9\r\n"),
    ("/v1/chat/completions", b"Authorization: Bearer \xff\r\n"),
    ("/api/chat", b"Authorization: Bearer \xc3\r\n"),
    ("/v1beta/models/oa-x:generateContent", b"x-goog-api-key: \xff\r\n"),
])
async def test_non_utf8_key_is_a_401_in_the_callers_format(start_proxy, caplog, path, header):
    """Before: `x-api-key: \\xff` was a 500 with a traceback."""
    caplog.set_level(logging.ERROR)
    server = await start_proxy(config())
    status, _, body = await raw_request(server, post(path, header), BODY)
    assert status == 401
    assert_caller_error(path, 401, body)
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize("rid", [b"\xff", b"ok\xffid", b"a b", b"x" * 129, "é".encode()])
async def test_unusable_request_id_is_replaced(start_proxy, monkeypatch, rid):
    """Before: `x-request-id: \\xff` was a plain-text 500 (no key needed) and the access line was lost."""
    out = io.BytesIO()
    monkeypatch.setattr(ACCESS, "stream", out)
    monkeypatch.setattr(ACCESS, "enabled", True)
    server = await start_proxy(config())
    status, headers, body = await raw_request(server, post("/v1/chat/completions", b"x-request-id: " + rid + b"\r\n"), BODY)
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    assert headers["x-request-id"].startswith("req_")
    ACCESS.flush()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(ln["status"], ln["request_id"]) for ln in lines] == [(401, headers["x-request-id"])]


async def test_good_request_id_is_kept(start_proxy):
    server = await start_proxy(config())
    _, headers, _ = await raw_request(server, post("/v1/chat/completions", b"x-request-id: trace-42.a:b\r\n"), BODY)
    assert headers["x-request-id"] == "trace-42.a:b"


async def in_flight(server, route: str) -> float:
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy_url(server, "/metrics")) as r:
            text = await r.text()
    prefix = f'llm_proxy_in_flight_requests{{route="{route}"}} '
    return next((float(ln[len(prefix):]) for ln in text.splitlines() if ln.startswith(prefix)), 0.0)


async def trickle(server, path: str, headers: bytes, gap: float, limit: float) -> tuple[int, bytes, float]:
    """Send headers, then the body one byte every `gap` seconds; the answer and when it came."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(post(path, headers))
    await writer.drain()
    t0 = time.monotonic()
    read = asyncio.ensure_future(read_response(reader))
    for byte in BODY:
        if read.done():
            break
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            break
        await asyncio.wait({read}, timeout=gap)
    raw = await asyncio.wait_for(read, limit)
    took = time.monotonic() - t0
    writer.close()
    status, _, body = parse_response(raw)
    return status, body, took


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One response, by its Content-Length (the server drops the connection right after it, and a
    byte still on its way then resets it: reading to EOF would fail where a real client does not)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:"))
    return head + await reader.readexactly(length)


@pytest.mark.parametrize("path, key_header", [
    ("/v1/chat/completions", "Authorization: Bearer"), ("/v1/messages", "x-api-key:"), ("/api/chat", "Authorization: Bearer"),
    ("/v1beta/models/oa-x:generateContent", "x-goog-api-key:"),
])
async def test_slow_body_gets_408_in_the_callers_format(start_proxy, path, key_header):
    server = await start_proxy(config(request_read_timeout=0.5))
    status, body, took = await trickle(server, path, f"{key_header} {KEY}\r\n".encode(), gap=0.2, limit=5)
    assert status == 408 and 0.4 < took < 3
    assert_caller_error(path, 408, body)


async def test_slowloris_connections_are_cut_and_counted_out(start_proxy):
    """Before: 200 connections sending a byte every 5 s stayed open (and in flight) for the whole test."""
    server = await start_proxy(config(request_read_timeout=1.0))
    route = "/v1/chat/completions"
    base = await in_flight(server, route)
    tasks = [asyncio.ensure_future(trickle(server, route, f"Authorization: Bearer {KEY}\r\n".encode(), gap=0.25, limit=8))
             for _ in range(60)]
    peak = 0.0
    while not all(t.done() for t in tasks):
        peak = max(peak, await in_flight(server, route) - base)
        await asyncio.sleep(0.05)
    results = [t.result() for t in tasks]
    assert peak >= 30  # they were being served ...
    assert {status for status, _, _ in results} == {408}  # ... and every one was cut
    assert max(took for _, _, took in results) < 6
    assert await in_flight(server, route) == base


async def test_read_timeout_must_be_positive():
    from proxy.config import ConfigError, load_config_dict

    with pytest.raises(ConfigError, match="server.request_read_timeout"):
        load_config_dict(config(request_read_timeout=0))


async def test_unforwardable_client_headers_are_dropped_not_a_500(start_emulator, start_proxy, caplog):
    """anthropic-beta / anthropic-version / traceparent are forwarded upstream: bytes that are not
    visible ASCII are dropped instead of failing the upstream request."""
    caplog.set_level(logging.ERROR)
    url = await start_emulator("anthropic")
    server = await start_proxy({"backends": {"an": {"provider": "anthropic", "base_url": url, "api_key": "k"}},
                                "models": [{"name": "an-x", "backend": "an", "model": "claude-x"}]})
    body = b'{"model":"an-x","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'
    extra = b"anthropic-beta: caf\xe9\r\nanthropic-version: \xff\r\ntraceparent: 00-\xff-01\r\n"
    status, _, answer = await raw_request(server, post("/v1/messages", extra, body), body)
    assert status == 200, answer
    assert json.loads(answer)["content"][0]["text"] == "echo: hi"
    assert not [r for r in caplog.records if r.exc_info]
