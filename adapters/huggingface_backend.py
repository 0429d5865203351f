"""Backend for the Hugging Face Inference API (serverless) and dedicated Inference Endpoints.

Text generation reuses the TGI adapter (`adapters.tgi_backend`): same chat-template prompt, same `parameters`,
same token-event stream, same `{"error", "error_type"}` errors.  What differs:

- URL: `endpoint_style: serverless` posts to `{base_url}/models/{model}` (default base URL
  https://api-inference.huggingface.co); `endpoint` posts to the root of a dedicated Inference Endpoint
  (TGI's compatibility route, which dispatches on `"stream"`).
- Body: `{"inputs", "parameters", "stream"}`, plus `"options": {"wait_for_model": true}` on serverless
  (so a cold model is waited for instead of answered with a 503).
- Auth: `Authorization: Bearer hf_...`.
- Non-stream answers are a list `[{"generated_text": ...}]` (serverless, root route) or TGI's object;
  both are accepted.  A non-TGI pipeline sends no `details`: finish reason `stop`, no usage, a trailing
  stop sequence still cut.
- Errors: a model that is still loading answers 503 `{"error": "... is currently loading",
  "estimated_time": s}` -> overloaded with `retry_after = estimated_time`; `error` may also be a list
  of strings or an object with `message`.
- Embeddings (feature-extraction task): the same URL with `{"inputs": [texts]}` answers a list of
  vectors.  Token-level output (one vector per token, from models without a pooling layer) is
  mean-pooled; token-id input is refused.  No usage is reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from . import ir, jsonio
from .base import HttpRequest, Target
from .common import path_segment
from .errors import ProxyError, bad_request, from_upstream, unsupported
from .tgi_backend import (
    TGIBackend,
    bearer_headers,
    decode_error,
    error_message,
    generation_parameters,
    prompt_and_stops,
    tgi_error,
)

SERVERLESS_URL = "https://api-inference.huggingface.co"


class HuggingFaceOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    endpoint_style: Literal["serverless", "endpoint"] = "serverless"
    wait_for_model: bool = True  # serverless: wait for a cold model instead of a 503
    max_stop_sequences: int = 4
    send_bos: bool = False
    prefill_usage: bool = False


_vectors_decoder = jsonio.decoder(list[Any])


def _as_vector(value: Any) -> list[float]:
    """One embedding from a sentence vector, or the mean of token vectors (models without pooling)."""
    if value and isinstance(value[0], list):
        width = len(value[0])
        if any(len(row) != width for row in value):
            raise ProxyError("upstream_protocol", "feature-extraction returned ragged token vectors")
        return [sum(col) / len(value) for col in zip(*value)]
    if not all(isinstance(x, (int, float)) for x in value):
        raise ProxyError("upstream_protocol", "feature-extraction returned a non-numeric vector")
    return [float(x) for x in value]


def repo_path(model: str) -> str:
    """A Hub repo id (`name` or `owner/name`) as URL path segments, each encoded on its own: the
    model (client text on a wildcard route) never leaves `/models/` nor adds a query."""
    parts = model.split("/")
    if len(parts) > 2:
        raise bad_request(f"Hugging Face model {model!r} is not a repo id ('name' or 'owner/name')", param="model")
    return "/".join(path_segment(p) for p in parts)


class HuggingFaceBackend(TGIBackend):
    provider = "huggingface"
    Options = HuggingFaceOptions

    options: HuggingFaceOptions  # type: ignore[assignment]

    default_base_url = SERVERLESS_URL

    def url(self, target: Target) -> str:
        if self.options.endpoint_style == "serverless":
            return f"{self.base_url}/models/{repo_path(target.model)}"
        return self.base_url

    def chat_request(self, req: ir.ChatRequest, target: Target) -> HttpRequest:
        prompt, stops = prompt_and_stops(req, target, self.options)  # type: ignore[arg-type]
        params = generation_parameters(req, target, stops)
        if self.options.prefill_usage and not req.stream:
            params["decoder_input_details"] = True
        body: dict[str, Any] = {"inputs": prompt, "parameters": params, "stream": req.stream}
        if self.options.endpoint_style == "serverless":
            body["options"] = {"wait_for_model": self.options.wait_for_model}
        return HttpRequest(
            url=self.url(target),
            body=jsonio.dumps(body),
            headers=bearer_headers(self.api_key, self.extra_headers, req.stream),
            stream=req.stream,
        )

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProxyError:
        err = decode_error(body)
        if err is None:
            return from_upstream(status, "", headers)
        message = error_message(err.error)
        if err.estimated_time is not None and status == 503:
            return ProxyError(
                "overloaded",
                message or "model is loading",
                code="model_loading",
                retry_after=max(0.0, err.estimated_time),
                upstream_status=status,
            )
        return tgi_error(status, message, err.error_type, headers)

    # -- embeddings ------------------------------------------------------------------------------
    def embeddings_request(self, req: ir.EmbeddingRequest, target: Target) -> HttpRequest:
        if req.input and not isinstance(req.input[0], str):
            raise unsupported("token-id input is not supported by Hugging Face feature-extraction", param="input")
        body: dict[str, Any] = {"inputs": list(req.input)}
        if req.dimensions is not None:
            body["dimensions"] = req.dimensions
        if self.options.endpoint_style == "serverless":
            body["options"] = {"wait_for_model": self.options.wait_for_model}
        return HttpRequest(
            url=self.url(target), body=jsonio.dumps(body), headers=bearer_headers(self.api_key, self.extra_headers, False)
        )

    def embeddings_response(self, body: bytes, req: ir.EmbeddingRequest) -> ir.EmbeddingResponse:
        try:
            data = _vectors_decoder.decode(body)
        except (jsonio.DecodeError, jsonio.ValidationError) as exc:
            raise ProxyError("upstream_protocol", f"feature-extraction response is not a list: {exc}") from None
        # One input may come back bare: a single vector, or its token vectors (no list of one).
        if data and (not isinstance(data[0], list) or (len(req.input) == 1 and len(data) != 1)):
            data = [data]
        vectors = [_as_vector(v) for v in data]
        if len(vectors) != len(req.input):
            raise ProxyError("upstream_protocol", f"feature-extraction returned {len(vectors)} vectors for {len(req.input)} inputs")
        return ir.EmbeddingResponse(model=req.model, data=vectors)
