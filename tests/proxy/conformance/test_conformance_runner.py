"""The runner's deadlines and selection, the command line (exit status, table, --json, --only,
--list, --header) and the report rendering."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
from aiohttp import web

from loadtest.emulators import openai as openai_emulator
from proxy.cli import main as cli_main
from proxy.conformance.http import Target
from proxy.conformance.probe import LEVELS, PASS, TIMEOUT, probes
from proxy.conformance.report import results_matrix, table
from proxy.conformance.runner import run, select


async def test_slow_server_gets_timeouts_within_the_deadline(start_emulator):
    url = await start_emulator("openai")
    target = Target(url + "/v1", "openai", "emulated-gpt", headers=(("x-emulate", "hang"),))
    started = time.monotonic()
    report = await run(target, only=frozenset({"chat", "stream"}), timeout=0.2, deadline=0.7)
    assert time.monotonic() - started < 3
    statuses = [r.status for r in report.results]
    assert statuses == [TIMEOUT] * len(statuses) and len(statuses) == 11
    assert report.results[0].evidence == "no complete answer within 0.2s"
    assert "total deadline of 0.7s" in report.results[-1].evidence
    assert not report.ok


async def test_a_refused_connection_fails_the_probe_with_evidence():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    report = await run(Target(f"http://127.0.0.1:{port}/v1", "openai", "m"), only=frozenset({"chat.basic"}))
    (result,) = report.results
    assert result.status == "fail" and "ClientConnectorError" in result.evidence


def test_only_selects_ids_groups_and_levels():
    assert {p.id for p in select("openai", frozenset({"tools"}))} == {p.id for p in probes("openai") if p.level == "tools"}
    assert {p.group for p in select("openai", frozenset({"stream"}))} == {"stream"}
    assert [p.id for p in select("anthropic", frozenset({"stream.usage", "errors"}))] == [
        "errors.unknown_model", "errors.invalid_body", "stream.usage"]
    with pytest.raises(ValueError, match="toolz"):
        select("openai", frozenset({"toolz"}))


def test_every_probe_is_documented_and_levelled():
    for fmt in ("openai", "anthropic"):
        ids = [p.id for p in probes(fmt)]
        assert len(ids) == len(set(ids))
        for p in probes(fmt):
            assert p.level in LEVELS and len(p.doc.split("\n\n")) >= 2, p.id  # the rule, then what breaks


@pytest.fixture
def emulator_url():
    """An OpenAI emulator on its own loop in a thread, for the synchronous command line."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(openai_emulator.create_app())
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/v1"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def _cli(url: str, *extra: str) -> int:
    return cli_main(["conformance", "--url", url, "--format", "openai", "--model", "emulated-gpt", *extra])


def test_command_line_passes_and_writes_json(emulator_url, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert _cli(emulator_url, "--json", str(out)) == 0
    printed = capsys.readouterr().out
    assert "stream.framing" in printed and "score: core 14/14; tools 8/8; extras 8/8" in printed
    report = json.loads(out.read_text())
    assert report["ok"] and report["probe_set"] and report["format"] == "openai"
    assert {r["status"] for r in report["results"]} == {PASS}
    assert report["scores"]["core"] == {"pass": 14, "fail": 0, "timeout": 0, "not supported": 0, "total": 14}


def test_command_line_exit_status_follows_core_failures(emulator_url, capsys):
    assert _cli(emulator_url, "--header", "x-emulate:defect=no_done", "--only", "stream") == 1
    assert "stream.framing           core    FAIL" in capsys.readouterr().out
    # A tools-level failure is reported but does not fail the run.
    assert _cli(emulator_url, "--header", "x-emulate:defect=tool_finish_stop", "--only", "tools") == 0
    assert "tools.call" in capsys.readouterr().out


def test_command_line_usage_errors_and_list(capsys):
    assert _cli("http://127.0.0.1:9/v1", "--only", "nope") == 2
    assert "unknown probe, group or level: nope" in capsys.readouterr().err
    assert _cli("http://127.0.0.1:9/v1", "--header", "novalue") == 2
    assert _cli("http://127.0.0.1:9/v1", "--list") == 0
    listing = capsys.readouterr().out
    assert all(p.id in listing for p in probes("openai"))


def test_table_and_matrix_rendering():
    report = {"probe_set": "1.0", "format": "openai", "url": "http://x/v1", "model": "m", "ok": False, "seconds": 1.5,
              "scores": {"core": {"pass": 1, "fail": 1, "timeout": 0, "not supported": 0, "total": 2},
                         "extras": {"pass": 0, "fail": 0, "timeout": 0, "not supported": 1, "total": 1}},
              "results": [{"id": "chat.basic", "level": "core", "status": "pass", "evidence": "sent -> got"},
                          {"id": "chat.stop", "level": "core", "status": "fail", "evidence": "x" * 500},
                          {"id": "extras.n", "level": "extras", "status": "not supported", "evidence": "400"}]}
    text = table(report, width=100)
    assert "chat.stop   core    FAIL     xxx" in text and max(len(line) for line in text.splitlines()) <= 100
    assert "score: core 1/2; extras 0/0, 1 not supported" in text and "FAILED" in text
    matrix = results_matrix({"a": report, "b": report})
    assert "| `chat.stop` | **fail** | **fail** |" in matrix and "| `extras.n` | not supported |" in matrix


def test_a_probe_title_is_its_whole_rule():
    p = next(p for p in probes("anthropic") if p.id == "messages.basic")
    assert p.title.endswith("and usage with integer input_tokens and output_tokens.") and "\n" not in p.title
