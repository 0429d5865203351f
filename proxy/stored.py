"""Stored generations and what continues them: the I/O half of a format's server-side state
(`adapters.base.StoredFormat`: the Responses API's stored responses, `previous_response_id`,
`item_reference` and conversations).

How this works.  Everything a key stores lives in the state store (`state.url`: the SQLite file of
one host, or Redis for replicas) in one scope per owner -- the key's name, or one shared space with
auth off -- so another key's lookups never see it: its ids answer 404 like ids that never existed.
Within a scope, record ids are `r/<response id>` (the answer object and the ids of its input,
output and history items), `i/<item id>` (each item, JSON) and `c/<conversation id>` (the
conversation object); a conversation's items are an append-only list of item ids (`append_list`,
atomic in both stores, so two processes adding to one conversation both land, whole).  Everything
expires after `responses.ttl`; a conversation's expiry restarts with each addition.

- Before a request: `prepare` reads what its plan names -- the previous response's record, then
  its history, input and output items in one batch read (so a chain costs two reads at any depth:
  each record keeps the ids of the whole history it continued, at most `responses.max_items`), or
  the conversation's item list; plus the items `item_reference`s name -- and builds the request.
  A request that names nothing stored does no I/O here.
- After the answer: `save` stores the finished turn (its items and record in one batch write; a
  conversation's new item ids in one append).  Non-streaming, that happens before the answer is
  sent, so a client that continues right away finds it; streaming, after the last event and before
  the end of the body.  A store failure never fails an answer already made: it is logged (the
  store's own error: never ids, keys or content) and counted in `llm_proxy_responses_not_stored`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from adapters import ir, jsonio
from adapters.base import Frontend, StatePlan, StoredFormat, StoreRoute, Turn
from adapters.errors import ProxyError, bad_request

from .config_state import ResponsesConfig, check_responses
from .accesslog import access_line
from .context import RequestContext, request_id
from .aiohttp_io import aiohttp_reply
from .handlers import error_response
from .metrics import NOT_STORED
from .serverio import json_answer
from .state.base import StateStore, StoreUnavailable
from .value_guards import client_values

log = logging.getLogger("llm_proxy")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BodyReader = Callable[[web.Request], Awaitable[bytes]]
Authenticate = Callable[[web.Request, Frontend], Awaitable[str]]  # -> the owner


def _unavailable() -> ProxyError:
    return ProxyError("overloaded", "the gateway's state store is unavailable; retry later", code="store_unavailable")


class Stored:
    """The stored state of every key, over one StateStore (opened lazily: no file or connection
    until a request stores or reads something)."""

    def __init__(self, store: StateStore, cfg: ResponsesConfig, max_body: int) -> None:
        self.store = store
        self.ttl = check_responses(cfg)
        self.max_bytes = cfg.max_stored_bytes
        self.max_items = cfg.max_items
        # What a request continues is what it would otherwise carry in its body: the same bound.
        self.max_context = max_body

    # -- a generation -------------------------------------------------------------------------------------
    async def prepare(self, fmt: StoredFormat, body: bytes, owner: str) -> ir.ChatRequest:
        with client_values(body):
            plan = fmt.plan(body)
        if plan.previous_response_id is None and plan.conversation_id is None and not plan.references:
            with client_values(body):
                return fmt.build(plan, [], {})
        scope, now = _scope(owner), time.time()
        try:
            history: list[str] = []
            if plan.previous_response_id is not None:
                rid = plan.previous_response_id
                rec = await self.store.get_record(scope, "r/" + rid, now)
                if rec is None:
                    raise fmt.not_found("response", rid, "previous_response_id")
                r = jsonio.loads(rec)
                history = r["history"] + r["input"] + r["output"]
            elif plan.conversation_id is not None:
                history = await self._container_items(fmt, scope, plan.conversation_id, "conversation", now)
            if len(history) > self.max_items:
                raise bad_request(f"the stored conversation holds more than {self.max_items} items (responses.max_items)",
                                  param=_param(plan))
            ids = history + plan.references
            data = await self.store.get_records(scope, ["i/" + i for i in ids], now) if ids else []
        except StoreUnavailable:
            raise _unavailable() from None
        if sum(len(d) for d in data if d is not None) > self.max_context:
            raise bad_request(f"the stored items this request continues exceed {self.max_context} bytes "
                              "(server.max_body_bytes): start a new conversation", param=_param(plan))
        context = [jsonio.loads(d) for d in data[: len(history)] if d is not None]  # expired items are skipped
        found = {i: jsonio.loads(d) for i, d in zip(plan.references, data[len(history) :]) if d is not None}
        with client_values(body):
            return fmt.build(plan, context, found)

    async def save(self, turn: Turn | None, owner: str) -> None:
        """Store a finished turn; never raises (the answer is already made)."""
        if turn is None or not turn.store or turn.final is None:
            return
        output = [o for o in turn.final.get("output") or () if isinstance(o, dict) and "id" in o]
        items = turn.input_items + output
        record = {"response": turn.final, "input": [i["id"] for i in turn.input_items],
                  "output": [o["id"] for o in output], "history": turn.history}  # fmt: skip
        batch = [("r/" + turn.response_id, jsonio.dumps(record)), *(("i/" + i["id"], jsonio.dumps(i)) for i in items)]
        if sum(len(data) for _, data in batch) > self.max_bytes:
            NOT_STORED.labels("too_large").inc()
            log.warning("response not stored: larger than responses.max_stored_bytes (%d)", self.max_bytes)
            return
        scope, now = _scope(owner), time.time()
        try:
            await self.store.put_records(scope, batch, self.ttl, now)  # items first: a reader never lists
            if turn.conversation_id is not None:  # an id whose item is not there yet
                added = await self._append(scope, turn.conversation_id, [i["id"] for i in items], now)
                if added is None:
                    NOT_STORED.labels("conversation_full").inc()
                    log.warning("response not added to its conversation: responses.max_items (%d) reached",
                                self.max_items)
        except StoreUnavailable as exc:
            NOT_STORED.labels("store_unavailable").inc()
            log.warning("response not stored: %s", exc)

    # -- containers (conversations) ------------------------------------------------------------------------
    async def _container(self, fmt: StoredFormat, scope: str, cid: str, param: str | None, now: float) -> dict[str, Any]:
        data = await self.store.get_record(scope, "c/" + cid, now)
        if data is None:
            raise fmt.not_found("conversation", cid, param)
        return jsonio.loads(data)

    async def _container_items(self, fmt: StoredFormat, scope: str, cid: str, param: str | None,
                               now: float) -> list[str]:
        await self._container(fmt, scope, cid, param, now)
        return [v.decode() for v in await self.store.read_list(scope, cid, now)]

    async def _append(self, scope: str, cid: str, ids: list[str], now: float) -> int | None:
        """Add item ids to a conversation, restarting its expiry (None: it would exceed max_items)."""
        added = await self.store.append_list(scope, cid, [i.encode() for i in ids], self.ttl, now, self.max_items)
        if added is not None:
            conv = await self.store.get_record(scope, "c/" + cid, now)
            if conv is not None:
                await self.store.put_record(scope, "c/" + cid, conv, self.ttl, now)
        return added

    # -- the routes ------------------------------------------------------------------------------------------
    def handler(self, route: StoreRoute, frontend: Frontend, authenticate: Authenticate, read_body: BodyReader) -> Handler:
        if route.action not in ACTIONS:
            raise ValueError(f"unknown stored-object action {route.action!r}")
        action = getattr(self, "_" + route.action)
        fmt = route.stored

        async def handle(request: web.Request) -> web.StreamResponse:
            ctx = RequestContext(request_id(request.headers.get("x-request-id")), route.path)
            try:
                owner = ctx.key_name = await authenticate(request, frontend)
                ids = [fmt.check_id(request.match_info[name], name) for name in ("id", "item_id") if name in request.match_info]
                body = await read_body(request) if request.method == "POST" else b""
                out = await action(fmt, _scope(owner), time.time(), ids, request.query, body)
                resp = json_answer(out, {"x-request-id": ctx.request_id})
                ctx.status = 200
            except StoreUnavailable:
                resp = error_response(frontend, _unavailable(), ctx)
            except ProxyError as err:
                resp = error_response(frontend, err, ctx)
            total = ctx.elapsed()
            access_line(ctx, total, total, None)  # no upstream: all of it is the gateway's
            return await aiohttp_reply(resp, request)

        return handle

    async def _get_response(self, fmt: StoredFormat, scope: str, now: float, ids: list[str], query, body) -> bytes:
        return jsonio.dumps((await self._response(fmt, scope, ids[0], now))["response"])

    async def _delete_response(self, fmt: StoredFormat, scope: str, now: float, ids: list[str], query, body) -> bytes:
        await self._response(fmt, scope, ids[0], now)  # an expired record is not found, as it would be on read
        await self.store.delete_record(scope, "r/" + ids[0])
        return fmt.deleted("response", ids[0])

    async def _list_input_items(self, fmt: StoredFormat, scope: str, now: float, ids: list[str], query, body) -> bytes:
        rec = await self._response(fmt, scope, ids[0], now)
        return fmt.page(await self._items(scope, rec["input"], now), query)

    async def _response(self, fmt: StoredFormat, scope: str, rid: str, now: float) -> dict[str, Any]:
        data = await self.store.get_record(scope, "r/" + rid, now)
        if data is None:
            raise fmt.not_found("response", rid, None)
        return jsonio.loads(data)

    async def _items(self, scope: str, ids: list[str], now: float) -> list[dict[str, Any]]:
        data = await self.store.get_records(scope, ["i/" + i for i in ids], now) if ids else []
        return [jsonio.loads(d) for d in data if d is not None]

    async def _create_conversation(self, fmt: StoredFormat, scope: str, now: float, ids, query, body: bytes) -> bytes:
        with client_values(body):
            items, metadata = fmt.new_items(body, self.max_items)
        conv = fmt.container(fmt.new_container_id(), int(now), metadata or {})
        batch = [("c/" + conv["id"], jsonio.dumps(conv)), *(("i/" + i["id"], jsonio.dumps(i)) for i in items)]
        await self.store.put_records(scope, batch, self.ttl, now)
        if items:
            await self.store.append_list(scope, conv["id"], [i["id"].encode() for i in items], self.ttl, now,
                                         self.max_items)
        return jsonio.dumps(conv)

    async def _get_conversation(self, fmt: StoredFormat, scope: str, now: float, ids: list[str], query, body) -> bytes:
        return jsonio.dumps(await self._container(fmt, scope, ids[0], None, now))

    async def _update_conversation(self, fmt: StoredFormat, scope: str, now: float, ids: list[str], query,
                                   body: bytes) -> bytes:
        metadata = fmt.metadata(body)
        conv = await self._container(fmt, scope, ids[0], None, now)
        conv["metadata"] = metadata
        await self.store.put_record(scope, "c/" + ids[0], jsonio.dumps(conv), self.ttl, now)
        return jsonio.dumps(conv)

    async def _delete_conversation(self, fmt: StoredFormat, scope: str, now: float, ids: list[str], query,
                                   body) -> bytes:
        await self._container(fmt, scope, ids[0], None, now)
        await self.store.delete_record(scope, "c/" + ids[0])
        await self.store.delete_list(scope, ids[0])
        return fmt.deleted("conversation", ids[0])

    async def _list_items(self, fmt: StoredFormat, scope: str, now: float, ids: list[str], query, body) -> bytes:
        item_ids = await self._container_items(fmt, scope, ids[0], None, now)
        return fmt.page(await self._items(scope, item_ids, now), query)

    async def _add_items(self, fmt: StoredFormat, scope: str, now: float, ids: list[str], query, body: bytes) -> bytes:
        await self._container(fmt, scope, ids[0], None, now)
        with client_values(body):
            items, _ = fmt.new_items(body, self.max_items)
        if not items:
            raise bad_request("items: at least one item is required", param="items")
        await self.store.put_records(scope, [("i/" + i["id"], jsonio.dumps(i)) for i in items], self.ttl, now)
        if await self._append(scope, ids[0], [i["id"] for i in items], now) is None:
            raise bad_request(f"the conversation would hold more than {self.max_items} items (responses.max_items)",
                              param="items")
        return fmt.page(items, {"order": "asc", "limit": str(len(items))})

    async def _get_item(self, fmt: StoredFormat, scope: str, now: float, ids: list[str], query, body) -> bytes:
        return jsonio.dumps(await self._member(fmt, scope, ids, now))

    async def _delete_item(self, fmt: StoredFormat, scope: str, now: float, ids: list[str], query, body) -> bytes:
        await self._member(fmt, scope, ids, now)
        # The id stays in the conversation's list (append-only); reads skip items that are gone.
        await self.store.delete_record(scope, "i/" + ids[1])
        return jsonio.dumps(await self._container(fmt, scope, ids[0], None, now))

    async def _member(self, fmt: StoredFormat, scope: str, ids: list[str], now: float) -> dict[str, Any]:
        cid, iid = ids
        if iid not in await self._container_items(fmt, scope, cid, None, now):
            raise fmt.not_found("item", iid, None)
        found = await self._items(scope, [iid], now)
        if not found:
            raise fmt.not_found("item", iid, None)
        return found[0]


ACTIONS = frozenset({"get_response", "delete_response", "list_input_items", "create_conversation", "get_conversation",
                     "update_conversation", "delete_conversation", "list_items", "add_items", "get_item",
                     "delete_item"})  # fmt: skip


def _param(plan: StatePlan) -> str:
    return "previous_response_id" if plan.previous_response_id is not None else "conversation"


def _scope(owner: str) -> str:
    return "responses:" + owner  # key names have no ':'; "" is the one space of a gateway without auth
