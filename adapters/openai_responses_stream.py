"""OpenAI Responses API output: the Response object, its output items, and the SSE event stream.

Shapes follow openai-python's `types/responses/` (response.py, response_output_message.py,
response_function_tool_call.py, response_reasoning_item.py, response_usage.py, the `*_event.py`
files) and the accumulator in `lib/streaming/responses/_responses.py`, which requires
`response.created` first, a `response.output_item.added` before any event naming its
`output_index`, each `output_index` added once, and every added item done before `response.completed`.

Choices (IR -> Responses):
- Ids are synthesised: `resp_...` for the response, `msg_...` / `fc_...` / `rs_...` for items; the
  IR tool-call id becomes `call_id` (what a client's `function_call_output` references).
- A call to a namespaced or custom tool is named as the client declared it (`openai_responses_tools`);
  a custom call's input is the `input` string inside the backend's JSON arguments, so it cannot be
  cut out of a partial JSON text: its `response.custom_tool_call_input.delta` comes whole, when the
  call ends.
- Reasoning text becomes a `reasoning` item with one `summary_text`; reasoning a provider signed or
  redacted also carries the gateway's envelope in `encrypted_content` (`openai_responses_reasoning`),
  always, not only under `include: ["reasoning.encrypted_content"]`: it is what lets the next turn
  of a tool loop reach Anthropic / Gemini 3 at all, the current SDK documents the field as populated
  by default, and a stored response (previous_response_id, item_reference) must hold it too.  A
  signature-only or redacted block is an item with an empty `summary` (no summary-part events).
  In a stream the envelope is on the item of `response.output_item.done` (the `.added` item has
  none yet, as the SDK's docs warn for OpenAI's own).
- Finish `length` -> status `incomplete` + `incomplete_details.reason: max_output_tokens`,
  `content_filter` -> incomplete / `content_filter`, `error` -> `failed` with `error.code
  server_error`; `pause` (Anthropic pause_turn) -> `completed` (lossy).  There is no finish_reason.
- Usage: `input_tokens_details` carries `cached_tokens` and `cache_write_tokens` (both required by
  the SDK's ResponseUsage), `output_tokens_details.reasoning_tokens`.
- Stream errors: an `error` event ({"type":"error","code","message","param","sequence_number"}) and
  then `response.failed` carrying the same error, and nothing after it.  The SDK's raw stream yields
  both (it raises nothing for them); `client.responses.stream(...)` passes both through and its
  `get_final_response()` raises (no `response.completed`); consumers that wait for a terminal
  lifecycle event (the Agents SDK, Codex) see `response.failed`.  An error before any event still
  opens with `response.created` / `response.in_progress`, since the accumulator rejects a stream
  that does not start with `response.created`.
"""

from __future__ import annotations

import time
from typing import Any

from . import ir, jsonio
from .common import synth_id
from .errors import ProxyError
from .openai_response import error_object
from .openai_responses_reasoning import seal
from .openai_responses_state import STATE_KEY
from .openai_responses_tools import call_item, client_tools, custom_input, is_custom
from .sse import encode_event

# --------------------------------------------------------------------------------------------------
# The Response object and its items (shared by the non-streaming renderer and the stream)

# IR finish -> (status, incomplete_details.reason)
STATUS_FROM_IR: dict[str, tuple[str, str | None]] = {
    "stop": ("completed", None),
    "tool_calls": ("completed", None),
    "pause": ("completed", None),
    "length": ("incomplete", "max_output_tokens"),
    "content_filter": ("incomplete", "content_filter"),
    "error": ("failed", None),
}

# ProxyError kind -> ResponseError.code (a closed Literal in the SDK's response_error.py)
FAILED_CODES: dict[str, str] = {
    "rate_limit": "rate_limit_exceeded",
    "quota_exhausted": "rate_limit_exceeded",
    "invalid_request": "invalid_prompt",
    "unsupported": "invalid_prompt",
    "context_length": "invalid_prompt",
}


def usage_to_wire(u: ir.Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_input_tokens, "cache_write_tokens": u.cache_write_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.input_tokens + u.output_tokens,
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, texts: list[str], status: str = "completed") -> dict[str, Any]:
    content = [output_text(t) for t in texts]
    return {"type": "message", "id": item_id, "role": "assistant", "status": status, "content": content}


def reasoning_item(item_id: str, texts: list[str], encrypted_content: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "reasoning", "id": item_id,
                            "summary": [{"type": "summary_text", "text": t} for t in texts]}
    if encrypted_content is not None:
        item["encrypted_content"] = encrypted_content
    return item


