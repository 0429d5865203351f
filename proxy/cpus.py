"""How many CPUs this process may really use: the CPUs it may be scheduled on, capped by the cgroup CPU
quota (`docker run --cpus`, Kubernetes `limits.cpu`), rounded up.

`os.cpu_count()` and `nproc` see every CPU of the host (or the cpuset) but not a quota, so a container
limited to one CPU on a 16-core node would start 16 workers that then throttle each other.  Both cgroup
versions are read: v2's `cpu.max` and v1's `cpu.cfs_quota_us` / `cpu.cfs_period_us`.  The process's
own cgroup and every ancestor up to the mount point are checked and the tightest limit wins, which is
right both inside a container (the mount is the container's own cgroup) and on a host with nested
cgroups.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_MOUNT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(mount: Path = CGROUP_MOUNT, proc_cgroup: Path = PROC_SELF_CGROUP) -> int:
    schedulable = len(os.sched_getaffinity(0))
    quota = quota_cpus(mount, proc_cgroup)
    return max(1, min(schedulable, quota)) if quota is not None else schedulable


def quota_cpus(mount: Path = CGROUP_MOUNT, proc_cgroup: Path = PROC_SELF_CGROUP) -> int | None:
    """The tightest CPU quota over this process's cgroup and its ancestors, in whole CPUs (rounded up);
    None when there is no quota (or no cgroup filesystem to read)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    if (mount / "cgroup.controllers").exists():  # v2: one unified hierarchy
        path = next((ln.split(":", 2)[2] for ln in lines if ln.startswith("0::")), "/")
        limits = [_v2_limit(d) for d in _dirs(mount, path)]
    else:  # v1: the cpu controller has its own mount (`cpu`, or `cpu,cpuacct` with a `cpu` symlink)
        path = next((p for _, ctrls, p in (ln.split(":", 2) for ln in lines if ln.count(":") >= 2)
                     if "cpu" in ctrls.split(",")), "/")  # fmt: skip
        root = next((mount / name for name in ("cpu", "cpu,cpuacct") if (mount / name).is_dir()), None)
        limits = [_v1_limit(d) for d in _dirs(root, path)] if root else []
    found = [n for n in limits if n is not None]
    return min(found) if found else None


def _dirs(root: Path, path: str) -> list[Path]:
    """The cgroup's directory and its ancestors up to the mount root, those that exist.  In a container
    the recorded path may be the host's (`/docker/<id>`) while the mount is already that cgroup: then
    only the root exists, and it is the right one."""
    parts = [p for p in path.split("/") if p]
    candidates = [root.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]
    return [d for d in candidates if d.is_dir()]


def _v2_limit(d: Path) -> int | None:
    try:
        quota, period = (d / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max" or int(period) <= 0:
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def _v1_limit(d: Path) -> int | None:
    try:
        quota = int((d / "cpu.cfs_quota_us").read_text())
        period = int((d / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:  # -1: no quota
        return None
    return max(1, math.ceil(quota / period))
