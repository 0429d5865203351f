"""proxy/config_yaml.py: alias bombs, deep nesting, cycles and duplicate keys are refused with one line
naming the place; merges and ordinary anchors still work."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap

import pytest

from proxy.cli import check_config
from proxy.config import ConfigError, load_config_text
from proxy.config_yaml import MAX_DEPTH, YAMLConfigError, load_yaml

BASE = """
backends:
  local: {provider: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  - {name: m, backend: local}
"""


def alias_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\nserver: {{log_level: *a{levels - 1}}}\n"


def one_line_error(text: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config_text(text, env={})
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("config line "), msg
    return msg


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_alias_bomb_is_refused_by_check_config_in_bounded_memory(tmp_path):
    """Before: `check-config` on this 700-byte file grew to gigabytes expanding every alias."""
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    code = "from proxy.cli import main; raise SystemExit(main(['check-config', %r]))" % str(path)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          preexec_fn=_limit_memory, env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "expands to more than" in lines[0] and "config line " in lines[0]


def test_small_alias_bomb_names_the_alias():
    msg = one_line_error(alias_bomb(6))  # 9^6 = 531,441 values
    assert "expands to more than 100000 values" in msg


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 50_000])
def test_deep_nesting_is_refused_not_a_recursion_error(depth, tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text("server:\n  x: " + "[" * depth + "]" * depth + "\n")
    assert check_config(str(path)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"nested more than {MAX_DEPTH} levels deep" in err and "config line 2" in err


def test_nesting_up_to_the_limit_is_read():
    doc = load_yaml("x: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))
    assert isinstance(doc["x"], list)


def test_alias_cycle_is_refused():
    msg = one_line_error("a: &a [1, *a]\n")
    assert "alias *a refers to a value that contains it" in msg and "line 1" in msg


@pytest.mark.parametrize("text, line, key", [
    (BASE + "models: []\n", 6, "models"),
    ("backends:\n  b:\n    provider: openai\n    api_key: one\n    api_key: two\n", 5, "api_key"),
    ("models:\n  - {name: m, name: n, backend: b}\n", 2, "name"),
    ("server:\n  port: 1\n  'port': 2\n", 3, "port"),
])
def test_duplicate_keys_are_refused(text, line, key):
    msg = one_line_error(text)
    assert f"config line {line}," in msg and f"duplicate key {key!r}" in msg


def test_merge_keys_may_be_overridden_and_anchors_still_work():
    cfg = load_config_text(textwrap.dedent("""
        backends:
          a: &common {provider: openai, base_url: "http://127.0.0.1:9/v1", max_connections: 8}
          b: {<<: *common, max_connections: 16}
          c: *common
        models:
          - {name: m, backend: a}
    """), env={})
    assert [cfg.backends[n].max_connections for n in "abc"] == [8, 16, 8]
    assert cfg.backends["b"].base_url == "http://127.0.0.1:9/v1"


def test_invalid_yaml_is_one_line_naming_the_place():
    with pytest.raises(YAMLConfigError) as err:
        load_yaml("a: [1, 2\nb: 3\n")
    assert "\n" not in str(err.value) and str(err.value).startswith("config line ")
