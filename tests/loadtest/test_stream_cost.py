"""The stream-translation micro-benchmark: one real run per common pair against the emulators (shape
only: CPU figures are reported, never asserted).  Its event cuts are lean_backend.frames's."""

from __future__ import annotations

from loadtest.bench import stream_cost


async def test_every_common_pair_translates_recorded_streams():
    costs = await stream_cost.run(list(stream_cost.COMMON), chunks=6, repeat=2)
    assert [c.pair for c in costs] == list(stream_cost.COMMON)
    for c in costs:
        assert c.events >= 6 and c.out_bytes > 0  # the client got a translated stream
        assert c.decode_us > 0 and c.encode_us > 0
    table = stream_cost.markdown(costs).splitlines()
    assert len(table) == 2 + len(costs) and table[2].startswith("| openai->anthropic |")
