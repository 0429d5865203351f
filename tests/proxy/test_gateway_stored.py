"""Stored responses and conversations through the running gateway, driven by the official openai
AsyncOpenAI client (`responses.create / retrieve / delete / input_items.list`, `conversations.*`) on
an emulated OpenAI-compatible and an emulated Anthropic backend.  Each emulator records the bodies
it receives, so the tests check the history that really reached the backend."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web

from loadtest.emulators import anthropic as anthropic_emulator
from loadtest.emulators import openai as openai_emulator
from tests.conftest import proxy_url

pytestmark = pytest.mark.timeout(60)
KEY_A, KEY_B = "sk-team-a-0123456789", "sk-team-b-0123456789"
BACKENDS = {"m-openai": "openai", "m-claude": "anthropic"}


def texts_seen(body: dict) -> list[str]:
    """The message texts a backend received, in order, whatever its format (system prompt aside)."""
    out = []
    for m in body.get("messages", []):
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text"]
    return out


@pytest.fixture
async def gateway(aiohttp_server, start_proxy):
    """`await gateway(**config)` -> (url, seen): seen[backend kind] is the list of request bodies."""
    seen: dict[str, list[dict]] = {"openai": [], "anthropic": []}

    async def start(**config):
        urls = {}
        for kind, module, suffix in (("openai", openai_emulator, "/v1"), ("anthropic", anthropic_emulator, "")):
            @web.middleware
            async def record(request, handler, kind=kind):
                if request.method == "POST":
                    seen[kind].append(orjson.loads(await request.read()))
                return await handler(request)

            app = module.create_app()
            app.middlewares.append(record)
            urls[kind] = str((await aiohttp_server(app)).make_url("")).rstrip("/") + suffix
        server = await start_proxy({
            "backends": {"openai": {"provider": "openai", "base_url": urls["openai"], "api_key": "k"},
                         "anthropic": {"provider": "anthropic", "base_url": urls["anthropic"], "api_key": "k"}},
            "models": [{"name": "m-openai", "backend": "openai", "model": "llama-3.1-8b"},
                       {"name": "m-claude", "backend": "anthropic", "model": "claude-sonnet-4-5"},
                       {"name": "m-claude-tools", "backend": "anthropic", "model": "claude-sonnet-4-5::tools"}],
            **config,
        })  # fmt: skip
        return proxy_url(server), seen

    return start


def client(url: str, key: str = "k") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=15)


async def create(c: openai.AsyncOpenAI, stream: bool, **kw):
    """responses.create, streamed or not -> the final Response."""
    if not stream:
        return await c.responses.create(**kw)
    events = [ev async for ev in await c.responses.create(stream=True, **kw)]
    assert events[-1].type == "response.completed"
    return events[-1].response


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("first,second", [("m-openai", "m-claude"), ("m-claude", "m-openai")])
async def test_previous_response_id_continues_on_any_backend(gateway, first, second, stream):
    url, seen = await gateway()
    async with client(url) as c:
        r1 = await create(c, stream, model=first, input="my name is Ada", instructions="be brief")
        r2 = await create(c, stream, model=second, input="what is my name?", previous_response_id=r1.id)
        assert r2.previous_response_id == r1.id and r2.output_text == "echo: what is my name?"
        # Each answer echoes its own instructions; they are not carried to a continuation (as on OpenAI).
        assert (r1.instructions, r2.instructions) == ("be brief", None)
        assert (await c.responses.retrieve(r1.id)).instructions == "be brief"
        r3 = await create(c, not stream, model=first, input="and again?", previous_response_id=r2.id)
    # Each backend got the whole chain before the new input: user, assistant, user, assistant, user.
    assert texts_seen(seen[BACKENDS[second]][-1]) == ["my name is Ada", "echo: my name is Ada", "what is my name?"]
    assert texts_seen(seen[BACKENDS[first]][-1]) == ["my name is Ada", "echo: my name is Ada", "what is my name?",
                                                      "echo: what is my name?", "and again?"]
    assert r3.previous_response_id == r2.id


@pytest.mark.parametrize("stream", [False, True])
async def test_retrieve_input_items_and_delete(gateway, stream):
    url, _ = await gateway()
    async with client(url) as c:
        input_ = [{"role": "user", "content": f"part {i}"} for i in range(5)]
        r = await create(c, stream, model="m-openai", input=input_, metadata={"run": "1"})
        got = await c.responses.retrieve(r.id)
        assert got.id == r.id and got.output_text == "echo: part 4" and got.status == "completed"
        assert got.output[0].id == r.output[0].id and got.metadata == {"run": "1"}
        page = await c.responses.input_items.list(r.id)  # default: newest first, 20 at most
        assert [i.content[0].text for i in page.data] == [f"part {i}" for i in range(4, -1, -1)]
        assert all(i.id.startswith("msg_") and i.role == "user" for i in page.data) and not page.has_more
        first = await c.responses.input_items.list(r.id, order="asc", limit=2)
        assert [i.content[0].text for i in first.data] == ["part 0", "part 1"] and first.has_more
        everything = [i.content[0].text async for i in c.responses.input_items.list(r.id, order="asc", limit=2)]
        assert everything == [f"part {i}" for i in range(5)]  # the SDK pages with `after`
        await c.responses.delete(r.id)
        for call in (c.responses.retrieve(r.id), c.responses.delete(r.id), c.responses.input_items.list(r.id)):
            with pytest.raises(openai.NotFoundError):
                await call


async def test_store_false_keeps_nothing(gateway):
    url, _ = await gateway()
    async with client(url) as c:
        r = await c.responses.create(model="m-openai", input="x", store=False)
        with pytest.raises(openai.NotFoundError) as info:
            await c.responses.retrieve(r.id)
        assert info.value.code == "not_found" and r.id in info.value.message


@pytest.mark.parametrize("stream", [False, True])
async def test_item_reference_resolves_stored_items(gateway, stream):
    url, seen = await gateway()
    async with client(url) as c:
        r1 = await create(c, stream, model="m-claude", input="remember this")
        msg = r1.output[0].id
        inputs = (await c.responses.input_items.list(r1.id)).data
        r2 = await create(c, stream, model="m-openai", input=[
            {"type": "item_reference", "id": inputs[0].id}, {"type": "item_reference", "id": msg},
            {"type": "item_reference", "id": "rs_never_stored"},  # reasoning not stored: dropped
            {"role": "user", "content": "next"}])  # fmt: skip
        assert r2.output_text == "echo: next"
        with pytest.raises(openai.NotFoundError) as info:
            await c.responses.create(model="m-openai", input=[{"type": "item_reference", "id": "msg_unknown"}])
        assert info.value.param == "input[0]" and "msg_unknown" in info.value.message
    assert texts_seen(seen["openai"][-1]) == ["remember this", "echo: remember this", "next"]


async def test_function_call_loop_with_previous_response_id(gateway):
    """An agent's tool loop on Anthropic: the stored function_call is sent back with its output."""
    url, seen = await gateway()
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
    async with client(url) as c:
        r1 = await c.responses.create(model="m-claude-tools", input="weather?", tools=tools)
        call = next(o for o in r1.output if o.type == "function_call")
        r2 = await c.responses.create(model="m-claude-tools", previous_response_id=r1.id, tools=tools, input=[
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])  # fmt: skip
        assert r2.status == "completed"
    last = seen["anthropic"][-1]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "user"]
    assert last[1]["content"][-1]["type"] == "tool_use" and last[1]["content"][-1]["id"] == call.call_id
    assert last[2]["content"][0]["type"] == "tool_result" and last[2]["content"][0]["tool_use_id"] == call.call_id


