"""The image's HEALTHCHECK, right for every command the image runs.

Docker gives an image one check, but this image runs the gateway (`serve`, `demo`: GET /health/live must
answer 2xx), emulated backends (`emulate FORMAT`: the port must accept connections; emulators have no
health route) and one-shot commands (`check-config`, `bench`: healthy while they run).  The check reads
the command line of the running `llm-proxy` process (the lowest PID: PID 1, or its child under
`docker run --init`) and probes the port that process was given, with the CLI's defaults
(LLM_PROXY_HOST / LLM_PROXY_PORT included).

It runs every 10 s under a 3 s timeout, on a container that may be CPU-throttled, so it imports nothing
of the proxy on the usual path: the few CLI defaults it needs are restated below, and
tests/deploy/test_healthcheck.py checks them against the CLI's own parser.

Exit status 0 is healthy, 1 unhealthy (Docker's contract); the one line printed lands in
`docker inspect`'s health log.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from pathlib import Path

TIMEOUT = 2.0  # under the HEALTHCHECK --timeout, so a hung server is reported, not killed


def llm_proxy_argv(proc: Path = Path("/proc")) -> list[str] | None:
    """The arguments after `llm-proxy` of the lowest-numbered llm-proxy process, or None."""
    for pid in sorted((int(p.name) for p in proc.iterdir() if p.name.isdigit())):
        try:
            argv = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:  # exited meanwhile
            continue
        # The console script runs as `python /opt/venv/bin/llm-proxy ...` (a shebang script).
        for i, arg in enumerate(argv[:2]):
            if Path(arg.decode(errors="replace")).name == "llm-proxy":
                return [a.decode(errors="replace") for a in argv[i + 1 :] if a]
    return None


# The CLI's listening defaults (proxy/cli.py build_parser): demo and emulate on 127.0.0.1 unless
# LLM_PROXY_HOST is set; demo and serve on LLM_PROXY_PORT when set; serve otherwise on its config's
# server section.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = {"demo": 4000, "emulate": 8000}


def _option(argv: list[str], name: str) -> str | None:
    """The value of `--name V` or `--name=V` (the last one wins, as with argparse)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def address(argv: list[str], environ=os.environ) -> tuple[str | None, int | None]:
    """Where the command listens: (host, port), None where only serve's config can tell."""
    command = argv[0]
    host = _option(argv, "--host") or environ.get("LLM_PROXY_HOST") or None
    port = _option(argv, "--port") or (environ.get("LLM_PROXY_PORT") if command != "emulate" else None) or None
    if command != "serve":
        host = host or DEFAULT_HOST
        port = port or DEFAULT_PORT[command]
    return host, int(port) if port is not None else None


def _probe_host(host: str) -> str:
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def check(argv: list[str]) -> tuple[bool, str]:
    command = argv[0] if argv else ""
    if command not in ("serve", "demo", "emulate"):
        return True, f"{command or 'llm-proxy'} is running"
    try:
        host, port = address(argv)
    except ValueError:
        return False, f"{command}: unreadable --port"
    if host is None or port is None:  # serve without --host/--port/LLM_PROXY_*: the config's server section
        from proxy.config import ConfigError, load_config

        try:
            server = load_config(_option(argv, "--config") or "").server
        except ConfigError as exc:
            return False, f"serve: {exc}"
        host, port = host or server.host, port if port is not None else server.port
    host = _probe_host(host)
    try:
        if command == "emulate":
            socket.create_connection((host, port), TIMEOUT).close()
            return True, f"emulator accepts connections on port {port}"
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        with urllib.request.urlopen(f"http://{netloc}/health/live", timeout=TIMEOUT) as r:
            return True, f"/health/live answered {r.status}"
    except OSError as exc:  # refused, timed out, or a non-2xx status (HTTPError)
        return False, f"{command} on port {port}: {exc}"


def main(proc: Path = Path("/proc")) -> int:
    argv = llm_proxy_argv(proc)
    if argv is None:
        print("unhealthy: no llm-proxy process is running")
        return 1
    ok, why = check(argv)
    print(("healthy: " if ok else "unhealthy: ") + why)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
