"""Ollama-format client requests -> IR: /api/chat, /api/generate, /api/embed (every mapping row)."""

import base64

import orjson
import pytest

from adapters import ir
from adapters.errors import ProxyError
from adapters.ollama_request import parse_chat, parse_embed, parse_generate

USER = [{"role": "user", "content": "hi"}]

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\0" * 16).decode()
GIF = base64.b64encode(b"GIF89a" + b"\0" * 16).decode()
WEBP = base64.b64encode(b"RIFF\x10\0\0\0WEBPVP8 " + b"\0" * 8).decode()
OTHER = base64.b64encode(b"BM" + b"\0" * 20).decode()


def chat(**fields):
    return parse_chat(orjson.dumps({"model": "m", "messages": USER, **fields}))


def bad(fn, body) -> ProxyError:
    with pytest.raises(ProxyError) as info:
        fn(orjson.dumps(body) if not isinstance(body, bytes) else body)
    assert info.value.status == 400
    return info.value


# --------------------------------------------------------------------------------------------------
# options, think, format, top-level extras


@pytest.mark.parametrize(
    ("option", "value", "field", "expected"),
    [
        ("temperature", 0.3, "temperature", 0.3),
        ("top_p", 0.9, "top_p", 0.9),
        ("top_k", 40, "top_k", 40),
        ("min_p", 0.05, "min_p", 0.05),
        ("seed", 7, "seed", 7),
        ("num_predict", 128, "max_tokens", 128),
        ("num_predict", 0, "max_tokens", 0),
        ("num_predict", -1, "max_tokens", None),  # unlimited
        ("num_predict", -2, "max_tokens", None),  # fill the context
        ("stop", ["a", "b"], "stop", ["a", "b"]),
        ("stop", "a", "stop", ["a"]),
        ("repeat_penalty", 1.1, "repetition_penalty", 1.1),
        ("presence_penalty", 0.5, "presence_penalty", 0.5),
        ("frequency_penalty", 0.25, "frequency_penalty", 0.25),
    ],
)
def test_option_rows(option, value, field, expected):
    req = chat(options={option: value})
    assert getattr(req, field) == expected
    assert "options" not in req.extra


@pytest.mark.parametrize(("option", "value"), [("num_ctx", 8192), ("typical_p", 0.7), ("mirostat", 2), ("num_gpu", 1)])
def test_other_options_go_to_extra(option, value):
    req = chat(options={option: value, "temperature": 0.1})
    assert req.extra["options"] == {option: value}
    assert req.temperature == 0.1


def test_option_of_wrong_type_names_the_option():
    err = bad(parse_chat, {"model": "m", "messages": USER, "options": {"temperature": "hot"}})
    assert err.param == "options.temperature"


@pytest.mark.parametrize(
    ("think", "expected"),
    [
        (True, ir.ReasoningConfig(enabled=True)),
        (False, ir.ReasoningConfig(enabled=False)),
        ("low", ir.ReasoningConfig(enabled=True, effort="low")),
        ("medium", ir.ReasoningConfig(enabled=True, effort="medium")),
        ("high", ir.ReasoningConfig(enabled=True, effort="high")),
        ("max", ir.ReasoningConfig(enabled=True, effort="max")),
        (None, None),
    ],
)
def test_think_rows(think, expected):
    assert chat(think=think).reasoning == expected


def test_unknown_think_level_is_400():
    assert bad(parse_chat, {"model": "m", "messages": USER, "think": "extreme"}).param == "think"


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("json", ir.ResponseFormat("json_object")),
        (SCHEMA, ir.ResponseFormat("json_schema", schema=SCHEMA)),
        ("", None),
        (None, None),
    ],
)
def test_format_rows(fmt, expected):
    assert chat(format=fmt).response_format == expected


def test_unknown_format_string_is_400():
    assert bad(parse_chat, {"model": "m", "messages": USER, "format": "yaml"}).param == "format"


def test_stream_defaults_to_true_and_usage_is_always_asked():
    req = chat()
    assert req.stream is True and req.include_usage is True and req.source_format == "ollama"
    assert chat(stream=False).stream is False


@pytest.mark.parametrize(("key", "value"), [("keep_alive", "5m"), ("keep_alive", 0), ("logprobs", True),
                                             ("truncate", False), ("shift", True)])
def test_top_level_fields_without_ir_slot_go_to_extra(key, value):
    req = chat(**{key: value})
    assert req.extra == {key: value}


# --------------------------------------------------------------------------------------------------
# messages


