"""Server load (proxy/load.py): the gauge names each adapter knows, reading a metrics page per server
kind, the in-flight correction, the stale fallback, batch-capacity learning and the scraper's bounds
(timeout, size, status, connection) against a real local HTTP server."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from adapters.base import LoadMetricNames
from proxy import load as load_mod
from proxy.config import ConfigError, LoadConfig, LoadMetricsConfig, load_config_dict
from proxy.load import Reading, ServerLoad, reading_from, signal_names
from proxy.pools import build_backends

pytestmark = pytest.mark.timeout(10)

MODEL = 'model_name="meta-llama/Llama-3.1-8B-Instruct"'

VLLM = f"""\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",{MODEL}}} 12.0
vllm:num_requests_running{{engine="1",{MODEL}}} 4.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",{MODEL}}} 3.0
vllm:num_requests_waiting{{engine="1",{MODEL}}} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",{MODEL}}} 0.5
vllm:kv_cache_usage_perc{{engine="1",{MODEL}}} 0.25
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.001",{MODEL}}} 0.0
vllm:time_to_first_token_seconds_bucket{{engine="0",le="+Inf",{MODEL}}} 42.0
vllm:time_to_first_token_seconds_count{{engine="0",{MODEL}}} 42.0
vllm:time_to_first_token_seconds_sum{{engine="0",{MODEL}}} 3.5
"""
VLLM_V0 = f"""\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{{MODEL}}} 2.0
# TYPE vllm:num_requests_swapped gauge
vllm:num_requests_swapped{{{MODEL}}} 0.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{{MODEL}}} 1.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{{{MODEL}}} 0.75
"""
SGLANG = f"""\
# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{{{MODEL},tp_rank="0"}} 7.0
# HELP sglang:num_queue_reqs The number of requests in the waiting queue.
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{{{MODEL},tp_rank="0"}} 2.0
# HELP sglang:token_usage The token usage.
# TYPE sglang:token_usage gauge
sglang:token_usage{{{MODEL},tp_rank="0"}} 0.28
"""
TGI = """\
# TYPE tgi_queue_size gauge
tgi_queue_size 4
# TYPE tgi_batch_current_size gauge
tgi_batch_current_size 16
# TYPE tgi_batch_current_max_tokens gauge
tgi_batch_current_max_tokens 9000
"""
LLAMACPP = """\
# HELP llamacpp:kv_cache_usage_ratio KV-cache usage. 1 means 100 percent usage.
# TYPE llamacpp:kv_cache_usage_ratio gauge
llamacpp:kv_cache_usage_ratio 0.5
# HELP llamacpp:requests_processing Number of request processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
# HELP llamacpp:requests_deferred Number of request deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 1
"""

# (backend block, page, (waiting, running, kv_cache)): the names come from the adapter or preset.
KINDS = {
    "vllm": ({"provider": "openai", "preset": "vllm"}, VLLM, (3.0, 16.0, 0.375)),
    "vllm-alias": ({"provider": "vllm"}, VLLM, (3.0, 16.0, 0.375)),
    "vllm-v0": ({"provider": "openai", "preset": "vllm"}, VLLM_V0, (1.0, 2.0, 0.75)),
    "sglang": ({"provider": "openai", "preset": "sglang"}, SGLANG, (2.0, 7.0, 0.28)),
    "tgi": ({"provider": "tgi"}, TGI, (4.0, 16.0, None)),
    "tgi-messages": ({"provider": "openai", "preset": "tgi"}, TGI, (4.0, 16.0, None)),
    "llamacpp": ({"provider": "llamacpp"}, LLAMACPP, (1.0, 2.0, 0.5)),
    "llamacpp-v1": ({"provider": "openai", "preset": "llamacpp"}, LLAMACPP, (1.0, 2.0, 0.5)),
}


def backend(block: dict, load: dict | None = None):
    block = {"base_url": "http://127.0.0.1:9/v1", **block,
             "load": {"metrics_url": "http://127.0.0.1:9/metrics", **(load or {})}}
    return build_backends(load_config_dict({"backends": {"b": block}}, env={}))["b"]


@pytest.mark.parametrize("kind", KINDS)
def test_each_server_kind_is_read_with_its_adapters_names(kind):
    block, page, expected = KINDS[kind]
    server = backend(block).load
    assert reading_from(page.encode(), server.names) == pytest.approx(expected)


def test_load_metrics_maps_a_server_no_adapter_knows():
    page = b"queue_len 5\nactive 2\nkv 0.5\n"
    server = backend({"provider": "openai"}, {"metrics": {"waiting": "queue_len", "running": "active",
                                                          "kv_cache": "kv"}}).load
    assert reading_from(page, server.names) == (5.0, 2.0, 0.5)


def test_load_metrics_overrides_one_signal_and_keeps_the_others():
    names = backend({"provider": "openai", "preset": "vllm"}, {"metrics": {"kv_cache": "my:kv"}}).load.names
    assert names == LoadMetricNames(waiting=("vllm:num_requests_waiting",), running=("vllm:num_requests_running",),
                                    kv_cache=("my:kv",))
    assert signal_names(None, LoadConfig(metrics_url="http://x", metrics=LoadMetricsConfig(waiting="q"))) == \
        LoadMetricNames(waiting=("q",))


@pytest.mark.parametrize("block", [{"provider": "openai"}, {"provider": "anthropic"}, {"provider": "ollama"}])
def test_a_server_without_known_gauges_needs_load_metrics(block):
    with pytest.raises(ConfigError, match=r"backends\.b\.load\.metrics: .*no known load gauges"):
        backend(block)


def test_a_page_without_the_gauges_gives_nothing_and_the_newer_name_wins():
    names = LoadMetricNames(waiting=("w",), running=("r",), kv_cache=("new", "old"))
    assert reading_from(b"other 1\n", names) == (None, None, None)
    assert reading_from(b"old 0.9\nnew 0.2\nr 1\n", names) == (None, 1.0, 0.2)
    assert reading_from(b"kv 7\nr -3\nold 1.5\n", names) == (None, 0.0, 1.0)  # clamped


# -- estimate: correction by our in-flight requests, stale fallback, capacity -----------------------------


def server_load(interval: float = 1.0, timeout: float = 1.0) -> ServerLoad:
    return ServerLoad("b", LoadConfig(metrics_url="http://127.0.0.1:9/m", interval=interval, timeout=timeout),
                      LoadMetricNames(waiting=("w",), running=("r",), kv_cache=("kv",)))


def test_no_reading_falls_back_to_our_in_flight_count():
    s = server_load()
    s.inflight = 3
    assert s.estimate(100.0) == (0.0, 3.0, 0.0, False)


def test_a_stale_reading_falls_back_after_three_intervals_plus_the_timeout():
    s = server_load(interval=0.5, timeout=0.2)
    s.reading = Reading(waiting=4, running=8, kv_cache=0.5, at=100.0, inflight_at=0)
    s.inflight = 1
    assert s.estimate(101.69) == (5.0, 8.0, 0.5, True)  # 1.69 s old: fresh up to 3 x 0.5 + 0.2
    assert s.estimate(101.71) == (0.0, 1.0, 0.0, False)


def test_requests_sent_since_the_reading_fill_the_batch_then_queue():
    s = server_load()
    s.reading = Reading(waiting=0, running=2, kv_cache=None, at=100.0, inflight_at=1)
    s.inflight = 4  # three more of ours since
    assert s.estimate(100.1) == (0.0, 5.0, 0.0, True)  # capacity unknown: all in the batch
    assert s.estimate(100.1, capacity=4) == (1.0, 4.0, 0.0, True)
    s.capacity = 3
    assert s.estimate(100.1, capacity=10) == (2.0, 3.0, 0.0, True)  # its own capacity wins


def test_requests_finished_since_the_reading_leave_the_queue_first():
    s = server_load()
    s.capacity = 4
    s.reading = Reading(waiting=3, running=4, kv_cache=0.9, at=100.0, inflight_at=5)
    s.inflight = 2  # three of ours finished: the queue moved into the batch
    assert s.estimate(100.1) == (0.0, 4.0, 0.9, True)
    s.inflight = 0  # never fewer than ours, never negative
    assert s.estimate(100.1) == (0.0, 2.0, 0.9, True)
    s.reading = Reading(waiting=0, running=0, kv_cache=None, at=100.0, inflight_at=0)
    s.inflight = 2
    assert s.estimate(100.1) == (0.0, 2.0, 0.0, True)


# -- the scraper against a real HTTP server ------------------------------------------------------------


@pytest.fixture
async def metrics_server(aiohttp_server):
    """`await metrics_server(handler)` -> ServerLoad scraping it, and an open session."""
    made = []

    async def make(handler, timeout: float = 0.5, capacity: int | None = None):
        app = web.Application()
        app.router.add_get("/metrics", handler)
        srv = await aiohttp_server(app, host="127.0.0.1")
        s = ServerLoad("b", LoadConfig(metrics_url=str(srv.make_url("/metrics")), interval=0.05, timeout=timeout,
                                       capacity=capacity),
                       LoadMetricNames(waiting=("w",), running=("r",), kv_cache=("kv",)))
        session = aiohttp.ClientSession()
        made.append(session)
        return s, session

    yield make
    for session in made:
        await session.close()


async def test_a_good_scrape_records_the_reading_and_our_in_flight_count(metrics_server):
    async def page(request):
        assert "text/plain" in request.headers["Accept"]
        return web.Response(text="w 2\nr 4\nkv 0.5\n")

    s, session = await metrics_server(page)
    s.inflight = 3
    assert await s.scrape_once(session)
    r = s.reading
    assert (r.waiting, r.running, r.kv_cache, r.inflight_at) == (2.0, 4.0, 0.5, 3)
    assert s.report()["state"] == "fresh" and s.report()["waiting"] == 2.0 and s.failures == 0


@pytest.mark.parametrize("answer,error", [
    (lambda: web.Response(status=503, text="w 1\nr 1\n"), "HTTP 503"),
    (lambda: web.Response(text="# nothing we know\nother 1\n"), "no load gauges in the page (set load.metrics)"),
    (lambda: web.Response(body=b"w 1\n" * (load_mod.MAX_SCRAPE_BYTES // 4 + 1)), "page larger than"),
    (lambda: web.Response(status=302, headers={"Location": "/elsewhere"}), "HTTP 302"),
])
async def test_a_failing_scrape_keeps_the_last_reading_and_says_why(metrics_server, answer, error):
    calls = []

    async def page(request):
        calls.append(1)
        return web.Response(text="w 1\nr 2\n") if len(calls) == 1 else answer()

    s, session = await metrics_server(page)
    assert await s.scrape_once(session)
    first = s.reading
    assert not await s.scrape_once(session)
    assert s.reading is first and s.failures == 1 and s.error.startswith(error)
    assert s.report()["error"].startswith(error)


async def test_a_streamed_page_over_the_size_bound_is_cut_off(metrics_server):
    async def page(request):
        resp = web.StreamResponse()  # chunked: no Content-Length to refuse it by
        await resp.prepare(request)
        for _ in range(load_mod.MAX_SCRAPE_BYTES // 65536 + 2):
            await resp.write(b"#" * 65535 + b"\n")
        return resp

    s, session = await metrics_server(page)
    assert not await s.scrape_once(session)
    assert s.error.startswith("page larger than")


async def test_a_hanging_server_times_out_within_the_deadline(metrics_server):
    async def page(request):
        await asyncio.sleep(5)
        return web.Response(text="w 1\n")

    s, session = await metrics_server(page, timeout=0.1)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert not await s.scrape_once(session)
    assert loop.time() - t0 < 1.0 and s.error == "timeout"
    assert s.report()["state"] == "stale"


async def test_connection_refused_is_a_failure_without_the_address():
    s = ServerLoad("b", LoadConfig(metrics_url="http://127.0.0.1:9/metrics", timeout=1.0),
                   LoadMetricNames(waiting=("w",)))
    async with aiohttp.ClientSession() as session:
        assert not await s.scrape_once(session)
    assert s.error == "connection failed" and "127.0.0.1" not in str(s.report())
    assert s.report()["state"] == "stale"


async def test_capacity_is_the_largest_batch_once_a_queue_lasted_two_readings(metrics_server):
    pages = iter(["w 1\nr 2\n", "w 0\nr 3\n", "w 1\nr 4\n", "w 2\nr 4\n", "w 0\nr 1\n", "w 0\nr 5\n"])

    async def page(request):
        return web.Response(text=next(pages))

    s, session = await metrics_server(page)
    seen = []
    for _ in range(6):
        assert await s.scrape_once(session)
        seen.append(s.capacity)
    # A queue in one reading only (a request between two steps) says nothing; two in a row do.
    assert seen == [None, None, None, 4.0, 4.0, 5.0]


async def test_a_configured_capacity_holds_from_the_start_and_is_never_relearned(metrics_server):
    pages = iter(["w 0\nr 1\n", "w 1\nr 2\n", "w 2\nr 2\n", "w 0\nr 6\n"])

    async def page(request):
        return web.Response(text=next(pages))

    s, session = await metrics_server(page, capacity=4)
    assert s.capacity == 4.0
    s.reading = Reading(waiting=0, running=1, kv_cache=None, at=100.0, inflight_at=0)
    s.inflight = 5  # a burst before it ever queued: the batch is known to be full at 4
    assert s.estimate(100.1) == (2.0, 4.0, 0.0, True)
    seen = []
    for _ in range(4):
        assert await s.scrape_once(session)
        seen.append(s.capacity)
    assert seen == [4.0, 4.0, 4.0, 4.0]  # a queue at 2 running (two readings) and a batch of 6 change nothing
    assert s.report()["capacity"] == 4.0


async def test_the_background_task_scrapes_until_closed(metrics_server):
    hits = []

    async def page(request):
        hits.append(1)
        return web.Response(text="w 0\nr 1\n")

    s, session = await metrics_server(page)
    s.start()
    try:
        for _ in range(100):
            if len(hits) >= 3:
                break
            await asyncio.sleep(0.02)
        assert len(hits) >= 3 and s.reading is not None
    finally:
        await s.close()
    n = len(hits)
    await asyncio.sleep(0.15)
    assert len(hits) == n  # stopped
