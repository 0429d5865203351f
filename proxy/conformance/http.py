"""The conformance runner's HTTP side: one aiohttp session against the server under test.

Every request records what a probe needs for its evidence line (method, path, status, body) and keeps
the answer bounded: bodies are read up to `MAX_BODY` bytes, streams are parsed with the project's
sans-IO SSE parser as they arrive.  Deadlines are not set here: the runner wraps each probe in its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp

from adapters import jsonio
from adapters.sse import SSEEvent, SSEParser

MAX_BODY = 8 << 20  # a conformance answer is small; a bigger one is a misbehaving server
DONE = b"[DONE]"


@dataclass(frozen=True)
class Target:
    """The server under test, as the command line named it."""

    url: str
    format: str
    model: str
    api_key: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    embedding_model: str | None = None


def _decode(body: bytes) -> Any:
    try:
        return jsonio.loads(body)
    except jsonio.DecodeError:
        return None


@dataclass
class Reply:
    """One non-streamed answer."""

    method: str
    path: str
    status: int
    body: bytes
    content_type: str

    @property
    def json(self) -> Any:
        return _decode(self.body)

    def brief(self) -> str:
        """`-> 404 {"error": ...}` style summary for evidence lines."""
        text = self.body[:120].decode("utf-8", "replace").replace("\n", " ")
        return f"-> {self.status} {text}{'...' if len(self.body) > 120 else ''}"


@dataclass
class StreamReply:
    """One streamed answer: the SSE events in arrival order, and how the body ended."""

    method: str
    path: str
    status: int
    content_type: str
    events: list[SSEEvent] = field(default_factory=list)
    body: bytes = b""  # the whole body when the status was not 200 (an error answer)
    unterminated: bool = False  # the body ended inside an event (no blank line)

    @property
    def done_index(self) -> int | None:
        """Position of the `data: [DONE]` event, if one came."""
        for i, ev in enumerate(self.events):
            if ev.data == DONE:
                return i
        return None

    def payloads(self) -> list[Any]:
        """The JSON data of every event, [DONE] left out; undecodable data becomes None."""
        return [_decode(ev.data) for ev in self.events if ev.data != DONE]

    def brief(self) -> str:
        if self.status != 200:
            return Reply(self.method, self.path, self.status, self.body, self.content_type).brief()
        return f"-> {self.status} {len(self.events)} events"


class Session:
    """Requests to one target; `headers` are the format's own (auth, version) plus the user's."""

    def __init__(self, target: Target, http: aiohttp.ClientSession, headers: dict[str, str]) -> None:
        self.target = target
        self.http = http
        self.headers = {**headers, **dict(target.headers)}
        self.base = target.url.rstrip("/")

    @property
    def model(self) -> str:
        return self.target.model

    async def get(self, path: str) -> Reply:
        async with self.http.get(self.base + path, headers=self.headers) as resp:
            return Reply("GET", path, resp.status, await _read(resp), resp.content_type)

    async def post(self, path: str, body: dict[str, Any] | bytes) -> Reply:
        data = body if isinstance(body, bytes) else jsonio.dumps(body)
        async with self.http.post(self.base + path, data=data, headers=self._json_headers()) as resp:
            return Reply("POST", path, resp.status, await _read(resp), resp.content_type)

    async def stream(self, path: str, body: dict[str, Any]) -> StreamReply:
        async with self.http.post(self.base + path, data=jsonio.dumps(body), headers=self._json_headers()) as resp:
            out = StreamReply("POST", path, resp.status, resp.content_type)
            if resp.status != 200:
                out.body = await _read(resp)
                return out
            parser, size = SSEParser(), 0
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > MAX_BODY:
                    raise ValueError(f"stream larger than {MAX_BODY} bytes")
                out.events += parser.feed(chunk)
            out.events += parser.close()
            out.unterminated = parser.unterminated
            return out

    def _json_headers(self) -> dict[str, str]:
        return {"content-type": "application/json", **self.headers}


async def _read(resp: aiohttp.ClientResponse) -> bytes:
    body = await resp.content.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise ValueError(f"body larger than {MAX_BODY} bytes")
    return body
