"""The Responses API's `input` items -> IR messages (the parsing half of `openai_responses_frontend`,
whose docstring lists the mapping decisions).

Items are typed one by one (messages may omit `type`; unknown types are built-in tools' items, left
to the model's `unsupported_params` policy), so an error names the item's full path.  Calls and
reasoning join the assistant message before them; an assistant message right after reasoning joins
it too, since a Responses turn's output items (reasoning, message, function calls) are one IR turn:
Anthropic wants its thinking first in that turn and Gemini wants a call's signature on the call.
`reasoning` items carrying the gateway's envelope (`openai_responses_reasoning`) become signed IR
reasoning; other reasoning items are dropped.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import Struct

from . import ir
from .common import validation_error
from .errors import unsupported
from .openai_request import image_from_url
from .openai_responses_reasoning import open_envelope
from .openai_responses_state import ResponsesState
from .openai_responses_tools import builtin_name, custom_arguments, flat_name

__all__ = ["History", "convert"]

WHAT = "responses request"
_REASONING_PREFIX = "rs_"  # OpenAI's and the gateway's reasoning item ids

# --------------------------------------------------------------------------------------------------
# Wire types (the items' parts and the items)


class _Part(Struct, tag_field="type"):
    pass


class InputText(_Part, tag="input_text"):
    text: str


class InputImage(_Part, tag="input_image"):
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class InputFile(_Part, tag="input_file"):
    pass


class OutputText(_Part, tag="output_text"):
    text: str


class RefusalPart(_Part, tag="refusal"):
    refusal: str


Part = InputText | InputImage | InputFile | OutputText | RefusalPart


class MessageItem(Struct):
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Part]
    type: Literal["message"] = "message"


class FunctionCallItem(Struct):
    call_id: str
    name: str
    arguments: str = ""
    namespace: str | None = None


class CustomToolCallItem(Struct):
    call_id: str
    name: str
    input: str
    namespace: str | None = None


class FunctionCallOutputItem(Struct):
    call_id: str
    output: str | list[Part]


def convert(value: Any, typ: type, path: str) -> Any:
    """A plain value as `typ`; a mismatch is a 400 naming the full field path."""
    try:
        return msgspec.convert(value, typ)
    except msgspec.ValidationError as exc:
        text = str(exc)
        text = text.replace("`$", f"`$.{path}", 1) if " - at `$" in text else f"{text} - at `$.{path}`"
        raise validation_error(msgspec.ValidationError(text), WHAT) from None


# --------------------------------------------------------------------------------------------------
# items -> IR messages


def _parts(content: str | list[Part], path: str) -> list[ir.Part]:
    if isinstance(content, str):
        return [ir.Text(text=content)]
    parts: list[ir.Part] = []
    for j, p in enumerate(content):
        if isinstance(p, (InputText, OutputText)):
            parts.append(ir.Text(text=p.text))
        elif isinstance(p, RefusalPart):
            parts.append(ir.Text(text=p.refusal))
        elif isinstance(p, InputImage) and p.image_url is not None:
            parts.append(image_from_url(p.image_url, p.detail))
        else:
            what = "input_file parts" if isinstance(p, InputFile) else "input_image by file_id"
            raise unsupported(f"{what} are not supported (the gateway has no file store)", param=f"{path}[{j}]")
    return parts


class History:
    """Input items -> (system prompt, IR messages), merging function calls into the assistant turn."""

    def __init__(self, instructions: str | None) -> None:
        self.system: list[ir.Text] = [ir.Text(text=instructions)] if instructions else []
        self.messages: list[ir.Message] = []
        self.names: dict[str, str] = {}  # call_id -> function name
        self.unhonoured: list[str] = []
        self.found: dict[str, dict[str, Any]] = {}  # item_reference id -> stored item
        self.inputs: list[dict[str, Any]] = []  # the request's own items, as stored

    def _assistant(self, part: ir.Part) -> None:
        """A call or reasoning item joins the assistant message before it (one turn of output)."""
        last = self.messages[-1] if self.messages else None
        if last is not None and last.role == "assistant":
            last.parts.append(part)
        else:
            self.messages.append(ir.Message(role="assistant", parts=[part]))

    def _call(self, call_id: str, name: str, arguments: str) -> None:
        self.names[call_id] = name
        self._assistant(ir.ToolCall(id=call_id, name=name, arguments=arguments))

    def _after_reasoning(self) -> bool:
        last = self.messages[-1] if self.messages else None
        return (last is not None and last.role == "assistant" and bool(last.parts)
                and isinstance(last.parts[-1], ir.Reasoning))

    def _reference(self, raw: dict[str, Any], i: int) -> None:
        """An item of the caller's stored items by id (`found`: resolved by the proxy beforehand)."""
        rid = ResponsesState.check_id(raw.get("id"), f"input[{i}].id")  # bounded before it is quoted
        item = self.found.get(rid)
        if item is not None:  # stored items are never references themselves
            self.item(item, i)
        elif not rid.startswith(_REASONING_PREFIX):
            raise ResponsesState.not_found("item", rid, f"input[{i}]")
        # else: reasoning the caller did not store is dropped, as it would be if it were sent inline

    def item(self, raw: dict[str, Any], i: int, own: bool = True, where: str = "input") -> None:
        """One item; `own` items (the request's input, references resolved) are kept for storing."""
        path = f"{where}[{i}]"
        if own and raw.get("type") != "item_reference":
            self.inputs.append(raw)
        kind = raw.get("type", "message")
        if kind == "message":
            m: MessageItem = convert(raw, MessageItem, path)
            parts = _parts(m.content, f"{path}.content")
            if m.role in ("system", "developer"):
                if self.messages:
                    self.messages.append(ir.Message(role="system", parts=parts))
                else:
                    self.system += [p for p in parts if isinstance(p, ir.Text)]
            elif m.role == "assistant" and self._after_reasoning():
                self.messages[-1].parts += parts  # the answer that followed its reasoning: one turn
            else:
                self.messages.append(ir.Message(role=m.role, parts=parts))
        elif kind == "reasoning":
            part = open_envelope(raw.get("encrypted_content"), f"{path}.encrypted_content")
            if part is not None:  # else OpenAI's ciphertext or a summary: dropped (module docstring)
                self._assistant(part)
        elif kind == "function_call":
            fc: FunctionCallItem = convert(raw, FunctionCallItem, path)
            self._call(fc.call_id, flat_name(fc.name, fc.namespace), fc.arguments)
        elif kind == "custom_tool_call":
            cc: CustomToolCallItem = convert(raw, CustomToolCallItem, path)
            self._call(cc.call_id, flat_name(cc.name, cc.namespace), custom_arguments(cc.input))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            fo: FunctionCallOutputItem = convert(raw, FunctionCallOutputItem, path)
            content = [p for p in _parts(fo.output, f"{path}.output") if isinstance(p, (ir.Text, ir.Image))]
            result = ir.ToolResult(tool_call_id=fo.call_id, content=content, name=self.names.get(fo.call_id))
            self.messages.append(ir.Message(role="tool", parts=[result]))
        elif kind == "item_reference":
            self._reference(raw, i)
        else:
            name = builtin_name(kind, "input", f"{path}.type")
            if name not in self.unhonoured:
                self.unhonoured.append(name)
