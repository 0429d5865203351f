"""The Bedrock emulator checked with the official boto3 `bedrock-runtime` client (converse,
converse_stream, invoke_model) pointed at it with endpoint_url: signatures it must accept and
refuse, the event stream boto3 decodes, scenarios, validation and error shapes."""

from __future__ import annotations

import asyncio
import json

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError

from loadtest.emulators import bedrock as emu

CLAUDE = "anthropic.claude-3-5-sonnet-20241022-v2:0"
HELLO = [{"role": "user", "content": [{"text": "hello there"}]}]
WEATHER = {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}}]}


@pytest.fixture
async def client(aiohttp_server):
    server = await aiohttp_server(emu.create_app())
    url = str(server.make_url("")).rstrip("/")

    def make(key=emu.ACCESS_KEY_ID, secret=emu.SECRET_ACCESS_KEY, token=None):
        return boto3.client("bedrock-runtime", region_name="us-west-2", endpoint_url=url, aws_access_key_id=key,
                            aws_secret_access_key=secret, aws_session_token=token,
                            config=Config(retries={"max_attempts": 1, "mode": "standard"}))

    return make


def run(fn, *args, **kwargs):
    return asyncio.wait_for(asyncio.to_thread(fn, *args, **kwargs), 15)


async def test_converse_echoes_and_counts(client):
    r = await run(client().converse, modelId=CLAUDE, messages=HELLO, system=[{"text": "Be brief."}],
                  inferenceConfig={"maxTokens": 50, "temperature": 0.1})
    assert r["output"]["message"] == {"role": "assistant", "content": [{"text": "echo: hello there"}]}
    assert r["stopReason"] == "end_turn" and r["usage"]["inputTokens"] > 0 and r["usage"]["outputTokens"] > 0


async def test_stop_sequence_and_which_one(client):
    r = await run(client().converse, modelId=CLAUDE, messages=HELLO, inferenceConfig={"stopSequences": ["there"]},
                  additionalModelResponseFieldPaths=["/stop_sequence"])
    assert r["output"]["message"]["content"][0]["text"] == "echo: hello "
    assert r["stopReason"] == "stop_sequence" and r["additionalModelResponseFields"] == {"stop_sequence": "there"}


