"""What a conformance probe is: a small async function with a docstring saying what a client breaks on.

A probe gets a `Session` (the server under test, an HTTP client) and returns one line of evidence when
the server behaves; it raises `Fail` when it does not, and `Unsupported` when the server refuses an
optional feature outright (a 4xx naming it) rather than getting it wrong.  Probes register themselves
per wire format with `@probe(format, id, level)`; the id's first part is its group (`stream.role_first`
is in group `stream`), which `--only` selects on, with levels and whole ids.

The set is versioned: bump `PROBE_SET_VERSION` whenever a probe is added, removed or made stricter, so
two reports are comparable only when their versions match.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

PROBE_SET_VERSION = "1.0"
LEVELS = ("core", "tools", "extras")

# Result states.  `timeout` counts as a failure: a client waiting on the server would hang too.
PASS, FAIL, UNSUPPORTED, TIMEOUT = "pass", "fail", "not supported", "timeout"

# A refusal status: the server understood the request and declines the feature.
REFUSAL_STATUSES = frozenset({400, 404, 405, 415, 422, 501})


class Fail(Exception):
    """The server answered, and the answer breaks a client.  The message is the evidence line."""


class Unsupported(Exception):
    """The server declined an optional feature in a well-formed way.  The message is the evidence."""


def expect(condition: Any, evidence: str) -> None:
    if not condition:
        raise Fail(evidence)


@dataclass(frozen=True)
class Probe:
    format: str
    id: str
    level: str
    fn: Callable[[Any], Awaitable[str]]

    @property
    def group(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.fn.__doc__ or "")

    @property
    def title(self) -> str:
        """The rule the probe checks: the docstring's first paragraph, on one line."""
        return " ".join(self.doc.split("\n\n", 1)[0].split())

    def selected(self, only: frozenset[str]) -> bool:
        return not only or bool({self.id, self.group, self.level} & only)


REGISTRY: dict[str, list[Probe]] = {}


def probe(fmt: str, probe_id: str, level: str) -> Callable[[Callable[[Any], Awaitable[str]]], Callable]:
    """Register `fn` as probe `probe_id` of format `fmt`; the registration order is the run order."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}")

    def register(fn: Callable[[Any], Awaitable[str]]) -> Callable:
        if not fn.__doc__:
            raise ValueError(f"probe {probe_id} needs a docstring: it is what a failure explains")
        REGISTRY.setdefault(fmt, []).append(Probe(fmt, probe_id, level, fn))
        return fn

    return register


# The modules holding each format's probes, in report order (importing a module registers its probes).
PROBE_MODULES = {
    "openai": ("openai_probes", "openai_tool_probes", "openai_extra_probes"),
    "anthropic": ("anthropic_probes",),
}


def probes(fmt: str) -> list[Probe]:
    """The probe set of one format."""
    if fmt not in REGISTRY:
        import importlib

        for module in PROBE_MODULES[fmt]:
            importlib.import_module(f"proxy.conformance.{module}")
    return REGISTRY[fmt]


async def expect_not_found(s: Any, path: str, body: dict[str, Any]) -> str:
    """The unknown-model rule both formats share: 404; a 2xx means a single-model server that answers
    any name (not supported), anything else fails."""
    sent = f"POST {path} model={body['model']!r}"
    reply = await s.post(path, body)
    if 200 <= reply.status < 300:
        raise Unsupported(f"{sent} -> {reply.status}: the server answers any model name (single-model server)")
    expect(reply.status == 404, f"{sent} {reply.brief()}, want 404")
    return f"{sent} -> 404"


def short(value: Any, limit: int = 60) -> str:
    """A value as it may appear in an evidence line: repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
