"""Runs a plan: starts the emulator host, the proxy (and its multi-worker variants), the bare hop and
an optional comparison proxy as separate processes, then drives every load point with this process as
the load generator.

How this works.  For each load point every target (native = the emulator directly, proxy, bare hop,
compare, proxy with N workers) gets the same request in its own format.  Targets run in turns --
round 1: A B C, round 2: A B C, ... -- so slow drift of the machine (thermal, other tenants) lands on
all of them alike and cancels in the differences.  Around each turn of a process-backed target its CPU
time and memory are read from /proc; around the whole load point the proxy's /metrics are scraped for
its self-reported added latency.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shlex
import shutil
from dataclasses import dataclass, field
from time import perf_counter

import aiohttp

from loadtest.profiles import PROFILES

from . import hotpath, promscrape, report, scenario, state_cost
from .loadgen import Batch, Endpoint, closed_loop, new_session, open_loop, request_once
from .plan import LoadPoint, Plan
from .procs import Service, free_port, python_module
from .scenario import ALL_PATHS, PATHS, RESPONSES

FORMATS = ("openai", "anthropic", "ollama")
# Reference hops: target name and module.  The bare hop serves the pass-through paths (client and
# backend speak the same format); the minimal hop every path, sent the backend's native request, so
# each translated point has the floor of one hop to the same backend next to it.
HOPS = {"bare": ("bare-hop", "loadtest.bench.bare_hop"), "minimal": ("minimal-hop", "loadtest.bench.minimal_hop")}


@dataclass
class Options:
    out_dir: str
    log_level: str = "info"
    compare_url: str | None = None
    compare_cmd: str | None = None  # may use {port} and {openai_url}
    compare_model: str | None = None
    compare_profile: str = "zero"
    seed: int = 1
    hot_path: int = 0  # requests per path for the profile (0 = skip)
    profiler: str = "pyinstrument"  # or "py-spy" (hotpath.PROFILERS)
    hops: tuple[str, ...] = ("bare",)  # reference hops to run: "bare" and/or "minimal" (HOPS)
    # The gateway's HTTP server (config server.http) per gateway target: the first is "proxy"'s, each
    # other one a gateway of its own, "proxy-<server>" (`--isolated` runs); empty: the config's default.
    server_http: tuple[str, ...] = ()


@dataclass
class Target:
    name: str
    endpoint: Endpoint
    service: Service | None = None


@dataclass
class Measured:
    """One target's numbers over all rounds of a load point."""

    batch: Batch = field(default_factory=Batch)
    cpu: float | None = None  # seconds; None for targets that are not our processes (native)
    rss_mib: float = 0.0
    peak_mib: float = 0.0


def schedule(names: list[str], rounds: int) -> list[str]:
    """The interleaved order: every target once per round, A B C A B C ..."""
    return [name for _ in range(rounds) for name in names]


