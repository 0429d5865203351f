"""Prefix affinity (proxy/affinity.py): the rendered prompt prefix, a ring that every process builds
alike, bounded loads and where a full server's requests spill."""

from __future__ import annotations

import collections
import json
import math
import os
import subprocess
import sys

import pytest

from adapters import ir
from proxy.affinity import Ring, pick, prefix_key, prompt_prefix, stable_hash

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LABELS = [("vllm-a/llama", 1.0), ("vllm-b/llama", 1.0), ("vllm-c/llama", 1.0)]


def chat(system: str, *turns: str, **kw) -> ir.ChatRequest:
    msgs = [ir.Message(role="user" if i % 2 == 0 else "assistant", parts=[ir.Text(t)]) for i, t in enumerate(turns)]
    return ir.ChatRequest(model="m", system=[ir.Text(system)] if system else [], messages=msgs, **kw)


# -- the prompt prefix --------------------------------------------------------------------------------


def test_prefix_is_roles_and_text_in_order_cut_at_chars():
    req = chat("Be brief.", "Hello", "Hi!", "More")
    assert prompt_prefix(req, 1000) == "system\nBe brief.\nuser\nHelloassistant\nHi!user\nMore"
    assert prompt_prefix(req, 12) == "system\nBe br"
    assert len(prompt_prefix(chat("x" * 5000, "q"), 2048)) == 2048


def test_same_system_prompt_same_key_whatever_follows_the_window():
    system = "You are a support agent for ACME. " * 80  # longer than the window
    keys = {prefix_key(prompt_prefix(chat(system, f"question {i}"), 2048)) for i in range(20)}
    assert len(keys) == 1
    other = prefix_key(prompt_prefix(chat(system.replace("ACME", "Initech"), "question"), 2048))
    assert other not in keys


def test_tools_images_tool_turns_and_legacy_prompts_count():
    base = chat("s", "q")
    with_tool = chat("s", "q", tools=[ir.ToolDef(name="get_weather")])
    assert prompt_prefix(base, 100) != prompt_prefix(with_tool, 100)
    img = ir.ChatRequest(model="m", messages=[ir.Message(role="user", parts=[ir.Image(url="https://x/cat.png")])])
    assert "https://x/cat.png" in prompt_prefix(img, 100)
    call = ir.ChatRequest(model="m", messages=[
        ir.Message(role="assistant", parts=[ir.ToolCall(id="1", name="f", arguments='{"a":1}')]),
        ir.Message(role="tool", parts=[ir.ToolResult(tool_call_id="1", content=[ir.Text("42")])])])
    assert prompt_prefix(call, 100) == 'assistant\nf{"a":1}tool\n42'
    assert prompt_prefix(ir.ChatRequest(model="m", prompt="abcdef"), 3) == "abc"


# -- the ring ----------------------------------------------------------------------------------------


def test_stable_hash_is_not_pythons_salted_hash():
    assert stable_hash(b"vllm-a/llama#0") == int.from_bytes(
        __import__("hashlib").blake2b(b"vllm-a/llama#0", digest_size=8).digest(), "big")


OWNERS_SCRIPT = """
import json, sys
from proxy.affinity import Ring, prefix_key
ring = Ring(json.loads(sys.argv[1]))
print(json.dumps([next(ring.walk(prefix_key(f"system prompt {i}"))) for i in range(200)]))
"""


def test_replicas_agree_on_every_owner_across_processes_and_hash_seeds():
    runs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": ROOT}
        out = subprocess.run([sys.executable, "-c", OWNERS_SCRIPT, json.dumps(LABELS)], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=60, check=True)
        runs.add(out.stdout)
    ring = Ring(LABELS)
    here = json.dumps([next(ring.walk(prefix_key(f"system prompt {i}"))) for i in range(200)])
    assert runs == {here + "\n"}


def test_ring_spreads_keys_evenly_and_by_weight():
    counts = collections.Counter(next(Ring(LABELS).walk(prefix_key(f"p{i}"))) for i in range(6000))
    assert all(1600 < c < 2400 for c in counts.values()), counts
    weighted = Ring([("a", 3.0), ("b", 1.0)])
    counts = collections.Counter(next(weighted.walk(prefix_key(f"p{i}"))) for i in range(4000))
    assert 2600 < counts["a"] < 3400, counts


