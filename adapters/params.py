"""The unsupported-parameter policy, applied once in shared code from each backend's declared table.

A backend adapter lists the IR parameters it can honour (`Backend.supported_params`); whatever else
the client set is either removed (policy `drop`, the names reported to the client in the
`x-llm-proxy-dropped-params` header) or refused with a 400 naming the parameter (policy `error`).
"""

from __future__ import annotations

from collections.abc import Iterable

from . import ir
from .errors import unsupported

DROPPED_HEADER = "x-llm-proxy-dropped-params"

_RESET = {"stop": [], "tools": [], "n": 1}


def apply_policy(req: ir.ChatRequest, supported: Iterable[str], policy: str, provider: str) -> list[str]:
    """Remove (or reject) the parameters `req` sets that the backend cannot honour; return their names."""
    supported = supported if isinstance(supported, (set, frozenset)) else frozenset(supported)
    offending = [name for name in req.sampling_params_set() if name not in supported]
    if not offending and not req.unhonoured:
        return offending
    if policy == "error":
        if req.unhonoured:
            names = ", ".join(req.unhonoured)
            raise unsupported(f"{names} cannot be run by the {provider} backend", param=req.unhonoured[0])
        name = offending[0]
        raise unsupported(f"parameter {name!r} is not supported by the {provider} backend", param=name)
    for name in offending:
        setattr(req, name, _RESET.get(name))
        if name == "tools":
            req.tool_choice = None
    return offending + req.unhonoured
