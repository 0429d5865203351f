"""Chat templates rendered against the strings the official tokenizer templates produce."""

from __future__ import annotations

import pytest

from adapters import chat_templates, ir
from adapters.errors import ProxyError


def user(text: str) -> ir.Message:
    return ir.Message("user", [ir.Text(text)])


def assistant(text: str) -> ir.Message:
    return ir.Message("assistant", [ir.Text(text)])


MULTI = ir.ChatRequest(model="m", system=[ir.Text("S")], messages=[user("Hello"), assistant("Hi!"), user("Next")])
NO_SYSTEM = ir.ChatRequest(model="m", messages=[user("Hello")])

LLAMA_SYS = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
)

# Expected strings: what each model's official chat_template renders (add_generation_prompt=True).
EXPECTED = {
    ("llama3", "multi"): LLAMA_SYS
    + "S<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHi!<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nNext<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ("llama3", "no_system"): LLAMA_SYS
    + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ("chatml", "multi"): "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
    "<|im_start|>assistant\nHi!<|im_end|>\n<|im_start|>user\nNext<|im_end|>\n<|im_start|>assistant\n",
    ("chatml", "no_system"): "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    ("mistral", "multi"): "<s>[INST] Hello[/INST] Hi!</s>[INST] S\n\nNext[/INST]",
    ("mistral", "no_system"): "<s>[INST] Hello[/INST]",
    ("gemma", "multi"): "<bos><start_of_turn>user\nS\n\nHello<end_of_turn>\n<start_of_turn>model\nHi!<end_of_turn>\n"
    "<start_of_turn>user\nNext<end_of_turn>\n<start_of_turn>model\n",
    ("gemma", "no_system"): "<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n",
    ("phi3", "multi"): "<|system|>\nS<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi!<|end|>\n"
    "<|user|>\nNext<|end|>\n<|assistant|>\n",
    ("phi3", "no_system"): "<|user|>\nHello<|end|>\n<|assistant|>\n",
}


@pytest.mark.parametrize("family, case", sorted(EXPECTED))
def test_family_renders_known_good_string(family, case):
    req = MULTI if case == "multi" else NO_SYSTEM
    assert chat_templates.get(family).render(req) == EXPECTED[(family, case)]


@pytest.mark.parametrize(
    "family, stop",
    [("llama3", "<|eot_id|>"), ("chatml", "<|im_end|>"), ("mistral", "</s>"), ("gemma", "<end_of_turn>"), ("phi3", "<|end|>")],
)
def test_stop_tokens_and_name(family, stop):
    t = chat_templates.get(family)
    assert t.name == family
    assert stop in t.stop


def test_default_is_chatml_and_cached():
    assert chat_templates.get(None) is chat_templates.get("chatml")
    assert chat_templates.get(None).name == "chatml"


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="chatml.*gemma.*llama3.*mistral.*phi3"):
        chat_templates.get("vicuna")


