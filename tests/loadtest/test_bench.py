"""The harness's arithmetic and bounds: percentiles, overhead subtraction, histogram quantiles, the
metrics parser, interleaving order, bounded closed / open loops, and the report's shape."""

from __future__ import annotations

import asyncio
import os
import math
import random
from types import SimpleNamespace

import pytest
from aiohttp import web

from loadtest.bench import loadgen, promscrape, report, scenario
from loadtest.bench.loadgen import Batch, Endpoint
from loadtest.bench.plan import PRESETS, LoadPoint
from loadtest.bench.runner import Measured, schedule
from loadtest.bench.stats import Summary, histogram_quantile, overhead, percentile, slope
from loadtest.profiles import PROFILES


# -- percentiles and overhead ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1.0], 50, 1.0),
        ([1.0, 2.0], 50, 1.5),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([4.0, 1.0, 3.0, 2.0], 50, 2.5),  # order does not matter
        (list(range(1, 101)), 95, 95.05),
        (list(range(1, 101)), 99, 99.01),
    ],
)
def test_percentile_interpolates_between_ranks(values, q, expected):
    assert percentile([float(v) for v in values], q) == pytest.approx(expected)


def test_percentile_matches_numpy():
    np = pytest.importorskip("numpy")
    rng = random.Random(7)
    xs = [rng.lognormvariate(0, 1) for _ in range(999)]
    for q in (50, 95, 99):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_percentile_of_nothing_is_nan():
    assert math.isnan(percentile([], 50))


def test_summary_in_ms():
    s = Summary.of([0.001, 0.002, 0.003])
    ms = s.ms()
    assert ms["n"] == 3
    assert ms["mean_ms"] == pytest.approx(2.0)
    assert ms["p50_ms"] == pytest.approx(2.0)
    assert ms["p99_ms"] == pytest.approx(2.98)


@pytest.mark.parametrize(
    ("native", "proxied", "ms", "pct"),
    [(0.200, 0.2005, 0.5, 0.25), (0.001, 0.0015, 0.5, 50.0), (0.010, 0.009, -1.0, -10.0)],
)
def test_overhead_is_proxied_minus_native(native, proxied, ms, pct):
    o = overhead(native, proxied)
    assert o.ms == pytest.approx(ms)
    assert o.pct == pytest.approx(pct)


def test_overhead_percent_undefined_for_zero_native():
    assert math.isnan(overhead(0.0, 0.001).pct)


# -- histogram quantiles and the /metrics parser -----------------------------------------------------
@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.5, 0.0005), (0.25, 0.00025), (0.9, 0.001 + 0.001 * 0.6), (1.0, 0.002)],
)
def test_histogram_quantile_interpolates_inside_bucket(q, expected):
    buckets = [(0.0005, 50.0), (0.001, 75.0), (0.002, 100.0), (math.inf, 100.0)]
    # q=0.9: rank 90 lies in (0.001, 0.002] holding ranks 75..100 -> 0.001 + 0.001 * 15/25
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


def test_histogram_quantile_in_inf_bucket_returns_last_finite_bound():
    assert histogram_quantile(0.99, [(0.001, 10.0), (math.inf, 20.0)]) == 0.001


EXPOSITION = """# HELP llm_proxy_added_latency_seconds Time spent in the proxy itself
# TYPE llm_proxy_added_latency_seconds histogram
llm_proxy_added_latency_seconds_bucket{backend="b",le="0.001",model="zero--openai",route="/v1/chat/completions",stream="false"} 3.0
llm_proxy_added_latency_seconds_bucket{backend="b",le="0.002",model="zero--openai",route="/v1/chat/completions",stream="false"} 4.0
llm_proxy_added_latency_seconds_bucket{backend="b",le="+Inf",model="zero--openai",route="/v1/chat/completions",stream="false"} 4.0
llm_proxy_added_latency_seconds_count{backend="b",model="zero--openai",route="/v1/chat/completions",stream="false"} 4.0
llm_proxy_added_latency_seconds_sum{backend="b",model="zero--openai",route="/v1/chat/completions",stream="false"} 0.004
llm_proxy_added_latency_seconds_bucket{backend="b",le="0.001",model="zero--openai",route="/v1/chat/completions",stream="true"} 9.0
llm_proxy_added_latency_seconds_count{backend="b",model="zero--openai",route="/v1/chat/completions",stream="true"} 9.0
llm_proxy_added_latency_seconds_sum{backend="b",model="zero--openai",route="/v1/chat/completions",stream="true"} 0.9
llm_proxy_added_latency_seconds_count{backend="b",model="other",route="/v1/chat/completions",stream="false"} 100.0
"""


