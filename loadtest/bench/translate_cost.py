"""CPU per request of each step the gateway runs on a translated JSON path, without sockets.

    python -m loadtest.bench.translate_cost [--repeat 20000] [--pairs openai->anthropic,...] [--profile]

The client body is the benchmark's (`scenario.body`, what an SDK sends: model, system + user message,
max_tokens); the backend's answer is recorded once from its emulator, as the backend adapter requests
it.  Steps, in the order `proxy.handlers` and `relay._translated` run them: `raw` (the top-level key
split every request gets), `parse` (the frontend op's parse into the IR), `policy` (the per-attempt
copy and `params.apply_policy`), `request` (the backend adapter's `chat_request`), `response` (its
`chat_response`), `render` (the op's render back to the client's format).  Each figure is the best of
`--rounds` rounds of `--repeat` calls, in CPU µs per call (`time.process_time`).  `--profile` prints
cProfile's top functions of one round of all steps instead.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from collections.abc import Callable

import msgspec

from adapters import jsonio
from adapters.base import Target
from adapters.params import apply_policy

from . import scenario
from .stream_cost import backend, chat_op, record

PAIRS = ("openai->anthropic", "anthropic->openai", "openai->ollama")
STEPS = ("raw", "parse", "policy", "request", "response", "render")


def steps(pair: str, answer: bytes | None = None) -> tuple[dict[str, Callable[[], object]], object]:
    """One closure per step over fixed inputs (each step's input is the previous step's output)."""
    client, _, fmt = pair.partition("->")
    op, adapter = chat_op(client), backend(fmt, "http://127.0.0.1:1")
    target = Target(model=scenario.BACKEND_MODEL)
    body = scenario.body(client, scenario.BACKEND_MODEL, False)
    raw = jsonio.top_level_raw(body)

    def parse():
        req = op.parse(body, raw)
        req.model, req.stream = scenario.BACKEND_MODEL, False
        return req

    req = parse()
    supported = adapter.supported_params_for(target)

    def policy():
        r = msgspec.structs.replace(req)
        apply_policy(r, supported, target.unsupported_params, adapter.provider)
        return r

    result = adapter.chat_response(answer, req, target) if answer is not None else None

    def render():
        if op.render_with_request is not None:
            return op.render_with_request(result, scenario.BACKEND_MODEL, req)
        return op.render(result, scenario.BACKEND_MODEL)

    fns = {"raw": lambda: jsonio.top_level_raw(body), "parse": parse, "policy": policy,
           "request": lambda: adapter.chat_request(req, target),
           "response": lambda: adapter.chat_response(answer, req, target), "render": render}  # fmt: skip
    return fns, req


def best_us(fn: Callable[[], object], repeat: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(repeat):
            fn()
        best = min(best, time.process_time() - t0)
    return best * 1e6 / repeat


async def answers(pairs: list[str]) -> dict[str, bytes]:
    out = {}
    for pair in pairs:
        fmt = pair.partition("->")[2]
        _, req = steps(pair)
        out[pair] = await record(fmt, 8, req)  # its JSON answer (req.stream is False)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench.translate_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--pairs", default=",".join(PAIRS))
    p.add_argument("--profile", action="store_true", help="cProfile one round of every step instead")
    args = p.parse_args(argv)
    pairs = args.pairs.split(",")
    recorded = asyncio.run(answers(pairs))
    if args.profile:
        prof = cProfile.Profile()
        for pair in pairs:
            fns, _ = steps(pair, recorded[pair])
            prof.enable()
            for fn in fns.values():
                for _ in range(args.repeat):
                    fn()
            prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(40)
        return
    print(markdown(pairs, recorded, args.repeat, args.rounds), end="")


def markdown(pairs: list[str], recorded: dict[str, bytes], repeat: int, rounds: int) -> str:
    lines = ["| client->backend | " + " | ".join(STEPS) + " | total (µs) |", "|---" * (len(STEPS) + 2) + "|"]
    for pair in pairs:
        fns, _ = steps(pair, recorded[pair])
        us = [best_us(fns[s], repeat, rounds) for s in STEPS]
        lines.append(f"| {pair} | " + " | ".join(f"{u:.1f}" for u in us) + f" | {sum(us):.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
