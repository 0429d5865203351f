"""`wrk` as the throughput load generator of `--isolated` runs: a closed loop of C connections on one
thread (`-t1`), bounded by a duration, the POST body and headers set by a generated Lua script, and its
`--latency` summary parsed.

wrk is C on epoll: it costs a fraction of what a Python load generator costs per request, so on a
2-CPU machine it can share one core with the backend and still keep the proxy's core busy.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from dataclasses import dataclass, field

from .loadgen import Endpoint
from .procs import pin

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}  # wrk's time units, to ms
_RPS = re.compile(rb"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(rb"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", re.MULTILINE)
_PCT = re.compile(rb"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_SOCKET = re.compile(rb"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON2XX = re.compile(rb"Non-2xx or 3xx responses: (\d+)")


def path() -> str | None:
    return shutil.which("wrk")


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    latency_ms: dict[str, float] = field(default_factory=dict)  # "p50", "p75", "p90", "p99"
    socket_errors: int = 0
    non_2xx: int = 0

    @property
    def errors(self) -> int:
        return self.socket_errors + self.non_2xx


def parse(out: bytes) -> WrkResult:
    """wrk's `--latency` summary; raises ValueError when it has no request count or rate (wrk failed)."""
    rps, total = _RPS.search(out), _TOTAL.search(out)
    if rps is None or total is None:
        raise ValueError(f"no wrk summary in: {out[-400:]!r}")
    seconds = float(total.group(2)) * UNITS[total.group(3).decode()] / 1e3
    latency = {f"p{m.group(1).decode()}": float(m.group(2)) * UNITS[m.group(3).decode()] for m in _PCT.finditer(out)}
    sock = _SOCKET.search(out)
    non = _NON2XX.search(out)
    return WrkResult(
        requests=int(total.group(1)), seconds=seconds, rps=float(rps.group(1)), latency_ms=latency,
        socket_errors=sum(map(int, sock.groups())) if sock else 0, non_2xx=int(non.group(1)) if non else 0,
    )  # fmt: skip


def _lua_string(b: bytes) -> str:
    """A Lua long string holding `b` as is (the level is chosen so the body cannot close it)."""
    text = b.decode()
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    lead = "\n" if text.startswith("\n") else ""  # Lua drops a newline right after the opening bracket
    return f"[{eq}[{lead}{text}]{eq}]"


def lua_script(ep: Endpoint) -> str:
    """The request of `ep`: method, body and headers (wrk sends them on every request)."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(ep.body)}"]
    # `t[ [[k]] ]`: without the spaces Lua would read `t[[[` as the start of a long string
    lines += [f"wrk.headers[ {_lua_string(k.encode())} ] = {_lua_string(v.encode())}" for k, v in ep.headers.items()]
    return "\n".join(lines) + "\n"


def write_script(ep: Endpoint, directory: str, name: str) -> str:
    script = os.path.join(directory, f"wrk-{name}.lua")
    with open(script, "w") as f:
        f.write(lua_script(ep))
    return script


def argv(url: str, script: str, connections: int, seconds: int, timeout_s: int = 10) -> list[str]:
    return [path() or "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout_s}s", "--latency",
            "-s", script, url]  # fmt: skip


async def run(url: str, script: str, connections: int, seconds: int, cpus: set[int] | None = None) -> WrkResult:
    """One bounded wrk run (killed if it outlives its duration by 15 s), on `cpus` when given."""
    sub = asyncio.subprocess
    proc = await sub.create_subprocess_exec(*argv(url, script, connections, seconds), stdout=sub.PIPE,
                                            stderr=sub.STDOUT, stdin=sub.DEVNULL)  # fmt: skip
    if cpus:
        pin([proc.pid], cpus)  # as it starts: the threads it makes later inherit the mask
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), seconds + 15)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"wrk did not finish within {seconds + 15} s") from None
    return parse(out)