def test_parse_filters_labels_and_sums_series():
    h = promscrape.parse(EXPOSITION, promscrape.METRIC, {"model": "zero--openai", "stream": "false"})
    assert h.count == 4.0
    assert h.sum == pytest.approx(0.004)
    assert h.buckets == {0.001: 3.0, 0.002: 4.0, math.inf: 4.0}
    assert h.mean == pytest.approx(0.001)


def test_histogram_delta_isolates_one_load_point():
    before = promscrape.Histogram({0.001: 3.0, math.inf: 4.0}, 4.0, 0.004)
    after = promscrape.Histogram({0.001: 13.0, math.inf: 14.0}, 14.0, 0.009)
    d = after.minus(before)
    assert d.count == 10.0
    assert d.mean == pytest.approx(0.0005)
    assert d.buckets == {0.001: 10.0, math.inf: 10.0}


# -- interleaving and presets ------------------------------------------------------------------------
def test_schedule_interleaves_targets_round_by_round():
    assert schedule(["native", "proxy", "bare-hop"], 3) == ["native", "proxy", "bare-hop"] * 3


def test_schedule_zero_rounds_is_empty():
    assert schedule(["native", "proxy"], 0) == []


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_use_known_profiles_and_paths(preset):
    plan = PRESETS[preset]()
    assert plan.points
    for lp in plan.points:
        assert lp.profile in PROFILES
        assert lp.path in scenario.ALL_PATHS
        assert lp.requests > 0 and lp.rounds > 0 and lp.deadline > 0
    assert set(plan.profiles()) <= set(PROFILES)


def test_full_preset_covers_every_path_both_stream_modes_and_the_published_profiles():
    plan = PRESETS["full"]()
    assert {(lp.path, lp.stream) for lp in plan.points if lp.profile == "zero"} >= {
        (p, s) for p in scenario.PATHS for s in (False, True)
    }
    assert {"vllm-llama3-8b", "mistral-medium", "together-qwen2.5-32b"} <= {lp.profile for lp in plan.points}
    assert any(lp.mode == "open" for lp in plan.points)
    assert any(lp.workers == (1, 2) for lp in plan.points)


@pytest.mark.parametrize(("name", "p95"), [("vllm-llama3-8b", 0.220), ("mistral-medium", 0.310), ("together-qwen2.5-32b", 0.520)])
def test_published_profiles_reproduce_their_p95(name, p95):
    prof = PROFILES[name]
    rng = random.Random(3)
    xs = [prof.first_byte_delay(rng) for _ in range(20000)]
    assert percentile(xs, 95) == pytest.approx(p95, rel=0.05)
    assert percentile(xs, 50) == pytest.approx(prof.p50, rel=0.05)


def test_zero_profile_has_no_delay():
    assert PROFILES["zero"].first_byte_delay(random.Random(1)) == 0.0
    assert PROFILES["zero"].chunk_gap() == 0.0


# -- request bodies and the generated config ---------------------------------------------------------
@pytest.mark.parametrize(
    ("fmt", "stream_key_present", "extra"),
    [("openai", True, "max_tokens"), ("anthropic", True, "max_tokens"), ("ollama", True, "options")],
)
def test_bodies_are_valid_per_format(fmt, stream_key_present, extra):
    import orjson

    doc = orjson.loads(scenario.body(fmt, "m", True))
    assert doc["model"] == "m"
    assert doc["stream"] is True
    assert extra in doc


