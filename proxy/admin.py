"""The admin API (`/admin/keys`): make, list, inspect, change and revoke client keys at run time.

Served only when `auth.admin_key` is set, and only to `Authorization: Bearer <admin_key>` (a client
key is never accepted: config loading refuses an admin key equal to a client key).  Keys made here
live in the state store, stored as the sha256 of their secret; the secret is in the creation answer
and nowhere else.  Keys from the config file are listed but read-only.  Answers are JSON; errors are
rendered by the registry's default frontend (`registry.DEFAULT_FRONTEND`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any

import msgspec
from aiohttp import web

from adapters import jsonio
from adapters.base import BEARER
from adapters.errors import ProxyError

from .config import KEY_NAME, BudgetConfig, ConfigError, KeyLimits, check_limits
from .keys import Identity, KeyRing, from_record, sha256_hex, supplied_key
from .limiter import rfc3339
from .state.base import WINDOW, KeyRecord, StateStore, StoreUnavailable

SECRET_PREFIX = "sk-llmp-"
_UNSET = msgspec.UNSET


class NewKey(KeyLimits, forbid_unknown_fields=True, kw_only=True):
    name: str


class KeyPatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Fields to change; null removes a limit, an absent field stays as it is."""

    models: list[str] | None | msgspec.UnsetType = _UNSET
    rpm: int | None | msgspec.UnsetType = _UNSET
    tpm: int | None | msgspec.UnsetType = _UNSET
    max_parallel: int | None | msgspec.UnsetType = _UNSET
    budget: BudgetConfig | None | msgspec.UnsetType = _UNSET