def _tool_echo(t: ir.ToolDef, renamed: dict[str, Any]) -> dict[str, Any]:
    kind, name, ns = renamed.get(t.name, ("function", t.name, None))
    if kind == "custom":
        tool = {"type": "custom", "name": name, "description": t.description}
    else:
        tool = {"type": "function", "name": name, "description": t.description, "parameters": t.parameters,
                "strict": t.strict}
    return {**tool, "namespace": ns} if ns else tool


def request_echo(req: ir.ChatRequest | None) -> dict[str, Any]:
    """The request fields a Response repeats (tools, tool_choice and parallel_tool_calls are required
    by the SDK's model).  Without the request (non-streaming render) the API defaults are given."""
    if req is None:
        return {"tools": [], "tool_choice": "auto", "parallel_tool_calls": True, "temperature": None, "top_p": None,
                "max_output_tokens": None, "text": {"format": {"type": "text"}}, "reasoning": None, "metadata": {}}
    tools = [_tool_echo(t, client_tools(req)) for t in req.tools]
    tc = req.tool_choice
    if tc is None:
        choice: Any = "auto"
    elif tc.mode == "tool":
        choice = {"type": "function", "name": tc.name}
    else:
        choice = tc.mode
    rf = req.response_format
    fmt: dict[str, Any] = {"type": rf.type if rf is not None else "text"}
    if rf is not None and rf.type == "json_schema":
        fmt.update(name=rf.name, schema=rf.schema, strict=rf.strict, description=rf.description)
    reasoning = {"effort": req.reasoning.effort} if req.reasoning is not None else None
    turn = req.extra.get(STATE_KEY)
    stored = {} if turn is None else {
        "store": turn.store, "previous_response_id": turn.previous_response_id, "instructions": turn.instructions,
        "conversation": {"id": turn.conversation_id} if turn.conversation_id else None}  # fmt: skip
    return {**stored, "tools": tools, "tool_choice": choice,
            "parallel_tool_calls": True if req.parallel_tool_calls is None else req.parallel_tool_calls,
            "temperature": req.temperature, "top_p": req.top_p, "max_output_tokens": req.max_tokens,
            "text": {"format": fmt}, "reasoning": reasoning, "metadata": req.metadata or {}}


def response_object(
    resp_id: str,
    model: str,
    created_at: int,
    echo: dict[str, Any],
    *,
    output: list[dict[str, Any]],
    status: str,
    usage: ir.Usage | None = None,
    incomplete_reason: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": resp_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": None,
        "model": model,
        "output": output,
        "usage": usage_to_wire(usage) if usage is not None else None,
        **echo,
    }


def failed_error(err: ProxyError) -> dict[str, Any]:
    return {"code": FAILED_CODES.get(err.kind, "server_error"), "message": err.message}


# --------------------------------------------------------------------------------------------------
# The stream encoder

_CALLS = ("function_call", "custom_tool_call")
_BLOCK_EVENTS = (ir.BlockStart, ir.TextDelta, ir.ReasoningDelta, ir.ReasoningSignature, ir.RedactedReasoning,
                 ir.ToolArgsDelta, ir.BlockEnd)


class _Item:
    """The one output item being streamed."""

    __slots__ = ("block", "call_id", "id", "kind", "name", "output_index", "parts", "reasoning")

    def __init__(self, block: int, kind: str, item_id: str, output_index: int) -> None:
        self.block = block  # the IR block index feeding it
        self.kind = kind  # "message" | "function_call" | "custom_tool_call" | "reasoning"
        self.id = item_id
        self.output_index = output_index
        self.parts: list[str] = []  # text, arguments or summary text so far
        self.call_id = ""
        self.name = ""
        self.reasoning: ir.Reasoning | None = None  # a reasoning item's provider, signature, redacted data


