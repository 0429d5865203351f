"""`llm-proxy bench --compare-hop minimal --isolated`: the CPU split and its refusal, a wrk target's
numbers, the skip without wrk, and one tiny end-to-end run (structure only: speed is reported,
never asserted)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from loadtest.bench import hopratio, isolated, procs, wrk
from loadtest.bench.plan import isolated as isolated_plan
from loadtest.bench.runner import Options

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize(("cpus", "load", "proxy"), [([0, 1], {0}, {1}), ([2, 5, 7], {2, 5}, {7})])
def test_the_last_cpu_is_the_proxy_core(cpus, load, proxy):
    assert isolated.split_cpus(cpus) == (load, proxy)


def test_one_cpu_is_refused():
    with pytest.raises(SystemExit, match="at least 2 CPUs"):
        isolated.split_cpus([0])


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) is not installed")
def test_the_cli_refuses_one_cpu_before_starting_anything(tmp_path):
    argv = ["taskset", "-c", str(procs.usable_cpus()[0]), sys.executable, "-m", "proxy.cli", "bench", "--isolated",
            "--out", str(tmp_path / "b")]  # fmt: skip
    proc = subprocess.run(argv, check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "at least 2 CPUs" in proc.stderr
    assert not (tmp_path / "b").exists()


def test_a_wrk_target_with_errors_reports_no_throughput():
    t = isolated.WrkTarget(requests=1000, seconds=2.0, cpu=0.2, backend_cpu=0.02, wrk_cpu=0.03)
    t.rounds = [{"rps": 500.0, "latency_ms": {"p50": 1.0, "p99": 3.0}, "load_busy": 0.5, "proxy_busy": 1.0,
                 "target_share": 0.1},
                {"rps": 500.0, "latency_ms": {"p50": 2.0, "p99": 5.0}, "load_busy": 0.3, "proxy_busy": 0.9,
                 "target_share": 0.3}]  # fmt: skip
    r = t.result()
    assert r["throughput_rps"] == 500.0 and r["cpu_us_per_req"] == 200.0
    assert (r["backend_cpu_us_per_req"], r["wrk_cpu_us_per_req"]) == (20.0, 30.0)
    assert r["latency_ms"]["p50"] == 1.5 and r["latency_ms"]["p99"] == 4.0
    assert (r["load_busy"], r["proxy_busy"], r["target_share"]) == (0.4, 0.95, 0.2)
    assert r["wrk_share"] is None  # not measured in any round
    t.errors = 3
    assert t.result()["throughput_rps"] is None


def _wrk_point(gw_rps, hop_rps, path="openai->openai", stream=False):
    def target(rps, cpu):
        return {"throughput_rps": rps, "cpu_us_per_req": cpu, "backend_cpu_us_per_req": 10.0, "wrk_cpu_us_per_req": 5.0,
                "cpu_us_per_chunk": None, "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0}, "rounds": [{"rps": rps}],
                "errors": 0, "error_samples": [], "load_busy": 0.4, "proxy_busy": 0.99, "target_share": 0.9,
                "backend_share": 0.1, "wrk_share": 0.2, "requests": 100}  # fmt: skip

    return {"profile": "zero", "path": path, "stream": stream, "mode": "closed", "driver": "wrk",
            "label": "closed c=32, non-stream, wrk", "concurrency": 32,
            "targets": {"proxy": target(gw_rps, 150.0), "minimal-hop": target(hop_rps, 200.0)}}  # fmt: skip


def test_wrk_points_give_the_throughput_ratios_and_a_table():
    points = [_wrk_point(6000.0, 4000.0), _wrk_point(3000.0, 4000.0, "openai->anthropic")]
    results = {"points": [], "wrk_points": points, "pinning": {"load_cpus": [0], "proxy_cpus": [1]}}
    rows = [r for r in hopratio.compare(results)["rows"] if r["measure"] == "throughput (req/s)"]
    assert [(r["path"], r["ratio"], r["met"]) for r in rows] == [("openai->openai", 1.5, True),
                                                                 ("openai->anthropic", 0.75, False)]  # fmt: skip
    table = isolated.markdown(results).splitlines()
    assert "proxy core [1], load side [0]" in table[0]
    assert sum(line.startswith("| openai->") for line in table) == 4
    assert "| 10.0 + 5.0 | 90 % / 99 % | 30 % / 40 % |" in table[4]


def test_ratios_of_another_gateway_target():
    point = _wrk_point(6000.0, 4000.0)
    point["targets"]["proxy-aiohttp"] = {**point["targets"]["proxy"], "throughput_rps": 2000.0}
    results = {"points": [], "wrk_points": [point], "open_streams": {"streams": 1}}
    rows = hopratio.compare(results, gateway="proxy-aiohttp")["rows"]
    assert [(r["measure"], r["ratio"]) for r in rows] == [("throughput (req/s)", 0.5), ("CPU / request (µs)", 0.75)]
    assert "Gateway `proxy-aiohttp` against" in hopratio.markdown(hopratio.compare(results, gateway="proxy-aiohttp"))


async def test_without_wrk_the_throughput_points_are_skipped(monkeypatch, tmp_path):
    ran: list[int] = []

    async def nothing(self):
        return None

    async def run_point(self, lp):
        ran.append(lp.concurrency)
        return {"c": lp.concurrency}

    monkeypatch.setattr(wrk, "path", lambda: None)
    monkeypatch.setattr(isolated.IsolatedHarness, "start", nothing)
    monkeypatch.setattr(isolated.IsolatedHarness, "stop", nothing)
    monkeypatch.setattr(isolated.IsolatedHarness, "run_point", run_point)
    notes: list[str] = []
    results = await isolated.run(isolated_plan(1, 1, 2), Options(out_dir=str(tmp_path)), [0, 1], progress=notes.append)
    assert ran == [1] * 8 and results["wrk_points"] == [] and len(results["points"]) == 8
    assert "wrk not found" in results["skipped"][0] and "wrk not found" in notes[0]
    assert "wrk not found" in isolated.markdown(results)


@pytest.mark.skipif(len(procs.usable_cpus()) < 2, reason="--isolated needs 2 CPUs")
@pytest.mark.skipif(wrk.path() is None, reason="wrk is not installed (apt-get install wrk)")
def test_a_tiny_isolated_run_end_to_end(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "bench", "--isolated", "--paths", "openai->anthropic", "--wrk-seconds", "1",
         "--rounds", "1", "--latency-requests", "10", "--log-level", "warning", "--server-http", "raw,aiohttp",
         "--out", str(out), "--no-plot"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads((out / "report.json").read_text())
    pin = results["pinning"]
    assert pin["proxy_cpus"] and not set(pin["proxy_cpus"]) & set(pin["load_cpus"])
    assert pin["affinity"]["proxy-1w"] == pin["affinity"]["minimal-hop"] == pin["proxy_cpus"]
    assert pin["affinity"]["proxy-aiohttp"] == pin["proxy_cpus"]  # the gateway on its other HTTP server
    assert pin["affinity"]["lean-backend"] == pin["affinity"]["load generator"] == pin["load_cpus"]
    assert [(p["concurrency"], p["stream"]) for p in results["points"]] == [(1, False), (1, True)]
    assert [(p["concurrency"], p["stream"]) for p in results["wrk_points"]] == [(32, False), (32, True)]
    for p in results["wrk_points"]:
        assert list(p["targets"]) == ["proxy", "minimal-hop", "proxy-aiohttp"]
        for name in p["targets"]:
            t = p["targets"][name]
            assert t["errors"] == 0 and t["requests"] > 0 and t["throughput_rps"] > 0 and t["cpu_us_per_req"] > 0
            assert len(t["rounds"]) == 1 and t["latency_ms"]["p99"] > 0
            assert t["target_share"] > 0 and t["wrk_share"] > 0 and t["backend_cpu_us_per_req"] > 0
    measures = {(r["measure"], r["load"]): r["ratio"] for r in results["hop_ratios"]["rows"]}
    assert measures[("throughput (req/s)", "closed c=32, non-stream, wrk")] > 0
    assert measures[("added p50 (ms)", "closed c=1, non-stream")] is not None
    assert measures[("added TTFT p50 (ms)", "closed c=1, stream")] is not None
    other = {(r["measure"], r["load"]): r["ratio"] for r in results["hop_ratios_others"][0]["rows"]}
    assert other[("throughput (req/s)", "closed c=32, stream, wrk")] > 0
    report = (out / "report.md").read_text()
    assert "wrk points" in report and "Gateway `proxy-aiohttp` against the minimal-hop" in report
