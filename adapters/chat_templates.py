"""Chat templates for prompt-only backends (TGI `/generate`, llama.cpp `/completion`, Replicate prompts).

A prompt-only backend takes one string, so the proxy must render the conversation exactly as the
model's tokenizer would (Hugging Face `apply_chat_template`): Jinja2 in an immutable sandbox with
`trim_blocks` and `lstrip_blocks`, the `loopcontrols` extension, transformers' `tojson` filter
(`ensure_ascii=False`) and the globals `raise_exception` / `strftime_now`; variables `messages`,
`bos_token`, `eos_token`, `add_generation_prompt` (always true here) and `tools` (OpenAI shape).

Shipped families (adapters/templates/<name>.jinja, written to reproduce the official templates):

    llama3   Llama 3.1 Instruct: the system header always carries "Cutting Knowledge Date: December
             2023" / "Today Date: 26 Jul 2024"; tools go into the first user turn; a tool result is
             rendered through `tojson` (so a string result appears quoted, as the official template
             does).  Deviation: several tool calls in one turn become consecutive assistant turns
             (the official template raises).
    chatml   Qwen 2.5 Instruct: default system prompt "You are Qwen, created by Alibaba Cloud. You
             are a helpful assistant."; <tool_call>/<tool_response> tags.
    mistral  Mistral-7B-Instruct-v0.3 (tokenizer V3): `<s>[INST] u[/INST] a</s>`; the system text is
             prepended to the *last* user turn; [AVAILABLE_TOOLS]/[TOOL_CALLS]/[TOOL_RESULTS]; tool-call
             ids rewritten to the 9 alphanumeric characters the template demands.  A tool result's
             content goes through `tojson` (as mistral-common encodes it; the HF template's `|string`
             would leave a string unquoted).
    gemma    Gemma 3 Instruct: no system role (system text prefixed to the first user turn),
             roles user/model.
    phi3     Phi-3.5-mini-instruct: <|system|>/<|user|>/<|assistant|> ... <|end|>.

Conversion from the IR (`_TemplateMessages`): text parts are joined with "\\n"; reasoning parts are
dropped (no family here renders them); images are refused (`unsupported`).  Families without tool
syntax (gemma, phi3) get tool calls and results as JSON text; families that demand alternating
user/assistant turns (mistral, gemma) get consecutive same-role turns merged and mid-conversation
system messages turned into user text.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from . import ir, jsonio
from .errors import ProxyError, unsupported

TEMPLATE_DIR = Path(__file__).with_name("templates")
DEFAULT = "chatml"


class _Family:
    """What the IR conversion must know about a template family (its tokens and its limits)."""

    __slots__ = ("bos", "eos", "stop", "tool_syntax", "alternating", "tool_id_len")

    def __init__(
        self,
        bos: str,
        eos: str,
        stop: tuple[str, ...],
        *,
        tool_syntax: bool = True,
        alternating: bool = False,
        tool_id_len: int | None = None,
    ) -> None:
        self.bos = bos
        self.eos = eos
        self.stop = stop
        self.tool_syntax = tool_syntax
        self.alternating = alternating
        self.tool_id_len = tool_id_len


FAMILIES: dict[str, _Family] = {
    "llama3": _Family("<|begin_of_text|>", "<|eot_id|>", ("<|eot_id|>",)),
    "chatml": _Family("", "<|im_end|>", ("<|im_end|>",)),
    "mistral": _Family("<s>", "</s>", ("</s>",), alternating=True, tool_id_len=9),
    "gemma": _Family("<bos>", "<eos>", ("<end_of_turn>",), tool_syntax=False, alternating=True),
    "phi3": _Family("", "<|endoftext|>", ("<|end|>",), tool_syntax=False),
}

# A template loaded from a file gets ChatML-like neutral settings: no BOS, no end-of-turn stops
# (the file's author knows them; config can add stops), tool syntax assumed.
_FILE_FAMILY = _Family("", "", ())


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys=False) -> str:
    # transformers' binding: unlike Jinja's own filter it does not HTML-escape and keeps non-ASCII.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV = _environment()


class ChatTemplate:
    """One compiled chat template.  `render(req)` gives the prompt, `stop` the end-of-turn strings."""

    __slots__ = ("name", "stop", "bos_token", "eos_token", "_family", "_template")

    def __init__(self, name: str, source: str, family: _Family) -> None:
        self.name = name
        self.stop: tuple[str, ...] = family.stop
        self.bos_token = family.bos
        self.eos_token = family.eos
        self._family = family
        try:
            self._template = _ENV.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"chat template {name!r} does not compile: {exc}") from None

    def render(self, req: ir.ChatRequest) -> str:
        messages = _TemplateMessages(self._family).build(req)
        tools = [_tool_dict(t) for t in req.tools] or None
        try:
            return self._template.render(
                messages=messages,
                tools=tools,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                add_generation_prompt=True,
            )
        except jinja2.TemplateError as exc:
            # The template's own refusal (role order, tool-call shape): the client's request is at fault.
            raise ProxyError("invalid_request", f"chat template {self.name!r}: {exc}") from None

    def __repr__(self) -> str:
        return f"ChatTemplate({self.name!r})"


def get(name_or_path: str | None) -> ChatTemplate:
    """The template for a shipped family name or a .jinja file path (None -> chatml); compiled once."""
    return _load(name_or_path or DEFAULT)


@lru_cache(maxsize=64)
def _load(name: str) -> ChatTemplate:
    if name in FAMILIES:
        return ChatTemplate(name, (TEMPLATE_DIR / f"{name}.jinja").read_text(encoding="utf-8"), FAMILIES[name])
    path = Path(name)
    if path.suffix == ".jinja" and path.is_file():
        return ChatTemplate(path.stem, path.read_text(encoding="utf-8"), _FILE_FAMILY)
    raise ValueError(
        f"unknown chat template {name!r}: use one of {', '.join(sorted(FAMILIES))} or a path to a .jinja file"
    )


# --------------------------------------------------------------------------------------------------
# IR -> the `messages` list the templates see (transformers' dict shape)


def _tool_dict(tool: ir.ToolDef) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        fn["description"] = tool.description
    fn["parameters"] = tool.parameters
    return {"type": "function", "function": fn}


def _arguments(raw: str) -> Any:
    """Templates expect the arguments object (transformers parses them); keep invalid JSON as text."""
    try:
        return jsonio.loads(raw) if raw else {}
    except jsonio.DecodeError:
        return raw


def _text_of(parts: list) -> str:
    texts = []
    for part in parts:
        if isinstance(part, ir.Text):
            texts.append(part.text)
        elif isinstance(part, ir.Image):
            raise unsupported("images are not supported by prompt-template backends", param="messages")
    return "\n".join(texts)


class _TemplateMessages:
    """Builds the template's message dicts for one request (state: the list being built)."""

    __slots__ = ("family", "out")

    def __init__(self, family: _Family) -> None:
        self.family = family
        self.out: list[dict[str, Any]] = []

    def build(self, req: ir.ChatRequest) -> list[dict[str, Any]]:
        if req.system:
            self.out.append({"role": "system", "content": "\n\n".join(t.text for t in req.system)})
        for msg in req.messages:
            results = [p for p in msg.parts if isinstance(p, ir.ToolResult)]
            for result in results:
                self._tool_result(result)
            calls = [p for p in msg.parts if isinstance(p, ir.ToolCall)]
            text = _text_of(msg.parts)
            if calls:
                self._tool_calls(text, calls)
            elif text or not results:
                role = msg.role
                if role == "system" and self.family.alternating and self.out:
                    role = "user"  # no mid-conversation system turn in these templates
                self._add(role if role != "tool" else "user", text)
        return self.out

    def _add(self, role: str, content: str) -> None:
        prev = self.out[-1] if self.out else None
        if (
            self.family.alternating
            and prev is not None
            and prev["role"] == role
            and role in ("user", "assistant")
            and "tool_calls" not in prev
        ):
            prev["content"] = f"{prev['content']}\n\n{content}"
            return
        self.out.append({"role": role, "content": content})

    def _id(self, call_id: str) -> str:
        n = self.family.tool_id_len
        if n is None or (len(call_id) == n and call_id.isalnum()):
            return call_id
        # Deterministic, so a call and its later result map to the same id without proxy state.
        return hashlib.sha256(call_id.encode()).hexdigest()[:n]

    def _tool_calls(self, text: str, calls: list[ir.ToolCall]) -> None:
        if not self.family.tool_syntax:
            payload = [{"name": c.name, "arguments": _arguments(c.arguments)} for c in calls]
            self._add("assistant", "\n".join(filter(None, [text, jsonio.dumps_str({"tool_calls": payload})])))
            return
        self.out.append(
            {
                "role": "assistant",
                "content": text,
                "tool_calls": [
                    {
                        "id": self._id(c.id),
                        "type": "function",
                        "function": {"name": c.name, "arguments": _arguments(c.arguments)},
                    }
                    for c in calls
                ],
            }
        )

    def _tool_result(self, result: ir.ToolResult) -> None:
        content = _text_of(result.content)
        if result.is_error:
            content = f"Error: {content}"
        if not self.family.tool_syntax:
            body = {"tool_call_id": result.tool_call_id, "name": result.name, "content": content}
            self._add("user", jsonio.dumps_str({"tool_result": body}))
            return
        msg: dict[str, Any] = {"role": "tool", "tool_call_id": self._id(result.tool_call_id), "content": content}
        if result.name:
            msg["name"] = result.name
        self.out.append(msg)
