"""Configuration: YAML -> environment interpolation -> msgspec Structs, validated once at start-up.

A wrong config fails before the server starts, with an error that names the field path
(`backends.local-vllm.timeouts.connect: Expected `float`, got `str``).  `${VAR}` and `${VAR:-default}`
are replaced in every string value (after YAML parsing, so a value can never change the document's
structure); a missing variable without a default is an error naming it and where it was used.

Each backend block has common keys (`BackendConfig`) plus the keys of its provider's own `Options`
Struct (declared by the adapter), so a typo in either is caught.  This module holds the root `Config`,
the server, backend and tracing sections and the loading; the other sections have a module each
(`config_keys`: auth, `config_state`: state, `config_routing`: models and routing), and their names
are importable from here too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from msgspec import Struct, field

from .config_base import ConfigError, convert
from .config_keys import (KEY_NAME, AuthConfig, BudgetConfig, KeyConfig, KeyLimits, check_auth, check_limits,
                          key_configs, key_sha256, period_seconds)  # fmt: skip
from .config_routing import (DeploymentConfig, ModelConfig, PrefixAffinityConfig, PriceConfig, RoutingConfig,
                             Strategy, check_model_options, check_models, deployments_of,
                             split_model_options)  # fmt: skip
from .config_state import STATE_SCHEMES, ResponsesConfig, StateConfig, check_responses, check_state
from .config_yaml import YAMLConfigError, load_yaml

# Names of the section modules, re-exported: code and configs' tests import them from here.
__all__ = [
    "KEY_NAME", "STATE_SCHEMES", "AuthConfig", "BackendConfig", "BudgetConfig", "Config", "ConfigError",
    "DeploymentConfig", "KeyConfig", "KeyLimits", "LoadConfig", "LoadMetricsConfig", "ModelConfig",
    "PrefixAffinityConfig", "PriceConfig", "RoutingConfig", "ServerConfig", "StateConfig", "Strategy",
    "Timeouts", "TracingConfig", "check_limits", "deployments_of", "interpolate", "key_configs", "key_sha256",
    "load_config", "load_config_dict", "load_config_text", "period_seconds",
]


MAX_UPSTREAM_BODY_BYTES = 64 * 1024 * 1024


class Timeouts(Struct, forbid_unknown_fields=True, kw_only=True):
    connect: float = 5.0  # TCP (and TLS) connect
    first_byte: float = 60.0  # request sent -> response headers
    idle: float = 30.0  # longest silence between two chunks of a stream
    total: float = 600.0  # whole exchange


class ServerConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 4000
    workers: int = 1
    max_body_bytes: int = 10 * 1024 * 1024
    max_upstream_body_bytes: int = MAX_UPSTREAM_BODY_BYTES  # a read-all upstream answer; more is a 502
    request_read_timeout: float = 30.0  # seconds to receive a request's whole body (else 408)
    drain_timeout: float = 30.0  # SIGTERM: how long in-flight requests may take to finish
    log_level: str = "info"
    log_prompts: bool = False  # debug aid: request bodies (first 4 KiB) in access lines; prompts are user data
    http: str = "raw"  # the HTTP server: "raw" (proxy/rawserver.py; hands non-API routes to aiohttp) or "aiohttp"


class LoadMetricsConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    """Metric names for a server whose adapter/preset knows none (or to override them)."""

    waiting: str | None = None  # requests queued, not yet scheduled
    running: str | None = None  # requests in the running batch
    kv_cache: str | None = None  # KV-cache use as a fraction (0..1)


class LoadConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    metrics_url: str  # the server's Prometheus endpoint, scraped in the background
    interval: float = 1.0  # seconds between scrapes
    timeout: float = 1.0  # deadline of one scrape
    metrics: LoadMetricsConfig | None = None
    capacity: int | None = None  # requests the server runs at once (vLLM --max-num-seqs); else learned


HTTP_CLIENTS = ("raw", "aiohttp")
HTTP_SERVERS = ("raw", "aiohttp")


class BackendConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    provider: str
    base_url: str | None = None
    api_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    max_connections: int = 256
    http_client: str = "raw"  # raw (proxy/rawpool.py) | aiohttp (also follows HTTP(S)_PROXY / NO_PROXY)
    timeouts: Timeouts = field(default_factory=Timeouts)
    load: LoadConfig | None = None  # scrape the server's own queue and KV-cache gauges


_BACKEND_KEYS = frozenset(f for f in BackendConfig.__struct_fields__)


class TracingConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = False  # needs the `tracing` extra (opentelemetry-sdk + OTLP/HTTP exporter)
    endpoint: str = "http://127.0.0.1:4318/v1/traces"  # an OTLP/HTTP collector
    service_name: str = "llm-proxy"
    sample_ratio: float = 1.0  # of new traces; a caller's sampled traceparent is always followed
    headers: dict[str, str] = field(default_factory=dict)  # e.g. the collector's auth header


class Config(Struct, forbid_unknown_fields=True, kw_only=True):
    server: ServerConfig = field(default_factory=ServerConfig)
    auth: AuthConfig | None = None
    state: StateConfig = field(default_factory=StateConfig)
    responses: ResponsesConfig = field(default_factory=ResponsesConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    backends: dict[str, BackendConfig] = field(default_factory=dict)
    models: list[ModelConfig] = field(default_factory=list)
    # Provider-specific options per backend name, decoded into each adapter's Options Struct.
    backend_options: dict[str, Any] = field(default_factory=dict)
    # Provider-specific keys of model entries (model name -> raw keys), checked against the
    # `ModelOptions` of each backend the model routes to; routing decodes them into Target.options.
    model_options: dict[str, dict[str, Any]] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Environment interpolation

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def interpolate(value: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Replace ${VAR} / ${VAR:-default} in every string of a parsed YAML document."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{path or '<root>'}: environment variable {name} is not set (and has no default)")

        return _VAR.sub(sub, value)
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


# --------------------------------------------------------------------------------------------------
# Loading


def load_config_text(text: str, env: Mapping[str, str] | None = None) -> Config:
    try:
        doc = load_yaml(text)  # bounded: no alias bombs, no stack exhaustion, no duplicate keys
    except YAMLConfigError as exc:
        raise ConfigError(str(exc)) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError("<root>: the config must be a mapping")
    return load_config_dict(doc, env)


def load_config(path: str, env: Mapping[str, str] | None = None) -> Config:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    return load_config_text(text, env)


def load_config_dict(doc: dict[str, Any], env: Mapping[str, str] | None = None) -> Config:
    from adapters import registry

    doc = interpolate(doc, os.environ if env is None else env)
    backends_raw = doc.get("backends") or {}
    if not isinstance(backends_raw, dict):
        raise ConfigError("backends: expected a mapping of backend name -> settings")
    common: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for name, block in backends_raw.items():
        path = f"backends.{name}"
        if not isinstance(block, dict):
            raise ConfigError(f"{path}: expected a mapping")
        provider = block.get("provider")
        if not isinstance(provider, str):
            raise ConfigError(f"{path}.provider: required (one of {', '.join(sorted(registry.PROVIDERS))})")
        try:
            cls = registry.provider_class(provider)
        except KeyError as exc:
            raise ConfigError(f"{path}.provider: {exc.args[0]}") from None
        common[name] = convert({k: v for k, v in block.items() if k in _BACKEND_KEYS}, BackendConfig, path)
        specific = {k: v for k, v in block.items() if k not in _BACKEND_KEYS}
        options[name] = convert(specific, cls.Options, path)
        if not common[name].base_url and not cls.default_base_url:
            raise ConfigError(f"{path}.base_url: required for provider {provider!r}")
    doc = {k: v for k, v in doc.items() if k != "backends"}
    model_extra = split_model_options(doc)
    cfg: Config = convert(doc, Config, "")
    cfg.backends = common
    cfg.backend_options = options
    _check(cfg)
    providers = {name: b.provider for name, b in common.items()}
    cfg.model_options = check_model_options(cfg.models, providers, model_extra)
    return cfg


def _check(cfg: Config) -> None:
    if cfg.auth is not None:
        check_auth(cfg.auth)
    check_state(cfg.state)
    check_responses(cfg.responses)
    if cfg.server.workers < 1:
        raise ConfigError("server.workers: must be >= 1")
    if cfg.server.max_body_bytes < 1024:
        raise ConfigError("server.max_body_bytes: must be >= 1024")
    if cfg.server.max_upstream_body_bytes < 1024:
        raise ConfigError("server.max_upstream_body_bytes: must be >= 1024")
    if cfg.server.request_read_timeout <= 0:
        raise ConfigError("server.request_read_timeout: must be > 0")
    if cfg.server.http not in HTTP_SERVERS:
        raise ConfigError(f"server.http: one of {', '.join(HTTP_SERVERS)}")
    for name, b in cfg.backends.items():
        if b.http_client not in HTTP_CLIENTS:
            raise ConfigError(f"backends.{name}.http_client: one of {', '.join(HTTP_CLIENTS)}")
        if b.max_connections < 1:
            raise ConfigError(f"backends.{name}.max_connections: must be >= 1")
        if b.load is not None:
            _check_load(b.load, f"backends.{name}.load")
    check_models(cfg.models, cfg.backends)


def _check_load(load: LoadConfig, path: str) -> None:
    if not re.match(r"https?://[^/?#\s]+", load.metrics_url):
        raise ConfigError(f"{path}.metrics_url: must be an http:// or https:// URL")
    if load.interval < 0.05:
        raise ConfigError(f"{path}.interval: must be >= 0.05 (seconds)")
    if load.timeout <= 0:
        raise ConfigError(f"{path}.timeout: must be > 0")
    if load.capacity is not None and load.capacity < 1:
        raise ConfigError(f"{path}.capacity: must be >= 1 (requests the server runs at once)")
