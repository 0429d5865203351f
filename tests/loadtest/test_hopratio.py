"""Gateway / minimal-hop ratios: which load point yields which comparison, the arithmetic, the goals
(judged only when the run is big enough for them), and the Markdown table."""

from __future__ import annotations

import pytest

from loadtest.bench import hopratio, report
from loadtest.bench.loadgen import Batch
from loadtest.bench.plan import LoadPoint
from loadtest.bench.runner import Measured


def _m(latencies, cpu=None, events=0, ttfts=(), wall=1.0):
    return Measured(Batch(list(latencies), list(ttfts), 0, events, wall), cpu, 40.0, 42.0)


def _point(lp, gw, hop):
    return report.point_result(lp, 0.0, {"native": _m([0.001] * 10, ttfts=[0.0005] * 10), "proxy": gw, "minimal-hop": hop}, None)


def _rows(p):
    return {r["measure"]: r for r in hopratio.point_rows(p)}


def test_c1_rows_are_added_latency_ratios():
    p = _point(LoadPoint("zero", "openai->openai", False),
               _m([0.0014] * 10, cpu=0.004), _m([0.0015] * 10, cpu=0.005))  # fmt: skip
    rows = _rows(p)
    assert rows["added p50 (ms)"]["gateway"] == pytest.approx(0.4)
    assert rows["added p50 (ms)"]["hop"] == pytest.approx(0.5)
    assert rows["added p50 (ms)"]["ratio"] == pytest.approx(0.8)
    assert rows["added p50 (ms)"]["met"] is True  # <= 0.8x
    assert rows["added p99 (ms)"]["met"] is True
    assert rows["CPU / request (µs)"]["ratio"] == pytest.approx(0.8)
    assert "throughput (req/s)" not in rows  # c=1 is the latency point


def test_stream_c1_rows_are_ttft_and_chunk_cpu():
    p = _point(LoadPoint("zero", "openai->anthropic", True),
               _m([0.002] * 10, cpu=0.002, events=200, ttfts=[0.0015] * 10),
               _m([0.002] * 10, cpu=0.001, events=200, ttfts=[0.001] * 10))  # fmt: skip
    rows = _rows(p)
    assert rows["added TTFT p50 (ms)"]["ratio"] == pytest.approx(2.0)
    assert rows["added TTFT p50 (ms)"]["met"] is False
    chunk = rows["CPU / relayed chunk (µs)"]
    assert (chunk["gateway"], chunk["hop"]) == (pytest.approx(10.0), pytest.approx(5.0))
    assert chunk["met"] is True  # 10 µs <= 15 µs: an absolute goal, whatever the hop does


@pytest.mark.parametrize(("path", "goal"), [("openai->openai", 1.5), ("openai->anthropic", 1.0)])
def test_throughput_goal_depends_on_pass_through(path, goal):
    p = _point(LoadPoint("zero", path, False, concurrency=32),
               _m([0.001] * 120, cpu=0.01), _m([0.001] * 100, cpu=0.01))  # fmt: skip
    row = _rows(p)["throughput (req/s)"]
    assert row["ratio"] == pytest.approx(1.2)
    assert row["goal"] == f">= {goal:g}x"
    assert row["met"] is (1.2 >= goal)


def test_no_rows_without_the_hop_or_with_a_failed_hop():
    lp = LoadPoint("zero", "openai->openai", False, concurrency=32)
    only_gw = report.point_result(lp, 0.0, {"native": _m([0.001]), "proxy": _m([0.001], cpu=0.001)}, None)
    assert hopratio.point_rows(only_gw) == []
    failed = _point(lp, _m([0.001] * 10, cpu=0.01), Measured(Batch([], [], 10, 0, 1.0), 0.01))
    assert _rows(failed)["throughput (req/s)"]["ratio"] is None  # a hop that answered nothing: no ratio


def test_memory_goals_are_judged_only_at_full_size():
    streams = {"streams": 1000, "completed": 1000, "rss_peak_sampled_mib": 80.0,
               "references": {"minimal-hop": {"rss_peak_sampled_mib": 40.0}}}  # fmt: skip
    short = {"seconds": 20.0, "rss_slope_mib_per_min": 0.01}
    rows = hopratio.memory_rows({"open_streams": streams, "soak": short})
    assert rows[0]["ratio"] == pytest.approx(2.0) and rows[0]["met"] is True
    assert rows[1]["met"] is None  # 20 s is not the 10-minute soak
    small = hopratio.memory_rows({"open_streams": {**streams, "streams": 20, "completed": 20}})
    assert small[0]["met"] is None
    leak = hopratio.memory_rows({"soak": {"seconds": 600.0, "rss_slope_mib_per_min": 0.5}})
    assert leak[0]["met"] is False


def test_markdown_one_row_per_comparison_with_load_average():
    p = _point(LoadPoint("zero", "openai->openai", False), _m([0.0014] * 10, cpu=0.004), _m([0.0015] * 10, cpu=0.005))
    c = hopratio.compare({"points": [p], "machine": {"loadavg_start": (1.5, 1.0, 0.5), "loadavg_end": (2.0, 1.0, 0.5)}})
    lines = hopratio.markdown(c).strip().splitlines()
    assert "load average start 1.50/1.00/0.50, end 2.00/1.00/0.50" in lines[0]
    assert len(lines) == 4 + len(c["rows"])  # title, blank, header, separator
    assert all(line.count("|") == 9 for line in lines[2:])
    assert "| 0.80x | <= 0.8x | yes |" in lines[4]
