"""Bedrock ConverseStream (AWS binary event stream) -> IR events.

How this works: `adapters.eventstream` frames the body into messages; each `event` message's
`:event-type` names the union member and its payload is that member's JSON.

    messageStart                      -> Start
    contentBlockStart {start.toolUse} -> a tool block (id, name)
    contentBlockDelta {delta.text | delta.reasoningContent | delta.toolUse.input}
                                      -> the delta; the first delta of an index opens its text or
                                         reasoning block (Bedrock sends no start for those)
    contentBlockStop                  -> BlockEnd
    messageStop {stopReason}          -> open blocks end, Finish
    metadata {usage}                  -> UsageEvent, End (it comes after messageStop)

Bedrock's block indexes map to IR indexes in order of first appearance.  An `exception` message
(`:exception-type` throttlingException, modelStreamErrorException, ...) raises the matching
ProxyError after the events before it.  A stream that ends after messageStop without metadata
still ends cleanly (without usage); one that ends before messageStop is truncated.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

from . import ir, jsonio
from .bedrock_response import WireUsage, exception_error, exception_name, finish, usage_to_ir
from .common import FramedStreamDecoder, synth_id
from .errors import ProxyError
from .eventstream import EventStreamParser, Frame


class _StartToolUse(Struct):
    toolUseId: str
    name: str


class _Start(Struct):
    toolUse: _StartToolUse | None = None


class _ToolInput(Struct):
    input: str = ""


class _ReasoningDelta(Struct):
    text: str | None = None
    signature: str | None = None
    redactedContent: str | None = None


class _Delta(Struct):
    text: str | None = None
    toolUse: _ToolInput | None = None
    reasoningContent: _ReasoningDelta | None = None


class WireEvent(Struct):
    """Every ConverseStream event's payload in one shape (each uses some of the fields)."""

    contentBlockIndex: int = 0
    start: _Start | None = None
    delta: _Delta | None = None
    stopReason: str | None = None
    additionalModelResponseFields: Any = None
    usage: WireUsage | None = None
    message: str | None = None
    Message: str | None = None


_event_decoder = jsonio.decoder(WireEvent)


class BedrockStreamDecoder(FramedStreamDecoder):
    __slots__ = ("claude", "_blocks", "_next", "_saw_tool", "_ended")
    truncated = "Bedrock stream ended before messageStop"
    hold_errors = True

    def __init__(self, claude: bool) -> None:
        super().__init__(EventStreamParser())
        self.claude = claude  # reasoning signatures of Claude models are Anthropic's
        self._blocks: dict[int, tuple[int, str]] = {}  # open Bedrock index -> (IR index, kind)
        self._next = 0
        self._saw_tool = False
        self._ended = False

    def close(self) -> list[ir.Event]:
        out = super().close()
        if not self._ended:
            out.append(ir.End())
            self._ended = True
        return out

    def _frame(self, frame: Frame, out: list[ir.Event]) -> None:
        headers = frame.headers
        kind = headers.get(":message-type")
        if kind == "exception":
            raise exception_error(exception_name(headers.get(":exception-type")), self._message(frame.payload))
        if kind == "error":
            raise exception_error(exception_name(headers.get(":error-code")), str(headers.get(":error-message") or ""))
        if self._ended:
            return
        try:
            ev = _event_decoder.decode(frame.payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise ProxyError("upstream_protocol", "Bedrock stream sent an event that cannot be parsed") from None
        name = headers.get(":event-type")
        if name == "messageStart":
            out.append(ir.Start(id=synth_id("bedrock-")))
        elif name == "contentBlockStart" and ev.start is not None and ev.start.toolUse is not None:
            t = ev.start.toolUse
            self._saw_tool = True
            out.append(ir.BlockStart(self._open(ev.contentBlockIndex, "tool_call"), "tool_call",
                                     tool_call_id=t.toolUseId, tool_name=t.name))
        elif name == "contentBlockDelta" and ev.delta is not None:
            self._delta(ev.contentBlockIndex, ev.delta, out)
        elif name == "contentBlockStop":
            block = self._blocks.pop(ev.contentBlockIndex, None)
            if block is not None:
                out.append(ir.BlockEnd(block[0]))
        elif name == "messageStop":
            for index, _ in self._blocks.values():
                out.append(ir.BlockEnd(index))
            self._blocks.clear()
            fin = finish(ev.stopReason or "end_turn", ev.additionalModelResponseFields)
            fin.reason = ir.consistent_finish(fin.reason, self._saw_tool)
            out.append(fin)
            self.done = True
        elif name == "metadata" and self.done:
            if ev.usage is not None:
                out.append(ir.UsageEvent(usage_to_ir(ev.usage)))
            out.append(ir.End())
            self._ended = True

    def _open(self, bedrock_index: int, kind: str) -> int:
        index = self._next
        self._next += 1
        self._blocks[bedrock_index] = (index, kind)
        return index

    def _block(self, bedrock_index: int, kind: str, out: list[ir.Event]) -> int:
        """The IR index of the open block at `bedrock_index`, opening a text/reasoning one if needed."""
        block = self._blocks.get(bedrock_index)
        if block is not None and block[1] == kind:
            return block[0]
        if block is not None or kind == "tool_call":
            raise ProxyError("upstream_protocol", f"Bedrock stream sent a {kind} delta for a block of another kind")
        index = self._open(bedrock_index, kind)
        provider = "anthropic" if kind == "reasoning" and self.claude else None
        out.append(ir.BlockStart(index, kind, provider=provider))  # type: ignore[arg-type]
        return index

    def _delta(self, bedrock_index: int, d: _Delta, out: list[ir.Event]) -> None:
        if d.text is not None:
            out.append(ir.TextDelta(self._block(bedrock_index, "text", out), d.text))
        elif d.toolUse is not None:
            out.append(ir.ToolArgsDelta(self._block(bedrock_index, "tool_call", out), d.toolUse.input))
        elif d.reasoningContent is not None:
            r = d.reasoningContent
            index = self._block(bedrock_index, "reasoning", out)
            if r.text:
                out.append(ir.ReasoningDelta(index, r.text))
            if r.signature:
                out.append(ir.ReasoningSignature(index, r.signature))
            if r.redactedContent:
                out.append(ir.RedactedReasoning(index, r.redactedContent))

    @staticmethod
    def _message(payload: bytes) -> str:
        try:
            ev = _event_decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return ""
        return ev.message or ev.Message or ""
