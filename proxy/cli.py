"""`llm-proxy` command line: serve, check-config, demo, emulate, bench, conformance."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile

from .config import ConfigError, load_config

EMULATOR_FORMATS = ("openai", "anthropic", "ollama", "tgi", "llamacpp", "replicate", "gemini", "cohere", "vertex", "bedrock")


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# --------------------------------------------------------------------------------------------------
# serve


def _load_or_exit(path: str):
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"llm-proxy: invalid config {path}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def run_worker(config_path: str, host: str | None, port: int | None, reuse_port: bool) -> None:
    """One worker process: its own event loop, pools and metrics files."""
    _install_uvloop()
    from . import serve as served
    from .accesslog import setup_logging
    from .app import SWITCH, create_app
    from .reload import sighup_reload

    cfg = _load_or_exit(config_path)
    setup_logging(cfg.server.log_level)
    app = create_app(cfg)
    app.on_startup.append(sighup_reload(app[SWITCH], lambda: load_config(config_path)))
    # SIGTERM: stop listening, close idle keep-alive connections, let running requests and streams
    # finish for up to drain_timeout, cancel what is left, then close the pools (proxy/serve.py).
    served.run(cfg, app, host or cfg.server.host, port if port is not None else cfg.server.port, reuse_port=reuse_port)


def _prepare_metrics_dir(workers: int) -> str | None:
    """Make prometheus-client's multiprocess directory ready before anything imports prometheus_client.

    A directory named by PROMETHEUS_MULTIPROC_DIR (the image sets one for every command) is created and
    emptied of a previous run's files, whatever the worker count: a restarted container keeps its /tmp,
    and stale counters would come back.  With several workers and no directory given, a temporary one
    is made and returned so the caller removes it; one worker without one uses the in-process registry.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.unlink(os.path.join(path, name))
        return None
    if workers <= 1:
        return None
    path = tempfile.mkdtemp(prefix="llm-proxy-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def serve(config_path: str, host: str | None, port: int | None, workers: int | None) -> None:
    cfg = _load_or_exit(config_path)
    n = workers or cfg.server.workers
    temp_dir = _prepare_metrics_dir(n)
    if n <= 1:
        run_worker(config_path, host, port, reuse_port=False)
        return
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = {}

    def start_one():
        p = ctx.Process(target=run_worker, args=(config_path, host, port, True), daemon=False)
        p.start()
        procs[p.pid] = p

    for _ in range(n):
        start_one()
    stopping = False

    def forward(signum, _frame):
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for p in list(procs.values()):
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM if signum == signal.SIGINT else signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        while procs:
            for pid, p in list(procs.items()):
                p.join(timeout=0.5)
                if p.exitcode is None:
                    continue
                del procs[pid]
                from .metrics import mark_process_dead

                mark_process_dead(pid)
                if not stopping:
                    print(f"llm-proxy: worker {pid} exited with {p.exitcode}; starting a new one", file=sys.stderr)
                    start_one()
    finally:
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)


def check_config(path: str) -> int:
    try:
        cfg = load_config(path)
        from .pools import build_backends
        from .routing import Router

        router = Router(cfg, build_backends(cfg))
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    print(f"ok: {len(cfg.backends)} backends, {len(cfg.models)} models")
    _table([("MODEL", "BACKEND", "PROVIDER", "BACKEND MODEL"), *router.table()])
    if cfg.auth is not None:
        from .config import key_configs

        keys = key_configs(cfg.auth)
        print(f"\n{len(keys)} client keys (state: {cfg.state.url.split('://', 1)[0]}); admin API "
              f"{'on' if cfg.auth.admin_key else 'off'}")  # fmt: skip
        if keys:
            _table([("KEY NAME", "MODELS", "RPM", "TPM", "MAX PARALLEL", "BUDGET"), *(_key_row(k) for k in keys)])
    return 0


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _key_row(k) -> tuple[str, ...]:
    """One key's limits (never its secret)."""
    budget = "-" if k.budget is None else f"${k.budget.usd:g}" + (f"/{k.budget.period}" if k.budget.period else " lifetime")
    num = lambda v: "-" if v is None else str(v)  # noqa: E731
    return (k.name, "*" if k.models is None else ",".join(k.models), num(k.rpm), num(k.tpm), num(k.max_parallel), budget)


