"""What every config section shares: the error a wrong config raises, and the conversion of a parsed
document into a section's msgspec Struct with an error that names the field path."""

from __future__ import annotations

import re
from typing import Any

import msgspec


class ConfigError(Exception):
    """A configuration problem, with the path of the offending field in the message."""


def convert(obj: Any, typ: Any, path: str) -> Any:
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