def test_system_messages_lead_then_stay_in_place():
    req = chat(messages=[{"role": "system", "content": "a"}, {"role": "system", "content": "b"},
                         {"role": "user", "content": "q"}, {"role": "system", "content": "c"}])
    assert req.system == [ir.Text("a"), ir.Text("b")]
    assert [m.role for m in req.messages] == ["user", "system"]
    assert req.messages[1].parts == [ir.Text("c")]


@pytest.mark.parametrize(
    ("data", "media_type"),
    [(PNG, "image/png"), (JPEG, "image/jpeg"), (GIF, "image/gif"), (WEBP, "image/webp"), (OTHER, "image/png")],
)
def test_image_media_type_from_magic_bytes(data, media_type):
    req = chat(messages=[{"role": "user", "content": "what is it", "images": [data]}])
    assert req.messages[0].parts == [ir.Text("what is it"), ir.Image(media_type=media_type, data=data)]


def test_image_data_url_tolerated_and_invalid_base64_refused():
    req = chat(messages=[{"role": "user", "content": "", "images": ["data:image/jpeg;base64," + JPEG]}])
    assert req.messages[0].parts == [ir.Image(media_type="image/jpeg", data=JPEG)]
    err = bad(parse_chat, {"model": "m", "messages": [{"role": "user", "content": "x", "images": ["not base64!!"]}]})
    assert err.param == "messages[0].images[0]"


def test_empty_user_message_keeps_one_text_part():
    assert chat(messages=[{"role": "user", "content": ""}]).messages[0].parts == [ir.Text("")]


def test_assistant_thinking_content_and_tool_calls():
    req = chat(messages=[
        *USER,
        {"role": "assistant", "content": "checking", "thinking": "plan",
         "tool_calls": [{"id": "call_x", "function": {"name": "a", "arguments": {"city": "Tōkyō", "n": 1}}},
                        {"function": {"index": 1, "name": "b", "arguments": {}}}]},
    ])
    parts = req.messages[1].parts
    assert parts[0] == ir.Reasoning(text="plan") and parts[0].signature is None
    assert parts[1] == ir.Text("checking")
    assert parts[2].id == "call_x" and parts[2].name == "a"
    assert orjson.loads(parts[2].arguments) == {"city": "Tōkyō", "n": 1}
    assert parts[3] == ir.ToolCall(id="call_1_1", name="b", arguments="{}")  # deterministic id


def test_synthesised_ids_are_stable_across_turns():
    msgs = [*USER, {"role": "assistant", "tool_calls": [{"function": {"name": "a", "arguments": {}}}]},
            {"role": "tool", "content": "r", "tool_name": "a"}]
    assert chat(messages=msgs) == chat(messages=msgs)


def _results(req):
    return [(m.parts[0].tool_call_id, m.parts[0].name, m.parts[0].content) for m in req.messages if m.role == "tool"]


CALLS = {"role": "assistant", "content": "", "tool_calls": [
    {"function": {"name": "weather", "arguments": {"city": "Paris"}}},
    {"function": {"name": "time", "arguments": {}}},
    {"function": {"name": "weather", "arguments": {"city": "Rome"}}},
]}


@pytest.mark.parametrize(
    ("results", "expected_ids"),
    [
        # by name, out of order; two calls of the same name are answered in order
        ([{"tool_name": "time"}, {"tool_name": "weather"}, {"tool_name": "weather"}],
         ["call_1_1", "call_1_0", "call_1_2"]),
        # no name: by position
        ([{}, {}, {}], ["call_1_0", "call_1_1", "call_1_2"]),
        # an unknown name falls back to the first unanswered call
        ([{"tool_name": "time"}, {"tool_name": "nope"}], ["call_1_1", "call_1_0"]),
        # a tool_call_id the history knows wins over the name
        ([{"tool_call_id": "call_1_2", "tool_name": "weather"}, {"tool_name": "weather"}], ["call_1_2", "call_1_0"]),
        # an id the history does not know is kept as given
        ([{"tool_call_id": "call_srv"}], ["call_srv"]),
    ],
)
def test_tool_results_are_paired_with_calls(results, expected_ids):
    msgs = [*USER, CALLS, *({"role": "tool", "content": f"r{k}", **r} for k, r in enumerate(results))]
    got = _results(chat(messages=msgs))
    assert [g[0] for g in got] == expected_ids
    assert [g[2] for g in got] == [[ir.Text(f"r{k}")] for k in range(len(results))]
    names = {"call_1_0": "weather", "call_1_1": "time", "call_1_2": "weather"}
    assert [g[1] for g in got] == [names.get(i, r.get("tool_name")) for i, r in zip(expected_ids, results)]