async def test_another_key_sees_nothing(gateway):
    url, _ = await gateway(auth={"keys": [{"key": KEY_A, "name": "team-a"}, {"key": KEY_B, "name": "team-b"}]})
    async with client(url, KEY_A) as a, client(url, KEY_B) as b:
        r = await a.responses.create(model="m-openai", input="secret")
        item = (await a.responses.input_items.list(r.id)).data[0].id
        conv = await a.conversations.create(items=[{"role": "user", "content": "hi"}])
        for call in (b.responses.retrieve(r.id), b.responses.delete(r.id), b.responses.input_items.list(r.id),
                     b.responses.create(model="m-openai", input="x", previous_response_id=r.id),
                     b.responses.create(model="m-openai", input=[{"type": "item_reference", "id": item}]),
                     b.responses.create(model="m-openai", input="x", conversation=conv.id),
                     b.conversations.retrieve(conv.id), b.conversations.delete(conv.id),
                     b.conversations.items.list(conv.id)):  # fmt: skip
            with pytest.raises(openai.NotFoundError):
                await call
        assert (await a.responses.retrieve(r.id)).output_text == "echo: secret"  # still there for its owner
        assert (await a.conversations.retrieve(conv.id)).id == conv.id


async def test_ttl_expiry(gateway):
    url, _ = await gateway(responses={"ttl": 1})
    async with client(url) as c:
        r = await c.responses.create(model="m-openai", input="short-lived")
        assert (await c.responses.retrieve(r.id)).id == r.id
        await asyncio.sleep(1.3)
        with pytest.raises(openai.NotFoundError):
            await c.responses.retrieve(r.id)
        with pytest.raises(openai.NotFoundError):
            await c.responses.create(model="m-openai", input="x", previous_response_id=r.id)