def test_template_from_file(tmp_path):
    path = tmp_path / "mine.jinja"
    path.write_text(
        "{% for m in messages %}[{{ m.role }}]{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    t = chat_templates.get(str(path))
    assert t.name == "mine"
    assert t.render(MULTI) == "[system]S\n[user]Hello\n[assistant]Hi!\n[user]Next\n[assistant]"


def test_raise_exception_becomes_invalid_request(tmp_path):
    path = tmp_path / "strict.jinja"
    path.write_text("{{ raise_exception('no system please') }}")
    with pytest.raises(ProxyError) as e:
        chat_templates.get(str(path)).render(NO_SYSTEM)
    assert e.value.kind == "invalid_request" and "no system please" in e.value.message


def test_tojson_keeps_non_ascii_and_does_not_html_escape(tmp_path):
    path = tmp_path / "j.jinja"
    path.write_text("{{ messages[0].content | tojson }}")
    assert chat_templates.get(str(path)).render(ir.ChatRequest(model="m", messages=[user("é <b>")])) == '"é <b>"'


def test_text_parts_joined_with_newline_and_system_blocks():
    req = ir.ChatRequest(
        model="m",
        system=[ir.Text("A"), ir.Text("B")],
        messages=[ir.Message("user", [ir.Text("one"), ir.Text("two")])],
    )
    assert chat_templates.get("chatml").render(req) == (
        "<|im_start|>system\nA\n\nB<|im_end|>\n<|im_start|>user\none\ntwo<|im_end|>\n<|im_start|>assistant\n"
    )


def test_images_are_unsupported():
    req = ir.ChatRequest(model="m", messages=[ir.Message("user", [ir.Image(url="http://x/i.png")])])
    with pytest.raises(ProxyError) as e:
        chat_templates.get("chatml").render(req)
    assert e.value.kind == "unsupported"


def test_reasoning_parts_are_dropped():
    req = ir.ChatRequest(
        model="m",
        messages=[user("q"), ir.Message("assistant", [ir.Reasoning("hmm"), ir.Text("a")]), user("q2")],
    )
    assert "hmm" not in chat_templates.get("chatml").render(req)


TOOL_REQ = ir.ChatRequest(
    model="m",
    tools=[ir.ToolDef("get_weather", "Weather", {"type": "object", "properties": {"city": {"type": "string"}}})],
    messages=[
        user("Weather?"),
        ir.Message("assistant", [ir.ToolCall("call_abc", "get_weather", '{"city": "Paris"}')]),
        ir.Message("tool", [ir.ToolResult("call_abc", [ir.Text("22C")], name="get_weather")]),
    ],
)


def test_chatml_tools_like_qwen25():
    out = chat_templates.get("chatml").render(TOOL_REQ)
    assert out.startswith(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\n"
    )
    assert (
        '<tools>\n{"type": "function", "function": {"name": "get_weather", "description": "Weather", '
        '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}\n</tools>'
    ) in out
    assert out.endswith(
        "<|im_start|>user\nWeather?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n22C\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )


def test_llama3_tools_like_31():
    out = chat_templates.get("llama3").render(TOOL_REQ)
    assert out.startswith(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions"
    )
    assert out.endswith(
        '\n\nWeather?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{"name": "get_weather", '
        '"parameters": {"city": "Paris"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n"22C"<|eot_id|>'
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_mistral_tool_ids_are_nine_alphanumerics_and_consistent():
    out = chat_templates.get("mistral").render(TOOL_REQ)
    call_id = out.split('"id": "')[1][:9]
    assert call_id.isalnum() and len(call_id) == 9
    assert f'[TOOL_RESULTS] {{"content": "22C", "call_id": "{call_id}"}}[/TOOL_RESULTS]' in out
    assert '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "' in out


@pytest.mark.parametrize("family", ["gemma", "phi3"])
def test_families_without_tool_syntax_get_json_text(family):
    out = chat_templates.get(family).render(TOOL_REQ)
    assert '{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}}]}' in out
    assert '{"tool_result":{"tool_call_id":"call_abc","name":"get_weather","content":"22C"}}' in out


def test_alternating_families_merge_same_role_turns():
    req = ir.ChatRequest(model="m", messages=[user("a"), user("b"), ir.Message("system", [ir.Text("late")])])
    assert chat_templates.get("gemma").render(req) == (
        "<bos><start_of_turn>user\na\n\nb\n\nlate<end_of_turn>\n<start_of_turn>model\n"
    )
    assert chat_templates.get("mistral").render(req) == "<s>[INST] a\n\nb\n\nlate[/INST]"


def test_error_tool_result_is_prefixed():
    req = ir.ChatRequest(
        model="m",
        messages=[
            user("q"),
            ir.Message("assistant", [ir.ToolCall("c1", "f", "{}")]),
            ir.Message("tool", [ir.ToolResult("c1", [ir.Text("boom")], is_error=True)]),
        ],
    )
    assert "<tool_response>\nError: boom\n</tool_response>" in chat_templates.get("chatml").render(req)
