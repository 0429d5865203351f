"""Helpers shared by several adapters: ids for what a backend leaves unnamed, JSON request headers, a
model's fixed backend fields, tool-call arguments as a JSON object, URL path segments built from
names a client may choose, and the base of stream decoders.  Nothing here knows a provider."""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol
from urllib.parse import quote, urlsplit

from . import ir, jsonio
from .errors import ProxyError, bad_request, unsupported

# Random bytes -> alphanumerics through one 256-entry table: one C call instead of a Python-level
# choice per character (a few µs per id, paid per request on backends that name no response id).
# 256 is not a multiple of 62, so 8 letters are 5/4 as likely as the rest: ~5.9 bits a character,
# >140 bits in a 24-character id; ids need to be unique, not uniform.
_ALNUM_OF_BYTE = bytes.maketrans(bytes(range(256)), ((string.ascii_letters + string.digits) * 5)[:256].encode())


def synth_id(prefix: str = "call_", length: int = 24) -> str:
    """An id for something the backend did not name (`call_<24 alnum>` for tool calls)."""
    return prefix + random.randbytes(length).translate(_ALNUM_OF_BYTE).decode()


def bearer_auth(api_key: str | None) -> dict[str, str]:
    """`Authorization: Bearer <key>`, or nothing without a key."""
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


def json_headers(api_key: str | None, extra: Mapping[str, str]) -> dict[str, str]:
    """JSON content type, optional bearer auth, then the backend's configured headers."""
    return {"content-type": "application/json", **bearer_auth(api_key), **extra}


def image_url_part(p: ir.Image) -> dict[str, Any]:
    """An image as the `{"type": "image_url", "image_url": {"url", "detail"?}}` content part OpenAI
    and Cohere share (inline data as a data URL)."""
    url = p.url if p.url is not None else f"data:{p.media_type or 'image/png'};base64,{p.data}"
    inner: dict[str, Any] = {"url": url}
    if p.detail:
        inner["detail"] = p.detail
    return {"type": "image_url", "image_url": inner}


def path_segment(value: str, what: str = "model") -> str:
    """`value` as exactly one percent-encoded URL path segment (every reserved character, `%` included,
    is encoded, so `/`, `?`, `#`, `@`, `\\` and `%2e%2e` stay inside it).  The dot segments `.` and
    `..` cannot be encoded away (URL libraries resolve them, climbing out of the backend's prefix with
    its key attached) and the empty name is no segment: those are refused with a 400.  A wildcard
    route passes client text here, so this is what keeps a client off the backend's other paths."""
    if value in ("", ".", ".."):
        raise bad_request(f"{what} {value!r} cannot be used in a backend URL", param=what)
    return quote(value, safe="")


def forwardable(value: str | None, limit: int = 1024) -> str | None:
    """A client's header value fit to forward upstream -- visible ASCII and spaces, at most `limit`
    characters -- or None (the header is then not forwarded)."""
    if value and len(value) <= limit and value.isascii() and value.isprintable():
        return value
    return None


_DEFAULT_PORTS = {"http": 80, "https": 443}


def url_origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an absolute http(s) URL, or None -- also for a URL that URL libraries
    might read differently (user info, backslashes, whitespace, control or non-ASCII characters, which
    IDNA may fold into ASCII), so that an origin check made here holds for the library that sends it."""
    if not (url.isascii() and url.isprintable()) or " " in url or "\\" in url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    return parts.scheme, parts.hostname, port or _DEFAULT_PORTS[parts.scheme]


def merge_params(body: dict[str, Any], params: Mapping[str, Any], nested: str | None = None) -> None:
    """Apply a model's fixed backend fields (`Target.params`); `nested` names one dict merged key by key."""
    for key, value in params.items():
        if key == nested and isinstance(value, Mapping):
            body[key] = {**body.get(key, {}), **value}
        else:
            body[key] = value


# Fields the gateway decides for every request, whatever the client sent.
_GATEWAY_OWNED = frozenset({"model", "stream", "stream_options"})


def merge_client_extra(body: dict[str, Any], req: ir.ChatRequest, fmt: str, nested: str | None = None) -> None:
    """The client's top-level fields no IR slot holds (`req.extra`), sent on only to a backend that
    speaks the client's own format `fmt` (another format would reject them).  They win over what the
    adapter built, except the model and the stream switches; `nested` is merged key by key."""
    if req.source_format == fmt and req.extra:
        merge_params(body, {k: v for k, v in req.extra.items() if k not in _GATEWAY_OWNED}, nested)


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


def inline_image(img: ir.Image, provider: str, param: str) -> tuple[str, str]:
    """(media type, base64 data) of an image given inline or as a base64 `data:` URL; a backend that
    takes only inline images refuses other URLs (the gateway never downloads them)."""
    if img.data is not None:
        return img.media_type or "", img.data
    url = img.url or ""
    if url.startswith("data:"):
        header, sep, data = url.partition(",")
        if not sep or not header.endswith(";base64"):
            raise bad_request("image data URLs must be base64-encoded", param=param)
        return header[5:].split(";")[0], data
    raise unsupported(
        f"the {provider} backend takes only inline images (base64 or data: URLs); image URLs are not fetched",
        param=param,
    )


