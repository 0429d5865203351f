"""`llm-proxy bench routing`: routing strategies against emulated continuous-batching servers.

How this works.  Each (workload, strategy) run starts fresh processes -- one emulated vLLM-like server
per backend (loadtest/emulators/batching.py: batch slots, waiting queue, prefix cache, /metrics) and
one gateway whose model `m` routes over them with the strategy under test and background scrapes of
their /metrics -- then sends an open-loop Poisson stream of chat requests (seeded, so every strategy
sees the same arrivals and prompts) for a bounded time, each streamed and timed by the client:

- slow-server: two servers, the second twice as slow; every prompt distinct; at about a third of
  their joint capacity, and (slow-server-heavy) at about two thirds;
- shared-prompts: four servers and many users over 20 shared system prompts (longer than the
  affinity window, so the window is all shared prefix), each with a distinct question;
- restart: two servers; the second one is stopped (gracefully: it finishes what it runs, refuses
  new connections) a third of the way in and started again cold after `down` seconds.

Each run starts with `warmup` seconds of the same load, not measured (other prompts, same system
prompts), because a gateway in production has long learned its servers' speeds and batch sizes.
Per run: time to first token p50/p99, throughput, the servers' own prefix-cache hit ratio (vLLM's
prefix_cache_hits / prefix_cache_queries counters, in tokens), load spread (busiest server's share of
the requests over the mean share), errors, and for restart the seconds from the server being back to
its first request answered through the gateway.  Times are scaled down (ms decode steps) so a run
takes seconds; the scrape interval is scaled alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace

import aiohttp

from loadtest.emulators.batching import MODEL, EngineProfile

from . import routing_report
from .procs import Service, free_port, python_module

STRATEGIES: dict[str, dict] = {
    "round-robin": {"strategy": "round-robin"},
    "least-busy": {"strategy": "least-busy"},
    "load-aware": {"strategy": "load-aware"},
    "load-aware+prefix": {"strategy": "load-aware", "prefix_affinity": {"chars": 2048, "max_imbalance": 1.25}},
}
SCRAPE = {"interval": 0.05, "timeout": 0.25}
ROUTING = {"retry_backoff": 0.02, "retry_backoff_max": 0.1, "breaker_failures": 3, "breaker_cooldown": 10.0}
TIMEOUTS = {"connect": 0.5, "first_byte": 20.0, "idle": 10.0, "total": 60.0}
REQUEST_DEADLINE = 30.0  # seconds, per request
MAX_IN_FLIGHT = 400  # the load generator never holds more open requests than this


@dataclass
class Workload:
    name: str
    servers: list[EngineProfile]
    rate: float  # requests per second (Poisson arrivals)
    seconds: float
    max_tokens: int = 16
    shared_prompts: int = 0  # 0: every prompt distinct
    system_chars: int = 2400
    question_chars: int = 400
    restart: tuple[int, float, float] | None = None  # (server index, at second, seconds down)
    warmup: float = 2.0  # seconds of unmeasured load first: a long-running gateway knows its servers


def workloads(scale: float = 1.0) -> dict[str, Workload]:
    base = EngineProfile(slots=4, decode_ms=8.0, prefill_ms_per_token=0.1, cache_blocks=240)
    return {w.name: w for w in (
        Workload("slow-server", [base, replace(base, speed=2.0)], rate=14, seconds=12 * scale, warmup=2 * scale),
        Workload("slow-server-heavy", [base, replace(base, speed=2.0)], rate=28, seconds=12 * scale,
                 warmup=2 * scale),
        Workload("shared-prompts", [base] * 4, rate=28, seconds=12 * scale, warmup=2 * scale, shared_prompts=20,
                 question_chars=120),
        Workload("restart", [base, base], rate=20, seconds=12 * scale, warmup=2 * scale,
                 restart=(1, 4 * scale, 1.5 * scale)),
    )}


@dataclass
class Sample:
    sent: float
    ttft: float | None = None
    end: float | None = None
    server: str = ""
    error: str = ""


@dataclass
class Run:
    workload: str
    strategy: str
    samples: list[Sample] = field(default_factory=list)
    wall: float = 0.0
    cache: tuple[float, float] = (0.0, 0.0)  # (hits, queries) summed over servers, restarts included
    back_at: float | None = None  # restart: when the server answered its health check again
    loads: dict = field(default_factory=dict)  # the gateway's view of each server at the end (/health/ready)
    affinity: dict = field(default_factory=dict)  # llm_proxy_prefix_affinity_total by result (warm-up included)


def _words(rng: random.Random, chars: int) -> str:
    out, n = [], 0
    while n < chars:
        w = rng.choice(("alpha", "bravo", "delta", "echo", "golf", "hotel", "kilo", "lima", "oscar", "tango",
                        "victor", "zulu", "quantum", "ledger", "vector", "stream"))
        out.append(w)
        n += len(w) + 1
    return " ".join(out)[:chars]


def requests_for(w: Workload, seed: int) -> list[tuple[float, bytes]]:
    """(send offset in seconds, request body) for the whole run: the same for every strategy."""
    rng = random.Random(seed)
    systems = [f"System prompt {k}. " + _words(random.Random(k), w.system_chars) for k in range(w.shared_prompts)]
    out, t = [], 0.0
    while True:
        t += rng.expovariate(w.rate)
        if t >= w.seconds:
            return out
        messages = [{"role": "system", "content": rng.choice(systems)}] if systems else []
        messages.append({"role": "user", "content": f"Question {len(out)}: " + _words(rng, w.question_chars)})
        body = {"model": "m", "messages": messages, "max_tokens": w.max_tokens, "stream": True}
        out.append((t, json.dumps(body).encode()))


def gateway_config(w: Workload, strategy: str, ports: list[int], capacity: bool = True) -> dict:
    """`capacity`: each backend's `load.capacity` is its server's batch slots (as an operator sets it
    to vLLM's --max-num-seqs); else the gateway learns it from the gauges."""
    backends = {
        f"s{i}": {"provider": "openai", "preset": "vllm", "base_url": f"http://127.0.0.1:{p}/v1", "timeouts": TIMEOUTS,
                  "load": {"metrics_url": f"http://127.0.0.1:{p}/metrics", **SCRAPE,
                           **({"capacity": w.servers[i].slots} if capacity else {})}}
        for i, p in enumerate(ports)
    }
    model = {"name": "m", "deployments": [{"backend": b, "model": MODEL} for b in backends], "retries": 2,
             **STRATEGIES[strategy]}
    return {"server": {"log_level": "warning"}, "routing": ROUTING, "backends": backends, "models": [model]}


class Bench:
    def __init__(self, out_dir: str, seed: int, capacity: bool = True) -> None:
        self.out_dir = out_dir
        self.seed = seed
        self.capacity = capacity
        os.makedirs(out_dir, exist_ok=True)

    def _log(self, name: str) -> str:
        return os.path.join(self.out_dir, f"{name}.log")

    def _server(self, i: int, profile: EngineProfile, port: int) -> Service:
        args = [f"--{k.replace('_', '-')}={v}" for k, v in asdict(profile).items()]
        return Service(f"server-{i}", python_module("loadtest.emulators.batching", "--port", str(port), *args), port,
                       self._log(f"server-{i}"))

    async def run(self, w: Workload, strategy: str) -> Run:
        ports = [free_port() for _ in w.servers]
        servers = [self._server(i, p, port) for i, (p, port) in enumerate(zip(w.servers, ports))]
        gw: Service | None = None
        run = Run(w.name, strategy)
        try:
            for s in servers:
                await s.wait_ready("/health")
            path = os.path.join(self.out_dir, f"gateway-{w.name}-{strategy}.json")
            with open(path, "w") as f:
                json.dump(gateway_config(w, strategy, ports, self.capacity), f, indent=1)  # JSON is YAML
            port = free_port()
            gw = Service("gateway", python_module("proxy.cli", "serve", "--config", path, "--port", str(port)), port,
                         self._log(f"gateway-{w.name}-{strategy}"))
            await gw.wait_ready("/health/live")
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)) as session:
                warm = replace(w, seconds=w.warmup, restart=None)
                await self._drive(session, warm, gw.url, servers, Run(w.name, strategy), self.seed + 1000)
                hits, queries = await _add_cache(session, servers, (0.0, 0.0))
                run.cache = (-hits, -queries)
                await self._drive(session, w, gw.url, servers, run, self.seed)
                async with session.get(gw.url + "/health/ready") as resp:
                    run.loads = {k: v.get("load") for k, v in (await resp.json())["backends"].items()}
                async with session.get(gw.url + "/metrics") as resp:
                    run.affinity = _affinity_counts(await resp.text())
                run.cache = await _add_cache(session, servers, run.cache)
        finally:
            for svc in [gw, *servers]:
                if svc is not None:
                    await asyncio.to_thread(svc.stop)
        return run

    async def _drive(self, session: aiohttp.ClientSession, w: Workload, url: str, servers: list[Service],
                     run: Run, seed: int) -> None:
        plan = requests_for(w, seed)
        t0 = time.monotonic()
        restart = asyncio.ensure_future(self._restart(session, w, servers, run, t0)) if w.restart else None
        gate = asyncio.Semaphore(MAX_IN_FLIGHT)
        tasks = []
        for offset, body in plan:
            delay = t0 + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sample = Sample(time.monotonic() - t0)
            run.samples.append(sample)
            tasks.append(asyncio.ensure_future(_one(session, gate, url, body, sample, t0)))
        await asyncio.gather(*tasks)
        if restart is not None:
            await restart
        run.wall = time.monotonic() - t0

    async def _restart(self, session: aiohttp.ClientSession, w: Workload, servers: list[Service], run: Run,
                       t0: float) -> None:
        assert w.restart is not None
        i, at, down = w.restart
        await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
        run.cache = await _add_cache(session, [servers[i]], run.cache)
        old = servers[i]
        await asyncio.to_thread(old.stop)  # SIGINT: aiohttp stops listening, lets running requests finish
        await asyncio.sleep(down)
        servers[i] = self._server(i, w.servers[i], old.port)
        await servers[i].wait_ready("/health")
        run.back_at = time.monotonic() - t0


