"""The unsupported-parameter policy (adapters/params.py): drop clears and names, error refuses naming."""

import pytest

from adapters import ir
from adapters.errors import ProxyError
from adapters.params import apply_policy


def request(**kw) -> ir.ChatRequest:
    return ir.ChatRequest(model="m", tools=[ir.ToolDef("f")], tool_choice=ir.ToolChoice("tool", "f"), **kw)


def test_drop_resets_ir_params_and_lists_unhonoured_ones_after_them():
    req = request(seed=3, unhonoured=["tools:web_search", "input:web_search_call"])
    dropped = apply_policy(req, {"temperature"}, "drop", "ollama")
    assert dropped == ["seed", "tools", "tool_choice", "tools:web_search", "input:web_search_call"]
    assert (req.tools, req.tool_choice, req.seed) == ([], None, None)


def test_nothing_offending_drops_nothing():
    req = request()
    assert apply_policy(req, {"tools", "tool_choice"}, "drop", "openai") == []
    assert req.tools == [ir.ToolDef("f")]


def test_error_names_every_unhonoured_entry():
    req = request(unhonoured=["tools:web_search", "tool_choice:file_search"])
    with pytest.raises(ProxyError) as info:
        apply_policy(req, {"tools", "tool_choice"}, "error", "openai")
    err = info.value
    assert (err.kind, err.status, err.param) == ("unsupported", 400, "tools:web_search")
    assert "tools:web_search, tool_choice:file_search" in err.message and "openai" in err.message


def test_error_names_an_ir_param():
    with pytest.raises(ProxyError) as info:
        apply_policy(request(seed=1), {"tools", "tool_choice"}, "error", "tgi")
    assert info.value.param == "seed"
