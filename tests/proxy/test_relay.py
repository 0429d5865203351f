"""Values a JSON decoder accepts but the encoder cannot write, or that exhaust the stack: integers
beyond 64 bits and deep nesting are the client's 400 in its own format, naming the field -- never a
500 with a traceback (proxy/value_guards.py `client_values`, adapters/jsonio.py `unencodable`)."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from adapters import ir, jsonio
from tests.conftest import proxy_url
from tests.proxy.hardening_support import assert_caller_error, error_message, hostile_config

BIG = 18446744073709551616  # 2^64
MSG = [{"role": "user", "content": "hi"}]


def deep(n: int, leaf: str = "1") -> str:
    return '{"a":' * n + leaf + "}" * n


# (path, body text, field named in the error); the model is on a backend of another format (translated)
BIG_INTS = [
    ("/v1/chat/completions", f'{{"model":"an-x","messages":[{{"role":"user","content":"hi"}}],"max_tokens":{BIG}}}', "max_tokens"),
    ("/v1/chat/completions", f'{{"model":"tg-x","messages":[{{"role":"user","content":"hi"}}],"seed":{BIG}}}', "seed"),
    ("/v1/chat/completions", f'{{"model":"ol-x","messages":[{{"role":"user","content":"hi"}}],"seed":-{BIG}}}', "seed"),
    ("/v1/messages", f'{{"model":"oa-x","max_tokens":{BIG},"messages":[{{"role":"user","content":"hi"}}]}}', "max_tokens"),
    ("/v1/messages", f'{{"model":"ol-x","max_tokens":5,"top_k":{BIG},"messages":[{{"role":"user","content":"hi"}}]}}', "top_k"),
    ("/v1/responses", f'{{"model":"an-x","input":"hi","max_output_tokens":{BIG}}}', "max_tokens"),
    ("/v1beta/models/oa-x:generateContent", f'{{"contents":[{{"parts":[{{"text":"hi"}}]}}],"generationConfig":{{"maxOutputTokens":{BIG}}}}}', "max_tokens"),
    ("/v1beta/models/an-x:generateContent", f'{{"contents":[{{"parts":[{{"text":"hi"}}]}}],"generationConfig":{{"maxOutputTokens":5,"seed":{BIG}}}}}', None),
    ("/api/chat", f'{{"model":"oa-x","stream":false,"messages":[{{"role":"user","content":"hi"}}],"options":{{"seed":{BIG}}}}}', "seed"),
    ("/v1/chat/completions", '{"model":"an-x","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"n":{"type":"integer","maximum":%d}}}}}]}' % BIG, "tools[0].parameters.properties.n.maximum"),
]


@pytest.fixture
async def gateway(start_emulator, start_proxy):
    return await start_proxy(await hostile_config(start_emulator))


@pytest.mark.parametrize("path, body, field", BIG_INTS, ids=[f"{p}-{f}" for p, _, f in BIG_INTS])
async def test_integers_beyond_64_bits_are_a_400_naming_the_field(gateway, path, body, field, caplog):
    caplog.set_level(logging.ERROR)
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(gateway, path), data=body, headers={"content-type": "application/json"}) as r:
            raw = await r.read()
            if field is None:  # a parameter the backend does not take is dropped: nothing to encode
                assert r.status == 200, raw
                return
            assert r.status == 400, raw
    doc = assert_caller_error(path, 400, raw)
    assert f"{field!r}" in error_message(path, doc) and "64 bits" in error_message(path, doc)
    assert not [rec for rec in caplog.records if rec.exc_info], "a traceback was logged"


DEEP = [
    ("/v1/chat/completions", '{"model":"an-x","messages":[{"role":"user","content":"hi"}],"x":%s}'),
    ("/v1/chat/completions", '{"model":"oa-x","messages":[{"role":"user","content":"hi"}],"x":%s}'),
    ("/v1/chat/completions", '{"model":"an-x","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","parameters":%s}}]}'),
    ("/v1/chat/completions", '{"model":"ge-x","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"n","schema":%s}}}'),
    ("/v1/messages", '{"model":"oa-x","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"metadata":%s}'),
    ("/v1/messages", '{"model":"oa-x","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"f","input_schema":%s}]}'),
    ("/v1/messages/count_tokens", '{"model":"oa-x","messages":[{"role":"user","content":"hi"}],"tools":[{"name":"f","input_schema":%s}]}'),
    ("/v1/responses", '{"model":"an-x","input":"hi","text":{"format":{"type":"json_schema","name":"n","schema":%s}}}'),
    ("/api/chat", '{"model":"oa-x","stream":false,"messages":[{"role":"user","content":"hi"}],"format":%s}'),
    ("/api/generate", '{"model":"an-x","stream":false,"prompt":"hi","options":%s}'),
    ("/v1beta/models/oa-x:generateContent", '{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"responseSchema":%s}}'),
    ("/v1/embeddings", '{"model":"ol-x","input":%s}'),
]


@pytest.mark.parametrize("depth", [300, 1000, 5000])
@pytest.mark.parametrize("path, template", DEEP, ids=[f"{p}-{i}" for i, (p, _) in enumerate(DEEP)])
async def test_deep_nesting_is_a_400_in_the_callers_format(gateway, path, template, depth, caplog):
    caplog.set_level(logging.ERROR)
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy_url(gateway, path), data=template % deep(depth),
                          headers={"content-type": "application/json"}) as r:
            raw = await r.read()
            status = r.status
    if depth < jsonio.MAX_NESTING * 2 and status == 200:
        return  # a field the route drops, or bytes passed through as they are: the backend judges them
    assert status == 400, raw[:500]
    assert_caller_error(path, status, raw)
    assert not [rec for rec in caplog.records if rec.exc_info], "a traceback was logged"


@pytest.mark.parametrize("value, found", [
    ({"a": [1, 2, {"b": 2**64}]}, ("a[2].b", "an integer beyond 64 bits")),
    ({"a": -(2**63) - 1}, ("a", "an integer beyond 64 bits")),
    ({"a": 2**64 - 1, "b": -(2**63), "c": True}, None),
    (ir.ChatRequest(model="m", messages=[], max_tokens=2**70), ("max_tokens", "an integer beyond 64 bits")),
    (jsonio.loads(deep(jsonio.MAX_NESTING + 1)), ("a" + ".a" * (jsonio.MAX_NESTING - 1), f"nested more than {jsonio.MAX_NESTING} levels")),
    (jsonio.loads(deep(jsonio.MAX_NESTING - 1)), None),
])
def test_unencodable_names_the_path(value, found):
    assert jsonio.unencodable(value) == found


def test_top_level_raw_turns_stack_exhaustion_into_a_decode_error():
    with pytest.raises(jsonio.DecodeError):
        jsonio.top_level_raw(('{"a":' + "[" * 100_000 + "]" * 100_000 + "}").encode())
