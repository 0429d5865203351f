"""deploy/docker-compose.yml and deploy/config.yaml: the services reference each other consistently
(names, ports, mounts, commands), emulators need no keys, and the proxy accepts the config."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import yaml
from deploy_support import DEPLOY, REPO

from proxy.config import load_config_text

COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
CONFIG_TEXT = (DEPLOY / "config.yaml").read_text()
CONFIG = yaml.safe_load(CONFIG_TEXT)
EMULATOR_FORMATS = {"openai", "anthropic", "ollama", "tgi", "llamacpp", "replicate"}


def mounts(service: str) -> dict[str, str]:
    """host path -> container path."""
    out = {}
    for v in SERVICES[service].get("volumes", []):
        src, dst, *_ = v.split(":")
        out[src] = dst
    return out


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def emulators() -> dict[str, tuple[str, int]]:
    """service name -> (format, port) for every `llm-proxy emulate` service."""
    out = {}
    for name, svc in SERVICES.items():
        cmd = svc.get("command") or []
        if cmd[:1] == ["emulate"]:
            out[name] = (cmd[1], int(flag(cmd, "--port")))
    return out


def test_stack_services():
    assert {"proxy", "prometheus", "grafana"} <= set(SERVICES)
    assert len(emulators()) >= 2


def test_proxy_builds_the_image_and_serves_on_4000():
    proxy = SERVICES["proxy"]
    assert (DEPLOY / proxy["build"]["context"]).resolve() == REPO
    assert (REPO / proxy["build"]["dockerfile"]).exists()
    assert proxy["command"] == ["serve"]
    assert "4000:4000" in proxy["ports"]
    assert mounts("proxy")["./config.yaml"] == "/etc/llm-proxy/config.yaml"
    # longer than the proxy's default drain (30 s), so SIGTERM can finish streams
    assert int(proxy["stop_grace_period"].rstrip("s")) > 30


@pytest.mark.parametrize("name", sorted(emulators()))
def test_emulators_run_the_same_image_without_keys(name):
    svc = SERVICES[name]
    fmt, port = emulators()[name]
    assert fmt in EMULATOR_FORMATS
    assert svc["image"] == SERVICES["proxy"]["image"]
    assert flag(svc["command"], "--host") == "0.0.0.0"
    assert str(port) in svc["expose"]
    assert svc["healthcheck"]["test"][-1] == str(port)  # the TCP check probes the port it serves
    assert not any("KEY" in k for k in svc.get("environment", {}))


@pytest.mark.parametrize("backend", sorted(CONFIG["backends"]))
def test_config_backends_point_at_emulators_of_their_format(backend):
    b = CONFIG["backends"][backend]
    url = urlsplit(b["base_url"])
    fmt, port = emulators()[url.hostname]
    assert b["provider"] == fmt and url.port == port
    # No secret from the environment: the Anthropic emulator wants *a* key (as the real API does),
    # and any fixed placeholder will do.
    assert "${" not in str(b.get("api_key", ""))
    assert url.hostname in SERVICES["proxy"]["depends_on"]


def test_config_models_route_to_configured_backends():
    names = {m["name"] for m in CONFIG["models"]}
    for m in CONFIG["models"]:
        assert m["backend"] in CONFIG["backends"]
        assert set(m.get("fallbacks", [])) <= names


def test_traffic_service_uses_configured_models():
    svc = SERVICES["traffic"]
    assert svc["profiles"] == ["traffic"] and svc["image"] == SERVICES["proxy"]["image"]
    assert svc["entrypoint"][-1] == "/opt/llm-proxy/traffic.py"
    args = svc["command"]
    assert urlsplit(args[0]).hostname == "proxy" and urlsplit(args[0]).port == 4000
    models = {a.split("=", 1)[1] for a in args if a.startswith(("--openai-model=", "--anthropic-model="))}
    assert models <= {m["name"] for m in CONFIG["models"]}
    assert float(next(a for a in args if a.startswith("--duration=")).split("=")[1]) > 0  # bounded


def test_prometheus_and_grafana_mounts():
    prom = mounts("prometheus")
    assert prom["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    rule_files = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["rule_files"]
    assert [f"/etc/prometheus/{f}" for f in rule_files] == [prom["./prometheus/alerts.yml"]]
    assert "--config.file=/etc/prometheus/prometheus.yml" in SERVICES["prometheus"]["command"]
    assert "9090:9090" in SERVICES["prometheus"]["ports"] and "3000:3000" in SERVICES["grafana"]["ports"]
    for src in list(prom) + list(mounts("grafana")) + list(mounts("proxy")):
        if src.startswith("./"):
            assert (DEPLOY / src).exists(), src


def test_proxy_accepts_the_config():
    cfg = load_config_text(CONFIG_TEXT, env={})
    assert cfg.auth.keys == ["sk-local-demo"]  # the ${PROXY_KEY:-...} default
    assert cfg.server.port == 4000
    assert {m.name for m in cfg.models} == {m["name"] for m in CONFIG["models"]}
    assert load_config_text(CONFIG_TEXT, env={"PROXY_KEY": "k"}).auth.keys == ["k"]


def test_proxy_state_is_the_compose_redis():
    # The image's default config keeps a SQLite file; the compose proxy is pointed at the Redis service.
    assert load_config_text(CONFIG_TEXT, env={}).state.url.startswith("sqlite:///")
    url = SERVICES["proxy"]["environment"]["LLM_PROXY_STATE_URL"]
    assert load_config_text(CONFIG_TEXT, env={"LLM_PROXY_STATE_URL": url}).state.url == url
    host, port = urlsplit(url).hostname, urlsplit(url).port
    redis = SERVICES[host]
    assert str(port) in redis["expose"] and "ports" not in redis  # reachable by the proxy only
    assert host in SERVICES["proxy"]["depends_on"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in redis["volumes"])
