"""The pure half of stored responses: plans, stored item shapes, list pages, ids and errors."""

from __future__ import annotations

import orjson
import pytest
from openai.types.conversations import Conversation, ConversationDeletedResource, ConversationItemList
from openai.types.responses import ResponseItemList

from adapters.errors import ProxyError
from adapters.openai_responses_frontend import STATE
from adapters.openai_responses_state import STATE_KEY, stored_item


def body(**kw) -> bytes:
    return orjson.dumps({"model": "m", "input": "x", **kw})


def test_plan_of_a_request_that_continues_nothing():
    plan = STATE.plan(body())
    assert plan.store and plan.previous_response_id is None and plan.conversation_id is None and not plan.references
    assert not STATE.plan(body(store=False)).store


def test_plan_names_what_to_load():
    plan = STATE.plan(body(previous_response_id="resp_1", input=[
        {"type": "item_reference", "id": "msg_1"}, {"role": "user", "content": "x"},
        {"type": "item_reference", "id": "rs_2"}]))  # fmt: skip
    assert plan.previous_response_id == "resp_1" and plan.references == ["msg_1", "rs_2"]
    assert STATE.plan(body(conversation="conv_1")).conversation_id == "conv_1"
    assert STATE.plan(body(conversation={"id": "conv_2"})).conversation_id == "conv_2"


@pytest.mark.parametrize("fields,param", [
    ({"previous_response_id": "resp_1", "conversation": "conv_1"}, "conversation"),
    ({"previous_response_id": "bad id"}, "previous_response_id"),
    ({"previous_response_id": "r" * 129}, "previous_response_id"),
    ({"conversation": {"name": "x"}}, "conversation"),
    ({"conversation": "../x"}, "conversation"),
    ({"input": [{"type": "item_reference", "id": "a/b"}]}, "input[0].id"),
    ({"input": [{"type": "item_reference"}]}, "input[0].id"),
])
def test_bad_plans_are_400s_naming_the_field_without_echoing_the_value(fields, param):
    with pytest.raises(ProxyError) as info:
        STATE.plan(body(**fields))
    assert info.value.status == 400 and info.value.param == param and "r" * 129 not in info.value.message


