"""Model routing: the client's `model` -> a Route (its deployments and resilience policy).

Exact names are looked up first, then wildcards in config order.  A wildcard name holds one `*`; the
part it matched replaces `*` in the deployment's model (or is the whole backend model when the
deployment names none).  Everything that can be computed at start-up is: Targets (with compiled chat
templates) are built once, and wildcard resolutions are cached.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import quote

import msgspec

from adapters.base import Target
from adapters.errors import bad_request

from .config import Config, ConfigError, ModelConfig, deployments_of
from .pools import BackendRuntime


@dataclass(slots=True)
class Deployment:
    backend: BackendRuntime
    target: Target
    weight: float = 1.0
    max_concurrency: int | None = None
    max_queue: int = 0
    # Identity used in metrics, logs and the x-llm-proxy-deployment header.
    label: str = ""
    # The configured deployment it comes from (its label, a wildcard's `*` left in): what balancer
    # and breaker state is kept by, so client-made names on a wildcard add none.  Default: the label.
    key: str = ""
    # Wire family of this model on its backend (pass-through when it is the client's format).
    family: str | None = None

    def __post_init__(self) -> None:
        if not self.key:
            self.key = self.label


@dataclass(slots=True)
class Route:
    name: str  # client-facing model name (for wildcards: the concrete name the client sent)
    deployments: list[Deployment]
    config: ModelConfig


_WILDCARD_CACHE_MAX = 4096
MAX_MODEL_NAME = 256  # bytes (UTF-8) of a client's model name


def check_model_name(model: str) -> str:
    """A client's model name, or a 400 before anything stores, logs or forwards it: at most 256
    bytes, and no control, format or separator characters (CR/LF, NUL, DEL, bidi overrides...).
    The message does not echo the name."""
    if len(model) > MAX_MODEL_NAME:
        raise bad_request(f"model name is longer than {MAX_MODEL_NAME} bytes", param="model")
    if not model.isprintable():  # False for every Unicode category C* (surrogates too), Zl and Zp
        raise bad_request("model name contains control or invisible characters", param="model")
    if len(model.encode()) > MAX_MODEL_NAME:
        raise bad_request(f"model name is longer than {MAX_MODEL_NAME} bytes", param="model")
    return model


def header_safe(text: str) -> str:
    """Checked client text for a response header: non-ASCII characters percent-encoded."""
    return text if text.isascii() else quote(text, safe=_PRINTABLE_ASCII)


_PRINTABLE_ASCII = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


class Router:
    def __init__(self, cfg: Config, backends: dict[str, BackendRuntime]) -> None:
        self.exact: dict[str, Route] = {}
        self.wildcards: list[tuple[str, str, ModelConfig, list[Deployment]]] = []
        self._cache: dict[str, Route | None] = {}
        for i, m in enumerate(cfg.models):
            options = cfg.model_options.get(m.name)
            deployments = [self._deployment(m, d, backends, f"models[{i}]", options) for d in deployments_of(m)]
            if "*" in m.name:
                prefix, _, suffix = m.name.partition("*")
                self.wildcards.append((prefix, suffix, m, deployments))
            else:
                self.exact[m.name] = Route(m.name, deployments, m)

    @staticmethod
    def _deployment(m: ModelConfig, d, backends: dict[str, BackendRuntime], path: str,
                    options: dict | None = None) -> Deployment:
        runtime = backends[d.backend]
        template = None
        if runtime.adapter.uses_chat_template:
            from adapters import chat_templates

            try:
                template = chat_templates.get(m.chat_template)
            except (ValueError, OSError) as exc:
                raise ConfigError(f"{path}.chat_template: {exc}") from None
        model = d.model or ("*" if "*" in m.name else m.name)
        target = Target(
            model=model,
            unsupported_params=m.unsupported_params,
            default_max_tokens=m.max_tokens,
            chat_template=template,
            params=m.params,
            # Already validated by the config loader against this backend's ModelOptions.
            options=msgspec.convert(options, runtime.adapter.ModelOptions, strict=False) if options else None,
        )
        return Deployment(
            backend=runtime,
            target=target,
            weight=d.weight,
            max_concurrency=d.max_concurrency,
            max_queue=d.max_queue,
            label=f"{d.backend}/{model}",
            family=runtime.adapter.family_for(target),
        )

    def resolve(self, model: str) -> Route | None:
        route = self.exact.get(model)
        if route is not None:
            return route
        if not self.wildcards:
            return None
        try:
            return self._cache[model]
        except KeyError:
            pass
        route = None
        for prefix, suffix, m, deployments in self.wildcards:
            if len(model) > len(prefix) + len(suffix) and model.startswith(prefix) and model.endswith(suffix):
                matched = model[len(prefix) : len(model) - len(suffix)]
                concrete = []
                for d in deployments:
                    target = replace(d.target, model=d.target.model.replace("*", matched))
                    concrete.append(replace(d, target=target, label=d.label.replace("*", header_safe(matched)),
                                            family=d.backend.adapter.family_for(target)))
                route = Route(model, concrete, m)
                break
        if len(self._cache) >= _WILDCARD_CACHE_MAX:
            self._cache.clear()
        self._cache[model] = route
        return route

    def names(self) -> list[str]:
        """Concrete model names clients can send (wildcard patterns are not model ids)."""
        return list(self.exact)

    def table(self) -> list[tuple[str, str, str, str]]:
        """(client name, backend, provider, backend model) rows, for `check-config`."""
        rows = [
            (r.name, d.backend.name, d.backend.provider, d.target.model)
            for r in self.exact.values()
            for d in r.deployments
        ]
        rows += [
            (f"{p}*{s}", d.backend.name, d.backend.provider, d.target.model)
            for p, s, _, deps in self.wildcards
            for d in deps
        ]
        return rows
