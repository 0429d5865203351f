"""OpenAI streams both ways: IR events -> chat.completion.chunk / text_completion SSE (client side),
and an OpenAI-compatible server's SSE -> IR events (backend side).

How the encoder works: every chunk carries the same id / created / model.  The role chunk goes first;
text and reasoning deltas map one-to-one; a tool block's BlockStart becomes the first `tool_calls`
fragment (index = ordinal among tool blocks, kept per IR block so interleaved argument deltas land
on the right call), with a Gemini signature held from the signed, text-less reasoning block just
before it as `extra_content`; Anthropic's signed or redacted thinking block becomes one
`reasoning_details` delta at its end (`openai_signatures`); Finish becomes its own chunk with an
empty delta.  Usage is held and written as
the `choices: []` chunk just before `[DONE]` (only when the client asked for include_usage), so it
follows the finish chunk even when the upstream reported usage first.  After an error event nothing
more is written (no `[DONE]`: it means success to clients).

How the decoder works: SSE framing by adapters.sse.SSEParser; each chunk's choice 0 updates at most
one text block, one reasoning block (closed when text or tools begin), and one tool block per
`tool_calls[].index`.  Blocks stay open until the finish_reason, which closes them all and yields
Finish; usage (the last one seen: vLLM's continuous usage repeats it) is emitted just before End.
Azure's `choices: []` / filter-only chunks carry no delta and are skipped.
"""

from __future__ import annotations

import time
from typing import Any

from . import ir, jsonio
from .common import synth_id
from .errors import ProxyError
from .openai_response import (
    FINISH_FROM_IR,
    ChoiceWire,
    MessageWire,
    ResponseWire,
    arguments_text,
    error_object,
    finish_to_ir,
    in_stream_error,
    response_decoder,
    usage_to_ir,
    usage_to_wire,
)
from .openai_signatures import call_signature, extra_content, reasoning_detail
from .sse import DONE, SSEParser, encode_data


def error_event(err: ProxyError) -> bytes:
    return encode_data(jsonio.dumps({"error": error_object(err)}))


# --------------------------------------------------------------------------------------------------
# Client side: IR -> SSE


class _EncoderBase:
    """Shared envelope, usage holding and termination for the chat and completion encoders."""

    object_name = ""

    def __init__(self, req: ir.ChatRequest, model: str) -> None:
        self.id = synth_id("chatcmpl-" if self.object_name.startswith("chat") else "cmpl-")
        self.created = int(time.time())
        self.model = model
        self.include_usage = req.include_usage
        self.usage: ir.Usage | None = None
        self.started = False
        self.closed = False  # after End or an error event

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        obj = {"id": self.id, "object": self.object_name, "created": self.created, "model": self.model,
               "choices": choices, **extra}
        if self.include_usage and "usage" not in obj:
            obj["usage"] = None  # as OpenAI: every chunk has usage null when include_usage is set
        return encode_data(jsonio.dumps(obj))

    def _adopt(self, ev: ir.Start) -> None:
        if not self.started:
            self.id = ev.id or self.id
            self.created = ev.created or self.created

    def _end(self) -> bytes:
        self.closed = True
        out = b""
        if self.include_usage and self.usage is not None:
            out = self._chunk([], usage=usage_to_wire(self.usage))
        return out + DONE

    def error(self, err: ProxyError) -> bytes:
        if self.closed:
            return b""
        self.closed = True
        return error_event(err)


