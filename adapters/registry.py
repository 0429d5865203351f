"""Names -> adapter classes.  Entries are import paths so that a provider's module loads only when a
config uses it (start-up work, never per request)."""

from __future__ import annotations

import importlib
from typing import Any

FRONTENDS = {
    "openai": "adapters.openai_frontend:OpenAIFrontend",
    "anthropic": "adapters.anthropic_frontend:AnthropicFrontend",
    "ollama": "adapters.ollama_frontend:OllamaFrontend",
    "gemini": "adapters.gemini_frontend:GeminiFrontend",
    "openai-responses": "adapters.openai_responses_frontend:ResponsesFrontend",
}
# Speaks for the gateway where no format does: its own endpoints (metrics, health, admin API) take
# this frontend's key places and answer errors in its shape, as does any path no frontend claims.
DEFAULT_FRONTEND = "openai"

PROVIDERS = {
    "openai": "adapters.openai_backend:OpenAIBackend",
    "azure": "adapters.azure_backend:AzureBackend",
    "anthropic": "adapters.anthropic_backend:AnthropicBackend",
    "ollama": "adapters.ollama_backend:OllamaBackend",
    "tgi": "adapters.tgi_backend:TGIBackend",
    "huggingface": "adapters.huggingface_backend:HuggingFaceBackend",
    "llamacpp": "adapters.llamacpp_backend:LlamaCppBackend",
    "replicate": "adapters.replicate_backend:ReplicateBackend",
    "gemini": "adapters.gemini_backend:GeminiBackend",
    "cohere": "adapters.cohere_backend:CohereBackend",
    "vertex": "adapters.vertex_backend:VertexBackend",
    "bedrock": "adapters.bedrock_backend:BedrockBackend",
}


# Providers whose adapter imports an optional extra's library: provider -> (extra, top-level module).
EXTRAS = {"bedrock": ("bedrock", "botocore")}


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


# `provider: together` == `provider: openai, preset: together`; the names come from the preset table
# in the OpenAI backend, which is loaded only when a name is not a provider of its own.
PRESET_ALIASES = "adapters.openai_backend:PRESET_PROVIDERS"


def provider_class(provider: str) -> Any:
    if provider in PROVIDERS:
        try:
            return _load(PROVIDERS[provider])
        except ImportError as exc:
            extra, library = EXTRAS.get(provider, (None, None))
            if extra is None or (exc.name or "").partition(".")[0] != library:
                raise  # a broken import, not a missing extra
            raise KeyError(f"provider {provider} needs: pip install -e '.[{extra}]' ({exc.name} is missing)") from None
    aliases = _load(PRESET_ALIASES)
    if provider in aliases:
        return _load(PROVIDERS["openai"]).for_preset(provider)
    known = ", ".join(sorted([*PROVIDERS, *aliases]))
    raise KeyError(f"unknown provider {provider!r}; known: {known}")


def frontend(name: str) -> Any:
    return _load(FRONTENDS[name])()
