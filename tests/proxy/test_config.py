"""Config loading: interpolation, validation with field paths, provider options, check-config."""

import pytest

from proxy.cli import check_config
from proxy.config import ConfigError, interpolate, load_config_text

BASE = """
backends:
  local: {provider: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  - {name: m, backend: local}
"""


def test_minimal_config_defaults():
    cfg = load_config_text(BASE, env={})
    assert cfg.server.port == 4000 and cfg.server.host == "127.0.0.1"
    assert cfg.backends["local"].timeouts.first_byte == 60
    assert cfg.models[0].unsupported_params == "drop"
    assert cfg.auth is None


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("pre-${A}-post", {"A": "x"}, "pre-x-post"),
        ("${A:-dflt}", {}, "dflt"),
        ("${A:-}", {}, ""),
        ("${A:-dflt}", {"A": "set"}, "set"),
        ("${A}${B}", {"A": "1", "B": "2"}, "12"),
        ("no vars", {}, "no vars"),
    ],
)
def test_interpolation_rows(value, env, expected):
    assert interpolate(value, env) == expected


def test_missing_variable_names_it_and_the_field():
    text = BASE + 'auth: {keys: ["${PROXY_KEY}"]}\n'
    with pytest.raises(ConfigError) as exc:
        load_config_text(text, env={})
    assert "PROXY_KEY" in str(exc.value) and "auth.keys[0]" in str(exc.value)


def test_interpolated_values_cannot_change_structure():
    cfg = load_config_text(BASE + 'auth: {keys: ["${K}"]}\n', env={"K": "a: [b, c]"})
    assert cfg.auth.keys == ["a: [b, c]"]


@pytest.mark.parametrize(
    ("snippet", "path"),
    [
        ("server: {port: nope}", "server.port"),
        ("server: {prot: 1}", "server"),
        ('backends: {local: {provider: openai, base_url: "http://x/v1", timeouts: {connect: "soon"}}}', "backends.local.timeouts.connect"),
        ('backends: {local: {provider: nosuch, base_url: "http://x"}}', "backends.local.provider"),
        ('backends: {local: {provider: openai}}', "backends.local.base_url"),
        ('backends: {local: {provider: openai, base_url: "http://x/v1", bogus_option: 1}}', "backends.local"),
    ],
)
def test_errors_name_the_field_path(snippet, path):
    doc = snippet + "\nmodels: []\n"
    with pytest.raises(ConfigError) as exc:
        load_config_text(doc, env={})
    assert str(exc.value).startswith(path), str(exc.value)


@pytest.mark.parametrize(
    ("models", "fragment"),
    [
        ("- {name: m, backend: nosuch}", "unknown backend 'nosuch'"),
        ("- {name: m, backend: local}\n  - {name: m, backend: local}", "duplicate model name"),
        ("- {name: m}", "either `backend`"),
        ("- {name: 'a*b*', backend: local}", "at most one '*'"),
        ("- {name: m, backend: local, fallbacks: [zz]}", "unknown model 'zz'"),
        ("- {name: m, backend: local, unsupported_params: maybe}", "models[0].unsupported_params"),
    ],
)
def test_model_errors(models, fragment):
    text = 'backends:\n  local: {provider: openai, base_url: "http://x/v1"}\nmodels:\n  ' + models + "\n"
    with pytest.raises(ConfigError) as exc:
        load_config_text(text, env={})
    assert fragment in str(exc.value)


def test_empty_auth_keys_refused():
    with pytest.raises(ConfigError, match="auth.keys"):
        load_config_text(BASE + 'auth: {keys: ["${K:-}"]}\n', env={})