class ChatStreamEncoder(_EncoderBase):
    object_name = "chat.completion.chunk"

    def __init__(self, req: ir.ChatRequest, model: str) -> None:
        super().__init__(req, model)
        self.tool_ordinal: dict[int, int] = {}  # IR block index -> tool_calls[].index
        self._frames: dict[str, tuple[bytes, bytes]] = {}  # delta key -> bytes around its string value
        # Open reasoning blocks of a signing provider (openai_signatures): the part so far and its
        # text pieces; a Gemini call signature held for the tool call that follows it; the number
        # of reasoning_details entries written.
        self.signing: dict[int, tuple[ir.Reasoning, list[str]]] = {}
        self.held: str | None = None
        self.details = 0

    def _text_delta(self, key: str, text: str) -> bytes:
        """`self._delta({key: text})` for a started stream (id and created final), written around the
        text: the envelope is encoded once per stream, not once per chunk."""
        frame = self._frames.get(key)
        if frame is None:
            head = jsonio.dumps({"id": self.id, "object": self.object_name, "created": self.created, "model": self.model})
            usage = b',"usage":null' if self.include_usage else b""
            frame = self._frames[key] = (
                b"data: " + head[:-1] + b',"choices":[{"index":0,"delta":{' + jsonio.dumps(key) + b":",
                b'},"logprobs":null,"finish_reason":null}]' + usage + b"}\n\n",
            )
        return frame[0] + jsonio.dumps(text) + frame[1]

    def _delta(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])

    def _role(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        return self._delta({"role": "assistant", "content": ""})

    def feed(self, ev: ir.Event) -> bytes:
        if self.closed:
            return b""
        if type(ev) is ir.TextDelta and self.started and ev.text:  # most of a stream
            self.held = None
            return self._text_delta("content", ev.text)
        if isinstance(ev, ir.Start):
            self._adopt(ev)
            return self._role()
        if isinstance(ev, ir.TextDelta):
            self.held = None  # a signature that sat on this text: no slot for it
            return self._role() + self._text_delta("content", ev.text) if ev.text else b""
        if isinstance(ev, ir.ReasoningDelta):
            if not ev.text:
                return b""
            if self.signing and ev.index in self.signing:
                self.signing[ev.index][1].append(ev.text)
            return self._role() + self._text_delta("reasoning_content", ev.text)
        if isinstance(ev, (ir.BlockStart, ir.ReasoningSignature, ir.RedactedReasoning, ir.BlockEnd)):
            return self._signed(ev)
        if isinstance(ev, ir.ToolArgsDelta):
            if not ev.fragment:
                return b""
            call = {"index": self.tool_ordinal[ev.index], "function": {"arguments": ev.fragment}}
            return self._delta({"tool_calls": [call]})
        if isinstance(ev, ir.Finish):
            return self._finish(ev)
        if isinstance(ev, ir.UsageEvent):
            self.usage = ev.usage
            return b""
        if isinstance(ev, ir.End):
            return self._role() + self._end()
        return b""

    def _signed(self, ev: ir.BlockStart | ir.ReasoningSignature | ir.RedactedReasoning | ir.BlockEnd) -> bytes:
        """Follow reasoning blocks of a signing provider; at their end, a Gemini call signature is held
        for the next tool call and Anthropic's signed thinking becomes a `reasoning_details` delta."""
        if isinstance(ev, ir.BlockStart):
            if ev.kind == "tool_call":
                return self._tool_start(ev)
            if ev.kind == "reasoning" and ev.provider:
                self.signing[ev.index] = (ir.Reasoning(provider=ev.provider), [])
            return b""
        entry = self.signing.get(ev.index)
        if entry is None:
            return b""
        r, texts = entry
        if isinstance(ev, ir.ReasoningSignature):
            r.signature = (r.signature or "") + ev.signature
            return b""
        if isinstance(ev, ir.RedactedReasoning):
            r.redacted_data = ev.data
            return b""
        del self.signing[ev.index]
        r.text = "".join(texts)
        self.held = call_signature(r)
        detail = reasoning_detail(r, self.details)
        if detail is None:
            return b""
        self.details += 1
        return self._role() + self._delta({"reasoning_details": [detail]})

    def _tool_start(self, ev: ir.BlockStart) -> bytes:
        n = self.tool_ordinal[ev.index] = len(self.tool_ordinal)
        call: dict[str, Any] = {"index": n, "id": ev.tool_call_id, "type": "function",
                                "function": {"name": ev.tool_name, "arguments": ""}}
        if self.held:
            call["extra_content"], self.held = extra_content(self.held), None
        return self._role() + self._delta({"tool_calls": [call]})

    def _finish(self, ev: ir.Finish) -> bytes:
        if ev.reason == "error":
            return self._role() + self.error(
                ProxyError("server", f"the upstream stopped generating (finish_reason={ev.raw or 'error'})")
            )
        reason = ir.consistent_finish(ev.reason, bool(self.tool_ordinal))
        return self._role() + self._delta({}, FINISH_FROM_IR[reason])


class CompletionStreamEncoder(_EncoderBase):
    """text_completion chunks for /v1/completions; reasoning and tool blocks have no slot (dropped)."""

    object_name = "text_completion"

    def _text(self, text: str, finish: str | None = None) -> bytes:
        self.started = True
        return self._chunk([{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}])

    def feed(self, ev: ir.Event) -> bytes:
        if self.closed:
            return b""
        if isinstance(ev, ir.Start):
            self._adopt(ev)
        elif isinstance(ev, ir.TextDelta) and ev.text:
            return self._text(ev.text)
        elif isinstance(ev, ir.Finish):
            if ev.reason == "error":
                return self.error(ProxyError("server", "the upstream stopped generating"))
            return self._text("", FINISH_FROM_IR[ir.consistent_finish(ev.reason, False)])
        elif isinstance(ev, ir.UsageEvent):
            self.usage = ev.usage
        elif isinstance(ev, ir.End):
            return self._end()
        return b""


# --------------------------------------------------------------------------------------------------
# Backend side: SSE -> IR


class ChatStreamDecoder:
    """chat.completion.chunk (or text_completion) SSE from an OpenAI-compatible server -> IR events.

    `reasoning_field` is the preset's preferred reasoning delta field; the other one is read too."""

    def __init__(self, reasoning_field: str = "reasoning_content") -> None:
        self.sse = SSEParser()
        self.fields = (reasoning_field, "reasoning" if reasoning_field != "reasoning" else "reasoning_content")
        self.started = False
        self.next_index = 0
        self.text_block: int | None = None
        self.reasoning_block: int | None = None
        self.tool_blocks: dict[int, int] = {}  # tool_calls[].index -> IR block index
        self.open: list[int] = []
        self.finished = False  # a finish_reason arrived
        self.done = False  # [DONE] arrived
        self.usage: ir.Usage | None = None

    # -- public --------------------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> list[ir.Event]:
        out: list[ir.Event] = []
        if not self.done:
            for ev in self.sse.feed(chunk):
                self._event(ev.data, out)
                if self.done:
                    break
        return out

    def close(self) -> list[ir.Event]:
        out: list[ir.Event] = []
        if not self.done:
            for ev in self.sse.close():
                self._event(ev.data, out)
        if self.done:
            return out
        if not self.finished:
            raise ProxyError("upstream_protocol", "the upstream stream ended before it finished (truncated)")
        self.done = True  # lenient: a finish_reason without [DONE] is a complete answer
        return out + self._tail()

    # -- internals -----------------------------------------------------------------------------------
    def _event(self, data: bytes, out: list[ir.Event]) -> None:
        if data.startswith(b"[DONE]"):
            self.done = True
            if not self.finished:  # lenient: [DONE] without a finish_reason ends normally
                self._finish("stop", None, out)
            out += self._tail()
            return
        try:
            chunk: ResponseWire = response_decoder.decode(data)
        except (jsonio.DecodeError, jsonio.ValidationError):
            raise ProxyError("upstream_protocol", "the upstream sent a stream event that is not a chunk") from None
        if chunk.error is not None:
            raise in_stream_error(chunk.error)
        if not self.started and (chunk.id or chunk.choices):  # not Azure's blank filter-results chunk
            self.started = True
            out.append(ir.Start(id=chunk.id or None, model=chunk.model or None, created=chunk.created or None))
        if chunk.usage is not None:
            self.usage = usage_to_ir(chunk.usage)
        choices = chunk.choices
        if choices and not self.finished:
            # Choice 0 is nearly always first: no generator for the common case.
            choice = choices[0] if choices[0].index == 0 else next((c for c in choices if c.index == 0), None)
            if choice is not None:
                self._choice(choice, out)

    def _choice(self, c: ChoiceWire, out: list[ir.Event]) -> None:
        d = c.delta
        if d is not None:
            thought = getattr(d, self.fields[0]) or getattr(d, self.fields[1])
            if thought:
                self._reasoning(thought, out)
            text = d.content or d.refusal
            if text:
                self._text(text, out)
            if d.tool_calls:
                for pos, tc in enumerate(d.tool_calls):
                    self._tool(tc.index if tc.index is not None else pos, tc.id, tc.function, out)
            if d.function_call is not None:
                self._tool(0, None, d.function_call, out)
        elif c.text:
            self._text(c.text, out)
        if c.finish_reason:
            self._finish(c.finish_reason, c.stop_reason if isinstance(c.stop_reason, str) else None, out)

    def _open(self, kind: str, out: list[ir.Event], **kw: Any) -> int:
        i = self.next_index
        self.next_index += 1
        self.open.append(i)
        out.append(ir.BlockStart(i, kind, **kw))  # type: ignore[arg-type]
        return i

    def _close_reasoning(self, out: list[ir.Event]) -> None:
        if self.reasoning_block is not None:
            self.open.remove(self.reasoning_block)
            out.append(ir.BlockEnd(self.reasoning_block))
            self.reasoning_block = None

    def _reasoning(self, text: str, out: list[ir.Event]) -> None:
        if self.reasoning_block is None:
            self.reasoning_block = self._open("reasoning", out)
        out.append(ir.ReasoningDelta(self.reasoning_block, text))

    def _text(self, text: str, out: list[ir.Event]) -> None:
        if self.reasoning_block is not None:
            self._close_reasoning(out)
        if self.text_block is None:
            self.text_block = self._open("text", out)
        out.append(ir.TextDelta(self.text_block, text))

    def _tool(self, key: int, call_id: str | None, fn: Any, out: list[ir.Event]) -> None:
        self._close_reasoning(out)
        block = self.tool_blocks.get(key)
        if block is None:
            name = fn.name if fn is not None else None
            block = self.tool_blocks[key] = self._open(
                "tool_call", out, tool_call_id=call_id or synth_id("call_"), tool_name=name or ""
            )
        args = arguments_text(fn.arguments) if fn is not None else ""
        if args:
            out.append(ir.ToolArgsDelta(block, args))

    def _finish(self, raw: str, stop_sequence: str | None, out: list[ir.Event]) -> None:
        self.finished = True
        for i in self.open:
            out.append(ir.BlockEnd(i))
        self.open.clear()
        reason = ir.consistent_finish(finish_to_ir(raw), bool(self.tool_blocks))
        out.append(ir.Finish(reason, raw, stop_sequence))

    def _tail(self) -> list[ir.Event]:
        return ([ir.UsageEvent(self.usage)] if self.usage is not None else []) + [ir.End()]


def message_parts(m: MessageWire, reasoning_field: str) -> list[ir.Text | ir.Reasoning | ir.ToolCall]:
    """A non-streamed response message -> IR parts (reasoning, text, tool calls), as the stream folds."""
    parts: list[ir.Text | ir.Reasoning | ir.ToolCall] = []
    other = "reasoning" if reasoning_field != "reasoning" else "reasoning_content"
    thought = getattr(m, reasoning_field) or getattr(m, other)
    if thought:
        parts.append(ir.Reasoning(text=thought))
    text = m.content or m.refusal
    if text:
        parts.append(ir.Text(text=text))
    calls = list(m.tool_calls or ())
    for tc in calls:
        fn = tc.function
        parts.append(ir.ToolCall(id=tc.id or synth_id("call_"), name=(fn.name if fn else None) or "",
                                 arguments=arguments_text(fn.arguments if fn else None)))
    if m.function_call is not None:
        fc = m.function_call
        parts.append(ir.ToolCall(id=synth_id("call_"), name=fc.name or "", arguments=arguments_text(fc.arguments)))
    return parts
