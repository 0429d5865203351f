"""Scenario helpers shared by the emulators (loadtest/emulators/behaviour.py)."""

from __future__ import annotations

import pytest

from loadtest.emulators.behaviour import last_user_text

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
