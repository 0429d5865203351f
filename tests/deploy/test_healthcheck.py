"""deploy/healthcheck.py, the image's HEALTHCHECK: it finds the running `llm-proxy` command in /proc and
checks what that command serves, on the port it was given -- /health/live for serve and demo, a TCP
connect for an emulator -- so an emulator container is not reported unhealthy for lacking the
gateway's port.  Here /proc is a fake tree; test_image.py runs the real one inside containers."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from aiohttp import web
from deploy_support import DEPLOY, free_port, load_deploy_module

hc = load_deploy_module("healthcheck")


def fake_proc(tmp_path: Path, processes: dict[int, list[str]]) -> Path:
    proc = tmp_path / "proc"
    for pid, argv in processes.items():
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (proc / "self").mkdir(parents=True, exist_ok=True)  # not a PID: skipped
    return proc


def proxy(*args: str) -> list[str]:
    return ["/opt/venv/bin/python", "/opt/venv/bin/llm-proxy", *args]


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def run_main(proc: Path) -> int:
    return await asyncio.to_thread(hc.main, proc)


def test_finds_the_lowest_llm_proxy_process(tmp_path):
    proc = fake_proc(tmp_path, {
        1: ["docker-init", "--", "/usr/local/bin/llm-proxy-entrypoint"],
        7: proxy("serve", "--config", "/c.yaml", "--port", "4000"),
        9: ["/opt/venv/bin/python", "-c", "from multiprocessing.spawn import spawn_main"],
        12: proxy("emulate", "openai"),
    })  # fmt: skip
    assert hc.llm_proxy_argv(proc) == ["serve", "--config", "/c.yaml", "--port", "4000"]
    assert hc.llm_proxy_argv(fake_proc(tmp_path / "none", {1: ["sleep", "9"]})) is None


@pytest.mark.parametrize("command", ["serve", "demo"])
@pytest.mark.parametrize(("status", "healthy"), [(200, 0), (503, 1)])
async def test_gateway_is_checked_on_health_live(tmp_path, aiohttp_server, command, status, healthy):
    async def live(request: web.Request) -> web.Response:
        return web.Response(status=status, text="x")

    app = web.Application()
    app.router.add_get("/health/live", live)
    server = await aiohttp_server(app, host="127.0.0.1")
    extra = ["--config", "/c.yaml"] if command == "serve" else []
    proc = fake_proc(tmp_path, {1: proxy(command, *extra, "--host", "0.0.0.0", "--port", str(server.port))})
    assert await run_main(proc) == healthy


async def test_serve_port_from_the_environment_default(tmp_path, aiohttp_server, monkeypatch):
    app = web.Application()
    app.router.add_get("/health/live", ok)
    server = await aiohttp_server(app, host="127.0.0.1")
    monkeypatch.setenv("LLM_PROXY_HOST", "0.0.0.0")
    monkeypatch.setenv("LLM_PROXY_PORT", str(server.port))
    # The entrypoint passes neither --host nor --port: the CLI defaults (LLM_PROXY_*) apply.
    assert await run_main(fake_proc(tmp_path, {1: proxy("serve", "--config", "/c.yaml", "--workers", "auto")})) == 0


async def test_serve_port_from_the_config(tmp_path, aiohttp_server, monkeypatch):
    app = web.Application()
    app.router.add_get("/health/live", ok)
    server = await aiohttp_server(app, host="127.0.0.1")
    monkeypatch.delenv("LLM_PROXY_HOST", raising=False)
    monkeypatch.delenv("LLM_PROXY_PORT", raising=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"server: {{host: 127.0.0.1, port: {server.port}}}\n"
                   "backends: {e: {provider: openai, base_url: 'http://127.0.0.1:9/v1'}}\nmodels: [{name: m, backend: e}]\n")
    assert await run_main(fake_proc(tmp_path, {1: proxy("serve", "--config", str(cfg))})) == 0
    cfg.write_text("server: {port: nope}\n")
    assert await run_main(fake_proc(tmp_path / "2", {1: proxy("serve", "--config", str(cfg))})) == 1


async def test_gateway_not_listening_is_unhealthy(tmp_path):
    proc = fake_proc(tmp_path, {1: proxy("demo", "--port", str(free_port()))})
    assert await run_main(proc) == 1


async def test_emulator_is_checked_on_its_own_port(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        # `--host 0.0.0.0` is probed on loopback; LLM_PROXY_PORT (the gateway's) is not the emulator's.
        proc = fake_proc(tmp_path, {1: proxy("emulate", "openai", "--host", "0.0.0.0", "--port", str(port))})
        assert await run_main(proc) == 0
    assert await run_main(proc) == 1  # closed now


@pytest.mark.parametrize("args", [("check-config", "/etc/llm-proxy/config.yaml"), ("bench", "smoke", "--out", "x")])
async def test_one_shot_commands_are_healthy_while_they_run(tmp_path, args):
    assert await run_main(fake_proc(tmp_path, {1: proxy(*args)})) == 0


async def test_no_llm_proxy_process_is_unhealthy(tmp_path, capsys):
    assert await run_main(fake_proc(tmp_path, {1: ["python", "/opt/llm-proxy/traffic.py"]})) == 1
    assert "no llm-proxy process" in capsys.readouterr().out


ENVS = [{}, {"LLM_PROXY_HOST": "0.0.0.0", "LLM_PROXY_PORT": "4100"}, {"LLM_PROXY_PORT": "4200"}]
ARGVS = [
    ["demo"], ["demo", "--port", "5000"], ["demo", "--host=::1", "--port=5001"],
    ["emulate", "openai"], ["emulate", "anthropic", "--port", "8001", "--host", "0.0.0.0"],
    ["serve", "--config", "c.yaml"], ["serve", "--config", "c.yaml", "--workers", "auto", "--port", "4300"],
]  # fmt: skip


@pytest.mark.parametrize("environ", ENVS)
@pytest.mark.parametrize("argv", ARGVS, ids=" ".join)
def test_restated_defaults_agree_with_the_cli(argv, environ):
    # The check restates the CLI's listening defaults so that it imports nothing heavy; they must agree.
    from proxy.cli import build_parser

    args = build_parser(environ).parse_args(argv)
    assert hc.address(argv, environ) == (args.host, args.port)


def test_the_check_imports_nothing_of_the_proxy():
    import subprocess
    import sys

    code = ("import runpy, sys; runpy.run_path(sys.argv[1], run_name='hc'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('proxy', 'aiohttp', 'msgspec', 'yaml')))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, str(DEPLOY / "healthcheck.py")], capture_output=True, text=True,
                         timeout=30, check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"