class ResponsesStreamEncoder:
    """IR events -> Responses API SSE for one response.

    How this works: Responses output items must not overlap, IR blocks may interleave.  At most one
    item is open.  Text and reasoning open an item lazily at their first non-empty delta (closing
    whatever else is open); a text block interrupted by another block continues in a new message
    item, so no text is lost.  A tool block opens a function_call item at its BlockStart and keeps it
    open until its own BlockEnd: events of other blocks meanwhile are deferred, in order, and replayed
    when it closes, so each call is one item with all its arguments.  Finish and usage are held; End
    closes what is open and sends response.completed / response.incomplete (or, for finish `error`,
    the error sequence).  Every event carries `sequence_number` 0, 1, 2 ...; after the terminal
    event or error() nothing more is written.
    """

    __slots__ = (
        "_closed",
        "_created",
        "_deferred",
        "_done_items",
        "_echo",
        "_finish",
        "_id",
        "_model",
        "_open",
        "_providers",
        "_seq",
        "_started",
        "_tools",
        "_turn",
        "_usage",
    )

    def __init__(self, req: ir.ChatRequest, model: str) -> None:
        self._model = model
        self._turn = req.extra.get(STATE_KEY)  # a stored response: its id, and where its final object goes
        self._id = self._turn.response_id if self._turn is not None else synth_id("resp_")
        self._created = int(time.time())
        self._echo = request_echo(req)
        self._tools = client_tools(req)
        self._seq = 0
        self._started = False
        self._open: _Item | None = None
        self._deferred: list[ir.Event] = []
        self._providers: dict[int, str | None] = {}  # reasoning block -> its signing provider
        self._done_items: list[dict[str, Any]] = []  # output items in output_index order
        self._finish: ir.Finish | None = None
        self._usage: ir.Usage | None = None
        self._closed = False

    # -- public -----------------------------------------------------------------------------------
    def feed(self, event: ir.Event) -> bytes:
        if self._closed:
            return b""
        out: list[bytes] = []
        self._start(out)
        if isinstance(event, _BLOCK_EVENTS):
            self._route(event, out)
        elif isinstance(event, ir.Finish):
            self._finish = event
        elif isinstance(event, ir.UsageEvent):
            self._usage = event.usage
        elif isinstance(event, ir.End):
            self._end(out)
        return b"".join(out)

    def error(self, err: ProxyError) -> bytes:
        if self._closed:
            return b""
        out: list[bytes] = []
        self._start(out)
        obj = error_object(err)
        out.append(self._event("error", {"code": obj["code"] or obj["type"], "message": err.message,
                                         "param": err.param}))
        out.append(self._lifecycle("response.failed", "failed", error=failed_error(err)))
        self._closed = True
        return b"".join(out)

    # -- state machine ----------------------------------------------------------------------------
    def _route(self, ev: ir.Event, out: list[bytes]) -> None:
        """A block event: deferred while another block's function_call item is open."""
        item = self._open
        if item is not None and item.kind in _CALLS and ev.index != item.block:  # type: ignore[union-attr]
            self._deferred.append(ev)
        else:
            self._block_event(ev, out)

    def _block_event(self, ev: ir.Event, out: list[bytes]) -> None:
        i = ev.index  # type: ignore[union-attr]
        item = self._open if self._open is not None and self._open.block == i else None
        if isinstance(ev, (ir.TextDelta, ir.ReasoningDelta)):
            if not ev.text:
                return
            kind = "message" if isinstance(ev, ir.TextDelta) else "reasoning"
            if item is None or item.kind != kind:
                self._close(out)
                item = self._open_item(i, kind, out)
            if kind == "reasoning" and not item.parts:  # a summary part only once there is text
                out.append(self._event("response.reasoning_summary_part.added",
                                       {**self._where(item), "part": {"type": "summary_text", "text": ""}}))
            item.parts.append(ev.text)
            name = "response.output_text.delta" if kind == "message" else "response.reasoning_summary_text.delta"
            out.append(self._event(name, {**self._where(item), "delta": ev.text,
                                          **({"logprobs": []} if kind == "message" else {})}))
        elif isinstance(ev, (ir.ReasoningSignature, ir.RedactedReasoning)):
            if item is None or item.kind != "reasoning":
                self._close(out)
                item = self._open_item(i, "reasoning", out)
            r = item.reasoning
            assert r is not None  # every reasoning item has one (_open_item)
            if isinstance(ev, ir.ReasoningSignature):
                r.signature = (r.signature or "") + ev.signature
            else:
                r.redacted_data = ev.data
        elif isinstance(ev, ir.BlockStart) and ev.kind == "reasoning":
            self._providers[i] = ev.provider
        elif isinstance(ev, ir.BlockStart) and ev.kind == "tool_call":
            self._close(out)
            name = ev.tool_name or ""
            item = self._open_item(i, "custom_tool_call" if is_custom(self._tools, name) else "function_call", out,
                                   call_id=ev.tool_call_id or synth_id("call_"), name=name)
        elif isinstance(ev, ir.ToolArgsDelta):
            # Fragments of a block that is not open cannot be placed (closed for good or never
            # started): only a decoder breaking the event contract produces them.
            if item is not None and item.kind in _CALLS and ev.fragment:
                item.parts.append(ev.fragment)
                if item.kind == "function_call":
                        out.append(self._event("response.function_call_arguments.delta",
                                           {**self._where(item), "delta": ev.fragment}))
        elif isinstance(ev, ir.BlockEnd) and item is not None:
            self._close(out)
            self._drain(out)
        # Other BlockStarts open lazily.

    def _drain(self, out: list[bytes]) -> None:
        pending, self._deferred = self._deferred, []
        for ev in pending:
            self._route(ev, out)

    def _end(self, out: list[bytes]) -> None:
        while self._open is not None or self._deferred:  # a block without BlockEnd: close it anyway
            self._close(out)
            self._drain(out)
        fin = self._finish or ir.Finish(reason="stop")
        status, reason = STATUS_FROM_IR[fin.reason]
        if status == "failed":
            out.append(self.error(ProxyError("server", f"the upstream stopped generating ({fin.raw or 'error'})")))
            return
        out.append(self._lifecycle(f"response.{status}", status, incomplete_reason=reason))
        self._closed = True

    # -- items ------------------------------------------------------------------------------------
    def _open_item(self, block: int, kind: str, out: list[bytes], call_id: str = "", name: str = "") -> _Item:
        prefix = {"message": "msg_", "function_call": "fc_", "custom_tool_call": "ctc_", "reasoning": "rs_"}[kind]
        item = _Item(block, kind, synth_id(prefix), len(self._done_items))
        item.call_id, item.name = call_id, name
        if kind == "reasoning":
            item.reasoning = ir.Reasoning(provider=self._providers.get(block))
        self._open = item
        out.append(self._event("response.output_item.added", {"output_index": item.output_index,
                                                              "item": self._item(item, "in_progress")}))
        if kind == "message":
            out.append(self._event("response.content_part.added", {**self._where(item), "part": output_text("")}))
        return item

    def _close(self, out: list[bytes]) -> None:
        item = self._open
        if item is None:
            return
        self._open = None
        text = "".join(item.parts)
        where = self._where(item)
        if item.kind == "message":
            out.append(self._event("response.output_text.done", {**where, "text": text, "logprobs": []}))
            out.append(self._event("response.content_part.done", {**where, "part": output_text(text)}))
        elif item.kind == "reasoning":
            if text:  # a signature-only or redacted item opened no summary part
                out.append(self._event("response.reasoning_summary_text.done", {**where, "text": text}))
                out.append(self._event("response.reasoning_summary_part.done",
                                       {**where, "part": {"type": "summary_text", "text": text}}))
        elif item.kind == "function_call":
            out.append(self._event("response.function_call_arguments.done", {**where, "arguments": text}))
        else:
            given = custom_input(text)
            out.append(self._event("response.custom_tool_call_input.delta", {**where, "delta": given}))
            out.append(self._event("response.custom_tool_call_input.done", {**where, "input": given}))
        done = self._item(item, "completed")
        self._done_items.append(done)
        out.append(self._event("response.output_item.done", {"output_index": item.output_index, "item": done}))

    def _item(self, item: _Item, status: str) -> dict[str, Any]:
        text = "".join(item.parts)
        if item.kind in _CALLS:
            return call_item(self._tools, item.id, item.call_id, item.name, text, status)
        texts = [] if status == "in_progress" else [text]  # parts are announced by their own events
        if item.kind == "message":
            return message_item(item.id, texts, status)
        if status == "in_progress" or item.reasoning is None:
            return reasoning_item(item.id, [])  # the envelope is complete only at output_item.done
        item.reasoning.text = text
        return reasoning_item(item.id, [text] if text else [], seal(item.reasoning))

    @staticmethod
    def _where(item: _Item) -> dict[str, Any]:
        where: dict[str, Any] = {"item_id": item.id, "output_index": item.output_index}
        if item.kind == "message":
            where["content_index"] = 0
        elif item.kind == "reasoning":
            where["summary_index"] = 0
        return where

    # -- output helpers ---------------------------------------------------------------------------
    def _start(self, out: list[bytes]) -> None:
        if self._started:
            return
        self._started = True
        out.append(self._lifecycle("response.created", "in_progress"))
        out.append(self._lifecycle("response.in_progress", "in_progress"))

    def _lifecycle(self, name: str, status: str, **kw: Any) -> bytes:
        usage = self._usage if status != "in_progress" else None
        response = response_object(self._id, self._model, self._created, self._echo,
                                   output=list(self._done_items), status=status, usage=usage, **kw)
        if self._turn is not None and status in ("completed", "incomplete"):
            self._turn.final = response  # what response.completed / .incomplete carries, stored after the stream
        return self._event(name, {"response": response})

    def _event(self, name: str, payload: dict[str, Any]) -> bytes:
        data = {"type": name, **payload, "sequence_number": self._seq}
        self._seq += 1
        return encode_event(jsonio.dumps(data), name)
