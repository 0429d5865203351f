"""Responses API frontend: every request mapping row, the Response object, errors, pass-through hooks."""

import orjson
import pytest
from openai.types.responses import Response

from adapters import ir
from adapters.base import Passthrough, StoreRoute
from adapters.errors import KINDS, ProxyError
from adapters.openai_responses_frontend import ResponsesFrontend
from adapters.openai_responses_reasoning import PREFIX, open_envelope
from proxy.stored import ACTIONS

F = ResponsesFrontend()


def parse(**kw):
    body = {"model": "m", "input": "hi", **kw}
    return F.parse_chat(orjson.dumps(body))


def refused(**kw) -> ProxyError:
    with pytest.raises(ProxyError) as info:
        parse(**kw)
    return info.value


# -- input ---------------------------------------------------------------------------------------


def test_string_input_is_one_user_message():
    req = parse()
    assert req.model == "m" and req.source_format == "openai-responses"
    assert req.messages == [ir.Message(role="user", parts=[ir.Text("hi")])]


def test_instructions_and_leading_system_developer_messages_become_system():
    req = parse(instructions="I", input=[
        {"role": "system", "content": "S"},
        {"role": "developer", "content": [{"type": "input_text", "text": "D"}]},
        {"role": "user", "content": "u"},
        {"type": "message", "role": "developer", "content": "late"},
    ])
    assert [t.text for t in req.system] == ["I", "S", "D"]
    assert req.messages[1] == ir.Message(role="system", parts=[ir.Text("late")])


@pytest.mark.parametrize("part,expected", [
    ({"type": "input_text", "text": "t"}, ir.Text("t")),
    ({"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}, ir.Image(url="https://x/y.png", detail="low")),
    ({"type": "input_image", "image_url": "data:image/png;base64,QUJD"}, ir.Image(media_type="image/png", data="QUJD")),
    ({"type": "output_text", "text": "o", "annotations": []}, ir.Text("o")),
    ({"type": "refusal", "refusal": "no"}, ir.Text("no")),
])
def test_content_parts(part, expected):
    req = parse(input=[{"role": "user", "content": [part]}])
    assert req.messages[0].parts == [expected]


@pytest.mark.parametrize("part", [
    {"type": "input_file", "file_id": "f"},
    {"type": "input_image", "file_id": "f"},
])
def test_file_references_are_unsupported(part):
    err = refused(input=[{"role": "user", "content": [{"type": "input_text", "text": "a"}, part]}])
    assert err.kind == "unsupported" and err.param == "input[0].content[1]"


def test_function_call_round_trip_items():
    req = parse(input=[
        {"role": "user", "content": "weather?"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}],
         "encrypted_content": "xyz"},
        {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "let me look", "annotations": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "w", "arguments": "{\"c\":1}",
         "status": "completed"},
        {"type": "function_call", "call_id": "call_2", "name": "t", "arguments": ""},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "noon"}]},
    ])
    assert [m.role for m in req.messages] == ["user", "assistant", "tool", "tool"]
    assert req.messages[1].parts == [ir.Text("let me look"), ir.ToolCall("call_1", "w", "{\"c\":1}"),
                                     ir.ToolCall("call_2", "t", "")]
    assert req.messages[2].parts == [ir.ToolResult("call_1", [ir.Text("sunny")], name="w")]
    assert req.messages[3].parts == [ir.ToolResult("call_2", [ir.Text("noon")], name="t")]


def test_function_call_without_assistant_text_opens_an_assistant_message():
    req = parse(input=[{"role": "user", "content": "a"},
                       {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}])
    assert req.messages[1] == ir.Message(role="assistant", parts=[ir.ToolCall("c", "f", "{}")])


@pytest.mark.parametrize("item,param,kind", [
    ({"role": "user", "content": [{"type": "input_text", "text": 1}]}, "input[0].content[0].text", "invalid_request"),
    ({"role": "robot", "content": "x"}, "input[0].role", "invalid_request"),
    ({"type": "function_call", "name": "f"}, "input[0]", "invalid_request"),
    ({"type": "function_call_output", "call_id": "c"}, "input[0]", "invalid_request"),
    ({"type": "Web Search!", "id": "ws"}, "input[0].type", "invalid_request"),
    ({"type": "item_reference", "id": "msg_1"}, "input[0]", "not_found"),  # nothing stored by that id
    ({"type": "item_reference", "id": "x" * 200}, "input[0].id", "invalid_request"),  # never quoted unbounded
    ({"type": "item_reference"}, "input[0].id", "invalid_request"),
])
def test_bad_items_name_the_field_path(item, param, kind):
    err = refused(input=[item])
    assert (err.kind, err.param, err.status) == (kind, param, KINDS[kind])


