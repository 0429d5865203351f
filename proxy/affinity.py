"""Prefix affinity: requests that start alike go to the server that already has that start cached.

How this works.  Model servers keep the KV cache of recent prompt prefixes (vLLM's automatic prefix
caching, SGLang's radix cache, llama.cpp's slots): a request whose first few thousand tokens are
cached skips most of its prefill.  So the first `chars` characters of the rendered prompt (system
prompt, tools, first turns: `prompt_prefix`) are hashed onto a consistent-hash ring of the model's
deployments, and the request goes to the first deployment clockwise from that point -- the prefix's
owner -- *if its load allows*: consistent hashing with bounded loads (Mirrokni et al., 2016), each
deployment taking at most `ceil(max_imbalance * (load in flight + 1) * weight / total weight)`
requests; a full one passes the request on to the next distinct deployment on the ring (a spill).

Replicas agree without talking: ring points and prompt keys are BLAKE2b digests (never Python's
per-process salted `hash()`) of the deployment labels and of the prompt, so every gateway process
with the same config maps a prefix to the same server.  The load is whatever the strategy balances
(load-aware: the servers' own gauges, which every replica sees alike; otherwise our in-flight count).
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from adapters import ir

POINTS_PER_WEIGHT = 160  # virtual nodes per unit of weight: spreads keys within a few % of even
MAX_POINTS = 4096  # per deployment, whatever its weight


def stable_hash(data: bytes) -> int:
    """A 64-bit hash that is the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def prompt_prefix(req: ir.ChatRequest, chars: int) -> str:
    """The first `chars` characters of the prompt as a server renders it (roles and text, in order)."""
    if req.prompt is not None:
        return req.prompt[:chars]
    out: list[str] = []
    size = 0

    def add(piece: str) -> bool:
        nonlocal size
        out.append(piece)
        size += len(piece)
        return size >= chars

    for t in req.system:
        if add("system\n" + t.text + "\n"):
            return "".join(out)[:chars]
    for tool in req.tools:
        if add("tool\n" + tool.name + "\n"):
            return "".join(out)[:chars]
    for m in req.messages:
        if add(m.role + "\n"):
            break
        if any(add(_part_text(p)) for p in m.parts):
            break
    return "".join(out)[:chars]


def _part_text(p: ir.Part) -> str:
    if isinstance(p, ir.Text):
        return p.text
    if isinstance(p, ir.ToolCall):
        return p.name + p.arguments
    if isinstance(p, ir.ToolResult):
        return "".join(c.text for c in p.content if isinstance(c, ir.Text))
    if isinstance(p, ir.Image):
        return p.url or (p.data or "")[:64]  # an image's identity, not its megabytes
    return ""


def prefix_key(text: str) -> int:
    return stable_hash(text.encode("utf-8", "surrogatepass"))


class Ring:
    """The consistent-hash ring of one model's deployments, built from their labels and weights."""

    __slots__ = ("points", "owners")

    def __init__(self, members: Sequence[tuple[str, float]]) -> None:
        pairs = sorted(
            (stable_hash(f"{label}#{i}".encode()), label)
            for label, weight in members
            for i in range(min(MAX_POINTS, max(1, round(POINTS_PER_WEIGHT * weight))))
        )
        self.points = [p for p, _ in pairs]
        self.owners = [label for _, label in pairs]

    def walk(self, key: int) -> Iterator[str]:
        """Distinct labels clockwise from `key`: the owner first, then where a spill goes."""
        n = len(self.points)
        start = bisect.bisect_left(self.points, key)
        seen: set[str] = set()
        for i in range(n):
            label = self.owners[(start + i) % n]
            if label not in seen:
                seen.add(label)
                yield label


D = TypeVar("D")


def pick(ring: Ring, key: int, candidates: Sequence[D], label: Callable[[D], str],
         weight: Callable[[D], float], load: Callable[[D], float], max_imbalance: float) -> tuple[D, bool] | None:
    """The deployment for `key` among `candidates` under bounded loads, and whether it is the owner.

    None when no candidate is on the ring (they were all left out: ejected or already tried)."""
    by_label = {label(d): d for d in candidates}
    if not by_label:
        return None
    loads = {lb: load(d) for lb, d in by_label.items()}
    total_weight = sum(weight(d) for d in by_label.values())
    share = max_imbalance * (sum(loads.values()) + 1) / total_weight
    owner = True
    for lb in ring.walk(key):
        d = by_label.get(lb)
        if d is None:
            continue
        if loads[lb] < math.ceil(share * weight(d)):
            return d, owner
        owner = False
    return None
