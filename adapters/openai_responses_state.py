"""Stored responses and conversations of the OpenAI Responses API: the pure half (`base.StoredFormat`).

`proxy/stored.py` reads and writes the state store; this module says what the Responses API's
objects look like.  Shapes follow openai-python's `types/responses/` (response_item_list.py,
response_input_message_item.py, response_function_tool_call_item.py, ..._output_item.py) and
`types/conversations/` (conversation.py, conversation_deleted_resource.py, conversation_item_list.py).

Decisions:
- Every stored item has an id: output items keep the ids the answer gave them (`msg_` / `fc_` /
  `ctc_` / `rs_`); an input item keeps the id it came with when it is a plain id (`[A-Za-z0-9_-]`,
  at most 128 characters), else gets a new one.  Input messages are stored as the API lists them:
  string content becomes one `input_text` part (`output_text` for an assistant message).
- `item_reference` is resolved from the caller's stored items; a missing `rs_` item is dropped (a
  client may refer to reasoning of a response it did not store), any other missing id is a 404
  naming it.  `previous_response_id` and `conversation` together are refused, as OpenAI does.
- Errors name ids only after they passed `check_id` (bounded charset and length); unknown ids of
  stored objects are 404 `invalid_request_error`, code `previous_response_not_found` for
  `previous_response_id` and `not_found` otherwise.
- DELETE /v1/responses/{id} answers `{"id", "object": "response", "deleted": true}` (the SDK reads
  nothing back); a conversation's: `conversation.deleted`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from msgspec import Struct

from . import ir, jsonio
from .base import StatePlan, Turn
from .common import decode_client_body, synth_id
from .errors import ProxyError, bad_request

__all__ = ["STATE_KEY", "ResponsesState", "item_ids"]

STATE_KEY = "responses_state"  # ChatRequest.extra key of the Turn (no backend reads it, as TOOLS_KEY)
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_REASONING_PREFIX = "rs_"
_ITEM_PREFIX = {"message": "msg_", "function_call": "fc_", "custom_tool_call": "ctc_", "reasoning": "rs_",
                "function_call_output": "fco_", "custom_tool_call_output": "ctco_"}
MAX_NEW_ITEMS = 20  # items one conversations call may add (OpenAI's bound)
MAX_METADATA = 16  # key-value pairs, keys <= 64 and values <= 512 characters (OpenAI's bounds)


# The stored-object routes (`proxy/stored.py` serves each action).
STORE_ROUTES = (
    ("GET", "/v1/responses/{id}", "get_response"),
    ("DELETE", "/v1/responses/{id}", "delete_response"),
    ("GET", "/v1/responses/{id}/input_items", "list_input_items"),
    ("POST", "/v1/conversations", "create_conversation"),
    ("GET", "/v1/conversations/{id}", "get_conversation"),
    ("POST", "/v1/conversations/{id}", "update_conversation"),
    ("DELETE", "/v1/conversations/{id}", "delete_conversation"),
    ("GET", "/v1/conversations/{id}/items", "list_items"),
    ("POST", "/v1/conversations/{id}/items", "add_items"),
    ("GET", "/v1/conversations/{id}/items/{item_id}", "get_item"),
    ("DELETE", "/v1/conversations/{id}/items/{item_id}", "delete_item"),
)


def _valid(value: Any) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def item_ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


def _text_part(role: str, text: str) -> dict[str, Any]:
    if role == "assistant":
        return {"type": "output_text", "text": text, "annotations": []}
    return {"type": "input_text", "text": text}


def stored_item(raw: dict[str, Any]) -> dict[str, Any]:
    """An input item as it is stored and listed: with an id, a status, and list content."""
    kind = raw.get("type", "message")
    item = {**raw, "type": kind}
    if not _valid(item.get("id")):
        item["id"] = synth_id(_ITEM_PREFIX.get(kind, "item_"))
    if kind == "message" and isinstance(raw.get("content"), str):
        item["content"] = [_text_part(str(raw.get("role")), raw["content"])]
    if kind in ("message", "function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output"):
        item.setdefault("status", "completed")
    return item


# --------------------------------------------------------------------------------------------------
# Wire types of the state calls


class _NewItems(Struct):
    items: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None


class _Metadata(Struct):
    metadata: dict[str, str] | None = None


_new_items = jsonio.decoder(_NewItems)
_metadata = jsonio.decoder(_Metadata)


def _check_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    metadata = metadata or {}
    if len(metadata) > MAX_METADATA or any(len(k) > 64 or len(v) > 512 for k, v in metadata.items()):
        raise bad_request(f"metadata: at most {MAX_METADATA} pairs, keys of at most 64 and values of at most 512 "
                          "characters", param="metadata")
    return metadata


class ResponsesState:
    """`base.StoredFormat` for the Responses API over the frontend's own decoder and request builder
    (the body is decoded once: `plan` keeps the decoded request for `build`)."""

    def __init__(self, decode: Any, build: Any) -> None:
        self._decode = decode  # body -> the decoded request (previous_response_id, conversation, store, input)
        self._build = build  # (decoded request, items before its input, resolved references) -> (ChatRequest, inputs)

    # -- a generation -----------------------------------------------------------------------------------
    def plan(self, body: bytes) -> StatePlan:
        r = self._decode(body)
        conversation = r.conversation.get("id") if isinstance(r.conversation, dict) else r.conversation
        if r.conversation is not None and not isinstance(conversation, str):
            raise bad_request("conversation: expected an id or {\"id\": ...}", param="conversation")
        if r.previous_response_id is not None and conversation is not None:
            raise bad_request("previous_response_id and conversation cannot be used together", param="conversation")
        refs = []
        if isinstance(r.input, list):
            for i, raw in enumerate(r.input):
                if raw.get("type") == "item_reference":
                    refs.append(self.check_id(raw.get("id"), f"input[{i}].id"))
        return StatePlan(
            body=r,
            store=r.store is not False,
            previous_response_id=None if r.previous_response_id is None else self.check_id(
                r.previous_response_id, "previous_response_id"),
            conversation_id=None if conversation is None else self.check_id(conversation, "conversation"),
            references=refs,
        )  # fmt: skip

    def build(self, plan: StatePlan, context: list[dict[str, Any]], found: dict[str, dict[str, Any]]) -> ir.ChatRequest:
        req, inputs = self._build(plan.body, context, found)
        req.extra[STATE_KEY] = Turn(
            response_id=synth_id("resp_"), store=plan.store, input_items=[stored_item(i) for i in inputs],
            history=item_ids(context), previous_response_id=plan.previous_response_id,
            conversation_id=plan.conversation_id, instructions=plan.body.instructions,
        )  # fmt: skip
        return req

    @staticmethod
    def turn(req: ir.ChatRequest | None) -> Turn | None:
        return None if req is None else req.extra.get(STATE_KEY)

    # -- ids and errors -----------------------------------------------------------------------------------
    @staticmethod
    def check_id(value: Any, param: str) -> str:
        if not _valid(value):
            raise bad_request(f"{param}: expected an id of 1 to 128 letters, digits, '_' or '-'", param=param)
        return value

    @staticmethod
    def not_found(what: str, oid: str, param: str | None) -> ProxyError:
        label = {"response": "Response", "conversation": "Conversation", "item": "Item"}[what]
        if param == "previous_response_id":
            return ProxyError("not_found", f"Previous response with id '{oid}' not found.", param=param,
                              code="previous_response_not_found")
        return ProxyError("not_found", f"{label} with id '{oid}' not found.", param=param, code="not_found")

    # -- conversations -------------------------------------------------------------------------------------
    def new_items(self, body: bytes, limit: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        n: _NewItems = decode_client_body(_new_items, body, "conversation request")
        items = n.items or []
        if len(items) > min(limit, MAX_NEW_ITEMS):
            raise bad_request(f"items: at most {min(limit, MAX_NEW_ITEMS)} items at a time", param="items")
        for i, raw in enumerate(items):
            if raw.get("type") == "item_reference":
                raise bad_request("item_reference items cannot be added to a conversation", param=f"items[{i}]")
        if items:  # they must be what a response could take as input: the frontend's parser checks them
            try:
                self._build(self._decode(jsonio.dumps({"model": "-", "input": items})), [], {})
            except ProxyError as err:
                if err.param and err.param.startswith("input"):
                    err.param = "items" + err.param[len("input"):]
                raise
        return [stored_item(raw) for raw in items], None if n.metadata is None else _check_metadata(n.metadata)

    @staticmethod
    def metadata(body: bytes) -> dict[str, Any]:
        m: _Metadata = decode_client_body(_metadata, body, "conversation request")
        return _check_metadata(m.metadata)

    @staticmethod
    def container(cid: str, created_at: int, metadata: dict[str, Any]) -> dict[str, Any]:
        return {"id": cid, "object": "conversation", "created_at": created_at, "metadata": metadata}

    @staticmethod
    def new_container_id() -> str:
        return synth_id("conv_")

    @staticmethod
    def page(items: list[dict[str, Any]], query: Mapping[str, str]) -> bytes:
        """One page of a list as the SDK's cursor pages read it: `order` (default desc), `after` (an
        item id), `limit` (1..100, default 20)."""
        order, after, limit = query.get("order", "desc"), query.get("after"), query.get("limit", "20")
        if order not in ("asc", "desc"):
            raise bad_request("order: expected 'asc' or 'desc'", param="order")
        if not (limit.isdigit() and 1 <= int(limit) <= 100):
            raise bad_request("limit: expected an integer from 1 to 100", param="limit")
        ordered = items if order == "asc" else items[::-1]
        start = 0
        if after is not None:
            ResponsesState.check_id(after, "after")
            start = next((k + 1 for k, item in enumerate(ordered) if item.get("id") == after), None)
            if start is None:
                raise ResponsesState.not_found("item", after, "after")
        data = ordered[start : start + int(limit)]
        return jsonio.dumps({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                             "last_id": data[-1]["id"] if data else None, "has_more": start + len(data) < len(ordered)})

    @staticmethod
    def deleted(what: str, oid: str) -> bytes:
        obj = "conversation.deleted" if what == "conversation" else what
        return jsonio.dumps({"id": oid, "object": obj, "deleted": True})