def test_adding_a_server_moves_only_its_share_of_keys():
    before, after = Ring(LABELS), Ring([*LABELS, ("vllm-d/llama", 1.0)])
    keys = [prefix_key(f"p{i}") for i in range(4000)]
    moved = [k for k in keys if next(before.walk(k)) != next(after.walk(k))]
    assert all(next(after.walk(k)) == "vllm-d/llama" for k in moved)  # nothing moves between old servers
    assert 0.15 < len(moved) / len(keys) < 0.35


def test_walk_visits_every_server_once_from_the_owner():
    ring = Ring(LABELS)
    for i in range(50):
        order = list(ring.walk(prefix_key(f"k{i}")))
        assert sorted(order) == sorted(label for label, _ in LABELS)


# -- bounded loads ------------------------------------------------------------------------------------


def choose(ring, key, loads, weights=None, max_imbalance=1.25, candidates=None):
    names = candidates or list(loads)
    weights = weights or {}
    return pick(ring, key, names, lambda d: d, lambda d: weights.get(d, 1.0), lambda d: loads[d], max_imbalance)


def owners_for(ring: Ring, key: int) -> list[str]:
    return list(ring.walk(key))


def test_owner_takes_it_while_under_its_share():
    ring = Ring(LABELS)
    key = prefix_key("shared system prompt")
    owner, second, third = owners_for(ring, key)
    # 6 in flight: capacity = ceil(1.25 * 7 / 3) = 3 per server.
    assert choose(ring, key, {owner: 2, second: 2, third: 2}) == (owner, True)
    assert choose(ring, key, {owner: 3, second: 2, third: 1}) == (second, False)  # full: the next on the ring
    assert choose(ring, key, {owner: 3, second: 3, third: 0}) == (third, False)


def test_capacity_is_ceil_of_imbalance_times_load_plus_one_over_servers():
    ring = Ring(LABELS)
    key = prefix_key("x")
    owner, second, _ = owners_for(ring, key)
    for total in range(0, 40):
        cap = math.ceil(1.25 * (total + 1) / 3)
        rest = total - (cap - 1)
        loads = {label: 0 for label, _ in LABELS}
        loads[owner] = cap - 1
        loads[second] = rest  # may exceed its own cap; the owner is still under
        assert choose(ring, key, loads)[0] == owner
        loads[owner], loads[second] = cap, max(0, total - cap)
        assert choose(ring, key, loads)[0] != owner


def test_weights_scale_the_share():
    ring = Ring([("a", 3.0), ("b", 1.0)])
    key = next(k for k in (prefix_key(f"w{i}") for i in range(100)) if next(ring.walk(k)) == "b")
    # 4 in flight: b's cap = ceil(1.25 * 5 * 1/4) = 2, a's = ceil(1.25 * 5 * 3/4) = 5.
    assert choose(ring, key, {"a": 2, "b": 1}, {"a": 3.0, "b": 1.0}) == ("b", True)
    assert choose(ring, key, {"a": 2, "b": 2}, {"a": 3.0, "b": 1.0}) == ("a", False)


def test_ejected_or_tried_servers_are_skipped_and_none_left_is_none():
    ring = Ring(LABELS)
    key = prefix_key("k")
    owner, second, third = owners_for(ring, key)
    assert choose(ring, key, {second: 0, third: 0}, candidates=[second, third]) == (second, True)
    assert pick(ring, key, [], lambda d: d, lambda d: 1.0, lambda d: 0.0, 1.25) is None
    assert choose(ring, key, {"not-on-ring": 0}) is None


def test_no_server_goes_over_its_bound_under_a_stream_of_one_hot_prefix():
    ring = Ring(LABELS)
    loads = {label: 0 for label, _ in LABELS}
    key = prefix_key("the one hot system prompt")
    for n in range(60):  # requests arrive and stay in flight
        chosen, _ = choose(ring, key, loads)
        cap = math.ceil(1.25 * (n + 1) / 3)
        assert loads[chosen] < cap
        loads[chosen] += 1
    assert max(loads.values()) <= math.ceil(1.25 * 61 / 3)


@pytest.mark.parametrize("imbalance", [1.0, 1.25, 2.0])
def test_many_prefixes_stay_within_the_bound(imbalance):
    ring = Ring(LABELS)
    loads = {label: 0 for label, _ in LABELS}
    for i in range(300):
        chosen, _ = choose(ring, prefix_key(f"prompt {i % 20}"), loads, max_imbalance=imbalance)
        loads[chosen] += 1
    mean = 300 / 3
    assert max(loads.values()) <= math.ceil(imbalance * 301 / 3)
    assert max(loads.values()) / mean <= imbalance + 0.02
