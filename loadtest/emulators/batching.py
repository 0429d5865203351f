"""Emulated continuous-batching model server (vLLM-like): batch slots, a waiting queue, a prefix cache
and vLLM-format /metrics, on the OpenAI chat API.  It never imports adapters/.

How this works.  One engine loop per server, as in vLLM's scheduler without chunked prefill: each
step admits waiting requests (FIFO) into free batch slots and prefills them, then decodes one token
for every running request.  A step lasts `decode_ms` plus the prefill time of the requests it
admitted: `prefill_ms_per_token` for each prompt token not found in the prefix cache and
`cached_share` of that for each one found -- a request whose prefix is cached skips most of its
prefill.  Admitted requests get their first token at the end of that step.  The prefix cache holds
prompt blocks (`block_chars` characters, hashed as a chain as vLLM's automatic prefix caching does)
in LRU order, `cache_blocks` of them.  `speed` multiplies every time (2.0 = a server twice as slow).
Tokens are about four characters.

    POST /v1/chat/completions   stream or not; the reply is `max_tokens` (default 16) words
    GET  /metrics               vllm:num_requests_running/_waiting, vllm:kv_cache_usage_perc,
                                vllm:prefix_cache_queries_total/_hits_total (tokens), request counters
    GET  /health, /v1/models

`python -m loadtest.emulators.batching --port 8001 --slots 8 --speed 2` runs one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, fields

from aiohttp import web

MODEL = "emulated-llm"


@dataclass
class EngineProfile:
    slots: int = 8  # max_num_seqs: requests decoded together
    decode_ms: float = 4.0  # one decode step
    prefill_ms_per_token: float = 0.25  # an uncached prompt token
    cached_share: float = 0.1  # a cached prompt token costs this share of an uncached one
    cache_blocks: int = 200  # prefix-cache capacity, in blocks
    block_chars: int = 64
    kv_tokens: int = 16384  # KV-cache capacity (running requests' prompt + output tokens)
    speed: float = 1.0  # time multiplier
    max_tokens: int = 16  # when the request names none


class Seq:
    __slots__ = ("blocks", "prompt_tokens", "max_tokens", "generated", "out", "cancelled")

    def __init__(self, blocks: list[int], prompt_tokens: int, max_tokens: int) -> None:
        self.blocks = blocks
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.generated = 0
        self.out: asyncio.Queue[int | None] = asyncio.Queue()
        self.cancelled = False


def prompt_blocks(text: str, block_chars: int) -> list[int]:
    """Chained block hashes: a block matches only when everything before it matches too."""
    out, h = [], 0
    for i in range(0, len(text) - block_chars + 1, block_chars):
        h = hash((h, text[i : i + block_chars]))
        out.append(h)
    return out


class Engine:
    def __init__(self, profile: EngineProfile) -> None:
        self.p = profile
        self.waiting: deque[Seq] = deque()
        self.running: list[Seq] = []
        self.cache: OrderedDict[int, None] = OrderedDict()
        self.queries = 0  # prompt tokens looked up in the prefix cache
        self.hits = 0  # of which were cached
        self.finished = 0
        self._wake = asyncio.Event()

    def submit(self, seq: Seq) -> None:
        self.waiting.append(seq)
        self._wake.set()

    def kv_usage(self) -> float:
        used = sum(s.prompt_tokens + s.generated for s in self.running)
        return min(1.0, used / self.p.kv_tokens)

    def _prefill_ms(self, seq: Seq) -> float:
        cached = 0
        for b in seq.blocks:
            if b not in self.cache:
                break
            cached += 1
        for b in seq.blocks:
            self.cache[b] = None
            self.cache.move_to_end(b)
        while len(self.cache) > self.p.cache_blocks:
            self.cache.popitem(last=False)
        hit_tokens = min(seq.prompt_tokens, cached * self.p.block_chars // 4)
        self.queries += seq.prompt_tokens
        self.hits += hit_tokens
        miss = seq.prompt_tokens - hit_tokens
        return (miss + self.p.cached_share * hit_tokens) * self.p.prefill_ms_per_token

    async def run(self) -> None:
        while True:
            if not self.waiting and not self.running:
                self._wake.clear()
                await self._wake.wait()
            prefill = 0.0
            while self.waiting and len(self.running) < self.p.slots:
                seq = self.waiting.popleft()
                if not seq.cancelled:
                    prefill += self._prefill_ms(seq)
                    self.running.append(seq)
            await asyncio.sleep((self.p.decode_ms + prefill) * self.p.speed / 1000)
            still: list[Seq] = []
            for seq in self.running:
                if seq.cancelled:
                    continue
                seq.generated += 1
                seq.out.put_nowait(seq.generated)
                if seq.generated >= seq.max_tokens:
                    seq.out.put_nowait(None)
                    self.finished += 1
                else:
                    still.append(seq)
            self.running = still

    def metrics(self) -> str:
        lbl = f'{{engine="0",model_name="{MODEL}"}}'
        rows = [
            ("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", len(self.running)),
            ("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", len(self.waiting)),
            ("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", self.kv_usage()),
            ("vllm:prefix_cache_queries", "counter", "Prefix cache queries, in terms of number of queried tokens.",
             self.queries),
            ("vllm:prefix_cache_hits", "counter", "Prefix cache hits, in terms of number of cached tokens.", self.hits),
        ]
        out = []
        for name, kind, help_, value in rows:
            sample = f"{name}_total" if kind == "counter" else name
            out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{sample}{lbl} {float(value)}"]
        out += ["# HELP vllm:request_success Count of successfully processed requests.",
                "# TYPE vllm:request_success counter",
                f'vllm:request_success_total{{engine="0",finished_reason="length",model_name="{MODEL}"}} '
                f"{float(self.finished)}"]
        return "\n".join(out) + "\n"


ENGINE = web.AppKey("engine", Engine)


def _prompt_text(body: dict) -> str:
    parts = []
    for m in body.get("messages") or []:
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(c.get("text", "") for c in content if isinstance(c, dict))
        parts.append(f"<|{m.get('role', '')}|>{content or ''}")
    return "".join(parts)


async def chat(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    try:
        body = await request.json()
        text = _prompt_text(body)
    except (ValueError, AttributeError):
        return web.json_response({"error": {"message": "invalid JSON body", "type": "invalid_request_error"}},
                                 status=400)
    max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or engine.p.max_tokens)
    seq = Seq(prompt_blocks(text, engine.p.block_chars), max(1, math.ceil(len(text) / 4)), max(1, max_tokens))
    engine.submit(seq)
    rid, created = f"chatcmpl-{id(seq):x}", int(time.time())
    usage = {"prompt_tokens": seq.prompt_tokens, "completion_tokens": seq.max_tokens,
             "total_tokens": seq.prompt_tokens + seq.max_tokens}
    try:
        if not body.get("stream"):
            while await seq.out.get() is not None:
                pass
            return web.json_response({
                "id": rid, "object": "chat.completion", "created": created, "model": body.get("model", MODEL),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": _words(seq.max_tokens)},
                             "finish_reason": "length"}],
                "usage": usage,
            })
        return await _stream(request, seq, rid, created, body.get("model", MODEL), usage)
    finally:
        seq.cancelled = True  # a client that went away frees its slot at the next step


def _words(n: int, start: int = 0) -> str:
    return "".join(f" w{i}" for i in range(start, start + n))


async def _stream(request: web.Request, seq: Seq, rid: str, created: int, model: str, usage: dict) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)

    def chunk(delta: dict, finish: str | None = None, **extra) -> bytes:
        obj = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    first = True
    while (n := await seq.out.get()) is not None:
        delta = {"role": "assistant", "content": _words(1, n - 1)} if first else {"content": _words(1, n - 1)}
        first = False
        await resp.write(chunk(delta))
    await resp.write(chunk({}, "length"))
    usage_chunk = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [], "usage": usage}
    await resp.write(b"data: " + json.dumps(usage_chunk).encode() + b"\n\ndata: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[ENGINE].metrics(), content_type="text/plain",
                        headers={"X-Content-Type-Options": "nosniff"})


async def health(request: web.Request) -> web.Response:
    return web.Response(text="")


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                                          "owned_by": "emulator"}]})


def create_app(profile: EngineProfile | None = None) -> web.Application:
    app = web.Application()
    engine = app[ENGINE] = Engine(profile or EngineProfile())

    async def lifetime(app: web.Application):
        task = asyncio.get_running_loop().create_task(engine.run())
        yield
        task.cancel()

    app.cleanup_ctx.append(lifetime)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.emulators.batching")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    for f in fields(EngineProfile):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    args = p.parse_args(argv)
    profile = EngineProfile(**{f.name: getattr(args, f.name) for f in fields(EngineProfile)})
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    web.run_app(create_app(profile), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
