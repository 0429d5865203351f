"""proxy/dnscache.py: one lookup per host and port per TTL, a bounded number of entries (oldest
dropped), `forget` forcing a new lookup, and an empty answer refused."""

from __future__ import annotations

import asyncio
import socket

import pytest

from proxy.dnscache import DnsCache


class Resolver:
    def __init__(self, answer: list | None = None) -> None:
        self.answer = [(2, 1, 6, "", ("127.0.0.1", 80))] if answer is None else answer
        self.lookups: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int, *, type: int) -> list:
        assert type == socket.SOCK_STREAM
        self.lookups.append((host, port))
        return self.answer


async def test_one_lookup_per_ttl():
    resolve = Resolver()
    dns = DnsCache(resolve, ttl=0.05)
    assert await dns.addresses("a", 80) == await dns.addresses("a", 80) == resolve.answer
    await dns.addresses("a", 443)  # another port, another entry
    assert resolve.lookups == [("a", 80), ("a", 443)]
    await asyncio.sleep(0.06)
    await dns.addresses("a", 80)
    assert resolve.lookups[-1] == ("a", 80) and len(resolve.lookups) == 3


async def test_entries_are_bounded_oldest_dropped_first():
    resolve = Resolver()
    dns = DnsCache(resolve, max_entries=3)
    for host in "abcd":
        await dns.addresses(host, 80)
    assert len(dns) == 3
    await dns.addresses("b", 80)  # still cached
    await dns.addresses("a", 80)  # dropped: looked up again
    assert resolve.lookups == [("a", 80), ("b", 80), ("c", 80), ("d", 80), ("a", 80)] and len(dns) == 3


async def test_forget_forces_a_new_lookup():
    resolve = Resolver()
    dns = DnsCache(resolve)
    await dns.addresses("a", 80)
    dns.forget("a", 80)
    dns.forget("never-seen", 80)
    await dns.addresses("a", 80)
    assert resolve.lookups == [("a", 80)] * 2


async def test_an_empty_answer_is_an_error_and_not_cached():
    dns = DnsCache(Resolver([]))
    with pytest.raises(socket.gaierror):
        await dns.addresses("a", 80)
    assert len(dns) == 0