def test_check_config_prints_routing_table(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(BASE + '  - {name: "together/*", backend: local}\n')
    assert check_config(str(path)) == 0
    out = capsys.readouterr().out
    assert "ok: 1 backends, 2 models" in out
    assert "together/*" in out and "local" in out


def test_check_config_reports_errors(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("server: {port: x}\n")
    assert check_config(str(path)) == 2
    assert "server.port" in capsys.readouterr().err


def test_adapter_refusing_its_options_names_the_backend():
    from proxy.pools import build_backends

    cfg = load_config_text('backends: {v: {provider: openai, preset: nosuch, base_url: "http://x/v1"}}\nmodels: []\n', env={})
    with pytest.raises(ConfigError, match=r"^backends\.v: unknown preset 'nosuch'"):
        build_backends(cfg)


def test_provider_default_base_url():
    from proxy.pools import build_backends

    cfg = load_config_text("backends: {r: {provider: replicate, api_key: k}}\nmodels: []\n", env={})
    assert build_backends(cfg)["r"].adapter.base_url == "https://api.replicate.com"


CLOUD = """
backends:
  vx: {provider: vertex, project: my-project, location: us-central1}
  co: {provider: cohere, api_key: k}
models:
"""


def test_provider_specific_model_keys_reach_the_target():
    from proxy.pools import build_backends
    from proxy.routing import Router

    cfg = load_config_text(CLOUD + """
  - {name: claude, backend: vx, model: claude-3-5-sonnet-v2@20241022, location: us-east5}
  - {name: tuned, backend: vx, model: my-model, publisher: anthropic, max_tokens: 100}
  - {name: gem, backend: vx, model: gemini-2.0-flash}
""", env={})
    targets = {r.name: r.deployments[0].target for r in Router(cfg, build_backends(cfg)).exact.values()}
    assert targets["claude"].options.location == "us-east5" and targets["claude"].options.publisher is None
    assert targets["tuned"].options.publisher == "anthropic" and targets["tuned"].default_max_tokens == 100
    assert targets["gem"].options is None


@pytest.mark.parametrize("entry,message", [
    ("{name: c, backend: co, location: us-east5}", "models[0].location: unknown field (provider 'cohere' has no per-model settings)"),
    ("{name: v, backend: vx, publisher: meta}", "models[0].publisher: Invalid enum value 'meta'"),
    ("{name: v, backend: vx, regoin: x}", "models[0]: Object contains unknown field `regoin`"),
    ("{name: v, backend: vx, location: ../x}", "models[0].location: Expected `str` matching regex"),
])
def test_provider_specific_model_keys_are_checked(entry, message):
    with pytest.raises(ConfigError) as e:
        load_config_text(CLOUD + f"  - {entry}\n", env={})
    assert str(e.value).startswith(message)


def test_vertex_without_the_extra_names_it(monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "proxy.auth_google", raising=False)
    monkeypatch.setitem(sys.modules, "google.auth", None)
    from proxy.pools import build_backends

    cfg = load_config_text(CLOUD + "  - {name: g, backend: vx}\n", env={})
    with pytest.raises(ConfigError, match=r"backends\.vx: provider vertex needs: pip install -e '\.\[vertex\]'"):
        build_backends(cfg)


ISSUE_SHAPE = """
backends:
  vllm-a: {provider: openai, preset: vllm, base_url: "http://10.0.0.5:8000/v1",
           load: {metrics_url: "http://10.0.0.5:8000/metrics", interval: 0.5}}
  vllm-b: {provider: openai, preset: vllm, base_url: "http://10.0.0.6:8000/v1",
           load: {metrics_url: "http://10.0.0.6:8000/metrics"}}
  other: {provider: openai, base_url: "http://10.0.0.7:8000/v1",
          load: {metrics_url: "http://10.0.0.7:9100/metrics", metrics: {waiting: q, running: r, kv_cache: kv}}}
models:
  - name: llama-3.1-8b
    deployments: [{backend: vllm-a}, {backend: vllm-b}]
    strategy: load-aware
    prefix_affinity: {chars: 2048, max_imbalance: 1.25}
"""


def test_load_aware_config_shape():
    cfg = load_config_text(ISSUE_SHAPE, env={})
    a, b, other = cfg.backends["vllm-a"].load, cfg.backends["vllm-b"].load, cfg.backends["other"].load
    assert (a.metrics_url, a.interval, b.interval, b.timeout) == ("http://10.0.0.5:8000/metrics", 0.5, 1.0, 1.0)
    assert (other.metrics.waiting, other.metrics.running, other.metrics.kv_cache) == ("q", "r", "kv")
    m = cfg.models[0]
    assert m.strategy == "load-aware" and (m.prefix_affinity.chars, m.prefix_affinity.max_imbalance) == (2048, 1.25)
    assert load_config_text(BASE.replace("backend: local}", "backend: local, prefix_affinity: {}}"),
                            env={}).models[0].prefix_affinity.chars == 2048


@pytest.mark.parametrize(("old", "new", "message"), [
    ('interval: 0.5', 'interval: 0.01', "backends.vllm-a.load.interval: must be >= 0.05"),
    ('"http://10.0.0.5:8000/metrics"', '"file:///etc/passwd"', "backends.vllm-a.load.metrics_url: must be an http"),
    ('interval: 0.5}', 'interval: 0.5, timeout: 0}', "backends.vllm-a.load.timeout: must be > 0"),
    ('interval: 0.5}', 'interval: 0.5, capacity: 0}', "backends.vllm-a.load.capacity: must be >= 1"),
    ('interval: 0.5}', 'interval: 0.5, capacity: 2.5}', "backends.vllm-a.load.capacity: Expected `int | null`, got `float`"),
    ('interval: 0.5}', 'interval: 0.5, every: 1}', "backends.vllm-a.load: Object contains unknown field `every`"),
    ('{waiting: q,', '{queue: q,', "backends.other.load.metrics: Object contains unknown field `queue`"),
    ("chars: 2048", "chars: 0", "models[0].prefix_affinity.chars: must be >= 1"),
    ("max_imbalance: 1.25", "max_imbalance: 0.9", "models[0].prefix_affinity.max_imbalance: must be >= 1.0"),
    ("strategy: load-aware", "strategy: load-awareness", "models[0].strategy"),
])
def test_load_aware_config_errors(old, new, message):
    assert old in ISSUE_SHAPE
    with pytest.raises(ConfigError) as err:
        load_config_text(ISSUE_SHAPE.replace(old, new), env={})
    assert message in str(err.value)
