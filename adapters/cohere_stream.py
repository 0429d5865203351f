"""Cohere v2 chat stream (SSE, one JSON object per event with its `type`) -> IR events.

How this works: Cohere numbers content blocks and tool calls in two separate index spaces, each
with explicit start / delta / end events, so every (space, index) pair gets the next IR block
index at its start event.  `tool-plan-delta` fragments have no start or end: they open an implicit
text block, closed by the first tool call (or the end of the message).  `content-start` of type
`thinking` is a reasoning block (provider "cohere").  `citation-start` / `citation-end` and `debug`
events carry nothing the IR models and are skipped.  `message-end` closes whatever is still open,
then Finish, Usage (from `usage.tokens`) and End; a `finish_reason` of ERROR (with `delta.error`)
raises a server error instead, after the events before it were delivered.  A body that ends
without `message-end` is truncated (upstream_protocol).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from msgspec import Struct

from . import ir, jsonio
from .cohere_build import PROVIDER
from .cohere_response import WireContent, WireToolCall, WireUsage, finish_or_error, named_stop, usage_to_ir
from .common import FramedStreamDecoder
from .errors import ProxyError
from .sse import SSEEvent, SSEParser


class _DeltaMessage(Struct):
    content: WireContent | None = None  # one item in content-* events, not a list
    tool_calls: WireToolCall | None = None  # one call in tool-call-* events, not a list
    tool_plan: str | None = None


class _Delta(Struct):
    message: _DeltaMessage | None = None
    finish_reason: str | None = None
    usage: WireUsage | None = None
    error: str | None = None


class _Event(Struct):
    type: str
    id: str | None = None
    index: int = 0
    delta: _Delta | None = None


_event_decoder = jsonio.decoder(_Event)
_EMPTY = _DeltaMessage()


class CohereStreamDecoder(FramedStreamDecoder):
    __slots__ = ("_model", "_stops", "_next", "_blocks", "_thinking", "_plan", "_saw_tool")
    truncated = "Cohere stream ended before message-end"
    hold_errors = True

    def __init__(self, model: str, stops: Sequence[str] = ()) -> None:
        super().__init__(SSEParser())
        self._model = model
        self._stops = stops  # to name the stop sequence behind STOP_SEQUENCE (cohere_response.named_stop)
        self._next = 0
        self._blocks: dict[tuple[str, int], int] = {}  # open (space, Cohere index) -> IR index
        self._thinking: set[int] = set()  # IR indices of reasoning blocks
        self._plan: int | None = None  # the open tool-plan text block
        self._saw_tool = False

    def _frame(self, ev: SSEEvent, out: list[ir.Event]) -> None:
        if self.done or not ev.data.strip() or ev.data == b"[DONE]":
            return
        try:
            e = _event_decoder.decode(ev.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise ProxyError("upstream_protocol", "Cohere stream sent an event that is not valid JSON") from None
        delta = e.delta
        msg = (delta.message if delta is not None else None) or _EMPTY
        kind = e.type
        if kind == "message-start":
            out.append(ir.Start(id=e.id, model=self._model))
        elif kind == "content-start":
            content = msg.content or WireContent()
            thinking = content.type == "thinking"
            i = self._open("content", e.index, "reasoning" if thinking else "text", out)
            if thinking:
                self._thinking.add(i)
            self._text(i, thinking, content, out)
        elif kind == "content-delta":
            i = self._blocks.get(("content", e.index))
            if i is not None and msg.content is not None:
                self._text(i, i in self._thinking, msg.content, out)
        elif kind == "tool-plan-delta":
            if msg.tool_plan:
                if self._plan is None:
                    self._plan = self._new_block(ir.BlockStart(self._next, "text"), out)
                out.append(ir.TextDelta(self._plan, msg.tool_plan))
        elif kind == "tool-call-start":
            self._close_plan(out)
            self._tool_start(e.index, msg.tool_calls or WireToolCall(), out)
        elif kind == "tool-call-delta":
            i = self._blocks.get(("tool", e.index))
            fn = msg.tool_calls.function if msg.tool_calls is not None else None
            if i is not None and fn is not None and fn.arguments:
                out.append(ir.ToolArgsDelta(i, fn.arguments))
        elif kind in ("content-end", "tool-call-end"):
            i = self._blocks.pop(("content" if kind == "content-end" else "tool", e.index), None)
            if i is not None:
                out.append(ir.BlockEnd(i))
        elif kind == "message-end":
            self._end(delta or _Delta(), out)

    def _new_block(self, start: ir.BlockStart, out: list[ir.Event]) -> int:
        out.append(start)
        self._next += 1
        return start.index

    def _open(self, space: str, index: int, kind: str, out: list[ir.Event]) -> int:
        stale = self._blocks.pop((space, index), None)
        if stale is not None:  # a start without the previous end: close it rather than merge
            out.append(ir.BlockEnd(stale))
        provider = PROVIDER if kind == "reasoning" else None
        i = self._new_block(ir.BlockStart(self._next, kind, provider=provider), out)  # type: ignore[arg-type]
        self._blocks[(space, index)] = i
        return i

    @staticmethod
    def _text(i: int, thinking: bool, content: WireContent, out: list[ir.Event]) -> None:
        if thinking and content.thinking:
            out.append(ir.ReasoningDelta(i, content.thinking))
        elif not thinking and content.text:
            out.append(ir.TextDelta(i, content.text))

    def _tool_start(self, index: int, call: WireToolCall, out: list[ir.Event]) -> None:
        fn = call.function
        self._saw_tool = True
        i = self._open("tool", index, "tool_call", out)
        start = out[-1]
        assert isinstance(start, ir.BlockStart)
        start.tool_call_id = call.id or ""
        start.tool_name = fn.name if fn is not None and fn.name else ""
        if fn is not None and fn.arguments:
            out.append(ir.ToolArgsDelta(i, fn.arguments))

    def _close_plan(self, out: list[ir.Event]) -> None:
        if self._plan is not None:
            out.append(ir.BlockEnd(self._plan))
            self._plan = None

    def _end(self, delta: _Delta, out: list[ir.Event]) -> None:
        self.done = True
        reason = finish_or_error(delta.finish_reason, delta.error)
        self._close_plan(out)
        for i in sorted(self._blocks.values()):
            out.append(ir.BlockEnd(i))
        self._blocks.clear()
        out.append(ir.Finish(reason=ir.consistent_finish(reason, self._saw_tool), raw=delta.finish_reason,
                             stop_sequence=named_stop(delta.finish_reason, self._stops)))
        if delta.usage is not None:
            out.append(ir.UsageEvent(usage_to_ir(delta.usage)))
        out.append(ir.End())