def alternating_turns(
    req: ir.ChatRequest,
    part_blocks: Callable[[ir.Part, int], list[dict[str, Any]]],
    text_block: Callable[[ir.Text], dict[str, Any]],
    is_result: Callable[[dict[str, Any]], bool],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, turns) for formats whose turns must alternate user/assistant (Anthropic,
    Bedrock Converse): system messages lifted into the system blocks, tool results in user turns
    ahead of the turn's other blocks (stable order), consecutive same-role turns merged, turns that
    render to no block dropped.  `part_blocks(part, message_index)` renders one part."""
    system = [text_block(t) for t in req.system if t.text]
    turns: list[dict[str, Any]] = []
    for i, msg in enumerate(req.messages):
        if msg.role == "system":
            system += [text_block(p) for p in msg.parts if isinstance(p, ir.Text) and p.text]
            continue
        role = "assistant" if msg.role == "assistant" else "user"
        blocks = [b for p in msg.parts for b in part_blocks(p, i)]
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":
            turn["content"].sort(key=lambda b: not is_result(b))
    return system, turns


def tool_names_by_id(messages: list[ir.Message]) -> dict[str, str]:
    """id -> function name from the assistant tool calls in the history (for formats keyed by name)."""
    return {p.id: p.name for m in messages for p in m.parts if isinstance(p, ir.ToolCall)}


class Framer(Protocol):
    """A sans-IO splitter of a response body into complete frames (held across reads)."""

    def feed(self, chunk: bytes) -> list[Any]: ...

    def close(self) -> list[Any]: ...


class FramedStreamDecoder:
    """Base of stream decoders: a sans-IO framer splits the body, the subclass's `_frame` decodes it.

    How this works: the framer (`adapters.sse.SSEParser` for SSE events, `NDJSONParser` for
    NDJSON or one-line-per-event bodies, `adapters.eventstream.EventStreamParser` for AWS's binary
    event stream) returns complete frames; `_frame` turns each into events and
    sets `done` at the terminal one (frames after it are the subclass's to ignore).  An in-band error
    (a ProxyError from `_frame`) is raised at once, dropping the events the same chunk completed
    before it; with `hold_errors` it is held back instead, those events are delivered first and the
    error is raised by the next `feed`/`close`, so a stream gives the same events whole or split
    anywhere.  `close()` raises `upstream_protocol` with `truncated` when the body ended before the
    terminal event.
    """

    __slots__ = ("_framer", "_held_error", "done")
    truncated: ClassVar[str] = "stream ended before its final event"
    hold_errors: ClassVar[bool] = False

    def __init__(self, framer: Framer) -> None:
        self._framer = framer
        self._held_error: ProxyError | None = None
        self.done = False

    def _frame(self, frame: Any, out: list[ir.Event]) -> None:
        raise NotImplementedError

    def feed(self, chunk: bytes) -> list[ir.Event]:
        if self._held_error is not None:
            self._raise_held()
        out: list[ir.Event] = []
        try:
            for frame in self._framer.feed(chunk):
                self._frame(frame, out)
        except ProxyError as err:
            if not (self.hold_errors and out):
                raise
            self._held_error = err
        return out

    def close(self) -> list[ir.Event]:
        self._raise_held()
        out: list[ir.Event] = []
        for frame in self._framer.close():
            self._frame(frame, out)
        if not self.done:
            raise ProxyError("upstream_protocol", self.truncated)
        return out

    def _raise_held(self) -> None:
        if self._held_error is not None:
            err, self._held_error = self._held_error, None
            raise err


# msgspec ValidationError messages end with "- at `$.messages[2].content`".
_PATH_RE = re.compile(r" - at `\$\.?(.*)`$")


def validation_error(exc: Exception, what: str) -> ProxyError:
    """A 400 naming the offending field path (`messages[2].content`) from a msgspec error."""
    text = str(exc)
    m = _PATH_RE.search(text)
    path = m.group(1) if m and m.group(1) else None
    message = _PATH_RE.sub("", text)
    if path:
        message = f"{message} at {path!r}"
    return ProxyError("invalid_request", f"invalid {what}: {message}", param=path)


def decode_client_body(decoder: Any, body: bytes, what: str) -> Any:
    """Decode and validate a client's request body with a typed decoder; every problem is a 400
    in the caller's terms (`what` names the request, the message names the field path)."""
    try:
        return decoder.decode(body)
    except jsonio.ValidationError as exc:
        raise validation_error(exc, what) from None
    except jsonio.DecodeError:
        raise bad_request(f"the {what} body is not valid JSON") from None
    except RecursionError:
        raise bad_request(f"the {what} body is nested too deeply") from None
