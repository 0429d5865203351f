"""CPU per relayed stream chunk of the translated stream paths, without sockets: backend stream bytes
-> the backend adapter's decoder -> IR events -> the client frontend's encoder, as `relay._Translation`
runs them.

    python -m loadtest.bench.stream_cost [--chunks 128] [--repeat 200] [--pairs openai->anthropic,...]

Each backend's stream is recorded once from its emulator (the request built by the backend adapter
itself, as the gateway would send it), then cut at its event boundaries, so every read holds one event:
the worst case of a real token-paced stream, and the case the ≤ 15 µs goal is about.  The figure is
CPU time (`time.process_time`) over `repeat` fresh decoder + encoder pairs, divided by the events fed:
it does not depend on the machine's other load as wall time would (cache pressure aside).  Decoding
and encoding are timed apart (the encoder is fed the events the decoder produced).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

import aiohttp

from adapters import ir, registry
from adapters.base import ChatOp, InBody, Target
from loadtest.emulators.server import start
from loadtest.profiles import PROFILES

from .lean_backend import frames

BACKENDS = ("openai", "anthropic", "ollama", "gemini")
CLIENTS = ("openai", "anthropic", "ollama", "gemini")
# Paths as `client->backend`; the ones issue 16 names first.
COMMON = ("openai->anthropic", "anthropic->openai", "openai->ollama", "openai->gemini", "gemini->openai")
PROMPT = "Count slowly from one to two hundred, one number per word, and say nothing else at all please. " * 3


@dataclass
class Cost:
    pair: str
    events: int  # upstream events (reads) per stream
    out_bytes: int  # client bytes per stream
    decode_us: float  # per chunk: the backend's decoder (bytes -> IR events)
    encode_us: float  # per chunk: the client's encoder (IR events -> bytes)

    @property
    def us_per_chunk(self) -> float:
        return self.decode_us + self.encode_us


def request(stream: bool = True) -> ir.ChatRequest:
    return ir.ChatRequest(model="bench-model", messages=[ir.Message(role="user", parts=[ir.Text(text=PROMPT)])],
                          max_tokens=1024, stream=stream)  # fmt: skip


def backend(fmt: str, base_url: str):
    cls = registry.provider_class(fmt)
    return cls(base_url, "bench", {}, cls.Options())


def chat_op(client: str) -> ChatOp:
    """The client format's chat operation (its stream encoder)."""
    front = registry.frontend(client)
    for route in front.routes():
        target = getattr(route, "target", None)
        ops = [target.operation] if isinstance(target, InBody) else list(getattr(target, "operations", {}).values())
        for op in ops:
            if isinstance(op, ChatOp) and op.name in ("chat", "messages", "generate"):
                return op
    raise LookupError(f"{client}: no chat operation")


async def record(fmt: str, chunks: int, req: ir.ChatRequest | None = None) -> bytes:
    """One answer of `fmt`'s emulator to `req` (default: the streamed benchmark request), as the backend
    adapter requests it."""
    module = __import__(f"loadtest.emulators.{fmt}", fromlist=["create_app"])
    runner, url = await start(module.create_app(PROFILES["zero"]))
    try:
        suffix = "/v1" if fmt == "openai" else ""
        adapter = backend(fmt, url + suffix)
        http = adapter.chat_request(req or request(), Target(model=f"bench-model::chunks={chunks}"))
        async with aiohttp.ClientSession() as s, s.post(http.url, data=http.body, headers=http.headers) as r:
            body = await r.read()
            if r.status != 200:
                raise RuntimeError(f"{fmt} emulator answered {r.status}: {body[:200]!r}")
            return body
    finally:
        await runner.cleanup()


def measure(pair: str, reads: list[bytes], repeat: int) -> Cost:
    """Decode `reads` then encode the events, each timed over `repeat` fresh decoders / encoders."""
    client, _, fmt = pair.partition("->")
    adapter, op, req = backend(fmt, "http://127.0.0.1:1"), chat_op(client), request()
    target = Target(model="bench-model")

    def decode() -> list[ir.Event]:
        dec = adapter.stream_decoder(req, target)
        events = [ev for chunk in reads for ev in dec.feed(chunk)]
        return events + dec.close()

    def encode(events: list[ir.Event]) -> int:
        enc = op.stream_encoder(req, "bench-model")
        return sum(len(enc.feed(ev)) for ev in events)

    events = decode()
    out = encode(events)  # warm-up, and the client bytes
    t0 = time.process_time()
    for _ in range(repeat):
        decode()
    t1 = time.process_time()
    for _ in range(repeat):
        encode(events)
    t2 = time.process_time()
    per = 1e6 / (repeat * len(reads))
    return Cost(pair, len(reads), out, (t1 - t0) * per, (t2 - t1) * per)


async def run(pairs: list[str], chunks: int, repeat: int) -> list[Cost]:
    recorded = {fmt: frames(await record(fmt, chunks), fmt) for fmt in {p.partition("->")[2] for p in pairs}}
    return [measure(p, recorded[p.partition("->")[2]], repeat) for p in pairs]


def markdown(costs: list[Cost]) -> str:
    lines = ["| client->backend | events per stream | client bytes | decode µs | encode µs | CPU per chunk (µs) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {c.pair} | {c.events} | {c.out_bytes} | {c.decode_us:.2f} | {c.encode_us:.2f} | {c.us_per_chunk:.2f} |"
              for c in costs]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench.stream_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--chunks", type=int, default=128, help="content chunks per stream")
    p.add_argument("--repeat", type=int, default=200, help="streams translated per pair")
    p.add_argument("--pairs", default=",".join(COMMON),
                   help="client->backend pairs, or `all` (every client x backend that is not pass-through)")
    args = p.parse_args(argv)
    pairs = ([f"{c}->{b}" for c in CLIENTS for b in BACKENDS if c != b] if args.pairs == "all"
             else args.pairs.split(","))  # fmt: skip
    print(markdown(asyncio.run(run(pairs, args.chunks, args.repeat))), end="")


if __name__ == "__main__":
    main()
