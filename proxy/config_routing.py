"""The `models` and `routing` sections: what each client model name routes to (deployments, strategy,
retries, fallbacks, prices) and the gateway-wide retry and circuit-breaker settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from msgspec import Struct, field

from .config_base import ConfigError, convert


class PriceConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    input: float = 0.0  # USD per million prompt tokens
    output: float = 0.0  # USD per million completion tokens


class DeploymentConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    backend: str
    model: str | None = None
    weight: float = 1.0
    max_concurrency: int | None = None  # in-flight requests on this deployment
    max_queue: int = 0  # requests waiting for a slot before the next deployment is tried


Strategy = Literal["round-robin", "least-busy", "latency", "ordered", "load-aware"]


class PrefixAffinityConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    chars: int = 2048  # leading characters of the rendered prompt that pick the server
    max_imbalance: float = 1.25  # a server takes at most this times its fair share of the load


class ModelConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    name: str  # what clients send as "model"; may contain one "*" wildcard
    backend: str | None = None  # single-deployment form
    model: str | None = None  # backend model id (default: name, or the part matched by "*")
    deployments: list[DeploymentConfig] | None = None
    strategy: Strategy = "round-robin"
    retries: int = 0
    fallbacks: list[str] = field(default_factory=list)
    context_window_fallbacks: list[str] = field(default_factory=list)
    hedge_after: float | None = None  # seconds; non-streaming requests only
    prefix_affinity: PrefixAffinityConfig | None = None
    unsupported_params: Literal["drop", "error"] = "drop"
    max_tokens: int | None = None  # default max tokens for backends that require one
    chat_template: str | None = None  # prompt-only backends: a shipped name or a .jinja path
    params: dict[str, Any] = field(default_factory=dict)  # fixed fields merged into the backend body
    price: PriceConfig | None = None  # spend accounting (per-key budgets and metrics)


class RoutingConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    retry_backoff: float = 0.25  # base delay (s) of exponential backoff with full jitter
    retry_backoff_max: float = 4.0
    max_retry_after: float = 10.0  # a backend's Retry-After is honoured up to this many seconds
    breaker_failures: int = 5  # consecutive failures that eject a deployment
    breaker_cooldown: float = 30.0  # seconds out before a half-open probe


def deployments_of(m: ModelConfig) -> list[DeploymentConfig]:
    """The deployments of a model entry; the single-backend form is one deployment."""
    if m.deployments is not None:
        return m.deployments
    return [DeploymentConfig(backend=m.backend or "", model=m.model)]


_MODEL_KEYS = frozenset(ModelConfig.__struct_fields__)


def split_model_options(doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Take the keys ModelConfig does not know out of each model entry (index -> keys)."""
    models = doc.get("models")
    if not isinstance(models, list):
        return {}
    extra: dict[int, dict[str, Any]] = {}
    plain = []
    for i, m in enumerate(models):
        if isinstance(m, dict) and not _MODEL_KEYS.issuperset(m):
            extra[i] = {k: v for k, v in m.items() if k not in _MODEL_KEYS}
            m = {k: v for k, v in m.items() if k in _MODEL_KEYS}
        plain.append(m)
    doc["models"] = plain
    return extra


def check_model_options(models: list[ModelConfig], providers: Mapping[str, str],
                        extra: dict[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Provider-specific model keys must be known to every backend the model routes to (`providers`:
    backend name -> provider); returns them by model name."""
    from adapters import registry

    out: dict[str, dict[str, Any]] = {}
    for i, keys in extra.items():
        m = models[i]
        for d in deployments_of(m):
            provider = providers[d.backend]
            model_options = registry.provider_class(provider).ModelOptions
            if model_options is None:
                raise ConfigError(f"models[{i}].{next(iter(keys))}: unknown field (provider {provider!r} has no per-model settings)")
            convert(keys, model_options, f"models[{i}]")
        out[m.name] = keys
    return out


def check_models(models: list[ModelConfig], backends: Mapping[str, Any]) -> None:
    seen: set[str] = set()
    for i, m in enumerate(models):
        path = f"models[{i}]"
        if m.name in seen:
            raise ConfigError(f"{path}.name: duplicate model name {m.name!r}")
        seen.add(m.name)
        _check_model(m, path, backends)
    for i, m in enumerate(models):
        for key, names in (("fallbacks", m.fallbacks), ("context_window_fallbacks", m.context_window_fallbacks)):
            for fb in names:
                if fb not in seen:
                    raise ConfigError(f"models[{i}].{key}: unknown model {fb!r}")


def _check_model(m: ModelConfig, path: str, backends: Mapping[str, Any]) -> None:
    if m.name.count("*") > 1:
        raise ConfigError(f"{path}.name: at most one '*' wildcard")
    if (m.backend is None) == (m.deployments is None):
        raise ConfigError(f"{path}: give either `backend` (and optional `model`) or `deployments`")
    if m.deployments is not None and not m.deployments:
        raise ConfigError(f"{path}.deployments: empty")
    for j, d in enumerate(deployments_of(m)):
        if d.backend not in backends:
            raise ConfigError(f"{path}.deployments[{j}].backend: unknown backend {d.backend!r}")
        if d.weight <= 0:
            raise ConfigError(f"{path}.deployments[{j}].weight: must be > 0")
    if m.retries < 0:
        raise ConfigError(f"{path}.retries: must be >= 0")
    if m.prefix_affinity is not None:
        if m.prefix_affinity.chars < 1:
            raise ConfigError(f"{path}.prefix_affinity.chars: must be >= 1")
        if m.prefix_affinity.max_imbalance < 1.0:
            raise ConfigError(f"{path}.prefix_affinity.max_imbalance: must be >= 1.0")
