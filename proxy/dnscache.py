"""The addresses of the hosts one raw upstream client connects to, resolved once a minute.

Without it every new connection would pay a getaddrinfo (a thread-pool round trip, or a DNS query)
inside its connect deadline.  Entries live `ttl` seconds (not the record's own TTL: getaddrinfo does
not give it) and at most `max_entries` are kept, the oldest dropped first: a backend talks to a few
hosts.  Resolution runs under the caller's deadline (its timeout scope).  The caller tries the
addresses in order and calls `forget` when none answered, so a moved host is looked up again at once.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from time import monotonic
from typing import Any

AddrInfo = tuple[Any, ...]  # (family, type, proto, canonname, sockaddr), as getaddrinfo returns
Resolver = Callable[..., Awaitable[list[AddrInfo]]]


class DnsCache:
    __slots__ = ("_resolve", "_ttl", "_max", "_entries")

    def __init__(self, resolve: Resolver, ttl: float = 60.0, max_entries: int = 64) -> None:
        self._resolve = resolve  # loop.getaddrinfo
        self._ttl = ttl
        self._max = max_entries
        self._entries: dict[tuple[str, int], tuple[float, list[AddrInfo]]] = {}

    async def addresses(self, host: str, port: int) -> list[AddrInfo]:
        key = (host, port)
        entry = self._entries.get(key)
        if entry is not None and entry[0] > monotonic():
            return entry[1]
        infos = await self._resolve(host, port, type=socket.SOCK_STREAM)
        if not infos:
            raise socket.gaierror(socket.EAI_NONAME, "no address")
        self._entries.pop(key, None)
        if len(self._entries) >= self._max:
            del self._entries[next(iter(self._entries))]  # the oldest lookup
        self._entries[key] = (monotonic() + self._ttl, infos)
        return infos

    def forget(self, host: str, port: int) -> None:
        self._entries.pop((host, port), None)

    def __len__(self) -> int:
        return len(self._entries)
