"""The one JSON module: every adapter and the proxy encode and decode through here.

msgspec decodes (decoders are built once, at import or adapter construction); orjson encodes.  Keeping
both behind these few names lets the choice change in one place.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

DecodeError = msgspec.DecodeError
ValidationError = msgspec.ValidationError
Raw = msgspec.Raw

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


def top_level_raw(data: bytes) -> dict[str, msgspec.Raw]:
    """Split a JSON object into its top-level keys without decoding the values.

    The same-format fast path uses this to rewrite `model` while every other field, known or not,
    travels as the exact bytes the client sent.
    """
    return _raw_obj_decoder.decode(data)


def encode_raw_object(obj: dict[str, Any]) -> bytes:
    """Encode a dict whose values may be `Raw` (written through verbatim) or plain values."""
    return _raw_encoder.encode(obj)
