"""deploy/entrypoint.sh: `serve` gets the config path and `--workers auto` (the CLI counts the usable CPUs,
tests/proxy/test_cpus.py) unless LLM_PROXY_WORKERS says otherwise; every other command goes to `llm-proxy`
untouched; the proxy is exec'd (same PID, so it receives SIGTERM)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_support import DEPLOY

ENTRYPOINT = DEPLOY / "entrypoint.sh"
SHELLS = [s for s in ("/bin/sh", shutil.which("dash"), shutil.which("bash")) if s]

# A stand-in for the console script: prints its PID and arguments, one per line.
FAKE = '#!/bin/sh\necho "pid=$$"\nfor a in "$@"; do echo "$a"; done\n'


def run(tmp_path: Path, *args: str, shell: str = "/bin/sh", **env: str) -> tuple[int, list[str]]:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    fake = bindir / "llm-proxy"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    base = {"PATH": f"{bindir}:/usr/bin:/bin"}
    # `echo $$` before exec: the same PID printed by the fake proves the entrypoint exec'd it.
    script = f'echo "pid=$$"; exec {shell} {ENTRYPOINT} "$@"'
    res = subprocess.run([shell, "-c", script, "sh", *args], env={**base, **env}, capture_output=True,
                         text=True, timeout=10)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == lines[1], "the proxy must replace the entrypoint (exec), not run as its child"
    return res.returncode, lines[2:]


def test_syntax():
    for shell in SHELLS:
        subprocess.run([shell, "-n", str(ENTRYPOINT)], check=True, timeout=10)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("args", [(), ("serve",)])
def test_serve_defaults(tmp_path, shell, args):
    _, argv = run(tmp_path, *args, shell=shell)
    assert argv == ["serve", "--config", "/etc/llm-proxy/config.yaml", "--workers", "auto"]


def test_serve_from_environment(tmp_path):
    _, argv = run(
        tmp_path, "serve", "--log-level", "debug",
        LLM_PROXY_WORKERS="3", LLM_PROXY_CONFIG="/cfg/x.yaml", LLM_PROXY_PORT="8080", LLM_PROXY_HOST="127.0.0.1",
    )
    # Host and port are the CLI's defaults from LLM_PROXY_HOST / LLM_PROXY_PORT (tests/proxy/test_cli.py).
    assert argv == ["serve", "--config", "/cfg/x.yaml", "--workers", "3", "--log-level", "debug"]


def test_empty_workers_means_auto(tmp_path):
    _, argv = run(tmp_path, LLM_PROXY_WORKERS="")
    assert argv[argv.index("--workers") + 1] == "auto"


@pytest.mark.parametrize(
    "args",
    [("emulate", "openai", "--host", "0.0.0.0", "--port", "8000"), ("check-config", "/etc/llm-proxy/config.yaml"), ("demo",)],
)
def test_other_commands_pass_through(tmp_path, args):
    _, argv = run(tmp_path, *args, LLM_PROXY_WORKERS="3")
    assert argv == list(args)
