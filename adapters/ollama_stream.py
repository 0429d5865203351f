"""Ollama answers -> IR: the NDJSON lines of `/api/chat` and `/api/generate` (a non-streamed answer
is one such line), the `/api/embed` answer, and in-band errors (see `ollama_backend` for the quirks)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import msgspec

from . import ir, jsonio
from .common import FramedStreamDecoder, synth_id
from .errors import ProxyError, looks_like_context_length
from .sse import NDJSONParser

__all__ = ["OllamaStream", "decode_line", "embed_decoder", "error_text"]


class _Function(msgspec.Struct):
    name: str = ""
    arguments: Any = None  # an object; tolerated as a string


class _ToolCall(msgspec.Struct):
    function: _Function
    id: str | None = None


class _Message(msgspec.Struct):
    content: str | None = None
    thinking: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Line(msgspec.Struct):
    """One `/api/chat` or `/api/generate` line (or a whole non-streamed answer)."""

    model: str | None = None
    created_at: str | None = None
    message: _Message | None = None  # /api/chat
    response: str | None = None  # /api/generate
    thinking: str | None = None  # /api/generate
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    error: Any = None


class _Embed(msgspec.Struct):
    embeddings: list[list[float]]
    prompt_eval_count: int | None = None


line_decoder = jsonio.decoder(_Line)
embed_decoder = jsonio.decoder(_Embed)

_FINISH: dict[str, ir.FinishReason] = {"stop": "stop", "length": "length"}


def decode_line(data: bytes) -> _Line:
    try:
        return line_decoder.decode(data)
    except (jsonio.DecodeError, jsonio.ValidationError):
        raise ProxyError("upstream_protocol", "ollama sent a line that is not a valid answer object") from None


def error_text(err: Any) -> str:
    if isinstance(err, str):
        return err
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return err["message"]
    return ""


def _inband_error(err: Any) -> ProxyError:
    """An `{"error": ...}` line after a 200: the status is gone, so the wording decides the kind."""
    message = error_text(err) or "ollama reported an error mid-stream"
    if looks_like_context_length(message):
        return ProxyError("context_length", message, code="context_length_exceeded")
    return ProxyError("server", message)


def _created(created_at: str | None) -> int:
    if created_at:
        try:
            return int(datetime.fromisoformat(created_at).timestamp())
        except ValueError:
            pass
    return int(time.time())


class OllamaStream(FramedStreamDecoder):
    """Ollama NDJSON lines -> IR events.

    How this works: every line is decoded on its own.  Ollama sends thinking first, then content, and
    tool calls whole, so one block is open at a time: a delta of another kind (or a tool call) closes
    the open block first.  The `done: true` line carries `done_reason` and the counts; only after it
    is the stream complete (`done`), and `close()` raises if it never came.
    """

    __slots__ = ("_next", "_open", "_open_kind", "_started", "_saw_tool_call", "id")
    truncated = "ollama stream ended before its final (done) line"
    hold_errors = True

    def __init__(self) -> None:
        super().__init__(NDJSONParser())
        self._next = 0  # index of the next block
        self._open: int | None = None
        self._open_kind: str | None = None
        self._started = False
        self._saw_tool_call = False
        self.id = synth_id("chatcmpl-")

    def _frame(self, line: bytes, out: list[ir.Event]) -> None:
        self.apply(decode_line(line), out)

    def apply(self, line: _Line, out: list[ir.Event]) -> None:
        if line.error:
            raise _inband_error(line.error)
        if self.done:
            return
        if not self._started:
            self._started = True
            out.append(ir.Start(id=self.id, model=line.model, created=_created(line.created_at)))
        msg = line.message
        if msg is not None:
            self._delta("reasoning", msg.thinking, out)
            self._delta("text", msg.content, out)
            for call in msg.tool_calls or ():
                self._tool_call(call, out)
        else:
            self._delta("reasoning", line.thinking, out)
            self._delta("text", line.response, out)
        if line.done:
            self._finish(line, out)

    def _delta(self, kind: str, text: str | None, out: list[ir.Event]) -> None:
        if not text:
            return
        if self._open_kind != kind:
            self._close_block(out)
            self._open, self._open_kind = self._next, kind
            self._next += 1
            out.append(ir.BlockStart(self._open, kind))  # type: ignore[arg-type]
        index = self._open
        assert index is not None
        out.append(ir.TextDelta(index, text) if kind == "text" else ir.ReasoningDelta(index, text))

    def _tool_call(self, call: _ToolCall, out: list[ir.Event]) -> None:
        self._close_block(out)
        index = self._next
        self._next += 1
        self._saw_tool_call = True
        args = call.function.arguments
        fragment = args if isinstance(args, str) else jsonio.dumps_str(args if args is not None else {})
        out += [
            ir.BlockStart(index, "tool_call", tool_call_id=call.id or synth_id(), tool_name=call.function.name),
            ir.ToolArgsDelta(index, fragment),
            ir.BlockEnd(index),
        ]

    def _close_block(self, out: list[ir.Event]) -> None:
        if self._open is not None:
            out.append(ir.BlockEnd(self._open))
            self._open = self._open_kind = None

    def _finish(self, line: _Line, out: list[ir.Event]) -> None:
        self._close_block(out)
        reason = _FINISH.get(line.done_reason or "", "stop")
        out.append(ir.Finish(ir.consistent_finish(reason, self._saw_tool_call), raw=line.done_reason))
        usage = ir.Usage(input_tokens=line.prompt_eval_count or 0, output_tokens=line.eval_count or 0)
        out += [ir.UsageEvent(usage), ir.End()]
        self.done = True