@pytest.mark.parametrize("stream", [False, True])
async def test_conversation_items_are_prepended_and_the_turn_appended(gateway, stream):
    url, seen = await gateway()
    async with client(url) as c:
        conv = await c.conversations.create(items=[{"role": "system", "content": "be kind"},
                                                   {"role": "user", "content": "first"}], metadata={"topic": "t"})
        assert conv.object == "conversation" and conv.id.startswith("conv_") and conv.metadata == {"topic": "t"}
        r = await create(c, stream, model="m-claude", input="second", conversation=conv.id)
        assert r.conversation.id == conv.id and r.output_text.endswith("second")  # Anthropic: user turns merged
        r2 = await create(c, stream, model="m-openai", input="third", conversation={"id": conv.id})
        items = await c.conversations.items.list(conv.id, order="asc")
        kinds = [(i.type, i.role) for i in items.data]
        assert kinds == [("message", "system"), ("message", "user"), ("message", "user"), ("message", "assistant"),
                         ("message", "user"), ("message", "assistant")]
        assert items.data[-1].id == r2.output[0].id and items.last_id == r2.output[0].id
    assert "be kind" in orjson.dumps(seen["anthropic"][-1]["system"]).decode()
    assert texts_seen(seen["anthropic"][-1]) == ["first", "second"]
    assert texts_seen(seen["openai"][-1]) == ["be kind", "first", "second", r.output_text, "third"]


async def test_conversation_crud(gateway):
    url, _ = await gateway()
    async with client(url) as c:
        conv = await c.conversations.create()
        assert (await c.conversations.retrieve(conv.id)).metadata == {}
        updated = await c.conversations.update(conv.id, metadata={"k": "v"})
        assert updated.metadata == {"k": "v"} and (await c.conversations.retrieve(conv.id)).metadata == {"k": "v"}
        added = await c.conversations.items.create(conv.id, items=[{"role": "user", "content": "a"},
                                                                   {"role": "user", "content": "b"}])
        assert [i.content[0].text for i in added.data] == ["a", "b"] and added.first_id == added.data[0].id
        one = await c.conversations.items.retrieve(added.data[1].id, conversation_id=conv.id)
        assert one.id == added.data[1].id and one.content[0].text == "b"
        after = await c.conversations.items.delete(added.data[0].id, conversation_id=conv.id)
        assert after.id == conv.id and after.object == "conversation"
        left = await c.conversations.items.list(conv.id)
        assert [i.id for i in left.data] == [added.data[1].id]
        with pytest.raises(openai.NotFoundError):
            await c.conversations.items.retrieve(added.data[0].id, conversation_id=conv.id)
        with pytest.raises(openai.BadRequestError) as info:
            await c.conversations.items.create(conv.id, items=[{"role": "robot", "content": "x"}])
        assert info.value.param == "items[0].role"
        with pytest.raises(openai.BadRequestError):
            await c.conversations.create(items=[{"role": "user", "content": str(i)} for i in range(21)])
        deleted = await c.conversations.delete(conv.id)
        assert deleted.deleted and deleted.object == "conversation.deleted" and deleted.id == conv.id
        with pytest.raises(openai.NotFoundError):
            await c.conversations.retrieve(conv.id)
        with pytest.raises(openai.BadRequestError):
            await c.responses.create(model="m-openai", input="x", previous_response_id="resp_1", conversation="conv_1")