def test_empty_input_and_bad_json():
    assert refused(input=[]).param == "input"
    assert refused(input=[{"type": "reasoning", "summary": []}]).param == "input"
    with pytest.raises(ProxyError) as info:
        F.parse_chat(b"{not json")
    assert info.value.kind == "invalid_request"
    with pytest.raises(ProxyError) as info:
        F.parse_chat(b'{"input":"x"}')
    assert "model" in info.value.message


@pytest.mark.parametrize("field,value", [("prompt", {"id": "pmpt_1"}), ("background", True)])
def test_stored_prompts_and_background_runs_are_refused(field, value):
    err = refused(**{field: value})
    assert err.status == 400 and err.param == field and "not supported" in err.message


@pytest.mark.parametrize("field,value", [
    ("store", True), ("include", ["reasoning.encrypted_content"]), ("truncation", "auto"),
    ("service_tier", "flex"), ("prompt_cache_key", "k"), ("max_tool_calls", 3), ("background", False),
])
def test_ignored_fields(field, value):
    assert parse(**{field: value}) == parse()


# -- tools, tool_choice, parameters ----------------------------------------------------------------


def test_flat_function_tools():
    req = parse(tools=[
        {"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": True},
        {"type": "function", "name": "g"},
    ])
    assert req.tools == [ir.ToolDef("f", "d", {"type": "object"}, True), ir.ToolDef("g")]


@pytest.mark.parametrize("tool", ["web_search", "file_search", "code_interpreter", "mcp", "computer_use_preview",
                                  "image_generation", "local_shell", "tool_search", "some_future_tool"])
def test_builtin_tools_are_left_to_the_policy_by_name(tool):
    req = parse(tools=[{"type": "function", "name": "f"}, {"type": tool}])
    assert [t.name for t in req.tools] == ["f"] and req.unhonoured == [f"tools:{tool}"]


@pytest.mark.parametrize("tool,param", [
    ({"type": "function"}, "tools[0].name"),
    ({"type": "Web Search"}, "tools[0].type"),
    ({"type": 3}, "tools[0].type"),
    ({"type": "function", "name": "f", "parameters": "x"}, "tools[0].parameters"),
    ({"type": "namespace", "name": "ns"}, "tools[0]"),
    ({"type": "namespace", "name": "ns", "tools": [{"type": "web_search"}]}, "tools[0].tools[0]"),
])
def test_bad_tools_name_the_field(tool, param):
    err = refused(tools=[tool])
    assert (err.kind, err.param) == ("invalid_request", param)


def test_a_tool_name_declared_twice_is_refused():
    err = refused(tools=[{"type": "function", "name": "ns__f"},
                         {"type": "namespace", "name": "ns", "description": "", "tools": [{"type": "function", "name": "f"}]}])
    assert err.param == "tools[1].tools[0].name" and "twice" in err.message


# Codex CLI's default request declares its sub-agent tools this way.
NAMESPACE = {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents",
             "tools": [{"type": "function", "name": "spawn_agent", "description": "Start one",
                        "parameters": {"type": "object", "properties": {"task": {"type": "string"}}}},
                       {"type": "custom", "name": "note"}]}
