"""`llm-proxy bench routing` (loadtest/bench/routing.py, routing_report.py): the workloads are the same
for every strategy, the generated gateway configs are valid, the figures are computed right, and a
tiny real run (processes, a restart) completes without errors."""

from __future__ import annotations

import json

import pytest

from loadtest.bench import routing, routing_report
from loadtest.bench.routing import Run, Sample
from proxy.config import load_config_dict


def test_arrivals_and_prompts_are_seeded_and_bounded():
    w = routing.workloads()["shared-prompts"]
    a, b = routing.requests_for(w, 1), routing.requests_for(w, 1)
    assert a == b and a != routing.requests_for(w, 2)
    assert all(0 < t < w.seconds for t, _ in a) and 0.7 * w.rate * w.seconds < len(a) < 1.3 * w.rate * w.seconds
    systems = {json.loads(body)["messages"][0]["content"] for _, body in a}
    assert len(systems) == 20 and all(len(s) > 2048 for s in systems)  # longer than the affinity window
    unique = routing.requests_for(routing.workloads()["slow-server"], 1)
    assert len({json.loads(body)["messages"][-1]["content"] for _, body in unique}) == len(unique)


@pytest.mark.parametrize("strategy", routing.STRATEGIES)
def test_generated_gateway_configs_are_valid(strategy):
    w = routing.workloads()["slow-server"]
    cfg = load_config_dict(routing.gateway_config(w, strategy, [8001, 8002]), env={})
    model = cfg.models[0]
    assert model.strategy == routing.STRATEGIES[strategy]["strategy"]
    assert (model.prefix_affinity is not None) == strategy.endswith("+prefix")
    assert cfg.backends["s1"].load.metrics_url == "http://127.0.0.1:8002/metrics"
    assert cfg.backends["s1"].load.capacity == w.servers[1].slots  # as vLLM's --max-num-seqs is configured
    learned = load_config_dict(routing.gateway_config(w, strategy, [8001, 8002], capacity=False), env={})
    assert learned.backends["s1"].load.capacity is None


def test_summary_figures():
    w = routing.workloads()["restart"]
    run = Run("restart", "load-aware", wall=2.0, cache=(30.0, 100.0), back_at=1.0)
    run.samples = [Sample(0.1, 0.010, 0.5, "s0"), Sample(0.2, 0.020, 0.6, "s0"), Sample(0.3, 0.030, 0.7, "s0"),
                   Sample(1.2, 0.050, 1.5, "s1"), Sample(1.3, error="HTTP 502")]
    r = routing_report.summarise(run, w)
    assert r["requests"] == 5 and r["errors"] == 1 and r["error_kinds"] == {"HTTP 502": 1}
    assert r["throughput_rps"] == 2.0 and r["cache_hit_ratio"] == 0.3
    assert r["per_server"] == {"s0": 3, "s1": 1} and r["load_spread"] == 1.5  # 3 / mean 2
    assert r["recovery_s"] == pytest.approx(0.25)  # s1 back at 1.0, first token at 1.2 + 0.05
    assert r["ttft_p50_ms"] == pytest.approx(25.0)
    table = routing_report.markdown([r])
    assert "| restart | load-aware | 5 | 1 |" in table and table.count("\n") == 3


@pytest.mark.timeout(120)
def test_a_tiny_run_end_to_end(tmp_path, capsys):
    rc = routing.main(["--out", str(tmp_path), "--workloads", "restart", "--strategies", "load-aware",
                       "--scale", "0.15", "--no-plot"])
    results = json.loads((tmp_path / "routing.json").read_text())
    assert rc == 0, capsys.readouterr().out
    (r,) = results
    assert r["errors"] == 0 and r["requests"] > 10 and r["ttft_p50_ms"] > 0
    assert r["gateway_view"]["s0"]["state"] == "fresh"
    assert "| restart | load-aware |" in (tmp_path / "routing.md").read_text()