class AdminAPI:
    def __init__(self, admin_key: str, keys: KeyRing, store: StateStore, render_error, clock=time.time) -> None:
        self._admin = hashlib.sha256(admin_key.encode()).digest()
        self.keys = keys
        self.store = store
        self.render_error = render_error  # ProxyError -> (status, body), the default frontend's shape
        self.clock = clock

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("POST", "/admin/keys", self.create),
            ("GET", "/admin/keys", self.list),
            ("GET", "/admin/keys/{name}", self.show),
            ("PATCH", "/admin/keys/{name}", self.change),
            ("DELETE", "/admin/keys/{name}", self.revoke),
        ]

    # -- plumbing -------------------------------------------------------------------------------------
    def _check(self, request: web.Request) -> None:
        token = supplied_key(request, (BEARER,))
        if not hmac.compare_digest(hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest(), self._admin):
            raise ProxyError("authentication", "invalid or missing admin key", code="invalid_api_key")

    async def _answer(self, request: web.Request, work) -> web.Response:
        try:
            self._check(request)
            status, body = await work()
        except ProxyError as err:
            status, raw = self.render_error(err)
            return web.Response(status=status, body=raw, content_type="application/json")
        except StoreUnavailable:
            status, raw = self.render_error(ProxyError("overloaded", "the state store is unavailable", status=503))
            return web.Response(status=status, body=raw, content_type="application/json")
        return web.Response(status=status, body=jsonio.dumps(body), content_type="application/json")

    async def _body(self, request: web.Request, typ):
        data = await request.read()
        try:
            return msgspec.json.decode(data, type=typ)
        except msgspec.ValidationError as exc:
            raise ProxyError("invalid_request", f"invalid key settings: {exc}") from None
        except msgspec.DecodeError:
            raise ProxyError("invalid_request", "the request body is not valid JSON") from None

    def _config_key(self, name: str) -> Identity | None:
        return next((k for k in self.keys.config.values() if k.name == name), None)

    # -- endpoints --------------------------------------------------------------------------------------
    async def create(self, request: web.Request) -> web.Response:
        async def work():
            new = await self._body(request, NewKey)
            if not KEY_NAME.fullmatch(new.name):
                raise ProxyError("invalid_request", "name: 1-64 of A-Z a-z 0-9 . _ - (starting with a letter or digit)")
            limits = _limits_of(new)
            if new.name in self.keys.names:
                raise _conflict(new.name)
            secret = SECRET_PREFIX + secrets.token_urlsafe(32)
            rec = KeyRecord(new.name, sha256_hex(secret), msgspec.json.encode(limits), secrets.token_hex(8), self.clock())
            if not await self.store.create_key(rec):
                raise _conflict(new.name)
            return 201, {**_describe(from_record(rec), rec.created), "key": secret}

        return await self._answer(request, work)

    async def list(self, request: web.Request) -> web.Response:
        async def work():
            data = [_describe(k) for k in sorted(self.keys.config.values(), key=lambda k: k.name)]
            data += [_describe(from_record(r), r.created) for r in await self.store.list_keys()]
            return 200, {"object": "list", "data": data}

        return await self._answer(request, work)

    async def show(self, request: web.Request) -> web.Response:
        async def work():
            name = request.match_info["name"]
            key, created = self._config_key(name), None
            if key is None:
                rec = await self._stored(name)
                key, created = from_record(rec), rec.created
            body = _describe(key, created)
            if key.limited:
                u = await self.store.usage(name, key.period, self.clock())
                body["usage"] = {
                    "window_seconds": WINDOW, "requests": u.requests, "tokens": u.tokens, "in_flight": u.in_flight,
                    "spend_usd": round(u.spend, 9), "reserved_usd": round(u.held, 9),
                    "period_start": _iso(u.period_start), "period_end": _iso(u.period_end),
                }  # fmt: skip
            else:
                body["usage"] = None  # unlimited config keys are not counted in the store (see metrics)
            return 200, body

        return await self._answer(request, work)

    async def change(self, request: web.Request) -> web.Response:
        async def work():
            name = request.match_info["name"]
            self._refuse_config(name)
            patch = await self._body(request, KeyPatch)
            rec = await self._stored(name)
            current = msgspec.structs.asdict(msgspec.json.decode(rec.limits, type=KeyLimits))
            current.update({f: v for f in KeyPatch.__struct_fields__ if (v := getattr(patch, f)) is not _UNSET})
            limits = _limits_of(KeyLimits(**current))
            rec.limits, rec.version = msgspec.json.encode(limits), secrets.token_hex(8)
            if not await self.store.update_key(rec):
                raise _not_found(name)
            self.keys.forget(rec.digest)
            return 200, _describe(from_record(rec), rec.created)

        return await self._answer(request, work)

    async def revoke(self, request: web.Request) -> web.Response:
        async def work():
            name = request.match_info["name"]
            self._refuse_config(name)
            rec = await self._stored(name)
            if not await self.store.delete_key(name):
                raise _not_found(name)
            self.keys.forget(rec.digest)
            return 200, {"name": name, "deleted": True}

        return await self._answer(request, work)

    def _refuse_config(self, name: str) -> None:
        if self._config_key(name) is not None:
            raise ProxyError("permission", f"key {name!r} is defined in the config file and is read-only here")

    async def _stored(self, name: str) -> KeyRecord:
        rec = await self.store.key_by_name(name)
        if rec is None:
            raise _not_found(name)
        return rec


def _limits_of(given: KeyLimits) -> KeyLimits:
    limits = KeyLimits(models=given.models, rpm=given.rpm, tpm=given.tpm, max_parallel=given.max_parallel,
                       budget=given.budget)  # fmt: skip
    try:
        check_limits(limits, "key")
    except ConfigError as exc:
        raise ProxyError("invalid_request", str(exc)) from None
    return limits


def _describe(key: Identity, created: float | None = None) -> dict[str, Any]:
    lim = key.limits
    return {
        "name": key.name, "source": key.source, "models": lim.models, "rpm": lim.rpm, "tpm": lim.tpm,
        "max_parallel": lim.max_parallel, "budget": msgspec.to_builtins(lim.budget), "created_at": _iso(created),
    }  # fmt: skip


def _iso(ts: float | None) -> str | None:
    return None if ts is None else rfc3339(ts)


def _not_found(name: str) -> ProxyError:
    return ProxyError("not_found", f"no key named {name!r}")


def _conflict(name: str) -> ProxyError:
    return ProxyError("invalid_request", f"a key named {name!r} already exists", status=409)
