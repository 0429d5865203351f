"""CI smoke run of `llm-proxy bench smoke`: every process and code path of the harness, under a
minute.  It checks the outputs' shape, not speed (timing targets are reported, never asserted)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Any OpenAI-compatible proxy can be compared; the bare hop stands in for one here.
COMPARE = f"{sys.executable} -m loadtest.bench.bare_hop --port {{port}} --route v1={{openai_url}}"


def test_smoke_run_writes_table_json_and_plot(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "bench", "smoke", "--out", str(out), "--compare-cmd", COMPARE,
         "--compare-hop", "bare,minimal"],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads((out / "report.json").read_text())
    assert results["plan"] == "smoke"
    paths = {(p["path"], p["stream"]) for p in results["points"]}
    assert paths >= {(p, s) for p in ("openai->openai", "openai->anthropic", "anthropic->openai", "openai->ollama") for s in (False, True)}
    for p in results["points"]:
        assert p["targets"]["native"]["requests"] > 0
        for name, t in p["targets"].items():
            assert t["errors"] == 0, (p["label"], name, t["error_samples"])
            assert t["latency"]["n"] == t["requests"]
            if name != "native":
                assert t["cpu_us_per_req"] is not None and t["cpu_us_per_req"] > 0
                assert p["added"][name]["p50_ms"] is not None
        if p["stream"]:
            assert p["targets"]["proxy"]["ttft"]["n"] > 0
            assert p["targets"]["proxy"]["cpu_us_per_chunk"] > 0
    passthrough = next(p for p in results["points"] if p["path"] == "openai->openai" and not p["stream"])
    assert "bare-hop" in passthrough["targets"]
    # the minimal hop runs on every path (translated ones too) and the ratios are reported
    assert all("minimal-hop" in p["targets"] for p in results["points"] if not p["label"].endswith("workers 1/2"))
    measures = {r["measure"] for r in results["hop_ratios"]["rows"]}
    assert {"added p50 (ms)", "added TTFT p50 (ms)", "throughput (req/s)", "CPU / relayed chunk (µs)",
            "peak RSS (MiB)", "RSS slope (MiB/min)"} <= measures
    assert results["open_streams"]["references"]["minimal-hop"]["completed"] == results["open_streams"]["streams"]
    assert passthrough["self_reported"]["count"] == passthrough["targets"]["proxy"]["requests"]
    assert passthrough["targets"]["compare"]["latency"]["n"] > 0
    # the limited-key proxies (state stores) are targets of every single-worker point
    stores = ["sqlite"] + (["redis"] if shutil.which("redis-server") else [])
    for p in results["points"]:
        if "proxy" in p["targets"]:
            for s in stores:
                assert p["targets"][f"proxy-key-{s}"]["requests"] > 0
                assert p["self_reported_keys"][f"proxy-key-{s}"]["count"] == p["targets"][f"proxy-key-{s}"]["requests"]
    for s in stores:
        assert results["state_cost"][s]["admit+settle"]["n"] == 200
    workers = next(p for p in results["points"] if p["targets"].get("proxy-2w"))
    assert workers["targets"]["proxy-2w"]["throughput_rps"] > 0
    assert results["open_streams"]["completed"] == results["open_streams"]["streams"]
    assert results["soak"]["rss_end_mib"] > 0
    table = (out / "report.md").read_text()
    assert table.startswith("| Backend profile | Path | Load | Target |")
    assert "Gateway against the minimal-hop" in table
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "proxy-config.yaml" in os.listdir(out)
