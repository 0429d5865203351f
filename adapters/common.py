"""Helpers shared by several adapters: ids for what a backend leaves unnamed, JSON request headers, a
model's fixed backend fields, tool-call arguments as a JSON object, and the base of line-per-event
stream decoders.  Nothing here knows a provider."""

from __future__ import annotations

import random
import string
from collections.abc import Mapping
from typing import Any, ClassVar

from . import ir, jsonio
from .errors import ProxyError, bad_request
from .sse import NDJSONParser

_ALNUM = string.ascii_letters + string.digits


def synth_id(prefix: str = "call_", length: int = 24) -> str:
    """An id for something the backend did not name (`call_<24 alnum>` for tool calls)."""
    return prefix + "".join(random.choices(_ALNUM, k=length))


def bearer_auth(api_key: str | None) -> dict[str, str]:
    """`Authorization: Bearer <key>`, or nothing without a key."""
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


def json_headers(api_key: str | None, extra: Mapping[str, str]) -> dict[str, str]:
    """JSON content type, optional bearer auth, then the backend's configured headers."""
    return {"content-type": "application/json", **bearer_auth(api_key), **extra}


def merge_params(body: dict[str, Any], params: Mapping[str, Any], nested: str | None = None) -> None:
    """Apply a model's fixed backend fields (`Target.params`); `nested` names one dict merged key by key."""
    for key, value in params.items():
        if key == nested and isinstance(value, Mapping):
            body[key] = {**body.get(key, {}), **value}
        else:
            body[key] = value


def arguments_object(raw: str) -> dict[str, Any] | None:
    """Tool-call arguments (the IR's raw JSON text) as an object; None when they are not a JSON object."""
    if not raw.strip():
        return {}  # OpenAI clients send "" for a call without arguments
    try:
        value = jsonio.loads(raw)
    except jsonio.DecodeError:
        return None
    return value if isinstance(value, dict) else None


def parse_tool_arguments(raw: str, name: str) -> dict[str, Any]:
    """The arguments as the JSON object object-based formats need (400 if they are not one)."""
    value = arguments_object(raw)
    if value is None:
        raise bad_request(f"arguments of tool call {name!r} are not a JSON object", param="messages")
    return value


def tool_names_by_id(messages: list[ir.Message]) -> dict[str, str]:
    """id -> function name from the assistant tool calls in the history (for formats keyed by name)."""
    return {p.id: p.name for m in messages for p in m.parts if isinstance(p, ir.ToolCall)}


class LineStreamDecoder:
    """Base of stream decoders whose upstream sends one event per line (NDJSON, one-line SSE events).

    How this works: `adapters.sse.NDJSONParser` frames complete non-empty lines and `_line` (the
    subclass) turns each into events and sets `done` at the terminal event.  An in-band error raised
    while a chunk also completed earlier events is held back, so those events are delivered first and
    the error is raised by the next `feed`/`close`.  `close()` raises `upstream_protocol` with
    `truncated` when the body ended before the terminal event.
    """

    __slots__ = ("_lines", "_pending", "done")
    truncated: ClassVar[str] = "stream ended before its final event"

    def __init__(self) -> None:
        self._lines = NDJSONParser()
        self._pending: ProxyError | None = None
        self.done = False

    def _line(self, line: bytes, out: list[ir.Event]) -> None:
        raise NotImplementedError

    def feed(self, chunk: bytes) -> list[ir.Event]:
        self._raise_pending()
        out: list[ir.Event] = []
        try:
            for line in self._lines.feed(chunk):
                self._line(line, out)
        except ProxyError as err:
            if not out:
                raise
            self._pending = err
        return out

    def close(self) -> list[ir.Event]:
        self._raise_pending()
        out: list[ir.Event] = []
        for line in self._lines.close():
            self._line(line, out)
        if not self.done:
            raise ProxyError("upstream_protocol", self.truncated)
        return out

    def _raise_pending(self) -> None:
        if self._pending is not None:
            err, self._pending = self._pending, None
            raise err
