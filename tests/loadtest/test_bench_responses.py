"""The harness's Responses API points (`llm-proxy bench responses`): the request bodies, the
`previous_response_id` chains of the load generator, the store-on minus store-off report, the preset
and its flags, and one tiny run through real gateways storing in SQLite (and Redis when installed).
Shapes and arithmetic only: timings are reported, never asserted."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3

import orjson
import pytest
from aiohttp import web

from loadtest.bench import cli, loadgen, report, runner, scenario
from loadtest.bench.loadgen import Batch, Chain, Endpoint
from loadtest.bench.plan import PRESETS, LoadPoint, Plan
from loadtest.bench.runner import Measured


# -- bodies ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("stream", "store"), [(False, False), (True, True)])
def test_responses_body_sets_stream_and_store(stream, store):
    doc = orjson.loads(scenario.body("responses", "m", stream, store))
    assert doc == {"model": "m", "instructions": scenario.SYSTEM, "input": scenario.PROMPT,
                   "max_output_tokens": scenario.MAX_TOKENS, "stream": stream, "store": store}  # fmt: skip


def test_proxied_responses_endpoint_targets_v1_responses_with_its_chain():
    ep = scenario.proxied("http://p", scenario.RESPONSES, "zero", True, store=True, chain=3)
    assert ep.url == "http://p/v1/responses" and ep.fmt == "responses" and ep.chain == 3
    assert orjson.loads(ep.body)["store"] is True
    assert scenario.ALL_PATHS["responses->openai"] is scenario.RESPONSES
    assert "responses->openai" not in scenario.PATHS  # the chat presets keep their paths


# -- chains --------------------------------------------------------------------------------------------
def test_chain_continues_the_last_answer_and_restarts_after_its_length():
    base = b'{"model":"m","store":true}'
    c = Chain(2)
    bodies = []
    for i in range(7):
        bodies.append(c.body(base))
        assert c.saw(b'{"id":"resp_%d","object":"response","output":[{"id":"msg_x"}]}' % i)
    prev = [orjson.loads(b).get("previous_response_id") for b in bodies]
    # fresh, 2 continuations, fresh, 2 continuations, fresh
    assert prev == [None, "resp_0", "resp_1", None, "resp_3", "resp_4", None]
    assert all(orjson.loads(b)["model"] == "m" for b in bodies)


def test_chain_restarts_after_an_answer_without_an_id():
    c = Chain(5)
    c.body(b"{}")
    assert c.saw(b'{"id":"resp_a"}')
    assert c.body(b'{"a":1}') == b'{"a":1,"previous_response_id":"resp_a"}'
    assert not c.saw(b'{"error":{"message":"x"}}')
    assert c.body(b'{"a":1}') == b'{"a":1}'


def _responses_app(stream: bool):
    """Answers like the gateway's Responses API (the id first), recording each request's previous id."""
    seen: list[str | None] = []
    n = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal n
        seen.append(orjson.loads(await request.read()).get("previous_response_id"))
        n += 1
        rid = f"resp_{n:04d}"
        if not stream:
            return web.json_response({"id": rid, "object": "response", "output": [{"id": "msg_1", "type": "message"}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'event: response.created\ndata: {"type":"response.created","response":{"id":"%s"}}\n\n'
                         % rid.encode())  # fmt: skip
        await resp.write(b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"x"}\n\n')
        await resp.write(b'event: response.completed\ndata: {"type":"response.completed","response":{"id":"%s"}}\n\n'
                         % rid.encode())  # fmt: skip
        return resp

    app = web.Application()
    app.router.add_post("/v1/responses", handler)
    return app, seen


@pytest.mark.parametrize("stream", [False, True])
async def test_closed_loop_chains_each_sender_and_counts_stream_events(aiohttp_server, stream):
    app, seen = _responses_app(stream)
    server = await aiohttp_server(app, host="127.0.0.1")
    ep = Endpoint(str(server.make_url("/v1/responses")), b'{"store":true}', {}, stream, "responses", chain=2)
    async with loadgen.new_session() as s:
        batch = await asyncio.wait_for(loadgen.closed_loop(s, ep, 1, 6, 10.0), 15)
    assert batch.errors == 0 and len(batch.latencies) == 6
    assert seen == [None, "resp_0001", "resp_0002", None, "resp_0004", "resp_0005"]
    if stream:
        assert len(batch.ttfts) == 6 and batch.events == 6 * 3


async def test_endpoints_without_a_chain_send_their_body_unchanged(aiohttp_server):
    app, seen = _responses_app(False)
    server = await aiohttp_server(app, host="127.0.0.1")
    ep = Endpoint(str(server.make_url("/v1/responses")), b'{"store":true}', {}, False, "responses")
    async with loadgen.new_session() as s:
        await asyncio.wait_for(loadgen.closed_loop(s, ep, 2, 4, 10.0), 15)
    assert seen == [None] * 4


# -- the report: store on minus store off ------------------------------------------------------------
def _measured(latencies, cpu=None):
    return Measured(batch=Batch(list(latencies), wall=1.0), cpu=cpu)


def test_store_cost_is_each_stored_target_minus_the_store_off_proxy():
    lp = LoadPoint("zero", "responses->openai", False)
    measured = {
        "native": _measured([0.001] * 10),
        "proxy": _measured([0.002] * 10, cpu=0.003),  # 300 µs / request
        "proxy-store-sqlite": _measured([0.0025] * 10, cpu=0.005),
        "proxy-chain-sqlite": _measured([0.003] * 9 + [0.010], cpu=0.006),
    }
    r = report.point_result(lp, 0.0, measured, None)
    sc = r["store_cost"]
    assert set(sc) == {"proxy-store-sqlite", "proxy-chain-sqlite"}
    assert sc["proxy-store-sqlite"]["p50_ms"] == pytest.approx(0.5)
    assert sc["proxy-store-sqlite"]["cpu_us_per_req"] == pytest.approx(200.0)
    assert sc["proxy-chain-sqlite"]["p50_ms"] == pytest.approx(1.0)
    assert sc["proxy-chain-sqlite"]["p99_ms"] == pytest.approx(10.0 * 0.91 + 3.0 * 0.09 - 2.0)  # interpolated p99
    assert sc["proxy-chain-sqlite"]["cpu_us_per_req"] == pytest.approx(300.0)
    table = report.markdown({"points": [r]}).split("\n\n")[1].strip().splitlines()
    assert table[0].startswith("| Path | Load | Target | Added p50 / p99 (ms) |")
    assert len(table) == 2 + 3  # header, separator, proxy (store off), the two stored targets
    store = [c.strip() for c in table[3].strip("|").split("|")]
    assert store == ["responses->openai", "closed c=1", "proxy-store-sqlite", "1.500 / 1.500", "500",
                     "0.500 / 0.500", "0.500", "200"]  # fmt: skip


def test_points_without_stored_targets_have_no_store_cost_table():
    lp = LoadPoint("zero", "openai->openai", False)
    r = report.point_result(lp, 0.0, {"native": _measured([0.001]), "proxy": _measured([0.002], cpu=0.001)}, None)
    assert r["store_cost"] == {}
    assert "Store on − off" not in report.markdown({"points": [r]})


# -- preset and flags -----------------------------------------------------------------------------------
def test_responses_preset_and_its_flags():
    plan = cli.build_plan(cli.parse_args(["responses"]))
    assert plan.name == "responses" and plan.response_stores == ("sqlite", "redis") and plan.key_stores == ()
    assert {(lp.path, lp.stream) for lp in plan.points} == {("responses->openai", False), ("responses->openai", True)}
    assert all(lp.rounds > 1 and lp.deadline > 0 and lp.concurrency == 1 for lp in plan.points)
    assert cli.build_plan(cli.parse_args(["responses", "--response-stores", "sqlite"])).response_stores == ("sqlite",)
    # the Responses path is selectable from any preset with --paths
    kept = cli.build_plan(cli.parse_args(["responses", "--paths", "responses->openai"])).points
    assert len(kept) == 2
    assert PRESETS["smoke"]().response_stores == ()


# -- one tiny run through real gateways -----------------------------------------------------------------
async def test_a_tiny_responses_run_stores_and_reads_chains(tmp_path):
    stores = ("sqlite", "redis") if shutil.which("redis-server") else ("sqlite",)
    points = [LoadPoint("zero", "responses->openai", s, requests=6, rounds=1, deadline=10) for s in (False, True)]
    plan = Plan("t", points, warmup=1, response_stores=stores, chain_length=2)
    results = await asyncio.wait_for(runner.run(plan, runner.Options(out_dir=str(tmp_path), hops=()), lambda m: None), 60)
    for p in results["points"]:
        assert set(p["targets"]) == {"native", "proxy"} | {f"proxy-{k}-{s}" for k in ("store", "chain") for s in stores}
        for name, t in p["targets"].items():
            assert t["errors"] == 0, (name, t["error_samples"])
        assert set(p["store_cost"]) == {f"proxy-{k}-{s}" for k in ("store", "chain") for s in stores}
        assert all(c["cpu_us_per_req"] is not None for c in p["store_cost"].values())
    # the chains continued stored answers: some stored records carry a history of earlier items
    db = sqlite3.connect(tmp_path / "responses.db")
    try:
        histories = [len(json.loads(data).get("history", [])) for (data,) in
                     db.execute("SELECT data FROM records WHERE id LIKE 'r/%'")]  # fmt: skip
    finally:
        db.close()
    assert histories and max(histories) >= 4 and min(histories) == 0