def test_tool_result_images_and_new_turn_resets_pending_calls():
    msgs = [*USER, CALLS, {"role": "tool", "content": "r", "tool_name": "weather", "images": [PNG]},
            {"role": "assistant", "tool_calls": [{"function": {"name": "time", "arguments": {}}}]},
            {"role": "tool", "content": "r2"}]
    got = _results(chat(messages=msgs))
    assert got[0] == ("call_1_0", "weather", [ir.Text("r"), ir.Image(media_type="image/png", data=PNG)])
    assert got[1][0] == "call_3_0"


@pytest.mark.parametrize("history", [[], [CALLS, {"role": "tool", "content": "a"}, {"role": "tool", "content": "b"},
                                          {"role": "tool", "content": "c"}]])
def test_tool_result_without_a_call_to_answer_is_400(history):
    msgs = [*USER, *history, {"role": "tool", "content": "orphan", "tool_name": "weather"}]
    err = bad(parse_chat, {"model": "m", "messages": msgs})
    assert err.param == f"messages[{len(msgs) - 1}]"


def test_tools():
    tools = [{"type": "function", "function": {"name": "a", "description": "A", "parameters": SCHEMA}},
             {"function": {"name": "b"}}]
    req = chat(tools=tools)
    assert req.tools == [ir.ToolDef(name="a", description="A", parameters=SCHEMA), ir.ToolDef(name="b")]
    err = bad(parse_chat, {"model": "m", "messages": USER, "tools": [{"type": "retrieval", "function": {"name": "x"}}]})
    assert err.kind == "unsupported" and err.param == "tools[0]"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "messages": []}, "messages"),  # a model-load call
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": USER}, None),
        ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "a", "arguments": "{}"}}]}]},
         "messages[0].tool_calls[0].function.arguments"),
        (b"{not json", None),
    ],
)
def test_invalid_chat_requests(body, param):
    err = bad(parse_chat, body)
    assert err.kind == "invalid_request"
    if param:
        assert err.param == param


# --------------------------------------------------------------------------------------------------
# /api/generate


def generate(**fields):
    return parse_generate(orjson.dumps({"model": "m", **fields}))


def test_generate_is_a_templated_single_turn_chat():
    req = generate(prompt="Why?", system="Be brief.", images=[PNG], options={"num_predict": 9}, stream=False)
    assert req.prompt is None
    assert req.system == [ir.Text("Be brief.")]
    assert req.messages == [ir.Message(role="user", parts=[ir.Text("Why?"), ir.Image(media_type="image/png", data=PNG)])]
    assert req.max_tokens == 9 and req.stream is False


def test_generate_raw_is_a_verbatim_prompt():
    req = generate(prompt="[INST] hi [/INST]", raw=True, think=False, format="json")
    assert req.prompt == "[INST] hi [/INST]" and req.messages == []
    assert req.reasoning == ir.ReasoningConfig(enabled=False)
    assert req.response_format == ir.ResponseFormat("json_object")
    assert req.stream is True


@pytest.mark.parametrize(("key", "value"), [("template", "{{ .Prompt }}"), ("suffix", "return x"),
                                             ("context", [1, 2, 3]), ("keep_alive", "1m")])
def test_generate_fields_without_ir_slot_go_to_extra(key, value):
    assert generate(prompt="p", **{key: value}).extra == {key: value}


@pytest.mark.parametrize(
    ("fields", "kind", "param"),
    [
        ({}, "invalid_request", "prompt"),  # a model-load call
        ({"prompt": ""}, "invalid_request", "prompt"),
        ({"prompt": "", "keep_alive": 0}, "invalid_request", "prompt"),  # unload
        ({"prompt": "p", "raw": True, "images": [PNG]}, "unsupported", "images"),
        ({"prompt": 3}, "invalid_request", "prompt"),
    ],
)
def test_invalid_generate_requests(fields, kind, param):
    err = bad(parse_generate, {"model": "m", **fields})
    assert (err.kind, err.param) == (kind, param)


# --------------------------------------------------------------------------------------------------
# /api/embed


@pytest.mark.parametrize(
    ("fields", "inputs", "dimensions"),
    [
        ({"input": "one"}, ["one"], None),
        ({"input": ["a", "b"], "dimensions": 64}, ["a", "b"], 64),
        ({"input": "x", "truncate": False, "keep_alive": "1m", "options": {"num_ctx": 512}}, ["x"], None),
    ],
)
def test_embed(fields, inputs, dimensions):
    req = parse_embed(orjson.dumps({"model": "e", **fields}))
    assert req == ir.EmbeddingRequest(model="e", input=inputs, dimensions=dimensions)


@pytest.mark.parametrize("inp", [[], [1, 2], None])
def test_invalid_embed_input(inp):
    assert bad(parse_embed, {"model": "e", "input": inp}).param in ("input", "input[0]")
