"""`llm-proxy conformance` through the gateway on every backend kind, and directly against the
emulators: the runs behind docs/CONFORMANCE.md and tests/proxy/conformance/test_conformance_gateway.py.

One stack: an emulator per backend kind and one gateway (client auth on) routing a model per backend;
every (backend, face) pair is then probed, the OpenAI face at `/v1` and the Anthropic face at the root.

    python -m loadtest.conformance_matrix --write docs/CONFORMANCE.md   # regenerate the document
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from loadtest.emulators.bedrock import ACCESS_KEY_ID as BEDROCK_KEY_ID
from loadtest.emulators.bedrock import SECRET_ACCESS_KEY as BEDROCK_SECRET
from proxy.app import create_app
from proxy.config import load_config_dict
from proxy.conformance.http import Target
from proxy.conformance.probe import probes
from proxy.conformance.report import probe_docs, results_matrix
from proxy.conformance.runner import run

API_KEY = "conformance-key"

# backend row -> (emulator, URL suffix, backend keys, backend model, model keys, the backend has tools)
BACKENDS: dict[str, tuple[str, str, dict[str, Any], str, dict[str, Any], bool]] = {
    "openai": ("openai", "/v1", {}, "llama-3.1-8b", {}, True),
    "anthropic": ("anthropic", "", {"api_key": "sk-ant-test"}, "claude-sonnet-4-5", {}, True),
    "ollama": ("ollama", "", {}, "llama3.1:8b", {}, True),
    "gemini": ("gemini", "", {"api_key": "gem-key"}, "gemini-2.5-flash", {}, True),
    "tgi": ("tgi", "", {}, "meta-llama/Llama-3.1-8B-Instruct", {"chat_template": "llama3"}, False),
    "huggingface": ("tgi", "", {"api_key": "hf_test"}, "meta-llama/Llama-3.1-8B-Instruct",
                    {"chat_template": "llama3"}, False),
    "llamacpp": ("llamacpp", "", {}, "llama-3.1-8b", {"chat_template": "llama3"}, False),
    "replicate": ("replicate", "", {"api_key": "r8_test", "poll_interval": 0.02}, "meta/meta-llama-3-8b-instruct",
                  {"chat_template": "llama3"}, False),
    "bedrock": ("bedrock", "", {"region": "us-east-1", "aws_access_key_id": BEDROCK_KEY_ID,
                                "aws_secret_access_key": BEDROCK_SECRET}, "anthropic.claude-3-5-sonnet-20241022-v2:0", {}, True),
    "cohere": ("cohere", "", {"api_key": "co-test"}, "command-r-plus-08-2024", {}, True),
    # One Vertex AI backend kind, two publishers (`provider` given: the row is not a provider name).
    "vertex-gemini": ("vertex", "", {"provider": "vertex", "location": "us-central1"}, "gemini-2.0-flash", {}, True),
    "vertex-claude": ("vertex", "", {"provider": "vertex"}, "claude-3-5-sonnet-v2@20241022", {"location": "us-east5"}, True),
}
FACES = {"openai": "/v1", "anthropic": ""}
EMULATED = {"openai": ("openai", "/v1", "emulated-gpt", None), "anthropic": ("anthropic", "", "claude-sonnet-4-5", "k")}


def gateway_config(urls: dict[str, str], state_url: str, issued: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """The gateway config: one backend and one model (named like the backend row) per row; `issued`:
    emulator -> backend keys for credentials that emulator issued (Vertex's service account)."""
    backends, models = {}, []
    for row, (emulator, suffix, keys, model, model_keys, _) in BACKENDS.items():
        backends[row] = {"provider": row, "base_url": urls[row] + suffix, **keys, **(issued or {}).get(emulator, {})}
        # `error`: a parameter the backend cannot honour is refused (400), so the report shows "not
        # supported" where the default `drop` would answer without it.
        models.append({"name": row, "backend": row, "model": model, "unsupported_params": "error", **model_keys})
    return {"backends": backends, "models": models, "auth": {"keys": [API_KEY]}, "state": {"url": state_url}}


@dataclass
class Stack:
    """The running emulators and gateway, each on 127.0.0.1 and a free port."""

    gateway: str = ""
    emulators: dict[str, str] = field(default_factory=dict)  # emulator module -> root URL
    runners: list[web.AppRunner] = field(default_factory=list)
    tmp: tempfile.TemporaryDirectory | None = None

    async def serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        self.runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def close(self) -> None:
        for runner in reversed(self.runners):
            await runner.cleanup()
        if self.tmp is not None:
            self.tmp.cleanup()


async def start_stack() -> Stack:
    stack = Stack(tmp=tempfile.TemporaryDirectory(prefix="llm-proxy-conformance-"))
    issued = {}
    for emulator in sorted({b[0] for b in BACKENDS.values()} | {e[0] for e in EMULATED.values()}):
        module = importlib.import_module(f"loadtest.emulators.{emulator}")
        app = module.create_app()
        stack.emulators[emulator] = url = await stack.serve(app)
        if hasattr(module, "demo_credentials"):  # an emulator that trusts only credentials it issued
            issued[emulator] = module.demo_credentials(app, url, Path(stack.tmp.name))
    urls = {row: stack.emulators[b[0]] for row, b in BACKENDS.items()}
    state = "sqlite:///" + os.path.join(stack.tmp.name, "state.db")
    stack.gateway = await stack.serve(create_app(load_config_dict(gateway_config(urls, state, issued), env={})))
    return stack


async def gateway_reports(stack: Stack, timeout: float = 10.0) -> dict[tuple[str, str], dict[str, Any]]:
    """(backend row, face) -> the JSON report of the conformance run through the gateway."""
    out = {}
    for row in BACKENDS:
        for face, suffix in FACES.items():
            target = Target(stack.gateway + suffix, face, row, API_KEY)
            out[row, face] = (await run(target, timeout=timeout, deadline=120)).as_dict()
    return out


async def emulator_reports(stack: Stack, timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """format -> the JSON report of the conformance run against that format's emulator directly."""
    out = {}
    for fmt, (emulator, suffix, model, key) in EMULATED.items():
        target = Target(stack.emulators[emulator] + suffix, fmt, model, key)
        out[fmt] = (await run(target, timeout=timeout, deadline=120)).as_dict()
    return out


HEADER = """# Conformance: `llm-proxy conformance`

`llm-proxy conformance` checks that a server really speaks the OpenAI chat API or the Anthropic
Messages API, the way the official clients use them, before traffic is routed to it:

```sh
llm-proxy conformance --url http://10.0.0.5:8000/v1 --format openai --model llama-3.1-8b [--api-key K] \\
    [--json report.json] [--only tools,stream] [--timeout 30] [--deadline 300]
llm-proxy conformance --url http://127.0.0.1:4000 --format anthropic --model claude-on-vllm --api-key K
```

It sends a fixed, versioned set of probes (probe set {version}; `--list` prints it), one after the
other, each under its own deadline (`--timeout`, seconds) and all under a total one (`--deadline`): a
slow server gets `timeout` results, never a hang.  It prints one row per probe (result and one line
of evidence: what was sent and what came back) and a score per level, and exits 1 when a **core**
probe failed or timed out (0 otherwise, 2 on bad arguments).  A server that refuses an optional
feature with a 4xx (or, for parallel calls, reasoning and thinking, never produces it) gets
`not supported`, not a failure.  `--json FILE` writes the same report machine-readably
(`probe_set`, `ok`, `scores`, and per probe `id`, `level`, `status`, `evidence`, `seconds`);
`--only` takes probe ids, groups (the id's first part) or levels; `--header NAME:VALUE` adds a request
header; `--embedding-model` names the model for the embeddings probe.

Levels: **core** (chat core, streaming framing and error shapes), **tools**, **extras**.  Each probe
owns one rule: a server that breaks the rule fails that probe and no other, which the test suite
proves with deliberately broken emulators (`defect=NAME` in `loadtest/emulators/defects.py`, one per
rule; `tests/proxy/conformance/test_conformance_emulators.py`).

The unknown-model probes send `no-such-model-conformance-probe`; a single-model server that answers
any name gets `not supported`.

## What each probe checks

{probe_docs}
## Deliberate defects and the probe that reports each

{defects}

## Results: the emulators

Run directly against `loadtest/emulators/openai.py` (at `/v1`) and `anthropic.py` (the root), the
emulators that speak these formats as servers do.  The continuous-batching emulator (`batching.py`) is
a load model, not a protocol one: it answers `max_tokens` filler words whatever the request, so the
tool reports what a client would miss there (core: `chat.stop` ends on `length`, an invalid body is
answered 200; tools, JSON modes and `n` ignored).  The other emulators speak their own formats and are
probed through the gateway below.

{emulators}

## Results: the gateway, per backend

One gateway (client auth on, `--api-key` given) with one model per backend kind, each on its emulator,
every model with `unsupported_params: error`; the OpenAI face is probed at `/v1`, the Anthropic face at
the root.  With `error`, a parameter a backend cannot honour is refused with a 400 in the client's
format, so the prompt-only backends (TGI, Hugging Face, llama.cpp native, Replicate) answer the tools
probes `not supported`; under the default `drop` the gateway answers without the tools, and the
tools probes report that as failures, which is what this tool is for.

Every core, streaming and tools probe passes on every backend with tool calling, except where the
backend's own API cannot carry the answer (`tests/proxy/conformance/test_conformance_gateway.py`
asserts all of this, and that each exception still fails):

| backend, face | probe | why |
|---|---|---|
| Replicate, OpenAI | `stream.include_usage` | Replicate streams carry no token counts (only the prediction, fetched after the stream, has them) |
| Ollama, Gemini, Vertex Gemini, Replicate; Anthropic | `messages.stop_sequence` | their finish reason does not say which stop string ended the answer, so the gateway can only say `end_turn` |
| Ollama | `tools.choice_*` (not supported) | Ollama has no tool_choice; forcing a call is refused, not ignored |
| Cohere | `tools.parallel` (not supported) | the Cohere emulator makes one call per turn |

Found and fixed with this tool: the Cohere backend now names the stop sequence behind Cohere's
`STOP_SEQUENCE` when the request sent only one (before, Anthropic clients got `end_turn`).

Other findings: the Anthropic face shows reasoning only when Anthropic signed it (clients send
thinking blocks back, and Anthropic refuses unsigned ones), so `extras.thinking` is `not supported`
on other backends; `json_object` on an Anthropic backend is a system instruction (Anthropic has no JSON
mode), which the echoing emulator does not follow.  The JSON extras pass on the native backends because
the gateway translates `response_format` into each one's constraint (Ollama `format`, Gemini
`responseMimeType` + `responseJsonSchema`, TGI `grammar`, llama.cpp `json_schema`) and the emulators
honour those.

### OpenAI face (`--format openai`, `/v1`)

{gateway_openai}

### Anthropic face (`--format anthropic`, root)

{gateway_anthropic}

Regenerate this file with `python -m loadtest.conformance_matrix --write docs/CONFORMANCE.md`.
"""


def _defect_table() -> str:
    from loadtest.emulators.defects import DEFECTS

    rows = ["| defect | format | breaks | reported by |", "|---|---|---|---|"]
    rows += [f"| `{name}` | {d.format} | {d.what} | `{d.probe}` |" for name, d in DEFECTS.items()]
    return "\n".join(rows)


def render(emulators: dict[str, dict[str, Any]], gateway: dict[tuple[str, str], dict[str, Any]]) -> str:
    from proxy.conformance.probe import PROBE_SET_VERSION

    docs = "".join(f"### {fmt}\n\n{probe_docs(probes(fmt))}\n" for fmt in FACES)
    return HEADER.format(
        version=PROBE_SET_VERSION, probe_docs=docs, defects=_defect_table(),
        emulators="\n\n".join(f"{fmt}:\n\n{results_matrix({fmt + ' emulator': rep})}" for fmt, rep in emulators.items()),
        gateway_openai=results_matrix({row: gateway[row, "openai"] for row in BACKENDS}),
        gateway_anthropic=results_matrix({row: gateway[row, "anthropic"] for row in BACKENDS}),
    )


async def _main(path: str) -> None:
    stack = await start_stack()
    try:
        text = render(await emulator_reports(stack), await gateway_reports(stack))
    finally:
        await stack.close()
    with open(path, "w") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", default="docs/CONFORMANCE.md")
    asyncio.run(_main(p.parse_args(argv).write))


if __name__ == "__main__":
    main()
