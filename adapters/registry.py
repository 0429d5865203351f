"""Names -> adapter classes.  Entries are import paths so that a provider's module loads only when a
config uses it (start-up work, never per request)."""

from __future__ import annotations

import importlib
from typing import Any

FRONTENDS = {
    "openai": "adapters.openai:OpenAIFrontend",
    "anthropic": "adapters.anthropic:AnthropicFrontend",
    "ollama": "adapters.ollama_frontend:OllamaFrontend",
    "gemini": "adapters.gemini:GeminiFrontend",
    "openai-responses": "adapters.openai_responses:ResponsesFrontend",
}

PROVIDERS = {
    "openai": "adapters.openai:OpenAIBackend",
    "azure": "adapters.azure:AzureBackend",
    "anthropic": "adapters.anthropic:AnthropicBackend",
    "ollama": "adapters.ollama:OllamaBackend",
    "tgi": "adapters.tgi:TGIBackend",
    "huggingface": "adapters.huggingface:HuggingFaceBackend",
    "llamacpp": "adapters.llamacpp:LlamaCppBackend",
    "replicate": "adapters.replicate:ReplicateBackend",
    "gemini": "adapters.gemini:GeminiBackend",
}


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


# `provider: together` == `provider: openai, preset: together` (the preset table lives in the adapter).
PRESET_ALIASES = ("vllm", "together", "groq", "fireworks", "deepseek", "mistral", "openrouter", "lmstudio")


def provider_class(provider: str) -> Any:
    if provider in PRESET_ALIASES:
        return _load(PROVIDERS["openai"]).for_preset(provider)
    try:
        return _load(PROVIDERS[provider])
    except KeyError:
        known = ", ".join(sorted([*PROVIDERS, *PRESET_ALIASES]))
        raise KeyError(f"unknown provider {provider!r}; known: {known}") from None


def frontend(name: str) -> Any:
    return _load(FRONTENDS[name])()
