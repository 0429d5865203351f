"""A lean canned backend: the emulators' answers, recorded at start-up and replayed with no per-request
work beyond parsing the request (`llm-proxy bench --compare-hop minimal --isolated`).

    python -m loadtest.bench.lean_backend [--port P] [--chunks 32] [--one-write]

Why.  The emulators (loadtest/emulators, aiohttp) cost about as much CPU per request as the proxy they
serve, so under a throughput test on a small machine they measure themselves as much as the proxy.
This server answers from bytes: at start-up it starts the OpenAI, Anthropic and Ollama emulators in
this process and sends each, for JSON and for a stream, the request the benchmark sends (the one the
minimal hop forwards and, key order aside, the one the gateway's backend adapter builds), keeps the
answer and stops them.  The bytes are therefore the emulators' -- they stay the single source of
truth -- and only the framing (status line, Content-Type, Content-Length or chunked) is built here,
once.

Per request: llhttp (`httptools`) parses it on an `asyncio.Protocol`; on its end the path picks the
recording and the body's stream flag picks JSON or stream (`"stream":true`, with or without a space;
for Ollama, whose streams are the default, a stream unless `"stream":false`); the answer is written.
An unknown path is a 404.  Keep-alive as the client asks (HTTP/1.1: kept).

Streams go out chunked, **one write per event** by default: each event is one `transport.write` (one
`send()` on loopback), as the emulator and a real server do when tokens come as fast as they can, so
the proxy reads the stream in several reads and pays its per-read relay cost, which is what the
stream goal measures.  `--one-write` sends the whole answer in one write instead: the proxy's
cheapest case (it often reads the stream at once), useful to separate per-read from per-event cost.

On start it prints one JSON line: `{"url": ..., "chunks": N, "events": {"openai": n, ...}}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
from dataclasses import dataclass

import aiohttp
import httptools

from loadtest.emulators.server import start
from loadtest.profiles import PROFILES

from . import scenario

FORMATS = ("openai", "anthropic", "ollama")
# Where one stream event ends: a blank line (SSE; CRLF framing too) or a newline (NDJSON).
FRAME_END = re.compile(rb"\r\n\r\n|\n\n")
NDJSON = frozenset({"ollama"})
STREAM_BY_DEFAULT = frozenset({"ollama"})  # Ollama streams when the body has no "stream"
STREAM_ON = (b'"stream":true', b'"stream": true')
STREAM_OFF = (b'"stream":false', b'"stream": false')
_NOT_FOUND_BODY = b'{"error":"not found"}\n'
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(_NOT_FOUND_BODY), _NOT_FOUND_BODY)  # fmt: skip


def frames(body: bytes, fmt: str) -> list[bytes]:
    """`body` cut after each event: one read (or write) per event."""
    ends = re.finditer(rb"\n", body) if fmt in NDJSON else FRAME_END.finditer(body)
    out, pos = [], 0
    for m in ends:
        out.append(body[pos : m.end()])
        pos = m.end()
    return out + ([body[pos:]] if pos < len(body) else [])


@dataclass(frozen=True)
class Recording:
    """One answer of an emulator: its Content-Type and body bytes."""

    content_type: str
    body: bytes


async def record_one(url: str, fmt: str, chunks: int, stream: bool) -> Recording:
    """The emulator at `url`'s answer to the benchmark request in `fmt`."""
    ep = scenario.native(url, scenario.Path(fmt, fmt, fmt), chunks, stream)
    async with aiohttp.ClientSession() as s, s.post(ep.url, data=ep.body, headers=ep.headers) as r:
        body = await r.read()
        if r.status != 200:
            raise RuntimeError(f"the {fmt} emulator answered {r.status}: {body[:200]!r}")
        return Recording(r.headers.get("Content-Type", "application/octet-stream"), body)


async def record(chunks: int, formats: tuple[str, ...] = FORMATS) -> dict[str, tuple[Recording, Recording]]:
    """Per format, (JSON, stream) answers of its zero-delay emulator, started and stopped here."""
    out = {}
    for fmt in formats:
        module = __import__(f"loadtest.emulators.{fmt}", fromlist=["create_app"])
        runner, url = await start(module.create_app(PROFILES["zero"]))
        try:
            out[fmt] = (await record_one(url, fmt, chunks, False), await record_one(url, fmt, chunks, True))
        finally:
            await runner.cleanup()
    return out


@dataclass(frozen=True)
class Answer:
    """What one path serves, framed once: the JSON response, and the stream as the writes to make."""

    json: bytes
    stream: tuple[bytes, ...]
    stream_by_default: bool
    events: int


def _head(status: str, content_type: str, framing: str) -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{framing}\r\n\r\n".encode()


def answer(fmt: str, json_rec: Recording, stream_rec: Recording, one_write: bool = False) -> Answer:
    """The HTTP/1.1 bytes of both answers: JSON with a Content-Length, the stream chunked, one chunk
    per event (the head goes with the first event's write)."""
    whole = _head("200 OK", json_rec.content_type, f"Content-Length: {len(json_rec.body)}") + json_rec.body
    events = frames(stream_rec.body, fmt)
    writes = [b"%x\r\n%s\r\n" % (len(e), e) for e in events]
    writes[0] = _head("200 OK", stream_rec.content_type, "Transfer-Encoding: chunked") + writes[0]
    writes[-1] += b"0\r\n\r\n"
    stream = (b"".join(writes),) if one_write else tuple(writes)
    return Answer(whole, stream, fmt in STREAM_BY_DEFAULT, len(events))


def answers(recordings: dict[str, tuple[Recording, Recording]], one_write: bool = False) -> dict[bytes, Answer]:
    """Request path -> its answer, for every recorded format."""
    return {scenario.API_PATHS[fmt].encode(): answer(fmt, j, s, one_write) for fmt, (j, s) in recordings.items()}


def wants_stream(body: bytes, by_default: bool) -> bool:
    if by_default:
        return not any(flag in body for flag in STREAM_OFF)
    return any(flag in body for flag in STREAM_ON)


class LeanProtocol(asyncio.Protocol):
    """One connection: llhttp parses, the end of each request writes its canned answer."""

    def __init__(self, routes: dict[bytes, Answer]) -> None:
        self.routes = routes
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.body = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        t = self.transport
        a = self.routes.get(self.url.partition(b"?")[0])
        if a is None:
            t.write(NOT_FOUND)
        elif wants_stream(b"".join(self.body), a.stream_by_default):
            for w in a.stream:
                t.write(w)
        else:
            t.write(a.json)
        if not self.parser.should_keep_alive():
            t.close()


async def serve(port: int, chunks: int, one_write: bool) -> None:
    routes = answers(await record(chunks), one_write)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: LeanProtocol(routes), "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    events = {fmt: routes[scenario.API_PATHS[fmt].encode()].events for fmt in FORMATS}
    print(json.dumps({"url": f"http://127.0.0.1:{bound}", "chunks": chunks, "events": events}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench.lean_backend", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = a free one)")
    p.add_argument("--chunks", type=int, default=PROFILES["zero"].chunks, help="content chunks per stream")
    p.add_argument("--one-write", action="store_true", help="write each stream in one write, not one per event")
    args = p.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(serve(args.port, args.chunks, args.one_write))


if __name__ == "__main__":
    main()
