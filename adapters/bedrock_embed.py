"""Embeddings on Bedrock through InvokeModel (`POST /model/{modelId}/invoke`, the model's own body).

- Amazon Titan text embeddings (`amazon.titan-embed-text-v1`, `-v2:0`): one `inputText` per call,
  so an OpenAI list of N inputs becomes N requests (sent concurrently by the proxy, answers in
  order); `dimensions` only on v2.  Answer `{"embedding": [...], "inputTextTokenCount": N}`.
- Cohere embed models (`cohere.embed-english-v3`, `-multilingual-v3`, `embed-v4`): up to 96
  `texts` per call with the required `input_type` (the backend's `embedding_input_type`, default
  `search_document`; a model's `params` may set it per model).  Answer `{"embeddings": [[...]]}`
  (or `{"embeddings": {"float": [[...]]}}` when `embedding_types` was asked for).
Usage: the token count comes in the `X-Amzn-Bedrock-Input-Token-Count` response header (Titan also
puts it in the body); the proxy sums it over the requests.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

from . import ir, jsonio
from .errors import ProxyError, unsupported

COHERE_BATCH = 96  # texts per Cohere embed call on Bedrock
TOKEN_COUNT_HEADER = "X-Amzn-Bedrock-Input-Token-Count"


def family(model: str) -> str:
    if "titan-embed" in model:
        return "titan"
    if "cohere.embed" in model:
        return "cohere"
    raise unsupported(
        f"the bedrock backend embeds with Amazon Titan or Cohere embed models only, not {model!r}", param="model"
    )


def bodies(req: ir.EmbeddingRequest, model: str, input_type: str, params: dict[str, Any]) -> list[bytes]:
    """The InvokeModel bodies for one embeddings request, in input order."""
    if any(not isinstance(item, str) for item in req.input):
        raise unsupported("the bedrock backend embeds text only, not token arrays", param="input")
    texts: list[str] = req.input  # type: ignore[assignment]
    if family(model) == "titan":
        extra: dict[str, Any] = {"dimensions": req.dimensions} if req.dimensions is not None else {}
        return [jsonio.dumps({"inputText": text, **extra, **params}) for text in texts]
    if req.dimensions is not None:
        raise unsupported("Cohere embed models on Bedrock have a fixed size: `dimensions` cannot be set",
                          param="dimensions")
    return [
        jsonio.dumps({"texts": texts[i : i + COHERE_BATCH], "input_type": input_type, **params})
        for i in range(0, len(texts), COHERE_BATCH)
    ]


class _Answer(Struct):
    embedding: list[float] | None = None  # Titan
    inputTextTokenCount: int | None = None
    embeddings: list[list[float]] | dict[str, list[list[float]]] | None = None  # Cohere


_answer_decoder = jsonio.decoder(_Answer)


def response(body: bytes, model: str) -> ir.EmbeddingResponse:
    """One InvokeModel answer (the proxy concatenates a request list's answers)."""
    try:
        a = _answer_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise ProxyError("upstream_protocol", "Bedrock sent an embeddings answer that cannot be parsed") from None
    if a.embedding is not None:
        usage = ir.Usage(input_tokens=a.inputTextTokenCount) if a.inputTextTokenCount is not None else None
        return ir.EmbeddingResponse(model=model, data=[a.embedding], usage=usage)
    vectors = a.embeddings.get("float") if isinstance(a.embeddings, dict) else a.embeddings
    if vectors is None:
        raise ProxyError("upstream_protocol", "Bedrock embeddings answer has no float embeddings")
    return ir.EmbeddingResponse(model=model, data=vectors)
