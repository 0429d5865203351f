"""The emulator host process: several emulator apps (format x latency profile) in one process.

    python -m loadtest.bench.backends openai:zero anthropic:vllm-llama3-8b ...

Each app listens on its own free loopback port; one JSON line `{"openai:zero": "http://127.0.0.1:P",
...}` on stdout tells the harness where, then the process serves until SIGINT / SIGTERM.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import signal
import sys

from loadtest.emulators.server import start
from loadtest.profiles import PROFILES


async def serve(specs: list[str]) -> None:
    runners, urls = [], {}
    for spec in specs:
        fmt, _, profile = spec.partition(":")
        module = importlib.import_module(f"loadtest.emulators.{fmt}")
        runner, url = await start(module.create_app(PROFILES[profile or "zero"]))
        runners.append(runner)
        urls[spec] = url
    print(json.dumps(urls), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for r in runners:
        await r.cleanup()


def main() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(serve(sys.argv[1:]))


if __name__ == "__main__":
    main()
