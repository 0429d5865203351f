"""Real agent CLIs and SDKs (npm packages pinned in tests/clients/package.json, installed by .ci/run
with `npm ci --prefix tests/clients`) driven against the gateway on emulated backends.

Every test skips, saying why, where Node or the package is missing; every run is bounded in time and
its whole process group is killed when it overruns."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest

HERE = Path(__file__).parent
MODULES = HERE / "node_modules"
README = HERE.parent.parent / "README.md"
RUN_TIMEOUT = 120.0  # seconds for one CLI run (a two-step tool loop takes a few)

# Gateway model -> (emulated backend kind, backend model): one of each family the issue names.
BACKENDS = {
    "agent-openai": ("openai", "llama-3.1-8b"),
    "agent-anthropic": ("anthropic", "claude-sonnet-4-5"),
    "agent-ollama": ("ollama", "llama3.1:8b"),
}


def readme_config(heading: str, gateway_url: str, model: str) -> str:
    """The config block the README's "Agents" section shows under `heading` (the first fenced block
    after it), pointed at this gateway and model: the tests run the very setup a user copies."""
    text = README.read_text()
    start = text.index(heading)
    block = re.search(r"```\w*\n(.*?)```", text[start:], re.DOTALL)
    assert block, f"README: no code block under {heading}"
    config = block.group(1)
    assert "http://127.0.0.1:4000" in config and re.search(r"\bdemo-\w+", config), config
    return re.sub(r"\bdemo-\w+", model, config.replace("http://127.0.0.1:4000", gateway_url))


def installed(package: str, binary: str | None = None) -> tuple[Path | None, str]:
    """(the package's bin or directory, its version); skips the test when Node or the package is missing."""
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed: the real-client tests need node and npm")
    manifest = MODULES / package / "package.json"
    if not manifest.is_file():
        pytest.skip(f"{package} is not installed: run `npm ci --prefix tests/clients` (.ci/run does)")
    version = json.loads(manifest.read_text())["version"]
    path = MODULES / ".bin" / binary if binary else MODULES / package
    if not path.exists():
        pytest.skip(f"{package} {version} has no {path.name} here")
    return path, version


async def run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = RUN_TIMEOUT) -> tuple[int, str, str]:
    """Run a client to completion (stdin closed); a run past `timeout` is killed and fails the test."""
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, start_new_session=True)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        os.killpg(proc.pid, signal.SIGKILL)  # the client's own process group: it may have spawned tools
        await proc.wait()
        pytest.fail(f"{argv[0]} did not finish within {timeout:g}s")
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def base_env(home: Path) -> dict[str, str]:
    """A clean environment: its own HOME, no proxy, nothing of the developer's own configuration."""
    home.mkdir(parents=True, exist_ok=True)
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "TMPDIR") if k in os.environ}
    return {**keep, "HOME": str(home), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}


async def served(session, server, route: str) -> int:
    """How many requests answered 200 on `route` (from /metrics: the counters are per process, so a
    test compares before and after)."""
    async with session.get(server.make_url("/metrics")) as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("llm_proxy_requests_total{") and f'route="{route}"' in line and 'status="200"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)
