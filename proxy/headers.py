"""Header names looked up case-insensitively: the mapping both raw HTTP/1.1 ends hand out (the upstream
client's response headers, proxy/rawhttp.py; the raw server's request headers, proxy/rawserver.py).
Each builds the dict itself, names lower-cased (repeats: joined by the client, first kept by the server)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping


class Headers(Mapping[str, str]):
    """Headers whose names are stored lower-case; lookups lower-case the name asked for."""

    __slots__ = ("_d",)

    def __init__(self, d: dict[str, str]) -> None:
        self._d = d

    def __getitem__(self, name: str) -> str:
        return self._d[name.lower()]

    def get(self, name: str, default=None):  # type: ignore[override]  # Mapping.get, without the extra lookups
        return self._d.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._d

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)
