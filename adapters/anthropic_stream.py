"""Anthropic Messages streams in both directions: IR events -> SSE (client side), SSE -> IR (backend side).

Event names and payloads follow anthropic-python's `types/raw_*_event.py` and the accumulator in
`lib/streaming/_messages.py`, which indexes `content[event.index]`: Anthropic block indices must be
0, 1, 2 ... with each block started, filled and stopped before the next one starts.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

from . import ir, jsonio
from .anthropic_build import SchemaTool
from .anthropic_request import tool_id
from .anthropic_response import (
    STOP_TO_IR,
    WireBlock,
    WireUsage,
    decode_error_event,
    error_body,
    finish_out,
    message_id,
    usage_out,
    usage_to_ir,
)
from .common import FramedStreamDecoder
from .errors import ProxyError
from .sse import SSEEvent, SSEParser, encode_event

_BLOCK_EVENTS = (ir.BlockStart, ir.TextDelta, ir.ReasoningDelta, ir.ReasoningSignature, ir.RedactedReasoning,
                 ir.ToolArgsDelta, ir.BlockEnd)


def _sse(name: str, obj: dict[str, Any]) -> bytes:
    return encode_event(jsonio.dumps(obj), name)


# A text delta, the event of nearly every chunk, written around its one variable field: the same bytes
# as `_sse("content_block_delta", {...})` (orjson's compact output, which never holds a raw newline).
_TEXT_DELTA_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":'
_TEXT_DELTA_TAIL = b"}}\n\n"


class _Reasoning:
    __slots__ = ("provider", "text", "signature", "redacted")

    def __init__(self, provider: str | None = None) -> None:
        self.provider = provider  # only an Anthropic signature may reach an Anthropic client
        self.text: list[str] = []
        self.signature: str | None = None
        self.redacted: str | None = None


class AnthropicStreamEncoder:
    """IR events -> Anthropic SSE for one response.

    How this works: IR blocks may interleave (OpenAI backends interleave text and tool-call deltas);
    Anthropic blocks may not.  At most one Anthropic block is open.  Text opens a text block lazily at
    its first non-empty delta, closing whatever text block is open; a text block interrupted by
    another block continues in a new text block, so no text is lost.  A tool block opens at its
    BlockStart and stays open until its own BlockEnd: events of *other* blocks that arrive meanwhile
    are deferred (in order) and replayed when it closes, so each tool call is one tool_use block with
    all its arguments.  Reasoning is buffered per block and emitted whole at its BlockEnd, and only
    when Anthropic signed it (the BlockStart names the signing provider) or redacted it: clients echo
    thinking blocks back and Anthropic rejects other providers' signatures.
    Finish and Usage are held and sent as one message_delta once both are known and no block is
    open, or at End; End then sends message_stop.  After error() nothing more is written.
    """

    __slots__ = ("_model", "_started", "_next", "_open", "_open_tool", "_deferred", "_tools", "_reasoning",
                 "_finish", "_usage", "_delta_sent", "_done", "_saw_tool")

    def __init__(self, req: ir.ChatRequest, model: str) -> None:
        self._model = model
        self._started = False
        self._next = 0  # next Anthropic block index
        self._open: int | None = None  # IR index of the open Anthropic block
        self._open_tool = False  # the open block is a tool_use block
        self._deferred: list[ir.Event] = []
        self._tools: dict[int, tuple[str, str]] = {}  # IR index -> (id, name) from BlockStart
        self._reasoning: dict[int, _Reasoning] = {}
        self._finish: ir.Finish | None = None
        self._usage: ir.Usage | None = None
        self._delta_sent = False
        self._done = False
        self._saw_tool = False

    # -- public -----------------------------------------------------------------------------------
    def feed(self, event: ir.Event) -> bytes:
        if self._done:
            return b""
        if type(event) is ir.TextDelta and event.index == self._open and event.text:
            # Most of a stream: more text for the open text block (what _block_event writes).
            return _TEXT_DELTA_HEAD % self._next + jsonio.dumps(event.text) + _TEXT_DELTA_TAIL
        out: list[bytes] = []
        if not self._started:
            self._message_start(event if isinstance(event, ir.Start) else ir.Start(), out)
        self._handle(event, out)
        return b"".join(out)

    def error(self, err: ProxyError) -> bytes:
        if self._done:
            return b""
        self._done = True
        return _sse("error", error_body(err)[1])

    # -- state machine ----------------------------------------------------------------------------
    def _handle(self, ev: ir.Event, out: list[bytes]) -> None:
        if isinstance(ev, _BLOCK_EVENTS):
            if self._open_tool and ev.index != self._open:
                self._deferred.append(ev)
            else:
                self._block_event(ev, out)
        elif isinstance(ev, ir.Finish):
            self._finish = ev
            self._maybe_delta(out)
        elif isinstance(ev, ir.UsageEvent):
            self._usage = ev.usage
            self._maybe_delta(out)
        elif isinstance(ev, ir.End):
            while self._open_tool or self._deferred:  # a block without BlockEnd: close it anyway
                self._close(out)
                self._drain(out)
            self._close(out)
            if not self._delta_sent:
                self._message_delta(out)
            out.append(_sse("message_stop", {"type": "message_stop"}))
            self._done = True

    def _block_event(self, ev: ir.Event, out: list[bytes]) -> None:
        i = ev.index  # type: ignore[union-attr]
        if isinstance(ev, ir.TextDelta):
            if not ev.text:
                return
            if self._open != i:
                self._close(out)
                self._start_block(i, {"type": "text", "text": ""}, out)
            out.append(_TEXT_DELTA_HEAD % self._next + jsonio.dumps(ev.text) + _TEXT_DELTA_TAIL)
        elif isinstance(ev, ir.BlockStart):
            if ev.kind == "tool_call":
                self._close(out)
                call_id = tool_id(ev.tool_call_id, i)
                self._tools[i] = (call_id, ev.tool_name or "")
                self._start_block(i, {"type": "tool_use", "id": call_id, "name": ev.tool_name or "", "input": {}}, out)
                self._open_tool = self._saw_tool = True
            elif ev.kind == "reasoning":
                self._reasoning[i] = _Reasoning(ev.provider)
        elif isinstance(ev, ir.ToolArgsDelta):
            # Fragments for a block that is not open cannot be placed (it is closed for good, or was
            # never started): only a decoder breaking the event contract produces them.
            if self._open == i and self._open_tool and ev.fragment:
                out.append(self._delta({"type": "input_json_delta", "partial_json": ev.fragment}))
        elif isinstance(ev, ir.BlockEnd):
            if self._open == i:
                self._close(out)
                self._drain(out)
            elif i in self._reasoning:
                self._emit_reasoning(self._reasoning.pop(i), out)
        else:
            r = self._reasoning.setdefault(i, _Reasoning())
            if isinstance(ev, ir.ReasoningDelta):
                r.text.append(ev.text)
            elif isinstance(ev, ir.ReasoningSignature):
                r.signature = (r.signature or "") + ev.signature
            else:
                r.redacted = ev.data  # type: ignore[union-attr]

    def _drain(self, out: list[bytes]) -> None:
        pending, self._deferred = self._deferred, []
        for ev in pending:
            self._handle(ev, out)

    def _emit_reasoning(self, r: _Reasoning, out: list[bytes]) -> None:
        if r.redacted is None and not (r.signature and r.provider == "anthropic"):
            return  # unsigned, or signed by another provider: dropped (see the class docstring)
        self._close(out)
        if r.redacted is not None:
            self._start_block(-1, {"type": "redacted_thinking", "data": r.redacted}, out)
        else:
            self._start_block(-1, {"type": "thinking", "thinking": "", "signature": ""}, out)
            if r.text:
                out.append(self._delta({"type": "thinking_delta", "thinking": "".join(r.text)}))
            out.append(self._delta({"type": "signature_delta", "signature": r.signature}))
        self._close(out)

    # -- output helpers ---------------------------------------------------------------------------
    def _message_start(self, start: ir.Start, out: list[bytes]) -> None:
        self._started = True
        usage = usage_out(self._usage)
        usage["output_tokens"] = 0
        message = {
            "id": message_id(start.id),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        out.append(_sse("message_start", {"type": "message_start", "message": message}))

    def _start_block(self, ir_index: int, block: dict[str, Any], out: list[bytes]) -> None:
        self._open = ir_index
        out.append(_sse("content_block_start", {"type": "content_block_start", "index": self._next, "content_block": block}))

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _sse("content_block_delta", {"type": "content_block_delta", "index": self._next, "delta": delta})

    def _close(self, out: list[bytes]) -> None:
        if self._open is None:
            return
        out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": self._next}))
        self._next += 1
        self._open = None
        self._open_tool = False

    def _maybe_delta(self, out: list[bytes]) -> None:
        if self._finish is None or self._usage is None or self._delta_sent or self._open_tool or self._deferred:
            return
        self._close(out)
        self._message_delta(out)

    def _message_delta(self, out: list[bytes]) -> None:
        self._delta_sent = True
        fin = self._finish or ir.Finish(reason="stop")
        reason = ir.consistent_finish(fin.reason, self._saw_tool)
        stop_reason, stop_sequence = finish_out(reason, fin.raw, fin.stop_sequence)
        out.append(
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                    "usage": usage_out(self._usage),
                },
            )
        )


# --------------------------------------------------------------------------------------------------
# Backend direction


class _WireDelta(Struct):
    type: str = ""
    text: str | None = None
    partial_json: str | None = None
    thinking: str | None = None
    signature: str | None = None
    stop_reason: str | None = None
    stop_sequence: str | None = None


class _WireMessageHead(Struct):
    id: str = ""
    model: str = ""
    usage: WireUsage | None = None


class _WireEvent(Struct):
    type: str = ""
    index: int | None = None
    message: _WireMessageHead | None = None
    content_block: WireBlock | None = None
    delta: _WireDelta | None = None
    usage: WireUsage | None = None


_event_decoder = jsonio.decoder(_WireEvent)


class AnthropicStreamDecoder(FramedStreamDecoder):
    """Anthropic SSE -> IR events for one response.

    How this works: the SSE parser frames events; each JSON payload is decoded into one lenient Struct.
    Anthropic block indices map to IR indices in order of appearance, skipping block types the IR
    does not carry (server tools, ...), whose deltas are then ignored.  Usage from message_start is
    kept and overridden field by field by message_delta (cumulative values: replace, never add).
    message_stop emits Finish, Usage and End; close() without it raises upstream_protocol.  The
    json_schema tool (see anthropic_build.SchemaTool) is turned into a text block on the fly.
    """

    __slots__ = ("_schema", "_map", "_kinds", "_args_seen", "_buffers", "_next", "_usage", "_stop_reason",
                 "_stop_sequence", "_saw_tool")
    truncated = "Anthropic stream ended before message_stop"

    def __init__(self, req: ir.ChatRequest) -> None:
        super().__init__(SSEParser())
        self._schema = SchemaTool.of(req)
        self._map: dict[int, int] = {}  # Anthropic index -> IR index
        self._kinds: dict[int, str] = {}  # IR index -> "text" | "reasoning" | "tool" | "schema"
        self._args_seen: set[int] = set()
        self._buffers: dict[int, list[str]] = {}  # wrapped schema output, unwrapped at block end
        self._next = 0
        self._usage = WireUsage()
        self._stop_reason: str | None = None
        self._stop_sequence: str | None = None
        self._saw_tool = False

    def _frame(self, ev: SSEEvent, out: list[ir.Event]) -> None:
        name, data = ev.event, ev.data
        if self.done or name == "ping":
            return
        if name == "error":
            raise decode_error_event(data)
        try:
            ev = _event_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise ProxyError("upstream_protocol", "Anthropic stream sent an event that is not valid JSON") from None
        t = ev.type
        if t == "content_block_delta":  # most events: tested first
            if ev.delta is not None and ev.index in self._map:
                self._block_delta(self._map[ev.index], ev.delta, out)  # type: ignore[index]
        elif t == "message_start" and ev.message is not None:
            if ev.message.usage is not None:
                self._usage = ev.message.usage
            out.append(ir.Start(id=ev.message.id or None, model=ev.message.model or None))
        elif t == "content_block_start" and ev.content_block is not None and ev.index is not None:
            self._block_start(ev.index, ev.content_block, out)
        elif t == "content_block_stop" and ev.index in self._map:
            self._block_stop(self._map.pop(ev.index), out)  # type: ignore[arg-type]
        elif t == "message_delta":
            self._message_delta(ev)
        elif t == "message_stop":
            self._finish(out)
        elif t == "error":
            raise decode_error_event(data)
        # Anything else (unknown event types, deltas of skipped blocks) is ignored.

    def _block_start(self, a_index: int, b: WireBlock, out: list[ir.Event]) -> None:
        kinds = {"text": "text", "thinking": "reasoning", "redacted_thinking": "reasoning", "tool_use": "tool"}
        kind = kinds.get(b.type)
        if kind is None:
            return
        i = self._map[a_index] = self._next
        self._next += 1
        if kind == "tool" and self._schema is not None and b.name == self._schema.name:
            kind = "schema"
        self._kinds[i] = kind
        if kind in ("text", "schema"):
            out.append(ir.BlockStart(i, "text"))
            if b.text:
                out.append(ir.TextDelta(i, b.text))
        elif kind == "tool":
            self._saw_tool = True
            out.append(ir.BlockStart(i, "tool_call", tool_call_id=b.id, tool_name=b.name))
            if isinstance(b.input, dict) and b.input:
                self._args_seen.add(i)
                out.append(ir.ToolArgsDelta(i, jsonio.dumps_str(b.input)))
        else:
            out.append(ir.BlockStart(i, "reasoning", provider="anthropic"))
            if b.type == "redacted_thinking":
                out.append(ir.RedactedReasoning(i, b.data or ""))
            elif b.thinking:
                out.append(ir.ReasoningDelta(i, b.thinking))

    def _block_delta(self, i: int, d: _WireDelta, out: list[ir.Event]) -> None:
        if d.type == "text_delta" and d.text:
            out.append(ir.TextDelta(i, d.text))
        elif d.type == "input_json_delta" and d.partial_json:
            if self._kinds[i] == "tool":
                self._args_seen.add(i)
                out.append(ir.ToolArgsDelta(i, d.partial_json))
            elif self._schema is not None and self._schema.wrapped:
                self._buffers.setdefault(i, []).append(d.partial_json)
            else:
                out.append(ir.TextDelta(i, d.partial_json))
        elif d.type == "thinking_delta" and d.thinking:
            out.append(ir.ReasoningDelta(i, d.thinking))
        elif d.type == "signature_delta" and d.signature:
            out.append(ir.ReasoningSignature(i, d.signature))

    def _block_stop(self, i: int, out: list[ir.Event]) -> None:
        kind = self._kinds[i]
        if kind == "tool" and i not in self._args_seen:
            out.append(ir.ToolArgsDelta(i, "{}"))  # no fragments means an empty input object
        elif kind == "schema" and i in self._buffers:
            raw = "".join(self._buffers.pop(i))
            try:
                value = jsonio.loads(raw)
            except msgspec.DecodeError:
                raise ProxyError("upstream_protocol", "Anthropic streamed invalid JSON for the response schema") from None
            out.append(ir.TextDelta(i, jsonio.dumps_str(self._schema.unwrap(value))))  # type: ignore[union-attr]
        out.append(ir.BlockEnd(i))

    def _message_delta(self, ev: _WireEvent) -> None:
        if ev.delta is not None:
            self._stop_reason = ev.delta.stop_reason or self._stop_reason
            self._stop_sequence = ev.delta.stop_sequence or self._stop_sequence
        if ev.usage is not None:
            u, new = self._usage, ev.usage
            self._usage = WireUsage(
                input_tokens=new.input_tokens if new.input_tokens is not None else u.input_tokens,
                output_tokens=new.output_tokens if new.output_tokens is not None else u.output_tokens,
                cache_read_input_tokens=new.cache_read_input_tokens
                if new.cache_read_input_tokens is not None
                else u.cache_read_input_tokens,
                cache_creation_input_tokens=new.cache_creation_input_tokens
                if new.cache_creation_input_tokens is not None
                else u.cache_creation_input_tokens,
            )

    def _finish(self, out: list[ir.Event]) -> None:
        for a_index in sorted(self._map):  # blocks the upstream never stopped: close them for the IR
            self._block_stop(self._map.pop(a_index), out)
        reason = ir.consistent_finish(STOP_TO_IR.get(self._stop_reason or "", "stop"), self._saw_tool)
        out.append(ir.Finish(reason=reason, raw=self._stop_reason, stop_sequence=self._stop_sequence))
        out.append(ir.UsageEvent(usage_to_ir(self._usage)))
        out.append(ir.End())
        self.done = True
