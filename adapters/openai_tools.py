"""OpenAI function tools, tool_choice and response_format as clients send them (wire Structs, after
openai-python's `types/chat/*_param.py`) and their IR form: the tool side of `openai_request`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Union

from msgspec import Struct

from . import ir
from .errors import unsupported

if TYPE_CHECKING:
    from .openai_request import ChatRequestIn

# --------------------------------------------------------------------------------------------------
# Wire Structs


class FunctionDef(Struct):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class _Typed(Struct, tag_field="type"):
    pass


class FunctionTool(_Typed, tag="function"):
    function: FunctionDef


class CustomTool(_Typed, tag="custom"):
    custom: dict[str, Any]


class FunctionName(Struct):
    name: str


class NamedChoice(_Typed, tag="function"):
    function: FunctionName


class AllowedTools(Struct):
    mode: Literal["auto", "required"]
    tools: list[NamedChoice]


class AllowedToolsChoice(_Typed, tag="allowed_tools"):
    allowed_tools: AllowedTools


class CustomChoice(_Typed, tag="custom"):
    custom: dict[str, Any]


ToolChoiceIn = Union[Literal["none", "auto", "required"], NamedChoice, AllowedToolsChoice, CustomChoice]


class TextFormat(_Typed, tag="text"):
    pass


class JsonObjectFormat(_Typed, tag="json_object"):
    pass


class JsonSchemaSpec(Struct):
    name: str
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class JsonSchemaFormat(_Typed, tag="json_schema"):
    json_schema: JsonSchemaSpec


# --------------------------------------------------------------------------------------------------
# Tools -> IR


def tool_def(f: FunctionDef) -> ir.ToolDef:
    if f.parameters is None:
        return ir.ToolDef(name=f.name, description=f.description, strict=f.strict)
    return ir.ToolDef(name=f.name, description=f.description, parameters=f.parameters, strict=f.strict)


def tools_to_ir(r: ChatRequestIn) -> list[ir.ToolDef]:
    if r.tools is not None:
        out = []
        for i, t in enumerate(r.tools):
            if isinstance(t, CustomTool):
                raise unsupported("custom tools are not supported; use function tools", param=f"tools[{i}]")
            out.append(tool_def(t.function))
        return out
    return [tool_def(f) for f in r.functions or ()]


def tool_choice_to_ir(r: ChatRequestIn, tools: list[ir.ToolDef]) -> tuple[ir.ToolChoice | None, list[ir.ToolDef]]:
    tc = r.tool_choice
    if tc is None:
        fc = r.function_call
        if fc is None:
            return None, tools
        return (ir.ToolChoice(mode=fc) if isinstance(fc, str) else ir.ToolChoice("tool", fc.name)), tools
    if isinstance(tc, str):
        return ir.ToolChoice(mode=tc), tools
    if isinstance(tc, NamedChoice):
        return ir.ToolChoice("tool", tc.function.name), tools
    if isinstance(tc, AllowedToolsChoice):
        allowed = {t.function.name for t in tc.allowed_tools.tools}
        return ir.ToolChoice(mode=tc.allowed_tools.mode), [t for t in tools if t.name in allowed]
    raise unsupported("custom tool_choice is not supported", param="tool_choice")


def response_format_to_ir(rf: Any) -> ir.ResponseFormat | None:
    if rf is None:
        return None
    if isinstance(rf, JsonSchemaFormat):
        s = rf.json_schema
        return ir.ResponseFormat(
            "json_schema", name=s.name, schema=s.schema, strict=s.strict, description=s.description
        )
    return ir.ResponseFormat("json_object" if isinstance(rf, JsonObjectFormat) else "text")
