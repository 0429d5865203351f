"""Scenario helpers shared by the emulators (loadtest/emulators/behaviour.py)."""

from __future__ import annotations

import asyncio

import pytest

from loadtest.emulators.behaviour import Behaviour, last_user_text, write_stream

CHATML = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    "prompt, expected",
    [
        (CHATML, "hello there"),
        ("<|start_header_id|>user<|end_header_id|>\n\nhi llama<|eot_id|><|start_header_id|>assistant", "hi llama"),
        ("<s>[INST] first[/INST] a</s>[INST] second[/INST]", "second"),
        ("<start_of_turn>user\ngemma q<end_of_turn>\n<start_of_turn>model\n", "gemma q"),
        ("<|user|>\nphi q<|end|>\n<|assistant|>\n", "phi q"),
        ("plain prompt", "plain prompt"),
    ],
)
def test_last_user_text_per_template(prompt, expected):
    assert last_user_text(prompt) == expected


class _Transport:
    aborted = False

    def abort(self) -> None:
        self.aborted = True


class _Request:
    def __init__(self) -> None:
        self.transport = _Transport()


class _Response:
    """What write_stream does to a prepared StreamResponse: writes, then maybe write_eof."""

    def __init__(self) -> None:
        self.body = b""
        self.eof = False

    async def write(self, data: bytes) -> None:
        assert not self.eof
        self.body += data

    async def write_eof(self) -> None:
        self.eof = True


FRAMES = [b"a;", b"b;", b"c;", b"d;"]


async def _write(spec: str, gap: float = 0.0) -> tuple[bool, _Request, _Response]:
    request, resp = _Request(), _Response()
    complete = await write_stream(request, resp, Behaviour.parse(spec), FRAMES, gap, b"ERR;", b"BAD;")
    return complete, request, resp


@pytest.mark.parametrize(
    "spec, complete, body, eof",
    [
        ("", True, b"a;b;c;d;", True),
        ("truncate_after=2", False, b"a;b;", True),
        ("truncate_after=0", False, b"", True),
        ("error_after=1", False, b"a;ERR;", True),
        ("error_after=4", True, b"a;b;c;d;", True),  # past the last frame: no fault
        ("malformed", True, b"a;b;c;BAD;", True),
        ("malformed,truncate_after=3", False, b"a;b;c;", True),
        ("reset_after=2", False, b"a;b;", False),
    ],
)
async def test_write_stream_faults_count_frames(spec, complete, body, eof):
    got, request, resp = await _write(spec)
    assert (got, resp.body, resp.eof) == (complete, body, eof)
    assert request.transport.aborted == spec.startswith("reset_after")


async def test_write_stream_waits_the_gap_between_frames_only():
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await _write("", gap=0.1)
    assert 3 * 0.1 - 0.01 <= loop.time() - t0 < 4 * 0.1


def test_cut_reply_stop_before_length():
    from loadtest.emulators.behaviour import cut_reply

    assert cut_reply("alpha beta gamma", ["gamma", "beta"], 1) == ("alpha ", "stop", "beta")
    assert cut_reply("alpha beta", "beta", None) == ("alpha ", "stop", "beta")
    assert cut_reply("one two three", None, 2) == ("one two ", "length", None)
    assert cut_reply("short", [], 100) == ("short", None, None)


@pytest.mark.parametrize("mode, last_user, forced, expected", [
    ("auto", "use clock then lookup", False, ["lookup", "clock"]),  # offered order
    ("auto", "nothing named", False, []),
    ("auto", None, False, []),  # after a tool result
    ("none", "use lookup", True, []),
    ("required", "hello", False, ["lookup"]),
    ("required", "use clock", False, ["clock"]),
    ("clock", "use lookup", False, ["clock"]),
    ("other", "use lookup", False, []),
    ("auto", "hello", True, ["lookup"]),
])
def test_tools_to_call_rows(mode, last_user, forced, expected):
    from loadtest.emulators.behaviour import tools_to_call

    assert tools_to_call(["lookup", "clock"], mode, last_user, forced) == expected
    assert tools_to_call([], "auto", "x", True) == ["get_weather"]


def test_defect_names_keep_underscores_text_turns_them_into_spaces():
    from loadtest.emulators.behaviour import Behaviour

    b = Behaviour.parse("defect=no_done,text=a_b")
    assert (b.defect, b.text) == ("no_done", "a b")