def test_proxy_config_routes_each_profile_and_format_to_its_emulator():
    from proxy.config import load_config_dict

    emulators = {"openai:zero": "http://127.0.0.1:1", "anthropic:zero": "http://127.0.0.1:2", "ollama:fixed-50ms": "http://127.0.0.1:3"}
    chunks = {name: p.chunks for name, p in PROFILES.items()}
    cfg = load_config_dict(scenario.proxy_config(emulators, chunks, "warning"), env={})
    by_name = {m.name: m for m in cfg.models}
    assert by_name["zero--openai"].backend == "openai-zero"
    assert by_name["fixed-50ms--ollama"].model == "bench-model::chunks=30"
    assert cfg.backends["openai-zero"].base_url == "http://127.0.0.1:1/v1"
    assert cfg.backends["anthropic-zero"].base_url == "http://127.0.0.1:2"


# -- bounded loops -----------------------------------------------------------------------------------
def _counting_app(delay: float = 0.0, stream_chunks: int = 0):
    seen = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(await request.read())
        if delay:
            await asyncio.sleep(delay)
        if not stream_chunks:
            return web.json_response({"ok": True})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n')
        for i in range(stream_chunks):
            await resp.write(b'data: {"choices":[{"delta":{"content":"x%d"}}]}\n\n' % i)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/", handler)
    return app, seen


async def test_closed_loop_sends_exactly_the_requested_count(aiohttp_server):
    app, seen = _counting_app()
    server = await aiohttp_server(app, host="127.0.0.1")
    ep = Endpoint(str(server.make_url("/")), b"{}", {}, False, "openai")
    async with loadgen.new_session() as s:
        batch = await asyncio.wait_for(loadgen.closed_loop(s, ep, 4, 37, 10.0), 15)
    assert len(seen) == 37
    assert len(batch.latencies) == 37 and batch.errors == 0
    assert all(x > 0 for x in batch.latencies)


async def test_closed_loop_stops_at_its_deadline(aiohttp_server):
    app, seen = _counting_app(delay=0.05)
    server = await aiohttp_server(app, host="127.0.0.1")
    ep = Endpoint(str(server.make_url("/")), b"{}", {}, False, "openai")
    async with loadgen.new_session() as s:
        batch = await asyncio.wait_for(loadgen.closed_loop(s, ep, 2, 10_000, 0.3), 5)
    # 2 workers x (0.3 s / 0.05 s) plus the requests in flight at the deadline
    assert 4 <= batch.requests <= 2 * (0.3 / 0.05 + 1) + 2
    assert batch.wall < 1.0


async def test_stream_ttft_and_events_counted(aiohttp_server):
    app, _ = _counting_app(stream_chunks=5)
    server = await aiohttp_server(app, host="127.0.0.1")
    ep = Endpoint(str(server.make_url("/")), b"{}", {}, True, "openai")
    async with loadgen.new_session() as s:
        batch = await asyncio.wait_for(loadgen.closed_loop(s, ep, 1, 3, 10.0), 15)
    assert len(batch.ttfts) == 3
    assert all(t <= lat for t, lat in zip(batch.ttfts, batch.latencies))
    assert batch.events == 3 * 7  # role chunk + 5 content chunks + [DONE]


async def test_errors_are_counted_not_raised(aiohttp_server):
    async def unavailable(request: web.Request) -> web.Response:
        return web.json_response({"error": "no"}, status=503)

    app = web.Application()
    app.router.add_post("/", unavailable)
    server = await aiohttp_server(app, host="127.0.0.1")
    ep = Endpoint(str(server.make_url("/")), b"{}", {}, False, "openai")
    async with loadgen.new_session() as s:
        batch = await asyncio.wait_for(loadgen.closed_loop(s, ep, 2, 6, 10.0), 15)
    assert batch.errors == 6 and not batch.latencies
    assert "HTTP 503" in batch.error_samples[0]


