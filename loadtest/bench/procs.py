"""The benchmark's processes: the proxy, the bare hop and the emulator host each run in their own
process, so the load generator (this process) does not share their event loop, and their CPU time and
memory can be read from /proc/<pid> (summed over a process and its children, for `--workers N`)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import aiohttp

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Direct and indirect children of `pid` (by scanning /proc: works without psutil)."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time of one process in seconds (0 when it is gone): the sum of its threads' on-CPU
    nanoseconds from /proc/<pid>/task/*/schedstat -- /proc/<pid>/stat counts in clock ticks (10 ms),
    too coarse for microseconds per request; it is the fallback."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of one process in KiB: current and peak resident memory."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


@dataclass
class Usage:
    cpu: float  # seconds, summed over the tree
    rss_mib: float  # current, summed over the tree
    peak_mib: float  # per-process peaks, summed (an upper bound of the tree's peak)


class Service:
    """A child process serving HTTP on 127.0.0.1:port."""

    def __init__(self, name: str, argv: list[str], port: int, log_path: str,
                 env: dict[str, str] | None = None):  # fmt: skip
        self.name = name
        self.argv = argv
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            _dies_with_parent(argv), stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,  # env None = inherit
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tree(self) -> list[int]:
        """The process and its workers (the CLI's `--workers N` supervisor spawns children)."""
        return [self.pid, *_children(self.pid)]

    def usage(self) -> Usage:
        pids = self.tree()
        cpu = sum(cpu_seconds(p) for p in pids)
        mem = [memory_kib(p) for p in pids]
        return Usage(cpu, sum(m[0] for m in mem) / 1024, sum(m[1] for m in mem) / 1024)

    async def wait_ready(self, path: str = "/", timeout: float = 30.0) -> None:
        """Poll until the port answers HTTP (any status) or fail with the child's log tail."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    async with s.get(self.url + path, timeout=aiohttp.ClientTimeout(total=2)) as r:
                        await r.read()
                        if r.status < 500:
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                await asyncio.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not start (exit code {self.proc.poll()}); see {self.log.name}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT (lets a profiler write its output), then SIGKILL the process group if it lingers."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()


# Each child runs in its own session (so `stop` can signal its whole group) and therefore outlives a
# harness that is killed (a CI timeout): util-linux's setpriv asks the kernel to send it SIGTERM when
# the harness dies, instead of leaving emulators and proxies running on a shared machine.
_SETPRIV = shutil.which("setpriv")


def _dies_with_parent(argv: list[str]) -> list[str]:
    return [_SETPRIV, "--pdeathsig", "TERM", "--", *argv] if _SETPRIV and sys.platform == "linux" else argv


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


# -- CPU pinning (`--isolated`) --------------------------------------------------------------------------


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask, which a container or taskset may narrow)."""
    return sorted(os.sched_getaffinity(0))


def tasks(pid: int) -> list[int]:
    """Every thread of a process (empty when it is gone)."""
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def pin(pids: list[int], cpus: set[int]) -> None:
    """Every thread of every process in `pids` on `cpus` (threads and children made later inherit it)."""
    for pid in pids:
        for tid in tasks(pid):
            try:
                os.sched_setaffinity(tid, cpus)
            except (ProcessLookupError, PermissionError):
                pass


def affinity(pid: int) -> set[int]:
    """The union of the CPUs the threads of `pid` may run on."""
    out: set[int] = set()
    for tid in tasks(pid):
        try:
            out |= os.sched_getaffinity(tid)
        except OSError:
            pass
    return out


def cpu_busy_jiffies() -> dict[int, tuple[int, int]]:
    """Per CPU, (busy, total) clock ticks since boot from /proc/stat (busy = total - idle - iowait)."""
    out = {}
    with open("/proc/stat", "rb") as f:
        for line in f:
            if not line.startswith(b"cpu") or line[3:4] == b" ":
                continue
            name, *values = line.split()
            ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            total = sum(ticks)
            out[int(name[3:])] = (total - ticks[3] - ticks[4], total)
    return out


def busy_share(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], cpu: int) -> float | None:
    """The share (0-1) of the time `cpu` was busy between two `cpu_busy_jiffies` readings."""
    if cpu not in before or cpu not in after:
        return None
    busy, total = after[cpu][0] - before[cpu][0], after[cpu][1] - before[cpu][1]
    return busy / total if total > 0 else None
