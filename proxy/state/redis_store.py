"""Redis state store: shared by every worker of every replica.

How this works.  Admission and settlement are server-side Lua scripts (EVALSHA: one round trip per
phase, atomic because Redis runs one script at a time).  The same sliding-window log as the SQLite
store, in Redis types, per key name N (prefix `llmp:`):

  h:N  sorted set  admission id -> time        (the window's requests)
  t:N  hash        admission id -> tokens      (their token reservations, reconciled at settle)
  f:N  sorted set  admission id -> lease expiry (requests in flight)
  c:N  hash        tok (window token sum), spend, held, pstart
  k:N  hash        run-time key: digest, limits, version, created;  d:<digest> -> N;  keys: set of N

Client commands are never retried (a timed-out admission may have been applied; counting it twice
would be worse than refusing it once).  Lua numbers become integers on the way out, so fractional
values travel as strings.  Not for Redis Cluster (a key's structures share no hash slot).
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .base import WINDOW, Ask, Decision, Done, KeyRecord, StoreUnavailable, Usage

PREFIX = "llmp:"

# Shared prologue: expire the window, read the totals, roll the budget period.
_PROLOGUE = """
local h, t, f, c = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local period = tonumber(ARGV[3])  -- 0: lifetime
local cut = now - window
local tok = tonumber(redis.call('HGET', c, 'tok') or '0')
local old = redis.call('ZRANGEBYSCORE', h, '-inf', cut)
if #old > 0 then
  for i = 1, #old, 500 do
    local j = math.min(i + 499, #old)
    for _, v in ipairs(redis.call('HMGET', t, unpack(old, i, j))) do tok = tok - (tonumber(v) or 0) end
    redis.call('HDEL', t, unpack(old, i, j))
  end
  redis.call('ZREMRANGEBYSCORE', h, '-inf', cut)
  if tok < 0 then tok = 0 end
end
if redis.call('EXISTS', h) == 0 then tok = 0 end  -- an idle key's window expired as a whole
local spend = tonumber(redis.call('HGET', c, 'spend') or '0')
local held = tonumber(redis.call('HGET', c, 'held') or '0')
local pstart = tonumber(redis.call('HGET', c, 'pstart') or '-1')
if pstart < 0 then
  pstart = now
elseif period > 0 and now >= pstart + period then
  pstart = pstart + math.floor((now - pstart) / period) * period
  spend = 0
end
local function save()
  redis.call('HSET', c, 'tok', tok, 'spend', tostring(spend), 'held', tostring(held), 'pstart', tostring(pstart))
end
"""

# ARGV: now, window, period, rpm, tpm, max_parallel, budget (-1 = none), tokens, cost, lease, ttl, version
ADMIT = _PROLOGUE + """
local rpm, tpm, par, budget = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local need, cost, lease, ttl, version = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10], tonumber(ARGV[11]), ARGV[12]
if version ~= '' then
  local v = redis.call('HGET', KEYS[5], 'version')
  if not v then return {'revoked'} end
  if v ~= version then return {'stale'} end
end
local reqs = redis.call('ZCARD', h)
local flying = 0
if par > 0 then
  redis.call('ZREMRANGEBYSCORE', f, '-inf', now)
  flying = redis.call('ZCARD', f)
end
local pend = ''
if period > 0 then pend = tostring(pstart + period) end
local function refuse(reason, retry)
  save()
  return {reason, tostring(retry), reqs, tok, flying, tostring(spend + held), pend}
end
if budget >= 0 and spend + held >= budget then
  if period > 0 then return refuse('budget', pstart + period - now) end
  return refuse('budget', -1)
end
if par > 0 and flying >= par then return refuse('max_parallel', 1) end
if rpm > 0 and reqs >= rpm then
  local e = redis.call('ZRANGE', h, reqs - rpm, reqs - rpm, 'WITHSCORES')
  return refuse('rpm', tonumber(e[2]) + window - now)
end
if tpm > 0 and tok + need > tpm then
  local excess, freed = tok + need - tpm, 0
  local ids = redis.call('ZRANGE', h, 0, -1, 'WITHSCORES')
  for i = 1, #ids, 2 do
    freed = freed + (tonumber(redis.call('HGET', t, ids[i])) or 0)
    if freed >= excess then return refuse('tpm', tonumber(ids[i + 1]) + window - now) end
  end
  return refuse('tpm', window)
