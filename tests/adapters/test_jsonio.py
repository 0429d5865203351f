"""adapters/jsonio.py: the top-level split and the unknown fields a frontend keeps in `extra`."""

from __future__ import annotations

import pytest

from adapters import jsonio, registry
from adapters.base import ApiRoute, ChatOp, InBody

BODY = b'{"model":"m","vendor_knob":{"a":[1,2]},"another":true}'


def test_unknown_fields_decode_what_is_not_known():
    assert jsonio.unknown_fields(BODY, frozenset({"model"})) == {"vendor_knob": {"a": [1, 2]}, "another": True}


def test_unknown_fields_reuse_a_given_split():
    """Given the split the gateway already made, the body is not split again: the answer comes from it."""
    split = jsonio.top_level_raw(b'{"model":"m","only_in_split":1}')
    assert jsonio.unknown_fields(BODY, frozenset({"model"}), split) == {"only_in_split": 1}


def _chat_ops():
    for name in registry.FRONTENDS:
        for route in registry.frontend(name).routes():
            if not isinstance(route, ApiRoute):
                continue
            target = route.target
            ops = [target.operation] if isinstance(target, InBody) else list(target.operations.values())
            yield from ((name, op) for op in ops if isinstance(op, ChatOp))


BODIES = {  # the smallest valid request of each chat operation: (frontend, operation) -> body
    ("openai", "chat"): b'{"model":"m","messages":[{"role":"user","content":"hi"}]}',
    ("openai", "completions"): b'{"model":"m","prompt":"hi"}',
    ("anthropic", "messages"): b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}',
    ("ollama", "chat"): b'{"model":"m","messages":[{"role":"user","content":"hi"}]}',
    ("ollama", "generate"): b'{"model":"m","prompt":"hi"}',
    ("gemini", "generate"): b'{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}',
    ("openai-responses", "responses"): b'{"model":"m","input":"hi"}',
}
KEEPS_NO_EXTRA = {"openai-responses"}  # ignores unknown fields: it carries none to the backend


@pytest.mark.parametrize("frontend, op", list(_chat_ops()), ids=lambda v: getattr(v, "name", v))
def test_chat_parse_takes_the_gateways_split(frontend, op):
    """Every ChatOp keeps its unknown fields from the split it is handed (or keeps none at all)."""
    body = BODIES[frontend, op.name]
    split = dict(jsonio.top_level_raw(body))
    split["from_split"] = jsonio.top_level_raw(b'{"x":7}')["x"]
    req = op.parse(body, split)
    assert req.extra == ({} if frontend in KEEPS_NO_EXTRA else {"from_split": 7})
