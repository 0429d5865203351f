"""`llm-proxy bench --compare-hop minimal --isolated`: issue 16's setup -- each proxy alone on its core,
`wrk` for throughput, a c=1 loop for latency, a backend that costs next to nothing.

How this works.  The CPUs this process may use are split in two: the last one is the *proxy core*,
the others the *load side*.  The lean canned backend (lean_backend.py: the emulators' answers replayed
from bytes), this process (the c=1 aiohttp loop) and every `wrk` run are pinned to the load side; the
gateway (one worker; with `--server-http raw,aiohttp` one gateway per HTTP server) and the minimal hop
are pinned to the proxy core, and only one target is driven at a time, so whichever is measured has
that core to itself (other tenants of the machine aside: read the load average and the target's share
of its core next to each figure).

- Concurrency 1 points: the runner's own interleaved aiohttp loop (direct call to the backend, then
  every target, in rounds), which gives added p50 / p99 and stream TTFT over the direct call.
- Concurrency > 1 points: `wrk -t1 -cC -dS` per round, every target in turn, round after round; requests
  per second, wrk's latency percentiles, and around each round the target's CPU time (/proc schedstat),
  the backend's, wrk's, and how busy the load side and the proxy core were (/proc/stat).  A round with
  socket errors or non-2xx answers fails the point: its throughput is not reported.  Without `wrk` on
  PATH these points are skipped with a message.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from typing import Any

from loadtest.profiles import PROFILES

from . import scenario, wrk
from .loadgen import closed_loop
from .plan import LoadPoint, Plan
from .procs import Service, affinity, busy_share, cpu_busy_jiffies, pin, python_module, usable_cpus
from .runner import FORMATS, Harness, Options, Target, schedule
from .scenario import ALL_PATHS

QUANTILES = ("p50", "p75", "p90", "p99")  # wrk's --latency percentiles
# Per round, shares of one core (0-1): how busy the proxy core and the load side were (anyone's work,
# /proc/stat), and how much of that was the target's, the backend's and wrk's own CPU time.
SHARES = ("proxy_busy", "target_share", "load_busy", "backend_share", "wrk_share")


def split_cpus(cpus: list[int]) -> tuple[set[int], set[int]]:
    """(load side, proxy core): the last CPU for the proxy, the rest for the backend and the load."""
    if len(cpus) < 2:
        raise SystemExit(f"llm-proxy bench --isolated needs at least 2 CPUs to pin the proxy alone on one; "
                         f"this process may use {len(cpus)} ({', '.join(map(str, cpus)) or 'none'})")  # fmt: skip
    return set(cpus[:-1]), {cpus[-1]}


@dataclass
class WrkTarget:
    """One target's wrk rounds in a load point."""

    requests: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    backend_cpu: float = 0.0
    wrk_cpu: float = 0.0
    errors: int = 0
    rounds: list[dict[str, Any]] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    def result(self) -> dict[str, Any]:
        ok = self.requests > 0 and not self.errors
        per_req = (lambda s: round(s / self.requests * 1e6, 1)) if self.requests else (lambda s: None)
        lat = [r["latency_ms"] for r in self.rounds if r.get("latency_ms")]
        busy = {k: _mean([r[k] for r in self.rounds if r.get(k) is not None]) for k in SHARES}
        return {
            "requests": self.requests, "errors": self.errors,
            "throughput_rps": round(self.requests / self.seconds, 1) if ok and self.seconds else None,
            "cpu_us_per_req": per_req(self.cpu), "backend_cpu_us_per_req": per_req(self.backend_cpu),
            "wrk_cpu_us_per_req": per_req(self.wrk_cpu),
            "cpu_us_per_chunk": None,  # per relayed chunk: the c=1 stream points (wrk counts no events)
            "latency_ms": {q: _mean([x[q] for x in lat if q in x]) for q in QUANTILES} if lat else {},
            **busy, "rounds": self.rounds, "error_samples": self.error_samples[:5],
        }  # fmt: skip


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 3) if xs else None


