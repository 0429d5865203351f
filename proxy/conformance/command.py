"""`llm-proxy conformance`: arguments, the run, the table on stdout and the optional JSON report."""

from __future__ import annotations

import argparse
import asyncio
import sys

FORMATS = ("openai", "anthropic")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True,
                   help="server base URL: ending in /v1 for --format openai, the root for anthropic")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--model", required=True, help="model name to send")
    p.add_argument("--api-key", help="sent as Bearer (openai) or x-api-key (anthropic)")
    p.add_argument("--header", action="append", default=[], metavar="NAME:VALUE", help="extra request header")
    p.add_argument("--embedding-model", help="model for the embeddings probe (default: --model)")
    p.add_argument("--only", default="", help="comma-separated probe ids, groups (chat, stream, tools, ...) or levels")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per probe (default 30)")
    p.add_argument("--deadline", type=float, default=300.0, help="seconds for the whole run (default 300)")
    p.add_argument("--json", metavar="FILE", help="write the machine-readable report here")
    p.add_argument("--list", action="store_true", help="list the probes and exit")


def _headers(items: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"--header {item!r} is not NAME:VALUE")
        out.append((name.strip(), value.strip()))
    return tuple(out)


def main(args: argparse.Namespace) -> int:
    """Exit 0 when every core probe passed (or was not supported), 1 when one failed, 2 on bad usage."""
    # Imported here: building the `llm-proxy` parser (every command) must not load aiohttp and the probes.
    from adapters import jsonio

    from .http import Target
    from .probe import PROBE_SET_VERSION
    from .report import table
    from .runner import run, select

    only = frozenset(filter(None, (s.strip() for s in args.only.split(","))))
    try:
        chosen = select(args.format, only)
        target = Target(args.url, args.format, args.model, args.api_key, _headers(args.header), args.embedding_model)
    except ValueError as exc:
        print(f"llm-proxy conformance: {exc}", file=sys.stderr)
        return 2
    if args.list:
        print(f"probe set {PROBE_SET_VERSION}, format {args.format}")
        for p in chosen:
            print(f"{p.id:28} {p.level:6} {p.title}")
        return 0
    report = asyncio.run(run(target, only, args.timeout, args.deadline)).as_dict()
    print(table(report))
    if args.json:
        with open(args.json, "wb") as f:
            f.write(jsonio.dumps(report))
    return 0 if report["ok"] else 1