class Harness:
    def __init__(self, plan: Plan, opts: Options) -> None:
        self.plan = plan
        self.opts = opts
        self.services: list[Service] = []
        self.emulators: dict[str, str] = {}
        self.proxies: dict[int, Service] = {}  # worker count -> proxy
        self.key_proxies: dict[str, Service] = {}  # state store -> proxy serving a limited key
        self.state_urls: dict[str, str] = {}  # state store -> its URL (limited keys)
        self.store_proxies: dict[str, Service] = {}  # state store -> proxy storing Responses API answers
        self.redis_url: str | None = None  # the run's redis-server, shared by every Redis target
        self.hops: dict[str, Service] = {}  # target name -> reference hop process
        self.compare_url = opts.compare_url
        self.max_rate: dict[tuple[str, str, bool], float] = {}
        self.rng = random.Random(opts.seed)
        self.session: aiohttp.ClientSession | None = None
        self.config_path = ""
        self.base_config: dict = {}  # the generated gateway config (config_path's content)
        self.proxy_env: dict[str, str] = {}

    # -- processes ------------------------------------------------------------------------------------
    def _log(self, name: str) -> str:
        return os.path.join(self.opts.out_dir, f"{name}.log")

    async def start(self) -> None:
        os.makedirs(self.opts.out_dir, exist_ok=True)
        self.session = new_session()
        await self._start_emulators()
        self.config_path = config_path = os.path.join(self.opts.out_dir, "proxy-config.yaml")
        chunks = {name: p.chunks for name, p in PROFILES.items()}
        base = scenario.proxy_config(self.emulators, chunks, self.opts.log_level)
        if self.opts.server_http:
            base["server"]["http"] = self.opts.server_http[0]
        self.base_config = base
        with open(config_path, "w") as f:
            json.dump(base, f, indent=1)  # JSON is YAML
        env = self.proxy_env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        for n in sorted({1, self.plan.max_workers()}):
            port = free_port()
            argv = python_module("proxy.cli", "serve", "--config", config_path, "--port", str(port), "--workers", str(n))
            svc = self._spawn(f"proxy-{n}w", argv, port, env=env)
            self.proxies[n] = svc
        await self._start_key_proxies(base, env)
        await self._start_store_proxies(base, env)
        routes = [f"--route={k.replace(':', '-')}={url}" for k, url in self.emulators.items()]
        for hop in self.opts.hops:
            name, module = HOPS[hop]
            port = free_port()
            self.hops[name] = self._spawn(name, python_module(module, "--port", str(port), *routes), port)
        if self.opts.compare_cmd:
            port = free_port()
            openai_url = self.emulators[scenario.emulator_key("openai", self.opts.compare_profile)] + "/v1"
            argv = shlex.split(self.opts.compare_cmd.format(port=port, openai_url=openai_url))
            self.compare_url = self._spawn("compare", argv, port).url
        for svc in self.services[1:]:  # the emulator host already said where it listens
            if svc.name == "redis":
                continue
            await svc.wait_ready("/health/live" if svc.name.startswith("proxy") else "/health")

    async def _state_url(self, kind: str, sqlite_file: str) -> str | None:
        """The URL of a state store: a SQLite file in the output directory, or the run's one
        redis-server (started on first use; None with a note when the binary is absent)."""
        if kind == "sqlite":
            return "sqlite:///" + os.path.abspath(os.path.join(self.opts.out_dir, sqlite_file))
        if kind != "redis":
            raise ValueError(f"unknown state store {kind!r} (sqlite, redis)")
        if self.redis_url is None:
            if shutil.which("redis-server") is None:
                print("bench: redis-server not found; the Redis targets are skipped", flush=True)
                return None
            port = free_port()
            argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            await wait_redis(self._spawn("redis", argv, port).port)
            self.redis_url = f"redis://127.0.0.1:{port}/0"
        return self.redis_url

    def _spawn_proxy(self, name: str, cfg: dict, env: dict[str, str]) -> Service:
        path = os.path.join(self.opts.out_dir, f"{name}.yaml")
        with open(path, "w") as f:
            json.dump(cfg, f, indent=1)
        port = free_port()
        argv = python_module("proxy.cli", "serve", "--config", path, "--port", str(port), "--workers", "1")
        return self._spawn(name, argv, port, env=env)

    async def _start_key_proxies(self, base: dict, env: dict[str, str]) -> None:
        """One proxy per state store in `plan.key_stores`, serving a limited key."""
        for kind in self.plan.key_stores:
            url = await self._state_url(kind, "state.db")
            if url is not None:
                self.state_urls[kind] = url
                self.key_proxies[kind] = self._spawn_proxy(f"proxy-key-{kind}", scenario.limited_key_config(base, url), env)

    async def _start_store_proxies(self, base: dict, env: dict[str, str]) -> None:
        """One proxy per state store in `plan.response_stores`, storing Responses API answers there."""
        for kind in self.plan.response_stores:
            url = await self._state_url(kind, "responses.db")
            if url is not None:
                cfg = scenario.stored_responses_config(base, url)
                self.store_proxies[kind] = self._spawn_proxy(f"proxy-store-{kind}", cfg, env)

    def _spawn(self, name: str, argv: list[str], port: int, env: dict[str, str] | None = None) -> Service:
        svc = Service(name, argv, port, self._log(name), env=env)
        self.services.append(svc)
        return svc

    async def _start_emulators(self) -> None:
        specs = [scenario.emulator_key(fmt, p) for p in self.plan.profiles() for fmt in FORMATS]
        host = Service("emulators", python_module("loadtest.bench.backends", *specs), 0, self._log("emulators"))
        self.services.append(host)
        line = await asyncio.wait_for(asyncio.to_thread(host.proc.stdout.readline), 30)
        if not line:
            raise RuntimeError(f"the emulator host did not start; see {host.log.name}")
        self.emulators = json.loads(line)

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        for svc in reversed(self.services):
            await asyncio.to_thread(svc.stop)

    # -- one load point -------------------------------------------------------------------------------
    def targets(self, lp: LoadPoint) -> list[Target]:
        path, chunks = ALL_PATHS[lp.path], PROFILES[lp.profile].chunks
        emulator = self.emulators[scenario.emulator_key(path.backend, lp.profile)]
        out = [Target("native", scenario.native(emulator, path, chunks, lp.stream))]
        if path is RESPONSES:
            return out + self.responses_targets(lp)
        for n in lp.workers or (1,):
            proxy = self.proxies[n]
            name = f"proxy-{n}w" if lp.workers else "proxy"
            out.append(Target(name, scenario.proxied(proxy.url, path, lp.profile, lp.stream), proxy))
        if not lp.workers:
            for kind, svc in self.key_proxies.items():
                ep = scenario.proxied(svc.url, path, lp.profile, lp.stream, scenario.LIMITED_KEY)
                out.append(Target(f"proxy-key-{kind}", ep, svc))
        for name, hop in self.hops.items():
            if not lp.workers and (path.passthrough or name != "bare-hop"):
                route = f"{path.backend}-{lp.profile}"
                out.append(Target(name, scenario.bare(hop.url, route, path, chunks, lp.stream), hop))
        if self.compare_url and path.name == "openai->openai" and lp.profile == self.opts.compare_profile:
            svc = next((s for s in self.services if s.name == "compare"), None)
            out.append(Target("compare", scenario.compare(self.compare_url, self.opts.compare_model, chunks, lp.stream), svc))
        return out

    def responses_targets(self, lp: LoadPoint) -> list[Target]:
        """`store: false` on the proxy; per state store, `store: true` (a write per request) and
        `previous_response_id` chains (a read of the chain, then a write) on that store's proxy."""
        proxy = self.proxies[1]
        out = [Target("proxy", scenario.proxied(proxy.url, RESPONSES, lp.profile, lp.stream), proxy)]
        for kind, svc in self.store_proxies.items():
            out.append(Target(f"proxy-store-{kind}", scenario.proxied(svc.url, RESPONSES, lp.profile, lp.stream,
                                                                      store=True), svc))  # fmt: skip
            ep = scenario.proxied(svc.url, RESPONSES, lp.profile, lp.stream, store=True, chain=self.plan.chain_length)
            out.append(Target(f"proxy-chain-{kind}", ep, svc))
        return out

    def rate_for(self, lp: LoadPoint) -> float:
        if lp.mode != "open" or lp.rate:
            return lp.rate
        # Half the highest proxied throughput measured so far for this profile/path/stream (or any).
        best = self.max_rate.get((lp.profile, lp.path, lp.stream)) or max(self.max_rate.values(), default=200.0)
        return round(best / 2, 1)

    async def drive(self, lp: LoadPoint, ep: Endpoint, rate: float, requests: int | None = None) -> Batch:
        n = lp.requests if requests is None else requests
        if lp.mode == "open":
            return await open_loop(self.session, ep, rate, n, lp.deadline, self.rng)
        return await closed_loop(self.session, ep, lp.concurrency, n, lp.deadline)

    async def run_point(self, lp: LoadPoint) -> dict:
        targets = {t.name: t for t in self.targets(lp)}
        rate = self.rate_for(lp)
        for t in targets.values():
            await closed_loop(self.session, t.endpoint, min(lp.concurrency, 8), self.plan.warmup, lp.deadline)
        proxy_url = self.proxies[1].url
        model = scenario.proxy_model(lp.profile, ALL_PATHS[lp.path].backend)
        before = await promscrape.scrape(self.session, proxy_url, model, lp.stream)
        keyed = {n: t.service for n, t in targets.items() if n.startswith("proxy-key-")}
        keys_before = {n: await promscrape.scrape(self.session, svc.url, model, lp.stream) for n, svc in keyed.items()}
        measured = {name: Measured() for name in targets}
        for name in schedule(list(targets), lp.rounds):
            t, m = targets[name], measured[name]
            u0 = t.service.usage() if t.service else None
            m.batch.extend(await self.drive(lp, t.endpoint, rate))
            if t.service is not None and u0 is not None:
                u1 = t.service.usage()
                m.cpu = (m.cpu or 0.0) + u1.cpu - u0.cpu
                m.rss_mib, m.peak_mib = u1.rss_mib, max(m.peak_mib, u1.peak_mib)
        after = await promscrape.scrape(self.session, proxy_url, model, lp.stream)
        key_hists = {n: (await promscrape.scrape(self.session, svc.url, model, lp.stream)).minus(keys_before[n])
                     for n, svc in keyed.items()}  # fmt: skip
        result = report.point_result(lp, rate, measured, after.minus(before) if not lp.workers else None, key_hists)
        if lp.mode == "closed" and lp.concurrency > 1:
            for name in ("proxy", "proxy-1w"):
                if name in result["targets"]:
                    self.max_rate[(lp.profile, lp.path, lp.stream)] = result["targets"][name]["throughput_rps"]
        return result

    # -- memory ---------------------------------------------------------------------------------------
    async def open_streams(self, n: int, deadline: float = 120.0) -> dict:
        """Hold `n` streams open at once (slow token rate) through the proxy and watch its memory;
        then the same through the minimal hop when it runs (the reference)."""
        path = PATHS["openai->openai"]
        chunks = PROFILES["fixed-50ms"].chunks
        out = {}
        if "minimal-hop" in self.hops:
            hop = self.hops["minimal-hop"]
            ep = scenario.bare(hop.url, "openai-fixed-50ms", path, chunks, True)
            out["minimal-hop"] = await self._hold_streams(hop, ep, n, deadline)
        proxy = self.proxies[1]
        ep = scenario.proxied(proxy.url, path, "fixed-50ms", True)
        return {**await self._hold_streams(proxy, ep, n, deadline), "references": out}

    async def _hold_streams(self, svc: Service, ep: Endpoint, n: int, deadline: float) -> dict:
        """`n` concurrent streams through `svc`, RSS sampled every 0.1 s; streams still open after
        `deadline` seconds are cancelled and counted as errors."""
        await closed_loop(self.session, ep, 4, 8, 30)
        base = svc.usage()
        batch, samples = Batch(), []
        tasks = [asyncio.create_task(request_once(self.session, ep, perf_counter(), batch)) for _ in range(n)]
        stop_at = perf_counter() + deadline
        while not all(t.done() for t in tasks) and perf_counter() < stop_at:
            samples.append(svc.usage().rss_mib)
            await asyncio.sleep(0.1)
        pending = [t for t in tasks if not t.done()]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        batch.errors += len(pending)
        end = svc.usage()
        return report.open_streams_result(n, batch, base.rss_mib, max(samples, default=end.rss_mib), end)

    async def soak(self, seconds: float) -> dict:
        """Constant closed-loop load on the pass-through path; RSS at start, middle and end."""
        proxy = self.proxies[1]
        ep = scenario.proxied(proxy.url, PATHS["openai->openai"], "zero", False)
        await closed_loop(self.session, ep, 8, self.plan.warmup, 30)
        samples: list[tuple[float, float]] = []
        batch, elapsed = Batch(), 0.0
        step = max(0.5, min(5.0, seconds / 10))
        while elapsed < seconds:
            samples.append((elapsed, proxy.usage().rss_mib))
            b = await closed_loop(self.session, ep, 8, 1 << 30, min(step, seconds - elapsed))
            batch.extend(b)
            elapsed += b.wall
        samples.append((elapsed, proxy.usage().rss_mib))
        return report.soak_result(seconds, batch, samples)

    # -- profile ----------------------------------------------------------------------------------------
    async def hot_path(self, requests: int) -> dict:
        """A separate proxy under the profiler, driven on the pass-through and a translated path
        (non-stream and stream); returns where its busy time went."""
        profiler = self.opts.profiler
        out = os.path.join(self.opts.out_dir, "hotpath.txt" if profiler == "py-spy" else "hotpath.json")
        port = free_port()
        argv = hotpath.profiler_argv(out, "proxy.cli", "serve", "--config", self.config_path, "--port", str(port),
                                     profiler=profiler)  # fmt: skip
        svc = self._spawn("proxy-profiled", argv, port, env=self.proxy_env)
        await svc.wait_ready("/health/live")
        for path, stream in (("openai->openai", False), ("openai->openai", True), ("openai->anthropic", False),
                             ("openai->anthropic", True)):  # fmt: skip
            ep = scenario.proxied(svc.url, PATHS[path], "zero", stream)
            await closed_loop(self.session, ep, 8, requests // (4 if stream else 1), 120)
        await asyncio.to_thread(svc.stop, 60)
        return hotpath.summary(out, profiler=profiler)


async def wait_redis(port: int, timeout: float = 10.0) -> None:
    """Until redis-server answers PING on the port."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PING\r\n")
            ok = (await asyncio.wait_for(reader.readline(), 2)).startswith(b"+PONG")
            writer.close()
            if ok:
                return
        except OSError:
            pass
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError("redis-server did not start")
        await asyncio.sleep(0.05)


async def run(plan: Plan, opts: Options, progress=print) -> dict:
    h = Harness(plan, opts)
    results: dict = {"plan": plan.name, "points": [], "processes": {}}
    try:
        await h.start()
        results["processes"] = {s.name: {"pid": s.pid, "argv": s.argv} for s in h.services}
        for i, lp in enumerate(plan.points, 1):
            progress(f"[{i}/{len(plan.points)}] {lp.profile} {lp.path} {lp.label}")
            results["points"].append(await h.run_point(lp))
        if plan.open_streams:
            progress(f"open streams: {plan.open_streams}")
            results["open_streams"] = await h.open_streams(plan.open_streams)
        if plan.soak_seconds:
            progress(f"soak: {plan.soak_seconds:g} s")
            results["soak"] = await h.soak(plan.soak_seconds)
        if h.state_urls:
            progress(f"state store cost: {plan.state_cost_requests} admissions + settlements per store")
            results["state_cost"] = {kind: await state_cost.measure(url, plan.state_cost_requests)
                                     for kind, url in h.state_urls.items()}  # fmt: skip
        if opts.hot_path:
            progress(f"hot path profile: {opts.hot_path} requests per path")
            results["hot_path"] = await h.hot_path(opts.hot_path)
    finally:
        await h.stop()
    return results