def test_arrival_times_are_poisson_and_bounded():
    rng = random.Random(5)
    ts = loadgen.arrival_times(1000.0, 5000, 100.0, rng)
    assert len(ts) == 5000
    assert ts == sorted(ts)
    gaps = [b - a for a, b in zip([0.0, *ts], ts)]
    assert sum(gaps) / len(gaps) == pytest.approx(0.001, rel=0.05)
    assert len(loadgen.arrival_times(1000.0, 5000, 0.5, random.Random(5))) < 600  # the horizon bounds it


async def test_open_loop_sends_at_rate_and_is_bounded(aiohttp_server):
    app, seen = _counting_app(delay=0.01)
    server = await aiohttp_server(app, host="127.0.0.1")
    ep = Endpoint(str(server.make_url("/")), b"{}", {}, False, "openai")
    async with loadgen.new_session() as s:
        batch = await asyncio.wait_for(loadgen.open_loop(s, ep, 200.0, 60, 5.0, random.Random(2)), 15)
    assert len(seen) == 60 and len(batch.latencies) == 60
    assert min(batch.latencies) >= 0.01  # measured from the scheduled start, so never below the service time


# -- the report --------------------------------------------------------------------------------------
def _measured(latencies, cpu=None, events=0, ttfts=()):
    return Measured(Batch(list(latencies), list(ttfts), 0, events, 1.0), cpu, 40.0, 42.0)


def test_point_result_subtracts_native_and_divides_cpu():
    lp = LoadPoint("zero", "openai->openai", True)
    measured = {
        "native": _measured([0.001] * 10, ttfts=[0.0005] * 10),
        "proxy": _measured([0.0015] * 10, cpu=0.002, events=100, ttfts=[0.0008] * 10),
    }
    hist = promscrape.Histogram({0.0005: 10.0, math.inf: 10.0}, 10.0, 0.0025)
    r = report.point_result(lp, 0.0, measured, hist)
    add = r["added"]["proxy"]
    assert add["p50_ms"] == pytest.approx(0.5)
    assert add["p50_pct"] == pytest.approx(50.0)
    assert r["added_ttft"]["proxy"]["p50_ms"] == pytest.approx(0.3)
    t = r["targets"]["proxy"]
    assert t["cpu_us_per_req"] == pytest.approx(200.0)
    assert t["cpu_us_per_chunk"] == pytest.approx(20.0)
    assert t["throughput_rps"] == pytest.approx(10.0)
    assert r["targets"]["native"]["cpu_us_per_req"] is None
    sr = r["self_reported"]
    assert sr["count"] == 10 and sr["mean_ms"] == pytest.approx(0.25)
    assert sr["external_minus_self_ms"] == pytest.approx(0.3 - 0.25)  # streams compare added TTFT


def test_markdown_has_one_row_per_non_native_target():
    lp = LoadPoint("zero", "openai->openai", False, concurrency=4)
    measured = {"native": _measured([0.001] * 4), "proxy": _measured([0.002] * 4, cpu=0.001), "bare-hop": _measured([0.0015] * 4, cpu=0.0005)}
    results = {"points": [report.point_result(lp, 0.0, measured, None)]}
    lines = report.markdown(results).strip().splitlines()
    assert len(lines) == 4  # header, separator, proxy, bare-hop
    header_cells = lines[0].count("|")
    assert all(line.count("|") == header_cells for line in lines)
    proxy = [c.strip() for c in lines[2].strip("|").split("|")]
    assert proxy[:4] == ["zero", "openai->openai", "closed c=4", "proxy"]
    assert proxy[6] == "1.000 / 1.000 / 1.000"  # added p50 / p95 / p99 in ms


def test_soak_result_reports_start_middle_end():
    r = report.soak_result(3.0, Batch([0.001] * 30, wall=3.0), [(0.0, 40.0), (1.5, 41.0), (3.0, 41.5)])
    assert (r["rss_start_mib"], r["rss_middle_mib"], r["rss_end_mib"]) == (40.0, 41.0, 41.5)
    assert r["throughput_rps"] == pytest.approx(10.0)


