"""Backend family "openai": api.openai.com and every OpenAI-compatible server, as rows of PRESETS.

A preset is a row in a table of differences, not a module.  Columns: the IR parameters the server
honours (`supported`, enforced by the shared unsupported-parameter policy), parameter renames, the
max-tokens field, where reasoning text arrives, and named quirks:

- `tool_ids="mistral"`: Mistral requires tool-call ids of exactly 9 alphanumerics.  Other ids in the
  request history are rewritten to a 9-char base62 digest of the original -- deterministic, so the
  assistant call and its tool result (and every later turn) map to the same id without state.
- `response_format="tgi"`: TGI's Messages API wants `{"type":"json","value":<schema>}`.
- `structured_outputs=True` (vLLM >= 0.12 silently ignores the removed `guided_*` fields): client
  `guided_json/regex/choice/grammar/whitespace_pattern` are moved into `structured_outputs`
  (`guided_decoding_backend` is dropped: the server picks it now), on the IR and pass-through paths.
- `required_choice="any"`: Mistral spells tool_choice "required" as "any".
- Groq: `n` must be 1 (not in `supported`, so the policy drops or rejects it).

Request building (IR -> OpenAI): the system prompt becomes one system message (texts joined by a
blank line); single-text content is a string, mixed content a parts list (images as URLs or data
URLs, `detail` kept); tool results become one `tool` message each, text only (images in results and
`is_error` are lossy); reasoning in the history is dropped (OpenAI rejects it, DeepSeek answers 400);
ReasoningConfig becomes `reasoning_effort` (a token budget alone maps to low <= 1024 < medium <= 8192
< high).  Streams always ask for `stream_options.include_usage` so metrics get token counts; the
client-side encoder decides whether the client sees them.  Body precedence: IR fields, then the
client's unmodelled fields (`req.extra`, only when the client spoke OpenAI), then `target.params`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import msgspec
from msgspec import Struct

from . import ir, jsonio
from .base import Backend, HttpRequest, LoadMetricNames, Target
from .common import bearer_auth, synth_id
from .errors import ProxyError
from .llamacpp_backend import LOAD_METRICS as LLAMACPP_LOAD
from .openai_build import build_body, fix_passthrough_ids, move_guided_fields
from .openai_stream import ChatStreamDecoder, message_parts
from .openai_response import (
    ResponseWire,
    UsageWire,
    base64_to_floats,
    finish_to_ir,
    in_stream_error,
    parse_error_body,
    response_decoder,
    usage_to_ir,
)
from .tgi_backend import LOAD_METRICS as TGI_LOAD

# --------------------------------------------------------------------------------------------------
# The table of differences


class Preset(Struct, frozen=True, kw_only=True):
    name: str
    supported: frozenset[str]
    default_base_url: str | None = None  # for the docs and config examples
    renames: Mapping[str, str] = {}
    max_tokens_field: str = "max_tokens"
    reasoning_field: str = "reasoning_content"
    tool_ids: Literal["mistral"] | None = None
    response_format: Literal["openai", "tgi"] = "openai"
    structured_outputs: bool = False
    required_choice: str = "required"
    # Whether the server accepts `stream_options` (Mistral answers 422 "extra_forbidden" and sends
    # usage in its last chunk anyway): without it the option is never sent, even in pass-through.
    stream_options: bool = True
    # Model servers: the /metrics gauges that tell their load (load-aware routing, proxy/load.py).
    load_metrics: LoadMetricNames | None = None


COMMON_PARAMS = frozenset({
    "temperature", "top_p", "presence_penalty", "frequency_penalty", "seed", "stop", "response_format",
    "tools", "tool_choice", "parallel_tool_calls", "user",
})
# vLLM >= 0.10 renamed gpu_cache_usage_perc (V0 engine) to kv_cache_usage_perc; both are 0..1.
VLLM_LOAD = LoadMetricNames(waiting=("vllm:num_requests_waiting",), running=("vllm:num_requests_running",),
                            kv_cache=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"))
SGLANG_LOAD = LoadMetricNames(waiting=("sglang:num_queue_reqs",), running=("sglang:num_running_reqs",),
                              kv_cache=("sglang:token_usage",))
SAMPLER_PARAMS = frozenset({"top_k", "min_p", "repetition_penalty"})
LOGPROB_PARAMS = frozenset({"logprobs", "top_logprobs", "logit_bias"})

OPENAI = Preset(
    name="openai",
    supported=COMMON_PARAMS | LOGPROB_PARAMS | {"reasoning", "metadata", "n"},
    default_base_url="https://api.openai.com/v1",
    max_tokens_field="max_completion_tokens",  # o-series models reject max_tokens
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(name="vllm", supported=COMMON_PARAMS | SAMPLER_PARAMS | LOGPROB_PARAMS | {"reasoning", "n"},
               default_base_url="http://localhost:8000/v1", reasoning_field="reasoning",
               structured_outputs=True, load_metrics=VLLM_LOAD),
        Preset(name="sglang", supported=COMMON_PARAMS | SAMPLER_PARAMS | LOGPROB_PARAMS | {"reasoning", "n"},
               default_base_url="http://localhost:30000/v1", load_metrics=SGLANG_LOAD),
        Preset(name="together", supported=COMMON_PARAMS | SAMPLER_PARAMS | LOGPROB_PARAMS | {"reasoning", "n"},
               default_base_url="https://api.together.xyz/v1", reasoning_field="reasoning"),
        Preset(name="groq", supported=COMMON_PARAMS | {"reasoning"},
               default_base_url="https://api.groq.com/openai/v1", reasoning_field="reasoning"),
        Preset(name="fireworks", supported=COMMON_PARAMS | SAMPLER_PARAMS | LOGPROB_PARAMS | {"reasoning", "n"},
               default_base_url="https://api.fireworks.ai/inference/v1", reasoning_field="reasoning_content"),
        Preset(name="deepseek",
               supported=(COMMON_PARAMS - {"seed", "parallel_tool_calls", "user"}) | {"logprobs", "top_logprobs"},
               default_base_url="https://api.deepseek.com/v1", reasoning_field="reasoning_content"),
        Preset(name="mistral", supported=(COMMON_PARAMS - {"user"}) | {"n"},
               default_base_url="https://api.mistral.ai/v1", renames={"seed": "random_seed"},
               tool_ids="mistral", required_choice="any", stream_options=False),
        Preset(name="openrouter", supported=COMMON_PARAMS | SAMPLER_PARAMS | LOGPROB_PARAMS | {"reasoning"},
               default_base_url="https://openrouter.ai/api/v1", reasoning_field="reasoning"),
        Preset(name="lmstudio", supported=COMMON_PARAMS | SAMPLER_PARAMS | {"logit_bias"},
               default_base_url="http://localhost:1234/v1", renames={"repetition_penalty": "repeat_penalty"}),
        Preset(name="llamacpp", supported=COMMON_PARAMS | SAMPLER_PARAMS | LOGPROB_PARAMS,
               default_base_url="http://localhost:8080/v1", renames={"repetition_penalty": "repeat_penalty"},
               load_metrics=LLAMACPP_LOAD),
        Preset(name="tgi", supported=(COMMON_PARAMS - {"parallel_tool_calls", "user"}) | LOGPROB_PARAMS,
               default_base_url="http://localhost:8080/v1", response_format="tgi", load_metrics=TGI_LOAD),
    )
}

# Preset names that can be registered as provider aliases (`provider: together`).  `tgi` and
# `llamacpp` are native providers already; use `provider: openai` + `preset:` for their /v1 servers.
PRESET_PROVIDERS: tuple[str, ...] = ("vllm", "together", "groq", "fireworks", "deepseek", "mistral",
                                     "openrouter", "lmstudio")


# --------------------------------------------------------------------------------------------------
# Responses


class _EmbeddingItem(Struct):
    embedding: list[float] | str
    index: int = 0


class _EmbeddingsWire(Struct):
    data: list[_EmbeddingItem] = []
    model: str | None = None
    usage: UsageWire | None = None


_embeddings_decoder = jsonio.decoder(_EmbeddingsWire)


def _decode_response(body: bytes) -> ResponseWire:
    try:
        resp = response_decoder.decode(body)
    except (jsonio.DecodeError, jsonio.ValidationError):
        raise ProxyError("upstream_protocol", "the upstream answered with an invalid completion body") from None
    if resp.error is not None:
        raise in_stream_error(resp.error)
    if not resp.choices:
        raise ProxyError("upstream_protocol", "the upstream answered without any choices")
    return resp


def response_to_ir(resp: ResponseWire, fallback_model: str, reasoning_field: str) -> ir.ChatResponse:
    choices = []
    for c in resp.choices:
        if c.message is not None:
            parts = message_parts(c.message, reasoning_field)
        else:
            parts = [ir.Text(text=c.text)] if c.text else []
        raw = c.finish_reason or "stop"
        saw_tool = any(isinstance(p, ir.ToolCall) for p in parts)
        choices.append(ir.Choice(
            index=c.index, parts=parts, finish_reason=ir.consistent_finish(finish_to_ir(raw), saw_tool),
            raw_finish_reason=raw, stop_sequence=c.stop_reason if isinstance(c.stop_reason, str) else None,
        ))
    return ir.ChatResponse(
        id=resp.id or synth_id("chatcmpl-"),
        model=resp.model or fallback_model,
        created=resp.created or int(time.time()),
        choices=sorted(choices, key=lambda c: c.index),
        usage=usage_to_ir(resp.usage) if resp.usage is not None else None,
    )


# --------------------------------------------------------------------------------------------------
# The backend


class OpenAIOptions(Struct, forbid_unknown_fields=True, frozen=True):
    preset: str | None = None  # a PRESETS key; None = api.openai.com itself
    organization: str | None = None  # OpenAI-Organization header
    project: str | None = None  # OpenAI-Project header


PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}


class OpenAIBackend(Backend):
    """OpenAI and OpenAI-compatible servers.  `for_preset(name)` gives the class behind an alias."""

    provider: ClassVar[str] = "openai"
    family: ClassVar[str | None] = "openai"
    Options: ClassVar[type[msgspec.Struct]] = OpenAIOptions
    supported_params: ClassVar[frozenset[str]] = OPENAI.supported
    default_preset: ClassVar[str | None] = None

    def __init__(self, base_url: str, api_key: str | None, headers: Mapping[str, str], options: Any) -> None:
        super().__init__(base_url, api_key, headers, options)
        self.preset = self._select_preset(getattr(options, "preset", None))
        # Instance attributes: the policy and the docs read these per configured backend.
        self.supported_params = self.preset.supported  # type: ignore[misc]
        self.renamed_params = dict(self.preset.renames)  # type: ignore[misc]
        self.load_metrics = self.preset.load_metrics

    def _select_preset(self, name: str | None) -> Preset:
        if name and self.default_preset and name != self.default_preset:
            raise ValueError(f"provider {self.provider!r} implies preset {self.default_preset!r}, not {name!r}")
        name = name or self.default_preset
        if name is None:
            return OPENAI
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
        return PRESETS[name]

    @classmethod
    @functools.cache
    def for_preset(cls, name: str) -> type[OpenAIBackend]:
        """The provider class for an alias: `provider: together` == `provider: openai, preset: together`."""
        row = PRESETS[name]
        return type(f"OpenAIBackend[{name}]", (cls,), {
            "provider": name, "default_preset": name, "supported_params": row.supported,
            "renamed_params": dict(row.renames),
        })

    # -- URL and headers (Azure overrides these two) -------------------------------------------------
    def _url(self, op: str, target: Target) -> str:
        return self.base_url + PATHS[op]

    def _auth_headers(self) -> dict[str, str]:
        return bearer_auth(self.api_key)

    def _headers(self) -> dict[str, str]:
        h = {"content-type": "application/json", **self._auth_headers()}
        opts = self.options
        if getattr(opts, "organization", None):
            h["openai-organization"] = opts.organization
        if getattr(opts, "project", None):
            h["openai-project"] = opts.project
        h.update(self.extra_headers)
        return h

    # -- chat ------------------------------------------------------------------------------------------
    def chat_request(self, req: ir.ChatRequest, target: Target) -> HttpRequest:
        op = "completions" if req.prompt is not None else "chat"
        body = build_body(req, target, self.preset)
        return HttpRequest(url=self._url(op, target), body=jsonio.dumps(body), headers=self._headers(),
                           stream=req.stream)

    def chat_response(self, body: bytes, req: ir.ChatRequest, target: Target) -> ir.ChatResponse:
        return response_to_ir(_decode_response(body), target.model, self.preset.reasoning_field)

    def stream_decoder(self, req: ir.ChatRequest, target: Target) -> ChatStreamDecoder:
        return ChatStreamDecoder(self.preset.reasoning_field)

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProxyError:
        return parse_error_body(status, headers, body)

    # -- embeddings ------------------------------------------------------------------------------------
    def embeddings_request(self, req: ir.EmbeddingRequest, target: Target) -> HttpRequest:
        body: dict[str, Any] = {"model": target.model, "input": req.input}
        if req.dimensions is not None:
            body["dimensions"] = req.dimensions
        if req.user is not None:
            body["user"] = req.user
        # Floats are always requested: the frontend re-encodes to what its client asked for.
        return HttpRequest(url=self._url("embeddings", target), body=jsonio.dumps(body), headers=self._headers())

    def embeddings_response(self, body: bytes, req: ir.EmbeddingRequest) -> ir.EmbeddingResponse:
        try:
            resp = _embeddings_decoder.decode(body)
        except (jsonio.DecodeError, jsonio.ValidationError):
            raise ProxyError("upstream_protocol", "the upstream answered with an invalid embeddings body") from None
        items = sorted(resp.data, key=lambda d: d.index)
        vectors = [base64_to_floats(d.embedding) if isinstance(d.embedding, str) else d.embedding for d in items]
        return ir.EmbeddingResponse(model=resp.model or req.model, data=vectors,
                                    usage=usage_to_ir(resp.usage) if resp.usage is not None else None)

    # -- same-format pass-through ----------------------------------------------------------------------
    def passthrough_request(
        self, op: str, body: bytes, stream: bool, target: Target, client_headers: Mapping[str, str]
    ) -> HttpRequest:
        if op not in PATHS:
            raise ProxyError("not_found", f"operation {op!r} is not offered by OpenAI-compatible backends")
        body = self._passthrough_body(body)
        return HttpRequest(url=self._url(op, target), body=body, headers=self._headers(), stream=stream)

    def _passthrough_body(self, body: bytes) -> bytes:
        """Bytes stay as sent, except where a preset quirk would make the server misbehave."""
        if self.preset.structured_outputs and b'"guided_' in body:
            raw = jsonio.top_level_raw(body)
            fixed: dict[str, Any] = dict(raw)
            guided = {k: jsonio.loads(raw[k]) for k in raw if k.startswith("guided_")}
            if guided:
                for k in guided:
                    del fixed[k]
                if "structured_outputs" in fixed:
                    guided["structured_outputs"] = jsonio.loads(fixed.pop("structured_outputs"))
                move_guided_fields(guided)
                fixed["structured_outputs"] = guided["structured_outputs"]
                body = jsonio.encode_raw_object(fixed)
        if not self.preset.stream_options and b'"stream_options"' in body:
            raw = dict(jsonio.top_level_raw(body))
            if raw.pop("stream_options", None) is not None:
                body = jsonio.encode_raw_object(raw)
        if self.preset.tool_ids == "mistral" and b'"tool_call' in body:
            doc = jsonio.loads(body)
            fix_passthrough_ids(doc)
            body = jsonio.dumps(doc)
        return body