class IsolatedHarness(Harness):
    def __init__(self, plan: Plan, opts: Options, cpus: list[int], one_write: bool = False) -> None:
        super().__init__(plan, opts)
        self.load_cpus, self.proxy_cpus = split_cpus(cpus)
        self.one_write = one_write
        self.backend: Service | None = None
        self.backend_info: dict[str, Any] = {}
        self.own_cpus = os.sched_getaffinity(0)
        self.others: dict[str, Service] = {}  # "proxy-<server>" -> a gateway on another HTTP server

    async def _start_emulators(self) -> None:
        chunks = PROFILES["zero"].chunks
        argv = python_module("loadtest.bench.lean_backend", "--chunks", str(chunks))
        if self.one_write:
            argv.append("--one-write")
        self.backend = host = Service("lean-backend", argv, 0, self._log("lean-backend"))
        self.services.append(host)
        pin([host.pid], self.load_cpus)
        line = await asyncio.wait_for(asyncio.to_thread(host.proc.stdout.readline), 60)
        if not line:
            raise RuntimeError(f"the lean backend did not start; see {host.log.name}")
        self.backend_info = json.loads(line)
        url = self.backend_info["url"]
        self.emulators = {scenario.emulator_key(fmt, p): url for p in self.plan.profiles() for fmt in FORMATS}

    def _spawn(self, name: str, argv: list[str], port: int, env: dict[str, str] | None = None) -> Service:
        svc = super()._spawn(name, argv, port, env)
        pin([svc.pid], self.proxy_cpus)  # as it starts: what it makes later inherits the mask
        return svc

    async def start(self) -> None:
        await super().start()
        await self._start_other_servers()
        # Once more now that every thread and worker exists; then this process joins the load side.
        for svc in self.services:
            pin(svc.tree(), self.load_cpus if svc is self.backend else self.proxy_cpus)
        pin([os.getpid()], self.load_cpus)

    async def stop(self) -> None:
        try:
            await super().stop()
        finally:
            pin([os.getpid()], self.own_cpus)

    async def _start_other_servers(self) -> None:
        """One more gateway per other HTTP server asked for (`--server-http raw,aiohttp`): the same
        config but `server.http`, a target of its own ("proxy-<server>") interleaved with the others."""
        base = self.base_config
        for server in self.opts.server_http[1:]:
            cfg = {**base, "server": {**base["server"], "http": server}}
            svc = self.others[f"proxy-{server}"] = self._spawn_proxy(f"proxy-{server}", cfg, self.proxy_env)
            await svc.wait_ready("/health/live")

    def targets(self, lp: LoadPoint) -> list[Target]:
        out = super().targets(lp)
        path = ALL_PATHS[lp.path]
        return out + [Target(name, scenario.proxied(svc.url, path, lp.profile, lp.stream), svc)
                      for name, svc in self.others.items()]  # fmt: skip

    def pinning(self) -> dict[str, Any]:
        """The split, and the CPUs each process's threads may use as read back from the kernel."""
        actual = {svc.name: sorted(set().union(*(affinity(p) for p in svc.tree()))) for svc in self.services}
        return {"load_cpus": sorted(self.load_cpus), "proxy_cpus": sorted(self.proxy_cpus),
                "affinity": {**actual, "load generator": sorted(affinity(os.getpid()))},
                "backend": self.backend_info, "one_write": self.one_write}  # fmt: skip

    async def wrk_point(self, lp: LoadPoint) -> dict[str, Any]:
        targets = {t.name: t for t in self.targets(lp) if t.name != "native"}
        seconds = max(1, round(lp.deadline))
        scripts = {}
        for name, t in targets.items():
            await closed_loop(self.session, t.endpoint, min(lp.concurrency, 8), self.plan.warmup, lp.deadline)
            slug = f"{lp.path.replace('->', '-')}-{'stream' if lp.stream else 'json'}-{name}"
            scripts[name] = wrk.write_script(t.endpoint, self.opts.out_dir, slug)
        measured = {name: WrkTarget() for name in targets}
        for name in schedule(list(targets), lp.rounds):
            await self._wrk_round(lp, seconds, targets[name], scripts[name], measured[name])
        return {
            "profile": lp.profile, "path": lp.path, "stream": lp.stream, "mode": lp.mode, "driver": "wrk",
            "label": f"{lp.label}, wrk", "concurrency": lp.concurrency, "seconds_per_round": seconds,
            "rounds": lp.rounds, "targets": {name: m.result() for name, m in measured.items()},
        }  # fmt: skip

    async def _wrk_round(self, lp: LoadPoint, seconds: int, t: Any, script: str, m: WrkTarget) -> None:
        u0, b0, w0, j0 = t.service.usage().cpu, self.backend.usage().cpu, _children_cpu(), cpu_busy_jiffies()
        try:
            r = await wrk.run(t.endpoint.url, script, lp.concurrency, seconds, self.load_cpus)
        except (RuntimeError, ValueError, OSError) as exc:
            m.errors += 1
            m.error_samples.append(f"{type(exc).__name__}: {exc}"[:300])
            return
        u1, b1, w1, j1 = t.service.usage().cpu, self.backend.usage().cpu, _children_cpu(), cpu_busy_jiffies()
        m.requests += r.requests
        m.seconds += r.seconds
        m.cpu += u1 - u0
        m.backend_cpu += b1 - b0
        m.wrk_cpu += w1 - w0
        m.errors += r.errors
        if r.errors:
            m.error_samples.append(f"wrk: {r.socket_errors} socket errors, {r.non_2xx} non-2xx answers")
        m.rounds.append({
            "rps": r.rps, "requests": r.requests, "latency_ms": r.latency_ms, "errors": r.errors,
            "proxy_busy": _share(j0, j1, self.proxy_cpus), "target_share": _per_s(u1 - u0, r.seconds),
            "load_busy": _share(j0, j1, self.load_cpus), "backend_share": _per_s(b1 - b0, r.seconds),
            "wrk_share": _per_s(w1 - w0, r.seconds),
        })  # fmt: skip