def test_soak_reports_the_rss_slope_per_minute():
    r = report.soak_result(120.0, Batch([0.001], wall=120.0), [(0.0, 40.0), (60.0, 40.5), (120.0, 41.0)])
    assert r["rss_slope_mib_per_min"] == pytest.approx(0.5)
    assert "| 0.500 |" in report.markdown({"points": [], "soak": r})


@pytest.mark.parametrize(("points", "expected"), [
    ([(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)], 2.0),
    ([(0.0, 1.0), (1.0, 0.0), (2.0, 1.0), (3.0, 0.0)], -0.2),  # noise around a flat line
    ([(5.0, 1.0), (5.0, 2.0)], math.nan),
    ([(0.0, 1.0)], math.nan),
])  # fmt: skip
def test_slope_is_least_squares(points, expected):
    got = slope(points)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def test_compare_hop_minimal_selects_the_hop_preset_and_both_hops_parse():
    from loadtest.bench import cli

    args = cli.parse_args(["--compare-hop", "minimal", "--soak", "600"])
    assert cli.hops(args) == ("minimal",)
    plan = cli.build_plan(args)
    assert plan.name == "hop" and plan.soak_seconds == 600.0 and plan.open_streams == 1000
    assert cli.build_plan(cli.parse_args(["smoke", "--compare-hop", "minimal"])).name == "smoke"
    assert cli.hops(cli.parse_args(["--compare-hop", "bare,minimal"])) == ("bare", "minimal")
    assert cli.hops(cli.parse_args([])) == ("bare",)
    with pytest.raises(SystemExit):
        cli.hops(cli.parse_args(["--compare-hop", "wrk"]))


def test_hop_preset_measures_every_ratio_of_the_goal():
    plan = PRESETS["hop"]()
    kinds = {(p.path, p.stream, p.concurrency, p.profile) for p in plan.points}
    for path in scenario.PATHS:
        for stream in (False, True):
            assert (path, stream, 1, "zero") in kinds and (path, stream, 32, "zero") in kinds
        assert (path, True, 8, "relay") in kinds
    assert all(p.requests and p.deadline for p in plan.points)  # every loop bounded


def test_open_streams_result_counts():
    end = SimpleNamespace(rss_mib=60.0, peak_mib=70.0)
    r = report.open_streams_result(3, Batch([1.0, 1.1], errors=1), 40.0, 65.0, end)
    assert (r["streams"], r["completed"], r["errors"]) == (3, 2, 1)
    assert r["rss_peak_sampled_mib"] == 65.0 and r["vm_hwm_mib"] == 70.0


def test_a_killed_harness_takes_its_children_with_it(tmp_path):
    """The services run in their own sessions; a harness killed by a CI timeout must not leave them
    running (the kernel's parent-death signal, through setpriv)."""
    import shutil
    import subprocess
    import sys
    import time

    if shutil.which("setpriv") is None or not sys.platform.startswith("linux"):
        pytest.skip("needs util-linux's setpriv")
    script = ("import sys, time\nfrom loadtest.bench.procs import Service\n"
              f"s = Service('sleeper', [sys.executable, '-c', 'import time; time.sleep(60)'], 0, {str(tmp_path / 'log')!r})\n"
              "print(s.pid, flush=True)\ntime.sleep(60)\n")  # fmt: skip
    harness = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(harness.stdout.readline())
    for _ in range(200):  # setpriv asks for the signal, then execs the service: wait for the exec
        with open(f"/proc/{child}/cmdline", "rb") as f:
            if b"setpriv" not in f.read().split(b"\0")[0]:
                break
        time.sleep(0.05)
    harness.kill()
    harness.wait(10)
    for _ in range(200):  # the kernel signals at once; give the child a moment to exit
        try:
            with open(f"/proc/{child}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):
                    break
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        os.kill(child, 9)
        pytest.fail("the child outlived its harness")
