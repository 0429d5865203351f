"""The image's HEALTHCHECK, right for every command the image runs.

Docker gives an image one check, but this image runs the gateway (`serve`, `demo`: GET /health/live must
answer 2xx), emulated backends (`emulate FORMAT`: the port must accept connections; emulators have no
health route) and one-shot commands (`check-config`, `bench`: healthy while they run).  The check reads
the command line of the running `llm-proxy` process (the lowest PID: PID 1, or its child under
`docker run --init`) and parses it with the CLI's own parser, so the port it probes is the one that
process was given, defaults and LLM_PROXY_HOST / LLM_PROXY_PORT included.

Exit status 0 is healthy, 1 unhealthy (Docker's contract); the one line printed lands in
`docker inspect`'s health log.
"""

from __future__ import annotations

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


def _probe_host(host: str) -> str:
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def check(argv: list[str]) -> tuple[bool, str]:
    from proxy.cli import build_parser

    args, _ = build_parser().parse_known_args(argv)
    if args.command not in ("serve", "demo", "emulate"):
        return True, f"{args.command} is running"
    host, port = args.host, args.port
    if host is None or port is None:  # serve without --host/--port: the config's server section
        from proxy.config import ConfigError, load_config

        try:
            server = load_config(args.config).server
        except ConfigError as exc:
            return False, f"serve: {exc}"
        host, port = host or server.host, port if port is not None else server.port
    host = _probe_host(host)
    try:
        if args.command == "emulate":
            socket.create_connection((host, port), TIMEOUT).close()
            return True, f"emulator accepts connections on port {port}"
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        with urllib.request.urlopen(f"http://{netloc}/health/live", timeout=TIMEOUT) as r:
            return True, f"/health/live answered {r.status}"
    except OSError as exc:  # refused, timed out, or a non-2xx status (HTTPError)
        return False, f"{args.command} on port {port}: {exc}"


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
