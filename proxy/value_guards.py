"""Guards around encoding values a peer sent: whose fault a value the encoder refuses is.

JSON a decoder accepts but the encoder cannot write (integers past 64 bits, nesting past its limit)
or that exhausts the stack is the fault of whoever sent it: a 400 naming the field for the client's
values, an upstream protocol error for the backend's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters import jsonio
from adapters.errors import ProxyError, bad_request

if TYPE_CHECKING:
    from .routing import Deployment


# `value` is what was being encoded or the body it came from (None: nothing, so only a RecursionError
# is theirs); a TypeError the value does not explain is a gateway bug and propagates.
class client_values:  # noqa: N801 - used as `with client_values(x):`, a plain class for speed
    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ, exc, tb) -> bool:
        if typ is None:
            return False
        if issubclass(typ, RecursionError):
            raise bad_request("the request is nested too deeply") from None
        if issubclass(typ, jsonio.EncodeError):
            found = jsonio.unencodable(self.value) if self.value is not None else None
            if found is not None:
                path, why = found
                if len(path) > 100:
                    path = path[:100] + "..."
                raise bad_request(f"{path!r} cannot be sent: {why}", param=path) from None
        return False


class upstream_values:  # noqa: N801 - as above, for the backend's values
    __slots__ = ("dep", "value")

    def __init__(self, dep: Deployment, value: object) -> None:
        self.dep, self.value = dep, value

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ, exc, tb) -> bool:
        if typ is None:
            return False
        name = self.dep.backend.name
        if issubclass(typ, RecursionError):
            raise ProxyError("upstream_protocol", f"backend {name!r} answered JSON nested too deeply") from None
        if issubclass(typ, jsonio.EncodeError) and self.value is not None and jsonio.unencodable(self.value):
            raise ProxyError("upstream_protocol", f"backend {name!r} answered a value that cannot be sent on") from None
        return False
