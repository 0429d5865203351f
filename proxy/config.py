"""Configuration: YAML -> environment interpolation -> msgspec Structs, validated once at start-up.

A wrong config fails before the server starts, with an error that names the field path
(`backends.local-vllm.timeouts.connect: Expected `float`, got `str``).  `${VAR}` and `${VAR:-default}`
are replaced in every string value (after YAML parsing, so a value can never change the document's
structure); a missing variable without a default is an error naming it and where it was used.

Each backend block has common keys (`BackendConfig`) plus the keys of its provider's own `Options`
Struct (declared by the adapter), so a typo in either is caught.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from typing import Any, Literal

import msgspec
from msgspec import Struct, field

from .config_yaml import YAMLConfigError, load_yaml


class ConfigError(Exception):
    """A configuration problem, with the path of the offending field in the message."""


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
    request_read_timeout: float = 30.0  # seconds to receive a request's whole body (else 408)
    drain_timeout: float = 30.0  # SIGTERM: how long in-flight requests may take to finish
    log_level: str = "info"
    log_prompts: bool = False  # debug aid: request bodies (first 4 KiB) in access lines; prompts are user data


class BudgetConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    usd: float  # spend cap
    period: str | None = None  # "1h", "1d", "7d", "30d" (counted from the key's first request); None = lifetime


class KeyLimits(Struct, forbid_unknown_fields=True, kw_only=True):
    """What a client key may do; every field absent = unlimited.  Shared by config keys and the admin API."""

    models: list[str] | None = None  # globs over client model names
    rpm: int | None = None  # requests per minute (sliding 60 s window)
    tpm: int | None = None  # prompt + completion tokens per minute (sliding 60 s window)
    max_parallel: int | None = None  # requests in flight at once
    budget: BudgetConfig | None = None


class KeyConfig(KeyLimits, forbid_unknown_fields=True, kw_only=True):
    name: str = ""  # shown in metrics, logs and the admin API; never the secret
    key: str | None = None
    key_sha256: str | None = None  # hex digest, so the config need not hold the secret


class AuthConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    keys: list[str | KeyConfig] = field(default_factory=list)  # a plain string = an unlimited key
    admin_key: str | None = None  # Bearer key for /admin/*; absent = admin API off
    # Paths answered without a key (exact, or a prefix ending in "*"); every other route needs one.
    public: list[str] = field(default_factory=lambda: ["/health/live", "/health/ready", "/metrics"])


class StateConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    # Counters, run-time keys and usage.  SQLAlchemy-style URL: sqlite:///relative.db,
    # sqlite:////absolute/path.db, redis://host:6379/0 (shared by every replica).
    url: str = "sqlite:///llm-proxy-state.db"
    on_error: Literal["closed", "open"] = "closed"  # store unreachable: 503 (closed) or admit and log (open)
    timeout: float = 0.25  # seconds, every call to the store


class PriceConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    input: float = 0.0  # USD per million prompt tokens
    output: float = 0.0  # USD per million completion tokens


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


class BackendConfig(Struct, forbid_unknown_fields=True, kw_only=True):
    provider: str
    base_url: str | None = None
    api_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    max_connections: int = 256
    timeouts: Timeouts = field(default_factory=Timeouts)
    load: LoadConfig | None = None  # scrape the server's own queue and KV-cache gauges


_BACKEND_KEYS = frozenset(f for f in BackendConfig.__struct_fields__)


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


def _convert(obj: Any, typ: Any, path: str) -> Any:
    try:
        return msgspec.convert(obj, typ, strict=False)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        # msgspec says "... - at `$.a.b`": rewrite the location as our dotted path.
        m = re.search(r" - at `\$(.*)`$", msg)
        where = path
        if m:
            msg = msg[: m.start()]
            where = f"{path}{m.group(1)}" if path else m.group(1).lstrip(".")
        raise ConfigError(f"{where or '<root>'}: {msg}") from None


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
        common[name] = _convert({k: v for k, v in block.items() if k in _BACKEND_KEYS}, BackendConfig, path)
        specific = {k: v for k, v in block.items() if k not in _BACKEND_KEYS}
        options[name] = _convert(specific, cls.Options, path)
        if not common[name].base_url and not getattr(cls, "default_base_url", None):
            raise ConfigError(f"{path}.base_url: required for provider {provider!r}")
    doc = {k: v for k, v in doc.items() if k != "backends"}
    model_extra = _split_model_options(doc)
    cfg: Config = _convert(doc, Config, "")
    cfg.backends = common
    cfg.backend_options = options
    _check(cfg)
    _check_model_options(cfg, model_extra)
    return cfg


_MODEL_KEYS = frozenset(ModelConfig.__struct_fields__)


def _split_model_options(doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
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


def _check_model_options(cfg: Config, extra: dict[int, dict[str, Any]]) -> None:
    """Provider-specific model keys must be known to every backend the model routes to."""
    from adapters import registry

    for i, keys in extra.items():
        m = cfg.models[i]
        for d in deployments_of(m):
            provider = cfg.backends[d.backend].provider
            model_options = registry.provider_class(provider).ModelOptions
            if model_options is None:
                raise ConfigError(f"models[{i}].{next(iter(keys))}: unknown field (provider {provider!r} has no per-model settings)")
            _convert(keys, model_options, f"models[{i}]")
        cfg.model_options[m.name] = keys


def _check(cfg: Config) -> None:
    if cfg.auth is not None:
        _check_auth(cfg.auth)
    if not cfg.state.url.startswith(STATE_SCHEMES):
        raise ConfigError(f"state.url: must start with one of {', '.join(STATE_SCHEMES)}")
    if cfg.state.timeout <= 0:
        raise ConfigError("state.timeout: must be > 0")
    if cfg.server.workers < 1:
        raise ConfigError("server.workers: must be >= 1")
    if cfg.server.max_body_bytes < 1024:
        raise ConfigError("server.max_body_bytes: must be >= 1024")
    if cfg.server.request_read_timeout <= 0:
        raise ConfigError("server.request_read_timeout: must be > 0")
    for name, b in cfg.backends.items():
        if b.load is not None:
            _check_load(b.load, f"backends.{name}.load")
    seen: set[str] = set()
    for i, m in enumerate(cfg.models):
        path = f"models[{i}]"
        if m.name in seen:
            raise ConfigError(f"{path}.name: duplicate model name {m.name!r}")
        seen.add(m.name)
        if m.name.count("*") > 1:
            raise ConfigError(f"{path}.name: at most one '*' wildcard")
        if (m.backend is None) == (m.deployments is None):
            raise ConfigError(f"{path}: give either `backend` (and optional `model`) or `deployments`")
        if m.deployments is not None and not m.deployments:
            raise ConfigError(f"{path}.deployments: empty")
        for j, d in enumerate(deployments_of(m)):
            if d.backend not in cfg.backends:
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
    names = {m.name for m in cfg.models}
    for i, m in enumerate(cfg.models):
        for key in ("fallbacks", "context_window_fallbacks"):
            for fb in getattr(m, key):
                if fb not in names:
                    raise ConfigError(f"models[{i}].{key}: unknown model {fb!r}")


def _check_load(load: LoadConfig, path: str) -> None:
    if not re.match(r"https?://[^/?#\s]+", load.metrics_url):
        raise ConfigError(f"{path}.metrics_url: must be an http:// or https:// URL")
    if load.interval < 0.05:
        raise ConfigError(f"{path}.interval: must be >= 0.05 (seconds)")
    if load.timeout <= 0:
        raise ConfigError(f"{path}.timeout: must be > 0")
    if load.capacity is not None and load.capacity < 1:
        raise ConfigError(f"{path}.capacity: must be >= 1 (requests the server runs at once)")


def deployments_of(m: ModelConfig) -> list[DeploymentConfig]:
    """The deployments of a model entry; the single-backend form is one deployment."""
    if m.deployments is not None:
        return m.deployments
    return [DeploymentConfig(backend=m.backend or "", model=m.model)]


# --------------------------------------------------------------------------------------------------
# Client keys

STATE_SCHEMES = ("sqlite:///", "redis://", "rediss://", "unix://")
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PERIOD = re.compile(r"([1-9][0-9]{0,4})([hd])")


def period_seconds(period: str | None) -> float | None:
    """A budget period ("1h", "30d") in seconds; None for a lifetime budget."""
    if period is None:
        return None
    m = _PERIOD.fullmatch(period)
    if m is None:
        raise ValueError(f"budget period {period!r}: expected a number of hours or days, e.g. 1h, 1d, 7d, 30d")
    return int(m.group(1)) * (3600 if m.group(2) == "h" else 86400)


def key_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_configs(auth: AuthConfig) -> list[KeyConfig]:
    """Every client key as a KeyConfig; a plain string is an unlimited key named after its hash."""
    out = []
    for k in auth.keys:
        if isinstance(k, str):
            if k:  # `${OPTIONAL_KEY:-}` that is unset drops the key
                out.append(KeyConfig(key=k, name="key-" + key_sha256(k)[:8]))
        else:
            out.append(k)
    return out


def check_limits(limits: KeyLimits, path: str) -> None:
    for name in ("rpm", "tpm", "max_parallel"):
        value = getattr(limits, name)
        if value is not None and value < 1:
            raise ConfigError(f"{path}.{name}: must be >= 1")
    if limits.models is not None and not all(isinstance(m, str) and m for m in limits.models):
        raise ConfigError(f"{path}.models: model name globs must be non-empty strings")
    if limits.budget is not None:
        if limits.budget.usd < 0:
            raise ConfigError(f"{path}.budget.usd: must be >= 0")
        try:
            period_seconds(limits.budget.period)
        except ValueError as exc:
            raise ConfigError(f"{path}.budget.period: {exc}") from None


def _check_auth(auth: AuthConfig) -> None:
    for i, path in enumerate(auth.public):
        if not path.startswith("/") or "*" in path[:-1]:
            raise ConfigError(f"auth.public[{i}]: a path starting with '/', optionally ending in '*' (a prefix)")
    if auth.admin_key == "":
        auth.admin_key = None  # `${PROXY_ADMIN_KEY:-}` unset: admin API off
    keys = key_configs(auth)
    if not keys and auth.admin_key is None:
        raise ConfigError("auth.keys: empty (after environment interpolation); remove `auth` to disable client auth")
    names: set[str] = set()
    hashes: set[str] = set()
    for i, k in enumerate(keys):
        path = f"auth.keys[{i}]"
        if not KEY_NAME.fullmatch(k.name):
            raise ConfigError(f"{path}.name: required, 1-64 of A-Z a-z 0-9 . _ - (starting with a letter or digit)")
        if k.name in names:
            raise ConfigError(f"{path}.name: duplicate key name {k.name!r}")
        names.add(k.name)
        if (k.key is None) == (k.key_sha256 is None):
            raise ConfigError(f"{path}: give exactly one of `key` and `key_sha256`")
        if k.key is not None and not k.key:
            raise ConfigError(f"{path}.key: empty (after environment interpolation)")
        if k.key_sha256 is not None:
            k.key_sha256 = k.key_sha256.lower()
            if not _SHA256.fullmatch(k.key_sha256):
                raise ConfigError(f"{path}.key_sha256: expected 64 hex digits (sha256 of the key)")
        digest = k.key_sha256 or key_sha256(k.key or "")
        if digest in hashes:
            raise ConfigError(f"{path}: the same key is listed twice")
        hashes.add(digest)
        check_limits(k, path)
    if auth.admin_key is not None and key_sha256(auth.admin_key) in hashes:
        raise ConfigError("auth.admin_key: must differ from every client key")