def _children_cpu() -> float:
    """CPU seconds of this process's children that have been waited for: each wrk run, once it ended
    (clock ticks: 10 ms, fine over a run of seconds)."""
    t = os.times()
    return t.children_user + t.children_system


def _per_s(cpu: float, seconds: float) -> float | None:
    return round(cpu / seconds, 3) if seconds > 0 else None


def _share(j0: dict, j1: dict, cpus: set[int]) -> float | None:
    shares = [busy_share(j0, j1, c) for c in sorted(cpus)]
    shares = [s for s in shares if s is not None]
    return round(sum(shares) / len(shares), 3) if shares else None


async def run(plan: Plan, opts: Options, cpus: list[int] | None = None, one_write: bool = False,
              progress=print) -> dict:  # fmt: skip
    """The plan's c=1 points with the runner's loop, its c>1 points with wrk (skipped without it)."""
    h = IsolatedHarness(plan, opts, usable_cpus() if cpus is None else cpus, one_write)
    results: dict = {"plan": plan.name, "points": [], "wrk_points": [], "processes": {}, "skipped": []}
    have_wrk = wrk.path() is not None
    if not have_wrk:
        note = "wrk not found on PATH (apt-get install wrk): the throughput points are skipped"
        progress(f"bench: {note}")
        results["skipped"].append(note)
    try:
        await h.start()
        results["processes"] = {s.name: {"pid": s.pid, "argv": s.argv} for s in h.services}
        results["pinning"] = h.pinning()
        for i, lp in enumerate(plan.points, 1):
            if lp.concurrency > 1 and not have_wrk:
                continue
            driver = ", wrk" if lp.concurrency > 1 else ""
            progress(f"[{i}/{len(plan.points)}] {lp.profile} {lp.path} {lp.label}{driver}")
            if lp.concurrency > 1:
                results["wrk_points"].append(await h.wrk_point(lp))
            else:
                results["points"].append(await h.run_point(lp))
    finally:
        await h.stop()
    return results


def _f(x: Any, nd: int = 0) -> str:
    return "–" if x is None else f"{x:,.{nd}f}"


def markdown(results: dict[str, Any]) -> str:
    """The wrk points: per target, throughput, latency, CPU per request and how busy each side was."""
    pinning = results.get("pinning", {})
    out = [(f"wrk points (`-t1`, closed loop): proxy core {pinning.get('proxy_cpus')}, load side "
            f"{pinning.get('load_cpus')} (lean backend, wrk, this process)."), "",
           ("| Path | Load | Target | req/s | per round | p50 / p90 / p99 (ms) | CPU / req (µs) "
            "| backend + wrk CPU / req (µs) | proxy core: target / all busy | load side: backend + wrk / all busy "
            "| errors |"),
           "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for p in results.get("wrk_points", []):
        for name, t in p["targets"].items():
            lat = t["latency_ms"]
            cells = [p["path"], p["label"], name, _f(t["throughput_rps"]),
                     " / ".join(_f(r["rps"]) for r in t["rounds"]),
                     " / ".join(_f(lat.get(q), 2) for q in ("p50", "p90", "p99")), _f(t["cpu_us_per_req"], 1),
                     f"{_f(t['backend_cpu_us_per_req'], 1)} + {_f(t['wrk_cpu_us_per_req'], 1)}",
                     f"{_pct(t['target_share'])} / {_pct(t['proxy_busy'])}",
                     f"{_pct(_sum(t['backend_share'], t['wrk_share']))} / {_pct(t['load_busy'])}",
                     str(t["errors"]) + (f" ({t['error_samples'][0]})" if t["error_samples"] else "")]  # fmt: skip
            out.append("| " + " | ".join(cells) + " |")
    out += [f"\n{note}" for note in results.get("skipped", [])]
    return "\n".join(out) + "\n"


def _sum(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.0f} %"