async def _one(session: aiohttp.ClientSession, gate: asyncio.Semaphore, url: str, body: bytes, sample: Sample,
               t0: float) -> None:
    async with gate:
        try:
            async with asyncio.timeout(REQUEST_DEADLINE):
                async with session.post(url + "/v1/chat/completions", data=body,
                                        headers={"Content-Type": "application/json"}) as resp:
                    sample.server = resp.headers.get("x-llm-proxy-deployment", "").split("/")[0]
                    if resp.status != 200:
                        sample.error = f"HTTP {resp.status}"
                        await resp.read()
                        return
                    async for chunk in resp.content.iter_any():
                        if sample.ttft is None and b'"content"' in chunk:
                            sample.ttft = time.monotonic() - t0 - sample.sent
                        if b'"error"' in chunk:
                            sample.error = "error event"
            sample.end = time.monotonic() - t0
        except (aiohttp.ClientError, TimeoutError) as exc:
            sample.error = type(exc).__name__


async def _add_cache(session: aiohttp.ClientSession, servers: list[Service],
                     total: tuple[float, float]) -> tuple[float, float]:
    """`total` plus each server's prefix-cache (hits, queries) counters (tokens)."""
    hits, queries = total
    for s in servers:
        try:
            async with session.get(s.url + "/metrics", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError):
            continue
        for line in text.splitlines():
            if line.startswith("vllm:prefix_cache_hits_total"):
                hits += float(line.rsplit(" ", 1)[1])
            elif line.startswith("vllm:prefix_cache_queries_total"):
                queries += float(line.rsplit(" ", 1)[1])
    return hits, queries