# --------------------------------------------------------------------------------------------------
# emulate / demo


def emulate(fmt: str, host: str, port: int, profile_name: str | None) -> None:
    _install_uvloop()
    import importlib

    from aiohttp import web

    profile = None
    if profile_name:
        from loadtest.profiles import PROFILES

        profile = PROFILES[profile_name]
    module = importlib.import_module(f"loadtest.emulators.{fmt}")
    app = module.create_app(profile)
    if hasattr(module, "demo_credentials"):  # an emulator that only trusts credentials it issued (Vertex)
        import shutil
        import tempfile
        from pathlib import Path

        workdir = Path(tempfile.mkdtemp(prefix=f"llm-proxy-{fmt}-"))
        app.on_cleanup.append(lambda _app: asyncio.to_thread(shutil.rmtree, workdir, True))
        keys = module.demo_credentials(app, f"http://{host}:{port}", workdir)
        print(f"backend keys for this emulator: {keys}", flush=True)
    web.run_app(app, host=host, port=port, access_log=None, print=None)


def demo(host: str, port: int) -> None:
    _install_uvloop()
    _prepare_metrics_dir(1)
    from .demo import run_demo

    try:
        asyncio.run(run_demo(host, port))
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------------------------------


def _workers(value: str) -> int:
    if value == "auto":
        from .cpus import usable_cpus

        return usable_cpus()
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number or `auto`, got {value!r}")
    return n


def build_parser(environ=os.environ) -> argparse.ArgumentParser:
    """The command line.  LLM_PROXY_HOST and LLM_PROXY_PORT, when set, are the default --host and --port
    of the commands that listen (the container image sets LLM_PROXY_HOST=0.0.0.0, so `docker run -p
    4000:4000 llm-proxy demo` and emulator containers are reachable from outside their container)."""
    env_host = environ.get("LLM_PROXY_HOST") or None
    env_port = environ.get("LLM_PROXY_PORT") or None  # a string default goes through type=int, errors included
    parser = argparse.ArgumentParser(prog="llm-proxy", description="Universal LLM API translation gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--host", default=env_host, help="default: $LLM_PROXY_HOST, else server.host")
    p.add_argument("--port", type=int, default=env_port, help="default: $LLM_PROXY_PORT, else server.port")
    p.add_argument("--workers", type=_workers,
                   help="worker processes sharing the port, or `auto`: one per CPU this process may use "
                        "(cgroup quota included); default: server.workers")  # fmt: skip

    p = sub.add_parser("check-config", help="validate a config file and print the routing table")
    p.add_argument("file")

    p = sub.add_parser("demo", help="run the gateway with built-in emulated backends (no config needed)")
    p.add_argument("--host", default=env_host or "127.0.0.1", help="default: $LLM_PROXY_HOST, else 127.0.0.1")
    p.add_argument("--port", type=int, default=env_port or "4000", help="default: $LLM_PROXY_PORT, else 4000")

    p = sub.add_parser("emulate", help="run one emulated backend")
    p.add_argument("format", choices=EMULATOR_FORMATS)
    p.add_argument("--host", default=env_host or "127.0.0.1", help="default: $LLM_PROXY_HOST, else 127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--profile", help="latency profile name (see loadtest/profiles.py)")

    p = sub.add_parser("conformance", help="check an OpenAI- or Anthropic-compatible server (or this gateway)")
    from .conformance.command import add_arguments as conformance_arguments

    conformance_arguments(p)

    sub.add_parser("bench", help="benchmark added latency against direct calls (see `llm-proxy bench --help`)",
                   add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Everything after `bench` belongs to the harness's own parser, flags included.
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "serve":
        serve(args.config, args.host, args.port, args.workers)
    elif args.command == "check-config":
        return check_config(args.file)
    elif args.command == "demo":
        demo(args.host, args.port)
    elif args.command == "emulate":
        emulate(args.format, args.host, args.port, args.profile)
    elif args.command == "conformance":
        from .conformance.command import main as conformance_main

        return conformance_main(args)
    elif args.command == "bench":
        from loadtest.bench.cli import main as bench_main

        return bench_main(rest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
