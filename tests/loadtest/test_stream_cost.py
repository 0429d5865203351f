"""The stream-translation micro-benchmark: event-boundary cuts per framing, and one real run per
common pair against the emulators (shape only: CPU figures are reported, never asserted)."""

from __future__ import annotations

import pytest

from loadtest.bench import stream_cost


@pytest.mark.parametrize(("body", "fmt", "reads"), [
    (b"data: a\n\ndata: b\n\n", "openai", [b"data: a\n\n", b"data: b\n\n"]),
    (b"data: a\r\n\r\ndata: b\r\n\r\n", "gemini", [b"data: a\r\n\r\n", b"data: b\r\n\r\n"]),
    (b"event: e\ndata: a\n\ndata: tail", "anthropic", [b"event: e\ndata: a\n\n", b"data: tail"]),
    (b'{"a":1}\n{"b":2}\n', "ollama", [b'{"a":1}\n', b'{"b":2}\n']),
])  # fmt: skip
def test_frames_cut_after_each_event(body, fmt, reads):
    assert stream_cost.frames(body, fmt) == reads
    assert b"".join(stream_cost.frames(body, fmt)) == body


async def test_every_common_pair_translates_recorded_streams():
    costs = await stream_cost.run(list(stream_cost.COMMON), chunks=6, repeat=2)
    assert [c.pair for c in costs] == list(stream_cost.COMMON)
    for c in costs:
        assert c.events >= 6 and c.out_bytes > 0  # the client got a translated stream
        assert c.decode_us > 0 and c.encode_us > 0
    table = stream_cost.markdown(costs).splitlines()
    assert len(table) == 2 + len(costs) and table[2].startswith("| openai->anthropic |")