def test_build_puts_context_first_and_resolves_references():
    plan = STATE.plan(body(previous_response_id="resp_1", input=[
        {"type": "item_reference", "id": "msg_old"}, {"type": "item_reference", "id": "rs_gone"},
        {"role": "user", "content": "now"}]))  # fmt: skip
    context = [{"type": "message", "id": "msg_a", "role": "user", "content": [{"type": "input_text", "text": "a"}]},
               {"type": "message", "id": "msg_b", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": "b", "annotations": []}]}]
    found = {"msg_old": {"type": "message", "id": "msg_old", "role": "user", "content": [{"type": "input_text",
                                                                                           "text": "old"}]}}
    req = STATE.build(plan, context, found)
    assert [(m.role, m.parts[0].text) for m in req.messages] == [("user", "a"), ("assistant", "b"), ("user", "old"),
                                                                  ("user", "now")]
    turn = req.extra[STATE_KEY]
    assert turn is STATE.turn(req) and turn.store and turn.previous_response_id == "resp_1"
    assert turn.history == ["msg_a", "msg_b"] and turn.response_id.startswith("resp_")
    assert turn.input_items[0]["id"] == "msg_old"  # the resolved item, with its own id
    assert turn.input_items[1]["content"] == [{"type": "input_text", "text": "now"}]


def test_an_unknown_reference_is_a_404_naming_it():
    plan = STATE.plan(body(input=[{"type": "item_reference", "id": "fc_nope"}]))
    with pytest.raises(ProxyError) as info:
        STATE.build(plan, [], {})
    assert info.value.status == 404 and "fc_nope" in info.value.message and info.value.param == "input[0]"


@pytest.mark.parametrize("raw,expected", [
    ({"role": "user", "content": "hi"},
     {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}], "status": "completed"}),
    ({"role": "assistant", "content": "yo", "id": "msg_keep"},
     {"type": "message", "role": "assistant", "id": "msg_keep", "status": "completed",
      "content": [{"type": "output_text", "text": "yo", "annotations": []}]}),
    ({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", "id": "bad id!"},
     {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", "status": "completed"}),
    ({"type": "function_call_output", "call_id": "c", "output": "ok"},
     {"type": "function_call_output", "call_id": "c", "output": "ok", "status": "completed"}),
    ({"type": "reasoning", "summary": []}, {"type": "reasoning", "summary": []}),
])  # fmt: skip
def test_stored_items_have_ids_and_list_shapes(raw, expected):
    item = stored_item(raw)
    prefix = {"message": "msg_", "function_call": "fc_", "function_call_output": "fco_", "reasoning": "rs_"}
    assert item.pop("id").startswith(expected.pop("id", prefix[raw.get("type", "message")]))
    assert item == expected


ITEMS = [{"type": "message", "id": f"msg_{i}", "role": "user", "content": [{"type": "input_text", "text": str(i)}],
          "status": "completed"} for i in range(5)]


@pytest.mark.parametrize("query,ids,has_more", [
    ({}, [4, 3, 2, 1, 0], False),
    ({"order": "asc", "limit": "2"}, [0, 1], True),
    ({"order": "asc", "limit": "2", "after": "msg_1"}, [2, 3], True),
    ({"order": "asc", "after": "msg_3"}, [4], False),
    ({"order": "desc", "after": "msg_0"}, [], False),
    ({"limit": "100"}, [4, 3, 2, 1, 0], False),
])
def test_pages(query, ids, has_more):
    raw = orjson.loads(STATE.page(ITEMS, query))
    assert [int(i["id"][4:]) for i in raw["data"]] == ids and raw["has_more"] is has_more and raw["object"] == "list"
    if not ids:  # the SDK's cursor page reads only data and has_more; an empty page names no first or last id
        assert raw["first_id"] is None and raw["last_id"] is None
        return
    for model in (ResponseItemList, ConversationItemList):
        page = model.model_validate(raw)
        assert (page.first_id, page.last_id) == (f"msg_{ids[0]}", f"msg_{ids[-1]}")


@pytest.mark.parametrize("query,param", [({"order": "up"}, "order"), ({"limit": "0"}, "limit"),
                                         ({"limit": "101"}, "limit"), ({"limit": "x"}, "limit"),
                                         ({"after": "msg_9"}, "after"), ({"after": "a b"}, "after")])
def test_bad_page_queries(query, param):
    with pytest.raises(ProxyError) as info:
        STATE.page(ITEMS, query)
    assert info.value.param == param and info.value.status in (400, 404)


def test_shapes_match_the_sdk():
    conv = Conversation.model_validate(STATE.container(STATE.new_container_id(), 1, {"a": "b"}))
    assert conv.id.startswith("conv_") and conv.metadata == {"a": "b"}
    gone = ConversationDeletedResource.model_validate(orjson.loads(STATE.deleted("conversation", "conv_1")))
    assert gone.deleted and gone.id == "conv_1"
    assert orjson.loads(STATE.deleted("response", "resp_1")) == {"id": "resp_1", "object": "response", "deleted": True}


def test_not_found_errors():
    prev = STATE.not_found("response", "resp_1", "previous_response_id")
    assert (prev.status, prev.code, prev.param) == (404, "previous_response_not_found", "previous_response_id")
    assert prev.message == "Previous response with id 'resp_1' not found."
    assert STATE.not_found("item", "msg_1", None).message == "Item with id 'msg_1' not found."


def test_new_items_are_checked_like_input_and_bounded():
    items, metadata = STATE.new_items(orjson.dumps({"items": [{"role": "user", "content": "a"}],
                                                    "metadata": {"k": "v"}}), 100)  # fmt: skip
    assert items[0]["id"].startswith("msg_") and metadata == {"k": "v"}
    assert STATE.new_items(b"{}", 100) == ([], None)
    for bad, param in (({"items": [{"role": "robot", "content": "a"}]}, "items[0].role"),
                       ({"items": [{"type": "item_reference", "id": "msg_1"}]}, "items[0]"),
                       ({"items": [{"role": "user", "content": "a"}] * 21}, "items"),
                       ({"metadata": {str(i): "v" for i in range(17)}}, "metadata"),
                       ({"metadata": {"k": "v" * 513}}, "metadata")):
        with pytest.raises(ProxyError) as info:
            STATE.new_items(orjson.dumps(bad), 100)
        assert info.value.status == 400 and info.value.param == param
    with pytest.raises(ProxyError):
        STATE.new_items(orjson.dumps({"items": [{"role": "user", "content": "a"}] * 3}), 2)
    assert STATE.metadata(orjson.dumps({"metadata": {"x": "y"}})) == {"x": "y"}
