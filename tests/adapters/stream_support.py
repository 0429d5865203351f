"""How the stream tests cut a body: a decoder must give the same events for every cut."""

from __future__ import annotations

from collections.abc import Iterator


def cuts(body: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """(label, pieces): the body whole, byte by byte, and in two at every position."""
    yield "whole", [body]
    yield "bytewise", [body[i:i + 1] for i in range(len(body))]
    for i in range(len(body) + 1):
        yield f"split at {i}", [body[:i], body[i:]]