def _affinity_counts(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("llm_proxy_prefix_affinity_total{"):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            out[result] = float(line.rsplit(" ", 1)[1])
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llm-proxy bench routing", description=__doc__.split("\n")[0])
    p.add_argument("--out", default=None, help="output directory (default bench-results/routing-<time>)")
    p.add_argument("--workloads", default=",".join(workloads()), help="comma-separated subset")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated subset")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every run's duration (1.0 = 12 s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--learn-capacity", action="store_true",
                   help="leave load.capacity unset: the gateway learns each server's batch size from its gauges")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    out = args.out or os.path.join("bench-results", time.strftime("routing-%Y%m%d-%H%M%S"))
    chosen = workloads(args.scale)
    names = [n for n in args.workloads.split(",") if n]
    strategies = [s for s in args.strategies.split(",") if s]
    unknown = [n for n in names if n not in chosen] + [s for s in strategies if s not in STRATEGIES]
    if unknown:
        p.error(f"unknown workload or strategy: {', '.join(unknown)}")
    bench = Bench(out, args.seed, capacity=not args.learn_capacity)

    async def all_runs() -> list[Run]:
        runs = []
        for name in names:
            for strategy in strategies:
                print(f"running {name} / {strategy} ...", flush=True)
                runs.append(await bench.run(chosen[name], strategy))
        return runs

    runs = asyncio.run(all_runs())
    results = [routing_report.summarise(r, chosen[r.workload]) for r in runs]
    files = routing_report.write(results, out, plot=not args.no_plot)
    print(routing_report.markdown(results))
    print("wrote " + ", ".join(files))
    return 1 if any(r["errors"] and r["workload"] != "restart" for r in results) else 0
