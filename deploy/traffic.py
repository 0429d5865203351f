"""Bounded demo traffic for the dashboard: OpenAI and Anthropic requests, streamed and not, to a proxy.

    python deploy/traffic.py http://127.0.0.1:4000 --key sk-local-demo --duration 60 \
        --openai-model demo-llama --anthropic-model demo-claude

Each worker loops over the request kinds until `--duration` seconds or `--requests` requests have
passed, whichever comes first; it never runs unbounded.  Failures (the demo config has a failing model
on purpose) are counted, not raised.  The compose file runs it as the `traffic` service; the deploy
tests use `run()` to put load on a proxy that a real Prometheus scrapes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True)
class Call:
    path: str
    body: dict


def calls(openai_models: list[str], anthropic_models: list[str]) -> list[Call]:
    """One request of each kind per model: chat completions (stream and not) for OpenAI models,
    messages (stream and not) for Anthropic ones."""
    out = []
    for m in openai_models:
        chat = {"model": m, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 32}
        out += [
            Call("/v1/chat/completions", chat),
            Call("/v1/chat/completions", {**chat, "stream": True, "stream_options": {"include_usage": True}}),
        ]
    for m in anthropic_models:
        msg = {"model": m, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 32}
        out += [Call("/v1/messages", msg), Call("/v1/messages", {**msg, "stream": True})]
    return out


async def _worker(session, base_url, plan, deadline, budget, counts, key) -> None:
    headers = {"authorization": f"Bearer {key}", "x-api-key": key, "anthropic-version": "2023-06-01"}
    for call in plan:
        if time.monotonic() >= deadline or budget[0] <= 0:
            return
        budget[0] -= 1
        try:
            async with session.post(base_url + call.path, json=call.body, headers=headers) as resp:
                await resp.read()  # a stream is read to its end, like a real client
                counts[resp.status] += 1
        except (aiohttp.ClientError, asyncio.TimeoutError):
            counts["transport"] += 1


async def run(
    base_url: str,
    key: str,
    openai_models: list[str],
    anthropic_models: list[str],
    duration: float = 10.0,
    requests: int = 1000,
    concurrency: int = 4,
) -> Counter:
    """Send requests until `duration` seconds or `requests` requests; return counts by status."""
    plan = calls(openai_models, anthropic_models)
    if not plan:
        raise ValueError("no models given")
    deadline = time.monotonic() + duration
    budget = [requests]  # shared by the workers: one event loop, so no lock is needed
    counts: Counter = Counter()
    timeout = aiohttp.ClientTimeout(total=max(1.0, duration))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(
            *(
                _worker(session, base_url.rstrip("/"), itertools.islice(itertools.cycle(plan), i, None),
                        deadline, budget, counts, key)
                for i in range(concurrency)
            )
        )
    return counts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base_url")
    ap.add_argument("--key", default="sk-local-demo")
    ap.add_argument("--openai-model", action="append", default=[])
    ap.add_argument("--anthropic-model", action="append", default=[])
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args(argv)
    counts = asyncio.run(
        run(args.base_url, args.key, args.openai_model, args.anthropic_model,
            args.duration, args.requests, args.concurrency)
    )
    print(" ".join(f"{k}={v}" for k, v in sorted(counts.items(), key=str)))


if __name__ == "__main__":
    main()
