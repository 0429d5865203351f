"""Gemini streams in both directions: `streamGenerateContent?alt=sse` chunks -> IR events (backend side)
and IR events -> the same chunks (client side).  A non-streaming answer is one chunk, so the backend's
`chat_response` runs it through the same decoder and folds the events.
"""

from __future__ import annotations

from typing import Any

import msgspec

from . import ir, jsonio
from .common import FramedStreamDecoder, synth_id
from .errors import ProxyError
from .gemini_response import (
    UsageMetadata,
    WireCandidate,
    WirePart,
    WireResponse,
    error_from_object,
    error_object,
    finish_out,
    finish_to_ir,
    function_call,
    response_decoder,
    usage_out,
    usage_to_ir,
)
from .sse import SSEEvent, SSEParser, encode_data

# --------------------------------------------------------------------------------------------------
# Backend direction


class GeminiStreamDecoder(FramedStreamDecoder):
    """Gemini SSE (data-only, no terminator) -> IR events for one response.

    How this works: every `data:` event is a whole GenerateContentResponse carrying only new parts of
    candidate 0.  One text or reasoning block is open at a time: a part of another kind closes it.
    Thought parts (`thought: true`) are reasoning (provider "gemini"); a signature on a thought part
    ends its block (one signature per IR reasoning part), a signature on any other part becomes a
    signature-only reasoning block just before that part's block.  Function calls arrive whole: one
    tool block each, with a synthesised id when Gemini sends none.  `usageMetadata` is cumulative:
    the last one seen is kept.  The chunk carrying `finishReason` (or a `promptFeedback.blockReason`
    without candidates) ends the stream: blocks close, then Finish, Usage, End.  The upstream then
    closes the connection; close() without that chunk raises upstream_protocol.  `{"error": ...}`
    in a data event raises the matching ProxyError.
    """

    __slots__ = ("_next", "_open", "_open_kind", "_started", "_saw_tool", "_usage", "id")
    truncated = "Gemini stream ended before the chunk with finishReason"
    hold_errors = True

    def __init__(self) -> None:
        super().__init__(SSEParser())
        self._next = 0
        self._open: int | None = None
        self._open_kind: str | None = None
        self._started = False
        self._saw_tool = False
        self._usage: UsageMetadata | None = None
        self.id: str | None = None

    def _frame(self, ev: SSEEvent, out: list[ir.Event]) -> None:
        try:
            chunk = response_decoder.decode(ev.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise ProxyError("upstream_protocol", "Gemini stream sent a chunk that is not a valid response") from None
        self.apply(chunk, out)

    def apply(self, chunk: WireResponse, out: list[ir.Event]) -> None:
        if chunk.error is not None:
            raise error_from_object(chunk.error, None)
        if self.done:
            return
        if not self._started:
            self._started = True
            self.id = chunk.responseId or synth_id("gen-")
            out.append(ir.Start(id=self.id, model=chunk.modelVersion))
        if chunk.usageMetadata is not None:
            self._usage = chunk.usageMetadata
        cand: WireCandidate | None = next((c for c in chunk.candidates if c.index == 0), None)
        if cand is None:
            if chunk.promptFeedback is not None and chunk.promptFeedback.blockReason:
                self._finish("content_filter", chunk.promptFeedback.blockReason, out)
            return
        for part in cand.content.parts if cand.content is not None else ():
            self._part(part, out)
        if cand.finishReason:
            reason = ir.consistent_finish(finish_to_ir(cand.finishReason), self._saw_tool)
            self._finish(reason, cand.finishReason, out)

    def _part(self, p: WirePart, out: list[ir.Event]) -> None:
        if p.thought:
            self._delta("reasoning", p.text, out)
            if p.thoughtSignature:
                index = self._ensure("reasoning", out)
                out.append(ir.ReasoningSignature(index, p.thoughtSignature))
                self._close(out)
            return
        if p.thoughtSignature:
            self._close(out)
            index = self._ensure("reasoning", out)
            out.append(ir.ReasoningSignature(index, p.thoughtSignature))
            self._close(out)
        if p.functionCall is not None:
            self._close(out)
            fc = p.functionCall
            index = self._next
            self._next += 1
            self._saw_tool = True
            args = fc.args if isinstance(fc.args, dict) else {}
            out += [
                ir.BlockStart(index, "tool_call", tool_call_id=fc.id or synth_id(), tool_name=fc.name),
                ir.ToolArgsDelta(index, jsonio.dumps_str(args)),
                ir.BlockEnd(index),
            ]
        else:
            self._delta("text", p.text, out)

    def _ensure(self, kind: str, out: list[ir.Event]) -> int:
        """The open block of `kind`, opening one (after closing another kind) if needed."""
        if self._open_kind != kind:
            self._close(out)
            self._open, self._open_kind = self._next, kind
            self._next += 1
            out.append(ir.BlockStart(self._open, kind, provider="gemini" if kind == "reasoning" else None))  # type: ignore[arg-type]
        assert self._open is not None
        return self._open

    def _delta(self, kind: str, text: str | None, out: list[ir.Event]) -> None:
        if not text:
            return
        index = self._ensure(kind, out)
        out.append(ir.TextDelta(index, text) if kind == "text" else ir.ReasoningDelta(index, text))

    def _close(self, out: list[ir.Event]) -> None:
        if self._open is not None:
            out.append(ir.BlockEnd(self._open))
            self._open = self._open_kind = None

    def _finish(self, reason: ir.FinishReason, raw: str, out: list[ir.Event]) -> None:
        self._close(out)
        out.append(ir.Finish(reason=reason, raw=raw))
        if self._usage is not None:
            out.append(ir.UsageEvent(usage_to_ir(self._usage)))
        out.append(ir.End())
        self.done = True


# --------------------------------------------------------------------------------------------------
# Client direction


def error_event(err: ProxyError) -> bytes:
    return encode_data(jsonio.dumps({"error": error_object(err)}))


_TEXT_HEAD = b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":'


class GeminiStreamEncoder:
    """IR events -> Gemini SSE chunks for one response.

    How this works: each text or reasoning delta is written at once as a chunk with one part (thought
    parts carry `thought: true`).  Tool blocks are buffered and written whole at their BlockEnd as a
    functionCall part with an `args` object (IR blocks may interleave; each tool block has its own
    buffer).  A Gemini signature is held: a reasoning block that had text gets it on one last empty
    thought part at its BlockEnd; a signature-only block puts it on the next part written (or on an
    empty text part in the final chunk).  Other providers' signatures are never shown.  Finish and
    Usage are held and written as the last chunk (finishReason, usageMetadata) at End; then the
    stream just ends (Gemini has no terminator).  A Finish `error` and error() write
    `data: {"error": {...}}` instead; nothing is written after it.
    """

    __slots__ = ("_model", "_id", "_tools", "_reasoning", "_held_sig", "_finish", "_usage", "_saw_tool", "_closed",
                 "_text_tail")

    def __init__(self, req: ir.ChatRequest, model: str) -> None:
        self._model = model
        self._id = synth_id("gen-")
        self._tools: dict[int, list[str]] = {}  # IR index -> [id, name, argument fragments...]
        self._reasoning: dict[int, list[Any]] = {}  # IR index -> [provider, had text, signature]
        self._held_sig: str | None = None
        self._finish: ir.Finish | None = None
        self._usage: ir.Usage | None = None
        self._saw_tool = False
        self._closed = False
        self._text_tail: tuple[str, bytes] | None = None  # (response id, bytes after a text part's value)

    def feed(self, ev: ir.Event) -> bytes:
        if self._closed:
            return b""
        if isinstance(ev, ir.Start):
            self._id = ev.id or self._id
        elif isinstance(ev, ir.TextDelta):
            if not ev.text:
                return b""
            return self._part({"text": ev.text}) if self._held_sig else self._text(ev.text)
        elif isinstance(ev, ir.ReasoningDelta):
            if ev.text:
                self._reasoning.setdefault(ev.index, [None, False, None])[1] = True
                return self._chunk([{"text": ev.text, "thought": True}])
        elif isinstance(ev, ir.BlockStart):
            if ev.kind == "tool_call":
                self._tools[ev.index] = [ev.tool_call_id or "", ev.tool_name or ""]
            elif ev.kind == "reasoning":
                self._reasoning[ev.index] = [ev.provider, False, None]
        elif isinstance(ev, ir.ReasoningSignature):
            r = self._reasoning.setdefault(ev.index, [None, False, None])
            r[2] = (r[2] or "") + ev.signature
        elif isinstance(ev, ir.ToolArgsDelta):
            if ev.index in self._tools:
                self._tools[ev.index].append(ev.fragment)
        elif isinstance(ev, ir.BlockEnd):
            return self._block_end(ev.index)
        elif isinstance(ev, ir.Finish):
            if ev.reason == "error":
                return self.error(ProxyError("server", f"the upstream stopped generating (finish reason {ev.raw or 'error'})"))
            self._finish = ev
        elif isinstance(ev, ir.UsageEvent):
            self._usage = ev.usage
        elif isinstance(ev, ir.End):
            return self._end()
        return b""

    def error(self, err: ProxyError) -> bytes:
        if self._closed:
            return b""
        self._closed = True
        return error_event(err)

    def _block_end(self, index: int) -> bytes:
        if index in self._tools:
            call_id, name, *fragments = self._tools.pop(index)
            self._saw_tool = True
            return self._part({"functionCall": function_call(call_id, name, "".join(fragments))})
        r = self._reasoning.pop(index, None)
        if r is None or r[0] != "gemini" or not r[2]:
            return b""
        if r[1]:
            return self._chunk([{"text": "", "thought": True, "thoughtSignature": r[2]}])
        self._held_sig = r[2]
        return b""

    def _text(self, text: str) -> bytes:
        """`self._chunk([{"text": text}])`, written around the text: what follows it is encoded once per
        response id, not once per chunk."""
        tail = self._text_tail
        if tail is None or tail[0] != self._id:
            tail = self._text_tail = (self._id, b'}]},"index":0}],"modelVersion":' + jsonio.dumps(self._model)
                                      + b',"responseId":' + jsonio.dumps(self._id) + b"}\n\n")  # fmt: skip
        return _TEXT_HEAD + jsonio.dumps(text) + tail[1]

    def _part(self, part: dict[str, Any]) -> bytes:
        if self._held_sig:
            part["thoughtSignature"], self._held_sig = self._held_sig, None
        return self._chunk([part])

    def _chunk(self, parts: list[dict[str, Any]], **candidate: Any) -> bytes:
        cand = {"content": {"role": "model", "parts": parts}, **candidate, "index": 0}
        obj: dict[str, Any] = {"candidates": [cand]}
        if "finishReason" in candidate and self._usage is not None:
            obj["usageMetadata"] = usage_out(self._usage)
        obj["modelVersion"] = self._model
        obj["responseId"] = self._id
        return encode_data(jsonio.dumps(obj))

    def _end(self) -> bytes:
        out = [self._block_end(i) for i in list(self._tools)]  # tool blocks never ended: still sent
        parts = [{"text": "", "thoughtSignature": self._held_sig}] if self._held_sig else []
        fin = self._finish or ir.Finish(reason="stop")
        reason = ir.consistent_finish(fin.reason, self._saw_tool)
        out.append(self._chunk(parts, finishReason=finish_out(reason, fin.raw)))
        self._closed = True
        return b"".join(out)
