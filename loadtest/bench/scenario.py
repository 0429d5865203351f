"""What the benchmark sends: the translation paths, one request per wire format, the emulator set and
the generated proxy config.

A path is (client format, backend format).  Its *native* reference is the same conversation sent
straight to the backend emulator in the backend's own format; *proxied* is the client's format sent to
the proxy, which routes `<profile>--<backend format>` to that emulator.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from .loadgen import Endpoint

BACKEND_MODEL = "bench-model"
PROMPT = (
    "Summarise the following note in one sentence. The quarterly report shows revenue up eleven percent, "
    "driven by the new subscription tier, while support costs fell after the self-service portal launched."
)
SYSTEM = "You are a concise assistant."
MAX_TOKENS = 128


@dataclass(frozen=True)
class Path:
    name: str
    client: str  # wire format the client speaks: "openai" | "anthropic"
    backend: str  # emulator / provider format: "openai" | "anthropic" | "ollama"

    @property
    def passthrough(self) -> bool:
        return self.client == self.backend


PATHS: dict[str, Path] = {
    p.name: p
    for p in (
        Path("openai->openai", "openai", "openai"),
        Path("openai->anthropic", "openai", "anthropic"),
        Path("anthropic->openai", "anthropic", "openai"),
        Path("openai->ollama", "openai", "ollama"),
    )
}

# The Responses API frontend to the OpenAI-compatible emulator: its own points (`llm-proxy bench
# responses`), where `store: true` and `previous_response_id` chains are measured against `store: false`.
RESPONSES = Path("responses->openai", "responses", "openai")
ALL_PATHS = {**PATHS, RESPONSES.name: RESPONSES}

API_PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "ollama": "/api/chat",
             "responses": "/v1/responses"}  # fmt: skip
# The provider's base URL relative to the emulator root (OpenAI clients put /v1 in the base URL).
BASE_SUFFIX = {"openai": "/v1", "anthropic": "", "ollama": ""}


def backend_model(chunks: int) -> str:
    """The backend model id; the emulator reads the stream chunk count from its scenario suffix."""
    return f"{BACKEND_MODEL}::chunks={chunks}"


def proxy_model(profile: str, backend: str) -> str:
    return f"{profile}--{backend}"


def body(fmt: str, model: str, stream: bool, store: bool = False) -> bytes:
    """The benchmark conversation in one wire format (`store`: the Responses API's only)."""
    if fmt == "responses":
        doc = {"model": model, "instructions": SYSTEM, "input": PROMPT, "max_output_tokens": MAX_TOKENS,
               "stream": stream, "store": store}  # fmt: skip
    elif fmt == "anthropic":
        doc = {"model": model, "max_tokens": MAX_TOKENS, "system": SYSTEM, "stream": stream,
               "messages": [{"role": "user", "content": PROMPT}]}  # fmt: skip
    else:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
        doc = {"model": model, "messages": messages, "stream": stream}
        if fmt == "openai":
            doc["max_tokens"] = MAX_TOKENS
        else:
            doc["options"] = {"num_predict": MAX_TOKENS}
    return orjson.dumps(doc)


def headers(fmt: str, key: str = "bench") -> dict[str, str]:
    h = {"Content-Type": "application/json"}
    if fmt == "anthropic":
        h |= {"x-api-key": key, "anthropic-version": "2023-06-01"}
    else:
        h["Authorization"] = f"Bearer {key}"
    return h


def native(emulator_url: str, path: Path, chunks: int, stream: bool) -> Endpoint:
    fmt = path.backend
    return Endpoint(emulator_url + API_PATHS[fmt], body(fmt, backend_model(chunks), stream), headers(fmt), stream, fmt)


def proxied(proxy_url: str, path: Path, profile: str, stream: bool, key: str = "bench", store: bool = False,
            chain: int = 0) -> Endpoint:  # fmt: skip
    """`store` / `chain` (previous_response_id chains of at most `chain` turns): Responses API only."""
    fmt = path.client
    model = proxy_model(profile, path.backend)
    return Endpoint(proxy_url + API_PATHS[fmt], body(fmt, model, stream, store), headers(fmt, key), stream, fmt, chain)


def bare(hop_url: str, route: str, path: Path, chunks: int, stream: bool) -> Endpoint:
    """Through the bare hop: the native request, forwarded byte for byte (pass-through paths only)."""
    fmt = path.backend
    url = f"{hop_url}/{route}{API_PATHS[fmt]}"
    return Endpoint(url, body(fmt, backend_model(chunks), stream), headers(fmt), stream, fmt)


def compare(url: str, model: str | None, chunks: int, stream: bool) -> Endpoint:
    """Another OpenAI-compatible proxy, sent the native OpenAI request (or with `model` replaced)."""
    m = model or backend_model(chunks)
    return Endpoint(url.rstrip("/") + API_PATHS["openai"], body("openai", m, stream), headers("openai"), stream, "openai")


def emulator_key(fmt: str, profile: str) -> str:
    return f"{fmt}:{profile}"


def proxy_config(emulators: dict[str, str], chunks_of: dict[str, int], log_level: str) -> dict:
    """The gateway config: one backend per emulator, one model per (profile, backend format)."""
    backends, models = {}, []
    for key, url in emulators.items():
        fmt, profile = key.split(":")
        name = f"{fmt}-{profile}"
        backends[name] = {
            "provider": fmt, "base_url": url + BASE_SUFFIX[fmt], "api_key": "bench",
            "max_connections": 4096, "timeouts": {"first_byte": 60, "idle": 60, "total": 300},
        }  # fmt: skip
        models.append({"name": proxy_model(profile, fmt), "backend": name, "model": backend_model(chunks_of[profile]),
                       "max_tokens": MAX_TOKENS})  # fmt: skip
    return {"server": {"host": "127.0.0.1", "log_level": log_level, "max_body_bytes": 1 << 20},
            "backends": backends, "models": models}  # fmt: skip


LIMITED_KEY = "bench-limited-key"


def stored_responses_config(cfg: dict, state_url: str) -> dict:
    """The same gateway with its stored responses (and everything else kept state) in `state_url`."""
    return {**cfg, "state": {"url": state_url, "timeout": 1.0}}


def limited_key_config(cfg: dict, state_url: str) -> dict:
    """The same gateway with one client key that has every limit (rpm, tpm, max_parallel, a budget)
    set far above what the run sends, and prices on every model: each request is admitted and
    reconciled in the state store, never refused."""
    models = [{**m, "price": {"input": 0.5, "output": 1.5}} for m in cfg["models"]]
    key = {"key": LIMITED_KEY, "name": "bench", "rpm": 10_000_000, "tpm": 10_000_000_000, "max_parallel": 100_000,
           "budget": {"usd": 1_000_000, "period": "1d"}}  # fmt: skip
    return {**stored_responses_config(cfg, state_url), "models": models, "auth": {"keys": [key]}}
