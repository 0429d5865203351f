"""The raw server's fast routes, compiled once: a dict for static paths, a short prefix list for the
templates ending in one `{name}` segment (which matches `[^{}/]+`, as in aiohttp's router).

Only plain paths are matched here: a segment with `%`, a `.`/`..` segment, or any byte outside the
unreserved and sub-delimiter characters is left to aiohttp, which decodes and normalises paths its
own way; serving such a request there keeps the answer exactly what it was before the raw server.
"""

from __future__ import annotations

from collections.abc import Mapping
from string import ascii_letters, digits

from .rawrequest import NO_VALUES
from .serverio import ApiCall

PLAIN = (ascii_letters + digits + "-._~!$&'()*+,;=:@").encode()  # the bytes a `{name}` segment may hold
Route = tuple[ApiCall, str, str]  # handler, method, path


class Routes:
    """(method, template, handler) rows -> the handler of a request target, without a regex."""

    __slots__ = ("_static", "_prefixed")

    def __init__(self, routes: list[tuple[str, str, ApiCall]]) -> None:
        self._static: dict[bytes, dict[bytes, Route]] = {}
        prefixed: dict[tuple[bytes, str], dict[bytes, tuple[ApiCall, str]]] = {}
        for method, template, handler in routes:
            head, brace, name = template.rpartition("{")
            if not brace:
                self._static.setdefault(template.encode(), {})[method.encode()] = (handler, method, template)
                continue
            if not (head.startswith("/") and head.endswith("/") and name.endswith("}") and len(name) > 1
                    and "{" not in head and "}" not in head):
                raise ValueError(f"route template {template!r}: only a last `{{name}}` segment is supported")
            prefixed.setdefault((head.encode(), name[:-1]), {})[method.encode()] = (handler, method)
        self._prefixed = [(prefix, name, methods) for (prefix, name), methods in prefixed.items()]

    def match(self, method: bytes, url: bytes) -> tuple[Route, Mapping[str, str], bytes] | None:
        """The route of a request target, its `{name}` value and the query; None if not a fast one."""
        path, _, qs = url.partition(b"?")
        methods = self._static.get(path)
        if methods is not None:
            route = methods.get(method)
            return None if route is None or b"#" in qs else (route, NO_VALUES, qs)
        for prefix, name, by_method in self._prefixed:
            if path.startswith(prefix):
                found = by_method.get(method)
                if found is None:
                    continue
                segment = path[len(prefix):]
                if not segment or segment.translate(None, PLAIN) or segment in (b".", b"..") or b"#" in qs:
                    return None  # aiohttp decodes / normalises such paths: it serves them
                handler, method_name = found
                return (handler, method_name, path.decode()), {name: segment.decode()}, qs
        return None
