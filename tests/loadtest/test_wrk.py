"""wrk as the `--isolated` load generator: its summary parsed (from real wrk output), its Lua script
delivering the exact body and headers (checked against a real wrk when installed)."""

from __future__ import annotations

import pytest
from aiohttp import web

from loadtest.bench import scenario, wrk

OUTPUT = b"""Running 1s test @ http://127.0.0.1:38513/v1/chat/completions
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.24ms    1.71ms  31.61ms   95.81%
    Req/Sec     6.26k   355.58     6.58k    88.33%
  Latency Distribution
     50%   41.00us
     75%    5.53ms
     90%    1.10s
     99%    0.95ms
  86236 requests in 1.10s, 8.22MB read
  Socket errors: connect 0, read 2, write 1, timeout 4
  Non-2xx or 3xx responses: 12
Requests/sec:  78414.11
Transfer/sec:      7.48MB
"""


def test_parse_a_summary_with_errors():
    r = wrk.parse(OUTPUT)
    assert (r.requests, r.seconds, r.rps) == (86236, 1.1, 78414.11)
    assert r.latency_ms == {"p50": 0.041, "p75": 5.53, "p90": 1100.0, "p99": 0.95}
    assert (r.socket_errors, r.non_2xx, r.errors) == (7, 12, 19)


def test_parse_a_clean_summary_and_refuse_no_summary():
    clean = b"\n".join(line for line in OUTPUT.splitlines() if b"errors" not in line and b"Non-2xx" not in line)
    assert wrk.parse(clean).errors == 0
    with pytest.raises(ValueError):
        wrk.parse(b"unable to connect to 127.0.0.1:1 Connection refused\n")


def test_lua_long_strings_cannot_be_closed_by_their_text():
    assert wrk._lua_string(b'{"a":"]]"}') == '[=[{"a":"]]"}]=]'
    assert wrk._lua_string(b"\nx") == "[[\n\nx]]"  # Lua drops the first newline after the bracket


@pytest.mark.skipif(wrk.path() is None, reason="wrk is not installed (apt-get install wrk)")
@pytest.mark.parametrize("fmt", ["openai", "anthropic"])
async def test_wrk_sends_the_endpoint_body_and_headers(aiohttp_server, tmp_path, fmt):
    seen: list[tuple[bytes, dict]] = []

    async def handler(request: web.Request) -> web.Response:
        if len(seen) < 50:  # every wrk request is the same: keep a few
            seen.append((await request.read(), dict(request.headers)))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/v1/x", handler)
    server = await aiohttp_server(app)
    ep = scenario.native(str(server.make_url("")).rstrip("/"), scenario.PATHS[f"openai->{fmt}"], 4, True)
    script = wrk.write_script(ep, str(tmp_path), fmt)
    r = await wrk.run(str(server.make_url("/v1/x")), script, connections=2, seconds=1)
    assert r.requests > 0 and r.errors == 0 and r.rps > 0 and set(r.latency_ms) == {"p50", "p75", "p90", "p99"}
    assert seen and all(body == ep.body for body, _ in seen)
    for _, headers in seen:
        assert {k: headers.get(k) for k in ep.headers} == ep.headers
