"""The per-step translation micro-benchmark: one real run per pair against the emulators (shape only:
CPU figures are reported, never asserted)."""

from __future__ import annotations

import orjson

from loadtest.bench import translate_cost


async def test_every_pair_runs_each_step_on_recorded_answers():
    recorded = await translate_cost.answers(list(translate_cost.PAIRS))
    for pair in translate_cost.PAIRS:
        fns, _ = translate_cost.steps(pair, recorded[pair])
        assert list(fns) == list(translate_cost.STEPS)
        body = orjson.loads(fns["request"]().body)  # what the backend adapter sends
        assert body["model"] == "bench-model" and body["messages"]
        answer = orjson.loads(fns["render"]())  # the emulator's answer in the client's format
        assert answer["model"] == "bench-model"
        assert "echo" in orjson.dumps(answer).decode()  # the emulator's text reached the client
    table = translate_cost.markdown(list(translate_cost.PAIRS), recorded, repeat=2, rounds=1).splitlines()
    assert len(table) == 2 + len(translate_cost.PAIRS) and table[2].startswith("| openai->anthropic |")
