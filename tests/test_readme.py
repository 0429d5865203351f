"""The README's examples are real: every YAML block is a valid config and its Quickstart has exactly
the two commands the project promises (the CI script runs the second one verbatim)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from proxy.config import load_config_text
from proxy.pools import build_backends
from proxy.routing import Router

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
YAML_BLOCKS = re.findall(r"```yaml\n(.*?)```", README, re.S)
ENV = {name: f"test-value-{name}" for name in re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", README)}


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=[f"block{i}" for i in range(len(YAML_BLOCKS))])
def test_yaml_blocks_are_valid_configs(block):
    doc = yaml.safe_load(block)
    # Fragments that reference backends defined in another block get stand-ins.
    backends = doc.setdefault("backends", {})
    for m in doc.get("models", []):
        for name in [m.get("backend")] + [d["backend"] for d in m.get("deployments") or []]:
            if name and name not in backends:
                backends[name] = {"provider": "openai", "base_url": "http://127.0.0.1:9/v1"}
    cfg = load_config_text(yaml.safe_dump(doc), env=ENV)
    Router(cfg, build_backends(cfg))  # chat templates and provider options resolve too


def test_quickstart_has_the_two_commands():
    quick = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", quick, re.S)
    assert len(commands) == 2
    assert commands[0].endswith("llm-proxy demo")
    assert "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci
