"""Config of teams and keys: `auth.keys` entries with limits, `auth.admin_key`, `state`, model prices."""

import hashlib

import pytest

from proxy.config import ConfigError, key_configs, load_config_text, period_seconds

BASE = """
backends:
  local: {provider: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  - {name: llama-3.1-70b, backend: local, price: {input: 0.60, output: 0.80}}
"""

FULL = BASE + """
state:
  url: "redis://redis:6379/0"
  on_error: open
auth:
  admin_key: "${ADMIN}"
  keys:
    - "plain-key"
    - key: "${TEAM_SEARCH_KEY}"
      name: team-search
      models: ["llama-3.1-*", "qwen-*"]
      rpm: 600
      tpm: 200000
      max_parallel: 20
      budget: {usd: 50, period: 30d}
    - key_sha256: "%s"
      name: hashed
""" % ("AB" * 32)


def test_the_issue_shape_loads():
    cfg = load_config_text(FULL, env={"ADMIN": "adm-secret", "TEAM_SEARCH_KEY": "sk-team"})
    assert cfg.state.url == "redis://redis:6379/0" and cfg.state.on_error == "open"
    assert cfg.auth.admin_key == "adm-secret"
    plain, team, hashed = key_configs(cfg.auth)
    assert plain.key == "plain-key" and plain.name == "key-" + hashlib.sha256(b"plain-key").hexdigest()[:8]
    assert plain.rpm is None and plain.models is None and plain.budget is None
    assert (team.name, team.key, team.models) == ("team-search", "sk-team", ["llama-3.1-*", "qwen-*"])
    assert (team.rpm, team.tpm, team.max_parallel) == (600, 200000, 20)
    assert (team.budget.usd, team.budget.period) == (50, "30d")
    assert hashed.key is None and hashed.key_sha256 == "ab" * 32  # normalised to lower case
    assert cfg.models[0].price.input == 0.60 and cfg.models[0].price.output == 0.80


def test_state_defaults_to_sqlite_in_the_working_dir_closed():
    cfg = load_config_text(BASE, env={})
    assert cfg.state.url == "sqlite:///llm-proxy-state.db" and cfg.state.on_error == "closed"
    assert cfg.state.timeout > 0


def test_plain_list_keeps_working_and_an_unset_optional_key_is_dropped():
    cfg = load_config_text(BASE + 'auth: {keys: ["k1", "${K2:-}"]}\n', env={})
    (k1,) = key_configs(cfg.auth)
    assert k1.key == "k1" and k1.rpm is None


@pytest.mark.parametrize("period, seconds", [("1h", 3600), ("1d", 86400), ("7d", 604800), ("30d", 2592000), (None, None)])
def test_budget_periods(period, seconds):
    assert period_seconds(period) == seconds


@pytest.mark.parametrize(
    "keys, where",
    [
        ('[{key: a}]', "auth.keys[0].name"),
        ('[{key: a, name: "has space"}]', "auth.keys[0].name"),
        ('[{key: a, name: x}, {key: b, name: x}]', "auth.keys[1].name"),
        ('[{name: x}]', "auth.keys[0]: give exactly one"),
        ('[{name: x, key: a, key_sha256: "%s"}]' % ("0" * 64), "auth.keys[0]: give exactly one"),
        ('[{name: x, key_sha256: "abc"}]', "auth.keys[0].key_sha256"),
        ('[{name: x, key: a, rpm: 0}]', "auth.keys[0].rpm"),
        ('[{name: x, key: a, tpm: -5}]', "auth.keys[0].tpm"),
        ('[{name: x, key: a, max_parallel: 0}]', "auth.keys[0].max_parallel"),
        ('[{name: x, key: a, budget: {usd: 5, period: 1w}}]', "auth.keys[0].budget.period"),
        ('[{name: x, key: a, budget: {usd: -1}}]', "auth.keys[0].budget.usd"),
        ('[{name: x, key: a, rpm: many}]', "auth.keys[0].rpm"),
        ('[{name: x, key: a, colour: red}]', "auth.keys[0]"),
        ('[{name: x, key: a}, {name: y, key: a}]', "auth.keys[1]: the same key"),
    ],
)
def test_bad_keys_name_the_field(keys, where):
    with pytest.raises(ConfigError) as exc:
        load_config_text(BASE + f"auth: {{keys: {keys}}}\n", env={})
    assert where in str(exc.value)


def test_admin_key_alone_is_enough_and_must_differ_from_client_keys():
    cfg = load_config_text(BASE + "auth: {admin_key: adm}\n", env={})
    assert key_configs(cfg.auth) == [] and cfg.auth.admin_key == "adm"
    with pytest.raises(ConfigError, match="auth.admin_key"):
        load_config_text(BASE + "auth: {admin_key: same, keys: [same]}\n", env={})
    # an unset admin key variable turns the admin API off (and then keys are required)
    with pytest.raises(ConfigError, match="auth.keys"):
        load_config_text(BASE + 'auth: {admin_key: "${ADMIN:-}"}\n', env={})


@pytest.mark.parametrize("state, where", [
    ('{url: "postgres://x"}', "state.url"),
    ('{on_error: maybe}', "state.on_error"),
    ('{timeout: 0}', "state.timeout"),
])
def test_bad_state(state, where):
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        load_config_text(BASE + f"state: {state}\n", env={})


def test_check_config_lists_keys_without_secrets(tmp_path, capsys):
    from proxy.cli import check_config

    path = tmp_path / "c.yaml"
    path.write_text(FULL.replace("${ADMIN}", "adm-secret").replace("${TEAM_SEARCH_KEY}", "sk-team"))
    assert check_config(str(path)) == 0
    out = capsys.readouterr().out
    assert "3 client keys (state: redis); admin API on" in out
    team = next(line for line in out.splitlines() if line.startswith("team-search"))
    assert team.split() == ["team-search", "llama-3.1-*,qwen-*", "600", "200000", "20", "$50/30d"]
    assert "sk-team" not in out and "plain-key" not in out and "adm-secret" not in out
