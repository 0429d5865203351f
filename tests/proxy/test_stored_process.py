"""`previous_response_id` and conversations across two real gateway processes (`llm-proxy serve`)
sharing one state store: an SQLite file (two workers of one host would share it the same way) and a
real Redis (two replicas).  The OpenAI emulator in front records the bodies it receives, so the test
checks the history that reached the backend, not only the gateway's answer."""

from __future__ import annotations

import openai
import orjson
import pytest
from aiohttp import web

from loadtest.emulators import openai as openai_emulator
from tests.proxy import test_limits_process as real_processes

KEY = real_processes.KEY
gateways = real_processes.gateways  # the fixture starting real `llm-proxy serve` processes

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def recording_backend(aiohttp_server):
    seen: list[dict] = []

    @web.middleware
    async def record(request, handler):
        if request.path.endswith("/chat/completions"):
            seen.append(orjson.loads(await request.read()))
        return await handler(request)

    app = openai_emulator.create_app()
    app.middlewares.append(record)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/"), seen


async def test_a_conversation_continues_on_the_other_process(state_url, recording_backend, gateways):
    backend, seen = recording_backend
    urls = [await gateways(backend, state_url, 1, rpm=1000), await gateways(backend, state_url, 1, rpm=1000)]
    a, b = (openai.AsyncOpenAI(base_url=u + "/v1", api_key=KEY, max_retries=0, timeout=20) for u in urls)
    async with a, b:
        r1 = await a.responses.create(model="m", input="my name is Ada")
        r2 = await b.responses.create(model="m", input="what is my name?", previous_response_id=r1.id)
        events = [ev async for ev in await a.responses.create(model="m", input="again?", previous_response_id=r2.id,
                                                              stream=True)]  # fmt: skip
        r3 = events[-1].response
        assert r3.previous_response_id == r2.id and r3.output_text == "echo: again?"
        assert (await b.responses.retrieve(r3.id)).output_text == "echo: again?"  # streamed, stored, read elsewhere
        conv = await b.conversations.create(items=[{"role": "user", "content": "hello"}])
        await a.responses.create(model="m", input="from a", conversation=conv.id)
        items = await b.conversations.items.list(conv.id, order="asc")
        assert [i.type for i in items.data] == ["message"] * 3
        await a.responses.delete(r1.id)
        with pytest.raises(openai.NotFoundError):
            await b.responses.retrieve(r1.id)
    texts = [m["content"] for m in seen[2]["messages"]]
    assert texts == ["my name is Ada", "echo: my name is Ada", "what is my name?", "echo: what is my name?", "again?"]
    assert [m["content"] for m in seen[3]["messages"]] == ["hello", "from a"]
