"""Run a format's probe set against one server, each probe under its own deadline and all of them
under a total one, and collect the results into a `Report`.

Probes run one after another (a conformance run must not look like load, and one server slot is
enough); a probe that outlives its deadline is cancelled and reported `timeout`, and once the total
deadline has passed the probes not yet run are reported `timeout` without being sent.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from dataclasses import dataclass, field

import aiohttp

from .http import Session, Target
from .probe import FAIL, LEVELS, PASS, PROBE_SET_VERSION, TIMEOUT, UNSUPPORTED, Fail, Probe, Unsupported, probes


@dataclass(frozen=True)
class Result:
    id: str
    level: str
    title: str
    status: str
    evidence: str
    seconds: float

    @property
    def failed(self) -> bool:
        return self.status in (FAIL, TIMEOUT)


@dataclass
class Report:
    target: Target
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0

    def scores(self) -> dict[str, dict[str, int]]:
        """Per level: how many probes passed, failed, timed out, were not supported, and ran."""
        out = {}
        for level in LEVELS:
            rows = [r for r in self.results if r.level == level]
            if rows:
                out[level] = {s: sum(r.status == s for r in rows) for s in (PASS, FAIL, TIMEOUT, UNSUPPORTED)}
                out[level]["total"] = len(rows)
        return out

    @property
    def ok(self) -> bool:
        """No core probe failed or timed out: what the exit status reports."""
        return not any(r.failed for r in self.results if r.level == "core")

    def as_dict(self) -> dict:
        t = self.target
        return {
            "probe_set": PROBE_SET_VERSION, "format": t.format, "url": t.url, "model": t.model,
            "ok": self.ok, "seconds": round(self.seconds, 3), "scores": self.scores(),
            "results": [{"id": r.id, "level": r.level, "title": r.title, "status": r.status,
                         "evidence": r.evidence, "seconds": round(r.seconds, 3)} for r in self.results],
        }


def select(fmt: str, only: frozenset[str] = frozenset()) -> list[Probe]:
    """The probes `--only` keeps (ids, groups or levels; empty keeps all).  Unknown names are an error
    so that a typo does not turn into an empty, passing run."""
    chosen = probes(fmt)
    known = {p.id for p in chosen} | {p.group for p in chosen} | set(LEVELS)
    unknown = only - known
    if unknown:
        raise ValueError(f"unknown probe, group or level: {', '.join(sorted(unknown))}")
    return [p for p in chosen if p.selected(only)]


async def run_probe(p: Probe, session: Session, timeout: float) -> Result:
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            status, evidence = PASS, await p.fn(session)
    except Fail as exc:
        status, evidence = FAIL, str(exc)
    except Unsupported as exc:
        status, evidence = UNSUPPORTED, str(exc)
    except TimeoutError:
        status, evidence = TIMEOUT, f"no complete answer within {timeout:g}s"
    except (aiohttp.ClientError, ValueError) as exc:  # refused, reset, oversized, ...
        status, evidence = FAIL, f"{type(exc).__name__}: {exc}"
    return Result(p.id, p.level, p.title, status, " ".join(evidence.split()), time.monotonic() - started)


async def run(target: Target, only: frozenset[str] = frozenset(), timeout: float = 30.0,
              deadline: float = 300.0) -> Report:
    """Run the selected probes; `timeout` bounds each probe, `deadline` the whole run."""
    chosen = select(target.format, only)
    headers = importlib.import_module(f"proxy.conformance.{target.format}_probes").request_headers(target.api_key)
    report = Report(target)
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
        session = Session(target, http, headers)
        for p in chosen:
            left = deadline - (time.monotonic() - started)
            if left <= 0:
                report.results.append(Result(p.id, p.level, p.title, TIMEOUT,
                                             f"not run: the total deadline of {deadline:g}s had passed", 0.0))
                continue
            report.results.append(await run_probe(p, session, min(timeout, left)))
    report.seconds = time.monotonic() - started
    return report
