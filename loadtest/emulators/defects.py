"""Deliberate protocol defects, one rule broken each, chosen with the scenario key `defect=NAME`.

They exist to prove that `llm-proxy conformance` catches what real servers get wrong: each defect names
the conformance probe that must report it (and no other probe may).  A defect is a few hooks on what
an emulator is about to do:

    request(body) -> body            the request as the defective server understands it
    reply(body) -> body              a non-streamed JSON answer (status 200)
    stream(events) -> events         the events of a stream before they are written: OpenAI chunk
                                     dicts with the string "[DONE]" last; Anthropic (name, data) pairs
    error(status, body) -> (status, body)   an error answer

`reply` and `error` run in `middleware(format)`, the rest where the emulator calls `request_hook` /
`stream_hook`.  Emulators stay correct when no defect is named.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import web

from .behaviour import Behaviour, behaviour_for

Hook = Callable[..., Any] | None


@dataclass(frozen=True)
class Defect:
    format: str
    probe: str  # the conformance probe that owns the broken rule
    what: str
    request: Hook = None
    reply: Hook = None
    stream: Hook = None
    error: Hook = None


def _drop(key: str, when: Callable[[Any], bool] = lambda v: True) -> Callable[[dict], dict]:
    def hook(body: dict) -> dict:
        return {k: v for k, v in body.items() if k != key or not when(v)}

    return hook


# -- OpenAI chat ------------------------------------------------------------------------------------


def _chunks(events: list[Any]) -> list[dict]:
    return [e for e in events if isinstance(e, dict)]


def _oai_choices(events: list[Any]) -> list[dict]:
    return [c for e in _chunks(events) for c in e.get("choices") or []]


def _rename_finish(old: str, new: str) -> Callable[[Any], Any]:
    def hook(value: Any) -> Any:
        value = copy.deepcopy(value)
        for c in value.get("choices") or [] if isinstance(value, dict) else _oai_choices(value):
            if c.get("finish_reason") == old:
                c["finish_reason"] = new
        return value

    return hook


def _no_done(events: list[Any]) -> list[Any]:
    return [e for e in events if e != "[DONE]"]


def _no_stream_usage(events: list[Any]) -> list[Any]:
    return [e for e in events if not (isinstance(e, dict) and e.get("usage") and e.get("choices") == [])]


def _no_role(events: list[Any]) -> list[Any]:
    events = copy.deepcopy(events)
    for c in _oai_choices(events):
        c.get("delta", {}).pop("role", None)
    return events


def _empty_choices_first(events: list[Any]) -> list[Any]:
    first = _chunks(events)[0]
    return [{**first, "choices": []}, *events]


def _no_stream_finish(events: list[Any]) -> list[Any]:
    events = copy.deepcopy(events)
    for c in _oai_choices(events):
        c["finish_reason"] = None
    return events


def _tool_deltas(events: list[Any]) -> list[dict]:
    return [t for c in _oai_choices(events) for t in c.get("delta", {}).get("tool_calls") or []]


def _late_tool_id(events: list[Any]) -> list[Any]:
    events = copy.deepcopy(events)
    deltas = _tool_deltas(events)
    if len(deltas) > 1:
        deltas[1]["id"] = deltas[0].pop("id")
    return events


def _no_tool_index(events: list[Any]) -> list[Any]:
    events = copy.deepcopy(events)
    for d in _tool_deltas(events):
        d.pop("index", None)
    return events


def _cumulative_tool_args(events: list[Any]) -> list[Any]:
    events = copy.deepcopy(events)
    so_far = ""
    for d in _tool_deltas(events):
        fn = d.get("function") or {}
        so_far += fn.get("arguments") or ""
        if "arguments" in fn:
            fn["arguments"] = so_far
    return events


def _shared_tool_ids(body: dict) -> dict:
    body = copy.deepcopy(body)
    for c in body.get("choices") or []:
        calls = (c.get("message") or {}).get("tool_calls") or []
        for call in calls:
            call["id"] = calls[0]["id"]
    return body


def _vllm_error(status: int, body: dict) -> tuple[int, dict]:
    err = body.get("error") or {}
    return status, {"object": "error", "message": err.get("message"), "type": "BadRequestError", "code": status}


def _unknown_model_500(status: int, body: dict) -> tuple[int, dict]:
    return (500 if status == 404 else status), body


def _no_usage(body: dict) -> dict:
    return _drop("usage")(body)


# -- Anthropic Messages -----------------------------------------------------------------------------


def _ant_events(events: list[tuple[str, dict]], fn: Callable[[str, dict], tuple[str, dict] | None]) -> list:
    out = []
    for name, data in copy.deepcopy(events):
        got = fn(name, data)
        if got is not None:
            out.append(got)
    return out


def _no_message_stop(events: list) -> list:
    return _ant_events(events, lambda n, d: None if n == "message_stop" else (n, d))


def _block_index_gap(events: list) -> list:
    def shift(name: str, data: dict) -> tuple[str, dict]:
        if "index" in data:
            data["index"] += 1  # the first block is numbered 1
        return name, data

    return _ant_events(events, shift)


def _no_delta_usage(events: list) -> list:
    return _ant_events(events, lambda n, d: (n, _drop("usage")(d)) if n == "message_delta" else (n, d))


def _ant_stop(old: str, new: str) -> Callable[[Any], Any]:
    def fix(obj: dict) -> dict:
        if obj.get("stop_reason") == old:
            obj["stop_reason"] = new
            obj["stop_sequence"] = None
        return obj

    def hook(value: Any) -> Any:
        if isinstance(value, dict):
            return fix(copy.deepcopy(value))
        return _ant_events(value, lambda n, d: (n, {**d, "delta": fix(d["delta"])}) if n == "message_delta" else (n, d))

    return hook


def _ant_cumulative_input(events: list) -> list:
    so_far = ""

    def grow(name: str, data: dict) -> tuple[str, dict]:
        nonlocal so_far
        delta = data.get("delta") or {}
        if delta.get("type") == "input_json_delta":
            so_far += delta["partial_json"]
            delta["partial_json"] = so_far
        return name, data

    return _ant_events(events, grow)


def _no_signature(events: list) -> list:
    return _ant_events(events, lambda n, d: None if (d.get("delta") or {}).get("type") == "signature_delta" else (n, d))


def _no_signature_reply(body: dict) -> dict:
    body = copy.deepcopy(body)
    for block in body.get("content") or []:
        block.pop("signature", None)
    return body


def _fastapi_error(status: int, body: dict) -> tuple[int, dict]:
    return status, {"detail": (body.get("error") or {}).get("message")}


DEFECTS: dict[str, Defect] = {
    # OpenAI chat completions
    "no_done": Defect("openai", "stream.framing", "the stream ends without data: [DONE]", stream=_no_done),
    "no_stream_usage": Defect("openai", "stream.include_usage", "no usage chunk despite include_usage",
                              stream=_no_stream_usage),
    "no_role": Defect("openai", "stream.role_first", "no role in the first delta", stream=_no_role),
    "empty_choices_first": Defect("openai", "stream.no_empty_choices", "a choices: [] chunk before the content",
                                  stream=_empty_choices_first),
    "no_stream_finish": Defect("openai", "stream.finish_last", "no finish_reason in the stream",
                               stream=_no_stream_finish),
    "length_as_stop": Defect("openai", "chat.max_tokens", "a max_tokens cut reported as finish_reason stop",
                             reply=_rename_finish("length", "stop"), stream=_rename_finish("length", "stop")),
    "stop_included": Defect("openai", "chat.stop", "stop strings ignored", request=_drop("stop")),
    "no_usage": Defect("openai", "chat.usage", "no usage in non-streamed answers", reply=_no_usage),
    "error_shape": Defect("openai", "errors.invalid_body", "errors as {object: error, message, ...} (old vLLM)",
                          error=_vllm_error),
    "unknown_model_500": Defect("openai", "errors.unknown_model", "an unknown model answered 500",
                                error=_unknown_model_500),
    "tool_finish_stop": Defect("openai", "tools.call", "finish_reason stop after a tool call",
                               reply=_rename_finish("tool_calls", "stop"), stream=_rename_finish("tool_calls", "stop")),
    "tool_choice_none_ignored": Defect("openai", "tools.choice_none", "tool_choice none ignored",
                                       request=_drop("tool_choice", lambda v: v == "none")),
    "shared_tool_ids": Defect("openai", "tools.parallel", "parallel calls share one id", reply=_shared_tool_ids),
    "late_tool_id": Defect("openai", "tools.stream_deltas", "the tool-call id on the second delta",
                           stream=_late_tool_id),
    "no_tool_index": Defect("openai", "tools.stream_deltas", "no index on tool-call deltas", stream=_no_tool_index),
    "cumulative_tool_args": Defect("openai", "tools.stream_arguments", "each arguments delta repeats the text so far",
                                   stream=_cumulative_tool_args),
    "json_object_ignored": Defect("openai", "extras.json_object", "response_format json_object ignored",
                                  request=_drop("response_format", lambda v: v.get("type") == "json_object")),
    # Anthropic Messages
    "no_message_stop": Defect("anthropic", "stream.event_order", "the stream ends without message_stop",
                              stream=_no_message_stop),
    "block_index_gap": Defect("anthropic", "stream.blocks", "content block indexes start at 1", stream=_block_index_gap),
    "no_delta_usage": Defect("anthropic", "stream.usage", "message_delta without usage", stream=_no_delta_usage),
    "max_tokens_as_end_turn": Defect("anthropic", "messages.max_tokens", "a max_tokens cut reported as end_turn",
                                     reply=_ant_stop("max_tokens", "end_turn"), stream=_ant_stop("max_tokens", "end_turn")),
    "stop_sequence_lost": Defect("anthropic", "messages.stop_sequence", "stop_sequence reported as end_turn, no sequence",
                                 reply=_ant_stop("stop_sequence", "end_turn"), stream=_ant_stop("stop_sequence", "end_turn")),
    "detail_error": Defect("anthropic", "errors.invalid_body", "errors as {detail: ...} (FastAPI)", error=_fastapi_error),
    "ant_unknown_model_500": Defect("anthropic", "errors.unknown_model", "an unknown model answered 500",
                                    error=_unknown_model_500),
    "tool_stop_end_turn": Defect("anthropic", "tools.call", "stop_reason end_turn after tool_use",
                                 reply=_ant_stop("tool_use", "end_turn"), stream=_ant_stop("tool_use", "end_turn")),
    "cumulative_tool_input": Defect("anthropic", "tools.stream", "each input_json_delta repeats the JSON so far",
                                    stream=_ant_cumulative_input),
    "thinking_unsigned": Defect("anthropic", "extras.thinking", "thinking blocks without a signature",
                                reply=_no_signature_reply, stream=_no_signature),
}


def _hook(b: Behaviour, fmt: str, name: str) -> Hook:
    d = DEFECTS.get(b.defect)
    return getattr(d, name) if d is not None and d.format == fmt else None


def request_hook(b: Behaviour, fmt: str, body: dict) -> dict:
    hook = _hook(b, fmt, "request")
    return hook(body) if hook else body


def stream_hook(b: Behaviour, fmt: str, events: list) -> list:
    hook = _hook(b, fmt, "stream")
    return hook(events) if hook else events


def middleware(fmt: str) -> Any:
    """Rewrites finished JSON answers (`reply` on 200, `error` on >= 400) of a request with a defect."""

    @web.middleware
    async def defects(request: web.Request, handler: Any) -> web.StreamResponse:
        resp = await handler(request)
        if not isinstance(resp, web.Response) or resp.content_type != "application/json" or not resp.body:
            return resp
        try:
            model = json.loads(await request.read() or b"{}").get("model") if request.can_read_body else None
        except (ValueError, AttributeError):
            model = None
        b = behaviour_for(model if isinstance(model, str) else None, request.headers)
        hook = _hook(b, fmt, "reply") if resp.status == 200 else _hook(b, fmt, "error") if resp.status >= 400 else None
        if hook is None:
            return resp
        body = json.loads(resp.body)
        if resp.status == 200:
            body, status = hook(body), 200
        else:
            status, body = hook(resp.status, body)
        return web.json_response(body, status=status, headers={k: v for k, v in resp.headers.items()
                                                               if k.lower() not in ("content-type", "content-length")})

    return defects