async def test_converse_stream_text_decoded_by_boto3(client):
    r = await run(client().converse_stream, modelId=CLAUDE + "::chunks=3", messages=HELLO)
    events = await run(list, r["stream"])
    names = [next(iter(e)) for e in events]
    assert names[0] == "messageStart" and names[-2:] == ["messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "echo: hello there" and names.count("contentBlockDelta") == 3
    assert events[-1]["metadata"]["usage"]["outputTokens"] > 0


async def test_tools_whole_and_streamed(client):
    r = await run(client().converse, modelId=CLAUDE + "::tools", messages=HELLO, toolConfig=WEATHER)
    use = r["output"]["message"]["content"][0]["toolUse"]
    assert r["stopReason"] == "tool_use" and use["name"] == "get_weather" and use["input"] == {"city": "Paris"}
    s = await run(client().converse_stream, modelId=CLAUDE, messages=HELLO, toolConfig={**WEATHER, "toolChoice": {"any": {}}})
    events = await run(list, s["stream"])
    start = next(e["contentBlockStart"]["start"]["toolUse"] for e in events if "contentBlockStart" in e)
    args = "".join(e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events if "contentBlockDelta" in e)
    assert start["name"] == "get_weather" and json.loads(args) == {"city": "Paris"}
    history = HELLO + [{"role": "assistant", "content": [{"toolUse": use}]},
                       {"role": "user", "content": [{"toolResult": {"toolUseId": use["toolUseId"], "content": [{"text": "sunny"}]}}]}]
    r = await run(client().converse, modelId=CLAUDE, messages=history, toolConfig=WEATHER)
    assert r["output"]["message"]["content"][0]["text"] == "echo: sunny"


async def test_reasoning_with_a_signature_for_claude(client):
    r = await run(client().converse, modelId=CLAUDE + "::reasoning", messages=HELLO)
    reasoning = r["output"]["message"]["content"][0]["reasoningContent"]["reasoningText"]
    assert reasoning["text"] and reasoning["signature"]
    r = await run(client().converse, modelId="deepseek.r1-v1:0::reasoning", messages=HELLO)
    assert "signature" not in r["output"]["message"]["content"][0]["reasoningContent"]["reasoningText"]


async def test_in_stream_exception_and_bad_crc(client):
    s = await run(client().converse_stream, modelId=CLAUDE + "::error_after=1", messages=HELLO)
    with pytest.raises(EventStreamError, match="internalServerException"):
        await run(list, s["stream"])
    s = await run(client().converse_stream, modelId=CLAUDE + "::malformed", messages=HELLO)
    with pytest.raises(Exception, match="(?i)checksum|crc"):
        await run(list, s["stream"])


@pytest.mark.parametrize("scenario,code,status", [
    ("status=429", "ThrottlingException", 429), ("status=503", "ServiceUnavailableException", 503),
    ("status=500", "InternalServerException", 500), ("status=403", "AccessDeniedException", 403),
    ("exception=ModelNotReadyException", "ModelNotReadyException", 429),
    ("exception=ServiceQuotaExceededException", "ServiceQuotaExceededException", 400),
    ("context_length", "ValidationException", 400),
])
async def test_error_scenarios(client, scenario, code, status):
    with pytest.raises(ClientError) as e:
        await run(client().converse, modelId=f"{CLAUDE}::{scenario}", messages=HELLO)
    assert e.value.response["Error"]["Code"] == code
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


async def test_signatures_are_checked(client):
    with pytest.raises(ClientError) as e:
        await run(client(secret="not-the-secret").converse, modelId=CLAUDE, messages=HELLO)
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    with pytest.raises(ClientError) as e:
        await run(client(key="AKIAUNKNOWN00000000").converse, modelId=CLAUDE, messages=HELLO)
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    temp = dict(key=emu.TEMP_ACCESS_KEY_ID, secret=emu.TEMP_SECRET_ACCESS_KEY)
    r = await run(client(**temp, token=emu.SESSION_TOKEN).converse, modelId=CLAUDE, messages=HELLO)
    assert r["stopReason"] == "end_turn"
    with pytest.raises(ClientError):
        await run(client(**temp).converse, modelId=CLAUDE, messages=HELLO)  # its session token is missing


@pytest.mark.parametrize("messages,config,wording", [
    ([{"role": "assistant", "content": [{"text": "hi"}]}], None, "must start with a user message"),
    (HELLO + HELLO, None, "must alternate"),
    ([{"role": "user", "content": [{"text": "  "}]}], None, "is blank"),
    (HELLO + [{"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "f", "input": {}}}]},
     {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "r"}]}}]}], None,
     "toolConfig field must be defined"),
    (HELLO + [{"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {}}}]},
     {"role": "user", "content": [{"toolResult": {"toolUseId": "t2", "content": [{"text": "r"}]}}]}], WEATHER,
     "Expected toolResult blocks"),
])
async def test_validation_as_bedrock(client, messages, config, wording):
    kwargs = {"toolConfig": config} if config else {}
    with pytest.raises(ClientError, match=wording) as e:
        await run(client().converse, modelId=CLAUDE, messages=messages, **kwargs)
    assert e.value.response["Error"]["Code"] == "ValidationException"


async def test_invoke_model_embeddings(client):
    c = client()
    r = await run(c.invoke_model, modelId="amazon.titan-embed-text-v2:0", body=json.dumps({"inputText": "hello", "dimensions": 256}))
    answer = json.loads(r["body"].read())
    assert len(answer["embedding"]) == 256 and answer["inputTextTokenCount"] == 2
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"] == "2"
    with pytest.raises(ClientError, match="expected type: String, found: JSONArray"):
        await run(c.invoke_model, modelId="amazon.titan-embed-text-v2:0", body=json.dumps({"inputText": ["a", "b"]}))
    r = await run(c.invoke_model, modelId="cohere.embed-english-v3",
                  body=json.dumps({"texts": ["a", "b"], "input_type": "search_query"}))
    assert [len(v) for v in json.loads(r["body"].read())["embeddings"]] == [1024, 1024]
    with pytest.raises(ClientError, match="input_type"):
        await run(c.invoke_model, modelId="cohere.embed-english-v3", body=json.dumps({"texts": ["a"]}))


async def test_structured_output_follows_the_schema(client):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "n": {"type": "integer"}}}
    r = await run(client().converse, modelId=CLAUDE, messages=HELLO, outputConfig={"textFormat": {
        "type": "json_schema", "structure": {"jsonSchema": {"schema": json.dumps(schema), "name": "answer"}}}})
    assert json.loads(r["output"]["message"]["content"][0]["text"]) == {"city": "Paris", "n": 1}