async def test_conversation_bounded_by_max_items(gateway):
    url, _ = await gateway(responses={"max_items": 3})
    async with client(url) as c:
        conv = await c.conversations.create(items=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
        with pytest.raises(openai.BadRequestError) as info:
            await c.conversations.items.create(conv.id, items=[{"role": "user", "content": "c"},
                                                               {"role": "user", "content": "d"}])
        assert "max_items" in info.value.message
        assert len((await c.conversations.items.list(conv.id)).data) == 2  # nothing of the refused call landed


@pytest.mark.parametrize("path", ["/v1/responses/bad%20id", "/v1/responses/" + "x" * 129,
                                  "/v1/conversations/a.b/items", "/v1/conversations/conv_1/items/a%20b"])
async def test_ids_in_urls_are_checked_before_any_lookup(gateway, path):
    url, _ = await gateway()
    async with aiohttp.ClientSession() as s, s.get(url + path) as resp:
        body = await resp.json()
        assert resp.status == 400 and body["error"]["type"] == "invalid_request_error"
        assert body["error"]["param"] in ("id", "item_id") and "x" * 129 not in body["error"]["message"]


async def test_too_large_to_store_is_answered_and_counted(gateway):
    url, _ = await gateway(responses={"max_stored_bytes": 2048})
    async with client(url) as c:
        r = await c.responses.create(model="m-openai", input="y" * 4000)
        assert r.output_text.startswith("echo: y")
        with pytest.raises(openai.NotFoundError):
            await c.responses.retrieve(r.id)
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as resp:
        assert 'llm_proxy_responses_not_stored_total{reason="too_large"}' in await resp.text()


async def test_store_failure_does_not_break_the_answer(gateway, tmp_path, caplog):
    url, _ = await gateway(state={"url": f"sqlite:///{tmp_path}/missing/dir/state.db"})
    async with client(url) as c:
        r = await c.responses.create(model="m-openai", input="still answered")
        assert r.output_text == "echo: still answered"
        events = [ev async for ev in await c.responses.create(model="m-openai", input="streamed too", stream=True)]
        assert events[-1].type == "response.completed"
        with pytest.raises(openai.InternalServerError) as info:  # reading needs the store: 503
            await c.responses.retrieve(r.id)
        assert info.value.status_code == 503
    warnings = [r.getMessage() for r in caplog.records if "response not stored" in r.getMessage()]
    assert len(warnings) == 2  # one per answer; neither names what the client sent
    assert not any("still answered" in w or "streamed too" in w or r.id in w for w in warnings)
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as resp:
        assert 'llm_proxy_responses_not_stored_total{reason="store_unavailable"}' in await resp.text()


async def test_a_chain_is_bounded_in_items_and_bytes(gateway):
    url, _ = await gateway(responses={"max_items": 5}, server={"max_body_bytes": 8000})
    async with client(url) as c:
        r1 = await c.responses.create(model="m-openai", input="a")
        r2 = await c.responses.create(model="m-openai", input="b", previous_response_id=r1.id)  # 2 items before
        r3 = await c.responses.create(model="m-openai", input="c", previous_response_id=r2.id)  # 4 items before
        with pytest.raises(openai.BadRequestError) as info:  # 6 items before: over max_items
            await c.responses.create(model="m-openai", input="d", previous_response_id=r3.id)
        assert info.value.param == "previous_response_id" and "max_items" in info.value.message
        big = await c.responses.create(model="m-openai", input="z" * 3000)
        big2 = await c.responses.create(model="m-openai", input="y" * 3000, previous_response_id=big.id)  # ~6 kB before
        with pytest.raises(openai.BadRequestError) as info:  # ~12 kB of stored items: over max_body_bytes
            await c.responses.create(model="m-openai", input="x", previous_response_id=big2.id)
        assert "server.max_body_bytes" in info.value.message