CUSTOM = {"type": "custom", "name": "apply_patch", "description": "Edit files",
          "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}


def test_namespace_tools_are_flattened():
    req = parse(tools=[NAMESPACE])
    spawn, note = req.tools
    assert spawn.name == "multi_agent_v1__spawn_agent" and spawn.description == "Sub-agents\n\nStart one"
    assert spawn.parameters == NAMESPACE["tools"][0]["parameters"]
    assert note.name == "multi_agent_v1__note" and note.parameters["required"] == ["input"]
    assert req.extra["responses_tools"] == {"multi_agent_v1__spawn_agent": ("function", "spawn_agent", "multi_agent_v1"),
                                            "multi_agent_v1__note": ("custom", "note", "multi_agent_v1")}


def test_custom_tool_is_a_function_of_one_string_with_its_grammar_in_the_description():
    (tool,) = parse(tools=[CUSTOM]).tools
    assert tool.name == "apply_patch" and tool.description.startswith("Edit files")
    assert "lark grammar" in tool.description and "start: /.+/" in tool.description
    assert tool.parameters == {"type": "object", "properties": {"input": {"type": "string", "description": "The tool's free-form input"}},
                               "required": ["input"], "additionalProperties": False}


def test_namespaced_and_custom_calls_in_history_use_the_flat_names():
    req = parse(tools=[NAMESPACE, CUSTOM], input=[
        {"role": "user", "content": "go"},
        {"type": "function_call", "call_id": "c1", "name": "spawn_agent", "namespace": "multi_agent_v1",
         "arguments": "{}"},
        {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "function_call_output", "call_id": "c1", "output": "spawned"},
        {"type": "custom_tool_call_output", "call_id": "c2", "output": "applied"},
    ])
    assert req.messages[1].parts == [ir.ToolCall("c1", "multi_agent_v1__spawn_agent", "{}"),
                                     ir.ToolCall("c2", "apply_patch", '{"input":"*** Begin Patch"}')]
    assert req.messages[3].parts == [ir.ToolResult("c2", [ir.Text("applied")], name="apply_patch")]


def test_item_reference_to_a_reasoning_item_is_dropped_like_the_item():
    req = parse(input=[{"role": "user", "content": "a"}, {"type": "item_reference", "id": "rs_123"},
                       {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}])
    assert [m.role for m in req.messages] == ["user", "assistant"] and req.unhonoured == []


def test_items_of_builtin_tools_are_left_to_the_policy_once_per_type():
    req = parse(input=[{"role": "user", "content": "a"}, {"type": "web_search_call", "id": "ws1"},
                       {"type": "web_search_call", "id": "ws2"}, {"type": "local_shell_call", "id": "ls"}])
    assert req.unhonoured == ["input:web_search_call", "input:local_shell_call"]
    assert [m.role for m in req.messages] == ["user"]


@pytest.mark.parametrize("choice,expected", [
    ("auto", ir.ToolChoice("auto")),
    ("none", ir.ToolChoice("none")),
    ("required", ir.ToolChoice("required")),
    ({"type": "function", "name": "f"}, ir.ToolChoice("tool", "f")),
    (None, None),
])
def test_tool_choice(choice, expected):
    assert parse(tools=[{"type": "function", "name": "f"}], tool_choice=choice).tool_choice == expected


def test_allowed_tools_narrow_the_list():
    req = parse(tools=[{"type": "function", "name": "f"}, {"type": "function", "name": "g"}],
                tool_choice={"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "g"}]})
    assert req.tool_choice == ir.ToolChoice("required") and [t.name for t in req.tools] == ["g"]


@pytest.mark.parametrize("choice", [{"type": "file_search"}, {"type": "mcp", "server_label": "x"}])
def test_tool_choice_naming_a_builtin_is_left_to_the_policy(choice):
    req = parse(tool_choice=choice)
    assert req.tool_choice is None and req.unhonoured == [f"tool_choice:{choice['type']}"]


def test_tool_choice_naming_a_custom_tool():
    assert parse(tools=[CUSTOM], tool_choice={"type": "custom", "name": "apply_patch"}).tool_choice == \
        ir.ToolChoice("tool", "apply_patch")


@pytest.mark.parametrize("choice,kind", [
    ({"type": "function"}, "invalid_request"),
    ("sometimes", "invalid_request"),
])
def test_bad_tool_choice(choice, kind):
    err = refused(tool_choice=choice)
    assert err.kind == kind and err.param == "tool_choice"


@pytest.mark.parametrize("fmt,expected", [
    ({"type": "text"}, ir.ResponseFormat("text")),
    ({"type": "json_object"}, ir.ResponseFormat("json_object")),
    ({"type": "json_schema", "name": "n", "schema": {"type": "object"}, "strict": True, "description": "d"},
     ir.ResponseFormat("json_schema", name="n", schema={"type": "object"}, strict=True, description="d")),
])
def test_text_format(fmt, expected):
    assert parse(text={"format": fmt, "verbosity": "low"}).response_format == expected


def test_json_schema_needs_name():
    assert refused(text={"format": {"type": "json_schema", "schema": {}}}).param == "text.format"


@pytest.mark.parametrize("effort,expected", [
    ("low", ir.ReasoningConfig(effort="low")),
    ("high", ir.ReasoningConfig(effort="high")),
    ("none", ir.ReasoningConfig(effort="none", enabled=False)),
])
def test_reasoning_effort(effort, expected):
    assert parse(reasoning={"effort": effort, "summary": "auto"}).reasoning == expected


@pytest.mark.parametrize("field,value,attr,expected", [
    ("max_output_tokens", 50, "max_tokens", 50),
    ("temperature", 0.3, "temperature", 0.3),
    ("top_p", 0.9, "top_p", 0.9),
    ("parallel_tool_calls", False, "parallel_tool_calls", False),
    ("metadata", {"k": "v"}, "metadata", {"k": "v"}),
    ("user", "u1", "user", "u1"),
    ("safety_identifier", "s1", "user", "s1"),
    ("top_logprobs", 3, "top_logprobs", 3),
    ("stream", True, "stream", True),
])
def test_scalar_fields(field, value, attr, expected):
    assert getattr(parse(**{field: value}), attr) == expected


def test_top_logprobs_turns_logprobs_on_and_user_wins_over_safety_identifier():
    assert parse(top_logprobs=2).logprobs is True
    assert parse(user="u", safety_identifier="s").user == "u"


def test_stream_always_wants_usage():
    assert parse(stream=True).include_usage is True


# -- Response object ---------------------------------------------------------------------------------


def render(parts, finish="stop", usage=None, raw=None, req=None):
    resp = ir.ChatResponse(id="x", model="up", created=123, choices=[
        ir.Choice(parts=parts, finish_reason=finish, raw_finish_reason=raw)], usage=usage)
    return orjson.loads(F.render_chat(resp, "client-model", req))


def test_calls_to_namespaced_and_custom_tools_are_named_as_the_client_declared_them():
    req = parse(tools=[NAMESPACE, CUSTOM, {"type": "function", "name": "plain"}])
    body = render([ir.ToolCall("c1", "multi_agent_v1__spawn_agent", '{"task":"t"}'),
                   ir.ToolCall("c2", "apply_patch", '{"input":"*** Begin Patch\\n"}'),
                   ir.ToolCall("c3", "multi_agent_v1__note", "bare text"),
                   ir.ToolCall("c4", "plain", "{}")], finish="tool_calls", req=req)
    r = Response.model_validate(body)
    spawn, patch, note, plain = r.output
    assert (spawn.type, spawn.name, spawn.namespace, spawn.arguments) == ("function_call", "spawn_agent",
                                                                         "multi_agent_v1", '{"task":"t"}')
    assert (patch.type, patch.name, patch.input, patch.call_id) == ("custom_tool_call", "apply_patch",
                                                                    "*** Begin Patch\n", "c2")
    assert patch.id.startswith("ctc_") and "namespace" not in body["output"][1]
    assert (note.type, note.name, note.namespace, note.input) == ("custom_tool_call", "note", "multi_agent_v1",
                                                                  "bare text")
    assert (plain.type, plain.name) == ("function_call", "plain") and "namespace" not in body["output"][3]
    assert [(t.type, t.name) for t in r.tools] == [("function", "spawn_agent"), ("custom", "note"),
                                                   ("custom", "apply_patch"), ("function", "plain")]


def test_response_object_validates_against_the_sdk_model():
    body = render([ir.Reasoning(text="think"), ir.Text("Hel"), ir.Text("lo"), ir.ToolCall("call_1", "f", "{\"a\":1}")],
                  usage=ir.Usage(input_tokens=10, output_tokens=5, cached_input_tokens=2, cache_write_tokens=1,
                                 reasoning_tokens=3))
    r = Response.model_validate(body)
    assert r.id.startswith("resp_") and r.object == "response" and r.model == "client-model" and r.created_at == 123
    assert r.status == "completed" and r.incomplete_details is None and r.error is None
    assert [o.type for o in r.output] == ["reasoning", "message", "function_call"]
    assert r.output[0].summary[0].text == "think"
    assert r.output_text == "Hello" and r.output[1].status == "completed" and r.output[1].role == "assistant"
    fc = r.output[2]
    assert (fc.call_id, fc.name, fc.arguments, fc.status) == ("call_1", "f", "{\"a\":1}", "completed")
    assert fc.id.startswith("fc_") and r.output[1].id.startswith("msg_")
    u = r.usage
    assert (u.input_tokens, u.output_tokens, u.total_tokens) == (10, 5, 15)
    assert (u.input_tokens_details.cached_tokens, u.input_tokens_details.cache_write_tokens) == (2, 1)
    assert u.output_tokens_details.reasoning_tokens == 3
    assert r.tools == [] and r.tool_choice == "auto" and r.parallel_tool_calls is True


def test_text_split_by_a_tool_call_gives_two_messages():
    body = render([ir.Text("a"), ir.ToolCall("c", "f", "{}"), ir.Text("b")])
    assert [o["type"] for o in body["output"]] == ["message", "function_call", "message"]


ANTHROPIC_TURN = [ir.Reasoning(text="I should call w.", signature="EqQBsig", provider="anthropic"),
                  ir.Reasoning(redacted_data="EmwKredacted", provider="anthropic"),
                  ir.Text("Looking."), ir.ToolCall("toolu_1", "w", '{"c":1}')]
GEMINI_TURN = [ir.Reasoning(text="**Plan**", signature="dGhvdWdodA==", provider="gemini"),
               ir.Reasoning(signature="Y2FsbA==", provider="gemini"), ir.ToolCall("call_0_1", "w", '{"c":1}'),
               ir.ToolCall("call_0_2", "t", "{}")]


def test_signed_and_redacted_reasoning_carry_the_envelope():
    body = render(ANTHROPIC_TURN, finish="tool_calls")
    r = Response.model_validate(body)
    thought, redacted, message, call = r.output
    assert (thought.type, [s.text for s in thought.summary]) == ("reasoning", ["I should call w."])
    assert open_envelope(thought.encrypted_content, "p") == ANTHROPIC_TURN[0]
    assert (redacted.type, redacted.summary) == ("reasoning", [])
    assert open_envelope(redacted.encrypted_content, "p") == ANTHROPIC_TURN[1]
    assert (message.type, call.type) == ("message", "function_call")


def test_unsigned_reasoning_has_no_envelope_and_empty_unsigned_reasoning_no_item():
    body = render([ir.Reasoning(text="plain"), ir.Reasoning(), ir.Reasoning(signature="s"), ir.Text("a")])
    assert [o["type"] for o in body["output"]] == ["reasoning", "message"]
    assert "encrypted_content" not in body["output"][0]


@pytest.mark.parametrize("turn", [ANTHROPIC_TURN, GEMINI_TURN], ids=["anthropic", "gemini"])
def test_output_items_sent_back_give_the_same_assistant_turn(turn):
    """What a client's manual loop does: response.output + function_call_output -> the IR turn the
    backend produced, reasoning first, signatures on the parts they came with."""
    output = render(turn, finish="tool_calls")["output"]
    calls = [p for p in turn if isinstance(p, ir.ToolCall)]
    results = [{"type": "function_call_output", "call_id": c.id, "output": "ok"} for c in calls]
    req = parse(input=[{"role": "user", "content": "go"}, *output, *results])
    assert [m.role for m in req.messages] == ["user", "assistant"] + ["tool"] * len(calls)
    assert req.messages[1].parts == turn


def test_reasoning_items_without_our_envelope_are_dropped():
    req = parse(input=[{"role": "user", "content": "a"},
                       {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAABopenai"},
                       {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "s"}]},
                       {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}])
    assert req.messages[1] == ir.Message(role="assistant", parts=[ir.ToolCall("c", "f", "{}")])


def test_malformed_envelope_is_a_400_naming_the_item():
    err = refused(input=[{"role": "user", "content": "a"},
                         {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": PREFIX + "e30"}])
    assert (err.kind, err.status, err.param) == ("invalid_request", 400, "input[1].encrypted_content")


@pytest.mark.parametrize("finish,parts,status,reason", [
    ("stop", [ir.Text("a")], "completed", None),
    ("tool_calls", [ir.ToolCall("c", "f", "{}")], "completed", None),
    ("stop", [ir.ToolCall("c", "f", "{}")], "completed", None),
    ("pause", [ir.Text("a")], "completed", None),
    ("length", [ir.Text("a")], "incomplete", "max_output_tokens"),
    ("content_filter", [ir.Text("a")], "incomplete", "content_filter"),
    ("error", [ir.Text("a")], "failed", None),
])
def test_finish_rows(finish, parts, status, reason):
    r = Response.model_validate(render(parts, finish=finish, raw="abort"))
    assert r.status == status
    assert (r.incomplete_details.reason if r.incomplete_details else None) == reason
    assert (r.error.code if r.error else None) == ("server_error" if status == "failed" else None)


def test_no_usage_renders_null():
    assert render([ir.Text("a")])["usage"] is None


# -- errors and hooks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_render_error_in_openai_shape(kind):
    status, body = F.render_error(ProxyError(kind, "boom", param="p"))
    err = orjson.loads(body)["error"]
    assert status == KINDS[kind] and err["message"] == "boom" and err["param"] == "p" and isinstance(err["type"], str)


def test_one_route_and_no_passthrough():
    """No backend speaks the Responses API, so the frontend offers no pass-through dialect."""
    assert F.name == "openai-responses" and not isinstance(F, Passthrough)
    route, *stored = F.routes()
    assert route.path == "/v1/responses" and route.target.operation.name == "responses"
    assert route.target.stream_default is False and route.target.operation.stored is not None
    assert {(r.method, r.path) for r in stored} >= {("GET", "/v1/responses/{id}"), ("DELETE", "/v1/responses/{id}"),
                                                    ("GET", "/v1/responses/{id}/input_items")}
    assert all(isinstance(r, StoreRoute) and r.action in ACTIONS for r in stored)