end
redis.call('ZADD', h, now, lease)
redis.call('HSET', t, lease, need)
tok = tok + need
reqs = reqs + 1
if par > 0 then
  redis.call('ZADD', f, now + ttl, lease)
  flying = flying + 1
  redis.call('PEXPIRE', f, math.ceil((ttl + window) * 1000))
end
held = held + cost
save()
local keep = math.ceil(window * 2000)
redis.call('PEXPIRE', h, keep)
redis.call('PEXPIRE', t, keep)
return {'ok', '', reqs, tok, flying, tostring(spend + held), pend}
"""

# ARGV: now, window, period, lease, reserved tokens, used tokens, reserved cost, used cost
SETTLE = _PROLOGUE + """
local lease = ARGV[4]
local reserved, used = tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('ZREM', f, lease)
if used ~= reserved and redis.call('HEXISTS', t, lease) == 1 then
  redis.call('HSET', t, lease, used)
  tok = tok + used - reserved
  if tok < 0 then tok = 0 end
end
spend = spend + tonumber(ARGV[8])
held = held - tonumber(ARGV[7])
if held < 0 then held = 0 end
save()
return 1
"""

# ARGV: now, window, period
USAGE = _PROLOGUE + """
save()
redis.call('ZREMRANGEBYSCORE', f, '-inf', ARGV[1])
return {redis.call('ZCARD', h), tok, redis.call('ZCARD', f), tostring(spend), tostring(held), tostring(pstart)}
"""


# KEYS: the list.  ARGV: limit, ttl in ms (0: none), values...  -> the new length, or -1 (over the limit).
APPEND = """
local n = redis.call('LLEN', KEYS[1])
local add = #ARGV - 2
if n + add > tonumber(ARGV[1]) then return -1 end
redis.call('RPUSH', KEYS[1], unpack(ARGV, 3))
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) else redis.call('PERSIST', KEYS[1]) end
return n + add
"""


def _keys(name: str) -> list[str]:
    return [f"{PREFIX}{kind}:{name}" for kind in ("h", "t", "f", "c", "k")]


def _record_key(scope: str, rid: str) -> str:
    return f"{PREFIX}r:{len(scope)}:{scope}:{rid}"  # the length keeps (a:b, c) apart from (a, b:c)


def _list_key(scope: str, lid: str) -> str:
    return f"{PREFIX}l:{len(scope)}:{scope}:{lid}"


def _px(ttl: float | None) -> int | None:
    return None if ttl is None else max(1, int(ttl * 1000))


class RedisStore:
    def __init__(self, url: str, timeout: float) -> None:
        self.timeout = timeout
        self.client = aioredis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False, health_check_interval=0,
        )  # fmt: skip
        self._admit = self.client.register_script(ADMIT)
        self._settle = self.client.register_script(SETTLE)
        self._usage = self.client.register_script(USAGE)
        self._append = self.client.register_script(APPEND)

    async def _call(self, coro) -> Any:
        try:
            async with asyncio.timeout(self.timeout * 2):  # also covers a first EVALSHA -> SCRIPT LOAD
                return await coro
        except RedisError as exc:
            raise StoreUnavailable(f"state store (redis) failed: {type(exc).__name__}") from None
        except (TimeoutError, OSError):
            raise StoreUnavailable("state store (redis) did not answer in time") from None

    async def ping(self) -> None:
        await self._call(self.client.ping())

    async def close(self) -> None:
        await self.client.aclose()

    # -- admission --------------------------------------------------------------------------------------
    async def admit(self, ask: Ask, now: float) -> Decision:
        args = [now, WINDOW, ask.period or 0, ask.rpm or 0, ask.tpm or 0, ask.max_parallel or 0,
                -1 if ask.budget is None else ask.budget, ask.tokens, ask.cost, ask.lease, ask.lease_ttl, ask.version]  # fmt: skip
        r = await self._call(self._admit(keys=_keys(ask.name), args=args))
        reason = r[0].decode()
        if reason in ("revoked", "stale"):
            return Decision(False, reason)
        retry = r[1].decode()
        return Decision(
            reason == "ok", "" if reason == "ok" else reason,
            retry_after=max(0.0, float(retry)) if retry and float(retry) >= 0 else None,
            requests=int(r[2]), tokens=int(r[3]), in_flight=int(r[4]), spend=float(r[5]),
            period_end=float(r[6]) if r[6] else None, lease=ask.lease,
        )  # fmt: skip

    async def settle(self, done: Done, now: float) -> None:
        args = [now, WINDOW, done.period or 0, done.lease, done.reserved_tokens, done.used_tokens,
                done.reserved_cost, done.used_cost]  # fmt: skip
        await self._call(self._settle(keys=_keys(done.name)[:4], args=args))

    async def usage(self, name: str, period: float | None, now: float) -> Usage:
        r = await self._call(self._usage(keys=_keys(name)[:4], args=[now, WINDOW, period or 0]))
        start = float(r[5])
        return Usage(int(r[0]), int(r[1]), int(r[2]), float(r[3]), float(r[4]), start,
                     start + period if period is not None else None)  # fmt: skip

    # -- run-time keys ----------------------------------------------------------------------------------
    async def create_key(self, rec: KeyRecord) -> bool:
        k = _keys(rec.name)
        added = await self._call(self.client.sadd(PREFIX + "keys", rec.name))
        if not added:
            return False
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(*k[:4])  # a fresh key starts from zero
        pipe.hset(k[4], mapping={"digest": rec.digest, "limits": rec.limits, "version": rec.version,
                                 "created": repr(rec.created)})  # fmt: skip
        pipe.set(f"{PREFIX}d:{rec.digest}", rec.name)
        await self._call(pipe.execute())
        return True

    async def key_by_digest(self, digest: str) -> KeyRecord | None:
        name = await self._call(self.client.get(f"{PREFIX}d:{digest}"))
        return None if name is None else await self.key_by_name(name.decode())

    async def key_by_name(self, name: str) -> KeyRecord | None:
        h = await self._call(self.client.hgetall(_keys(name)[4]))
        if not h:
            return None
        return KeyRecord(name, h[b"digest"].decode(), h[b"limits"], h[b"version"].decode(), float(h[b"created"]))

    async def list_keys(self) -> list[KeyRecord]:
        names = sorted(n.decode() for n in await self._call(self.client.smembers(PREFIX + "keys")))
        found = [await self.key_by_name(n) for n in names]
        return [r for r in found if r is not None]

    async def update_key(self, rec: KeyRecord) -> bool:
        k = _keys(rec.name)[4]
        if not await self._call(self.client.exists(k)):
            return False
        await self._call(self.client.hset(k, mapping={"limits": rec.limits, "version": rec.version}))
        return True

    async def delete_key(self, name: str) -> bool:
        rec = await self.key_by_name(name)
        if rec is None:
            return False
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(*_keys(name), f"{PREFIX}d:{rec.digest}")
        pipe.srem(PREFIX + "keys", name)
        await self._call(pipe.execute())
        return True

    # -- records ----------------------------------------------------------------------------------------
    async def put_record(self, scope: str, rid: str, data: bytes, ttl: float | None, now: float) -> None:
        await self._call(self.client.set(_record_key(scope, rid), data, px=_px(ttl)))

    async def put_records(self, scope: str, items: list[tuple[str, bytes]], ttl: float | None, now: float) -> None:
        pipe = self.client.pipeline(transaction=False)  # one round trip
        for rid, data in items:
            pipe.set(_record_key(scope, rid), data, px=_px(ttl))
        await self._call(pipe.execute())

    async def get_records(self, scope: str, rids: list[str], now: float) -> list[bytes | None]:
        if not rids:
            return []
        return await self._call(self.client.mget([_record_key(scope, rid) for rid in rids]))

    async def get_record(self, scope: str, rid: str, now: float) -> bytes | None:
        return await self._call(self.client.get(_record_key(scope, rid)))

    async def delete_record(self, scope: str, rid: str) -> bool:
        return bool(await self._call(self.client.delete(_record_key(scope, rid))))

    # -- lists ------------------------------------------------------------------------------------------
    async def append_list(self, scope: str, lid: str, values: list[bytes], ttl: float | None, now: float,
                          limit: int) -> int | None:
        n = await self._call(self._append(keys=[_list_key(scope, lid)], args=[limit, _px(ttl) or 0, *values]))
        return None if n < 0 else int(n)

    async def read_list(self, scope: str, lid: str, now: float) -> list[bytes]:
        return await self._call(self.client.lrange(_list_key(scope, lid), 0, -1))

    async def delete_list(self, scope: str, lid: str) -> bool:
        return bool(await self._call(self.client.delete(_list_key(scope, lid))))
