"""proxy/cpus.py: the worker count follows the cgroup CPU quota of either cgroup version, rounded up,
the tightest of the process's cgroup and its ancestors, never above the schedulable CPUs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxy.cpus import quota_cpus, usable_cpus

SCHEDULABLE = len(os.sched_getaffinity(0))


def v2(tmp_path: Path, own: str, limits: dict[str, str]) -> tuple[Path, Path]:
    """A cgroup v2 mount with cpu.max files at the given paths, and a /proc/self/cgroup naming `own`."""
    mount = tmp_path / "cgroup"
    mount.mkdir()
    (mount / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (mount / own.strip("/")).mkdir(parents=True, exist_ok=True)
    for path, value in limits.items():
        (mount / path.strip("/")).mkdir(parents=True, exist_ok=True)
        (mount / path.strip("/") / "cpu.max").write_text(value + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"0::{own}\n")
    return mount, proc


def v1(tmp_path: Path, own: str, limits: dict[str, tuple[int, int]], controller: str = "cpu,cpuacct"):
    mount = tmp_path / "cgroup"
    for path, (quota, period) in limits.items():
        d = mount / controller / path.strip("/")
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        (d / "cpu.cfs_period_us").write_text(f"{period}\n")
    (mount / "memory").mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(f"12:memory:{own}\n4:{controller}:{own}\n1:name=systemd:{own}\n")
    return mount, proc


@pytest.mark.parametrize(("cpu_max", "expected"), [
    ("100000 100000", 1), ("150000 100000", 2), ("50000 100000", 1), ("200000 100000", 2), ("max 100000", None),
])  # fmt: skip
def test_v2_quota_rounded_up(tmp_path, cpu_max, expected):
    assert quota_cpus(*v2(tmp_path, "/", {"/": cpu_max})) == expected


@pytest.mark.parametrize(("quota", "period", "expected"), [
    (100000, 100000, 1), (150000, 100000, 2), (25000, 50000, 1), (-1, 100000, None),
])  # fmt: skip
def test_v1_quota_rounded_up(tmp_path, quota, period, expected):
    assert quota_cpus(*v1(tmp_path, "/", {"/": (quota, period)})) == expected


def test_v1_plain_cpu_mount(tmp_path):
    assert quota_cpus(*v1(tmp_path, "/", {"/": (300000, 100000)}, controller="cpu")) == 3


def test_v1_container_path_from_the_host_namespace_falls_back_to_the_mount_root(tmp_path):
    # /proc/self/cgroup says /docker/<id>, but the container's mount already is that cgroup.
    assert quota_cpus(*v1(tmp_path, "/docker/0123abcd", {"/": (100000, 100000)})) == 1


def test_tightest_limit_over_the_cgroup_and_its_ancestors(tmp_path):
    mount, proc = v2(tmp_path, "/kubepods/pod1/ctr", {"/kubepods": "400000 100000", "/kubepods/pod1": "100000 100000",
                                                      "/kubepods/pod1/ctr": "max 100000"})  # fmt: skip
    assert quota_cpus(mount, proc) == 1


def test_no_cgroup_filesystem_means_no_quota(tmp_path):
    assert quota_cpus(tmp_path / "missing", tmp_path / "missing-proc") is None
    assert usable_cpus(tmp_path / "missing", tmp_path / "missing-proc") == SCHEDULABLE


def test_usable_cpus_is_the_quota_capped_by_the_schedulable_cpus(tmp_path):
    mount, proc = v2(tmp_path, "/", {"/": "100000 100000"})
    assert usable_cpus(mount, proc) == 1
    (mount / "cpu.max").write_text(f"{(SCHEDULABLE + 8) * 100000} 100000\n")
    assert usable_cpus(mount, proc) == SCHEDULABLE


@pytest.mark.parametrize("garbage", ["", "nonsense", "100000"])
def test_unreadable_limit_files_are_ignored(tmp_path, garbage):
    assert quota_cpus(*v2(tmp_path, "/", {"/": garbage})) is None
