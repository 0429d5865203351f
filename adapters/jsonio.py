"""The one JSON module: every adapter and the proxy encode and decode through here.

msgspec decodes (decoders are built once, at import or adapter construction); orjson encodes.  Keeping
both behind these few names lets the choice change in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import orjson

DecodeError = msgspec.DecodeError
ValidationError = msgspec.ValidationError
EncodeError = orjson.JSONEncodeError
Raw = msgspec.Raw

# What the encoder can write: integers in [-2^63, 2^64 - 1], nesting up to 254 levels.  msgspec
# decodes bigger integers and deeper nesting, so a decoded value may still be unencodable.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
MAX_NESTING = 200  # refused past this (the encoder's own limit is 254; adapters may wrap a value)

_any_decoder = msgspec.json.Decoder()
_raw_obj_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_raw_encoder = msgspec.json.Encoder()


def loads(data: bytes | str) -> Any:
    """Decode JSON into plain Python values."""
    return _any_decoder.decode(data)


def dumps(obj: Any) -> bytes:
    """Encode plain Python values (dicts, lists, str, numbers) to compact JSON bytes."""
    return orjson.dumps(obj)


def dumps_str(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def decoder(typ: Any) -> msgspec.json.Decoder:
    """A typed decoder; call once at import time, never per request."""
    return msgspec.json.Decoder(typ)


# A JSON object split at its top level: key -> the value's undecoded bytes.
TopLevel = Mapping[str, msgspec.Raw]


def unknown_fields(data: bytes, known: frozenset[str], raw: TopLevel | None = None) -> dict[str, Any]:
    """The top-level fields of a JSON object outside `known`, decoded (what a frontend keeps in
    `ChatRequest.extra`).  `data` has already been decoded once, so it is a valid object; `raw` is
    its top level when the caller has already split it (`top_level_raw`), so it is not split again."""
    if raw is None:
        raw = top_level_raw(data)
    return {k: loads(v) for k, v in raw.items() if k not in known}


def top_level_raw(data: bytes) -> dict[str, msgspec.Raw]:
    """Split a JSON object into its top-level keys without decoding the values.

    The same-format fast path uses this to rewrite `model` while every other field, known or not,
    travels as the exact bytes the client sent.  Nesting deep enough to exhaust the decoder's stack
    is a DecodeError like any other invalid document.
    """
    try:
        return _raw_obj_decoder.decode(data)
    except RecursionError:
        raise DecodeError("JSON nested too deeply") from None


def unencodable(obj: Any, path: str = "", depth: int = 0) -> tuple[str, str] | None:
    """(path, why) of the first value `dumps` cannot write -- an integer outside 64 bits, or nesting
    past the limit (less a margin: an adapter may wrap a value deeper) -- or None.  The path reads
    like `tools[0].parameters.x`; JSON bytes are decoded first.  Meant for the error path only: it
    walks the whole value."""
    if isinstance(obj, bytes):
        try:
            obj = loads(obj)
        except (DecodeError, RecursionError):
            return None
    if isinstance(obj, int):
        if INT_MIN <= obj <= INT_MAX or isinstance(obj, bool):
            return None
        return path or "<root>", "an integer beyond 64 bits"
    if isinstance(obj, dict):
        items: Any = ((f"{path}.{k}" if path else str(k), v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(obj))
    elif isinstance(obj, msgspec.Struct):
        items = ((f"{path}.{f}" if path else f, getattr(obj, f)) for f in obj.__struct_fields__)
    else:
        return None
    if depth >= MAX_NESTING:
        return path or "<root>", f"nested more than {MAX_NESTING} levels"
    for sub, value in items:
        found = unencodable(value, sub, depth + 1)
        if found is not None:
            return found
    return None


def encode_raw_object(obj: dict[str, Any]) -> bytes:
    """Encode a dict whose values may be `Raw` (written through verbatim) or plain values."""
    return _raw_encoder.encode(obj)
