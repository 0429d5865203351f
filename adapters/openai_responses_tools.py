"""The Responses API's tool kinds, flattened to IR function tools and mapped back on the answer.

What an agent declares (the Codex CLI sends all of these by default), per openai-python's
`types/responses/tool_param.py`, `namespace_tool_param.py`, `custom_tool_param.py`:
- `function`: an IR function tool, unchanged.
- `namespace` (`{"type":"namespace","name":"crm","tools":[function|custom ...]}`): each inner tool
  becomes a function tool named `<namespace>__<name>` (backends allow only `[A-Za-z0-9_-]` in tool
  names); a call to it goes back to the client as the Responses API names it: `name` the inner
  name and `namespace` the namespace (`response_function_tool_call.py` / `..._custom_tool_call.py`).
- `custom` (free-form input, optionally a lark/regex grammar): a function tool taking one string
  argument `input` (the grammar is shown to the model in its description, no backend enforces
  one); a call to it goes back as a `custom_tool_call` item whose `input` is that string.
- Every other type is a built-in tool the OpenAI platform runs itself (`web_search`, `file_search`,
  `code_interpreter`, `image_generation`, `computer_use_preview`, `mcp`, `shell`, ...): no backend
  behind the gateway can, so it is listed in `ChatRequest.unhonoured` and the model's
  `unsupported_params` policy drops it (named in `x-llm-proxy-dropped-params`) or refuses it.

The flat name -> (kind, client name, namespace) table travels in `ChatRequest.extra` under
`TOOLS_KEY` (a key no backend reads: `extra` is only merged into a backend of the client's own
format, and no backend speaks the Responses API) for the renderer and the stream encoder.
"""

from __future__ import annotations

import re
from typing import Any

from . import ir, jsonio
from .common import arguments_object
from .errors import bad_request

TOOLS_KEY = "responses_tools"
_SEPARATOR = "__"
# A built-in tool type names a header entry: keep it to what OpenAI's own type names look like.
_TYPE_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}")

ClientTool = tuple[str, str, str | None]  # (kind "function" | "custom", client name, namespace)


def flat_name(name: str, namespace: str | None) -> str:
    return f"{namespace}{_SEPARATOR}{name}" if namespace else name


def builtin_name(kind: Any, what: str, param: str) -> str:
    """`what:kind` for a built-in tool (or tool_choice / item naming one), its type checked first."""
    if not isinstance(kind, str) or not _TYPE_NAME.fullmatch(kind):
        raise bad_request(f"invalid {what} type", param=param)
    return f"{what}:{kind}"


def _custom_parameters(fmt: Any) -> tuple[dict[str, Any], str]:
    """The one-string-argument schema of a custom tool and a note on its grammar for the description."""
    note = ""
    if isinstance(fmt, dict) and fmt.get("type") == "grammar":
        note = f"\n\nThe input must match this {fmt.get('syntax', 'lark')} grammar:\n{fmt.get('definition', '')}"
    schema = {"type": "object", "properties": {"input": {"type": "string", "description": "The tool's free-form input"}},
              "required": ["input"], "additionalProperties": False}
    return schema, note


class ToolSet:
    """The request's `tools` as IR function tools, plus what was renamed and what was left out."""

    def __init__(self) -> None:
        self.defs: list[ir.ToolDef] = []
        self.client: dict[str, ClientTool] = {}  # flat name -> client view, only for renamed/custom tools
        self.builtins: list[str] = []

    def add_all(self, raw: list[dict[str, Any]]) -> None:
        for i, tool in enumerate(raw):
            kind = tool.get("type")
            if kind in ("function", "custom"):
                self._add(tool, None, f"tools[{i}]")
            elif kind == "namespace":
                ns, inner = tool.get("name"), tool.get("tools")
                if not isinstance(ns, str) or not ns or not isinstance(inner, list):
                    raise bad_request("a namespace tool needs a name and a list of tools", param=f"tools[{i}]")
                for j, sub in enumerate(inner):
                    if not isinstance(sub, dict) or sub.get("type") not in ("function", "custom"):
                        raise bad_request("a namespace holds only function and custom tools",
                                          param=f"tools[{i}].tools[{j}]")
                    self._add(sub, ns, f"tools[{i}].tools[{j}]", tool.get("description"))
            else:
                self.builtins.append(builtin_name(kind, "tools", f"tools[{i}].type"))

    def _add(self, tool: dict[str, Any], ns: str | None, path: str, ns_description: Any = None) -> None:
        name, description = tool.get("name"), tool.get("description")
        if not isinstance(name, str) or not name:
            raise bad_request("a tool needs a name", param=f"{path}.name")
        if description is not None and not isinstance(description, str):
            raise bad_request("a tool's description must be a string", param=f"{path}.description")
        if isinstance(ns_description, str) and ns_description:
            description = f"{ns_description}\n\n{description}" if description else ns_description
        flat = flat_name(name, ns)
        if any(d.name == flat for d in self.defs):
            raise bad_request(f"tool name {flat!r} is declared twice", param=f"{path}.name")
        if tool["type"] == "custom":
            params, note = _custom_parameters(tool.get("format"))
            self.defs.append(ir.ToolDef(name=flat, description=(description or "") + note or None, parameters=params))
            self.client[flat] = ("custom", name, ns)
            return
        params = tool.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise bad_request("a function tool's parameters must be a JSON Schema object", param=f"{path}.parameters")
        strict = tool.get("strict")
        kw: dict[str, Any] = {"parameters": params} if params is not None else {}
        self.defs.append(ir.ToolDef(name=flat, description=description,
                                    strict=strict if isinstance(strict, bool) else None, **kw))
        if ns is not None:
            self.client[flat] = ("function", name, ns)


def client_tools(req: ir.ChatRequest | None) -> dict[str, ClientTool]:
    return req.extra.get(TOOLS_KEY, {}) if req is not None else {}


def call_item(tools: dict[str, ClientTool], item_id: str, call_id: str, flat: str, arguments: str,
              status: str = "completed") -> dict[str, Any]:
    """The output item for the backend's call to `flat`: function_call or custom_tool_call, named
    as the client declared it."""
    kind, name, ns = tools.get(flat, ("function", flat, None))
    if kind == "custom":
        item: dict[str, Any] = {"type": "custom_tool_call", "id": item_id, "call_id": call_id, "name": name,
                                "input": custom_input(arguments), "status": status}
    else:
        item = {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
                "status": status}
    if ns is not None:
        item["namespace"] = ns
    return item


def is_custom(tools: dict[str, ClientTool], flat: str) -> bool:
    return flat in tools and tools[flat][0] == "custom"


def custom_input(arguments: str) -> str:
    """The string a custom tool receives, from the backend's `{"input": ...}` arguments.  A model that
    ignored the schema and wrote the input bare still gets it delivered, as is."""
    args = arguments_object(arguments)
    if args is not None and isinstance(args.get("input"), str):
        return args["input"]
    return arguments


def custom_arguments(text: str) -> str:
    """A custom tool call's input (from the client's history) as the IR's JSON arguments."""
    return jsonio.dumps_str({"input": text})
