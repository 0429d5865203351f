"""deploy/k8s: every cross-reference between the manifests holds (ports, probe paths, config mount,
Secret names, selectors), kustomize renders them, and the built-in objects validate against the
Kubernetes JSON schemas (kubernetes-validate ships them, so this works offline)."""

from __future__ import annotations

import re
import shutil
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml
from deploy_support import DEPLOY, ENDPOINTS, K8S

from proxy.app import create_app
from proxy.config import load_config_text

KUSTOMIZATION = yaml.safe_load((K8S / "kustomization.yaml").read_text())
DOCS, REDIS = {}, {}  # kind -> the proxy's object / Redis's object (redis.yaml)
for _f in KUSTOMIZATION["resources"]:
    for _d in yaml.safe_load_all((K8S / _f).read_text()):
        (REDIS if _d["metadata"]["name"] == "redis" else DOCS)[_d["kind"]] = _d
DEPLOYMENT = DOCS["Deployment"]
POD = DEPLOYMENT["spec"]["template"]["spec"]
(CONTAINER,) = POD["containers"]
SERVICE = DOCS["Service"]
SECRET_EXAMPLE = yaml.safe_load((K8S / "secret.example.yaml").read_text())
CONFIG_TEXT = (K8S / "config.yaml").read_text()
ENV = {e["name"]: e for e in CONTAINER["env"]}


def container_port(ref) -> int:
    """A port given by number or by the container port's name."""
    if isinstance(ref, int):
        return ref
    (port,) = [p["containerPort"] for p in CONTAINER["ports"] if p["name"] == ref]
    return port


def probes() -> dict[str, dict]:
    return {k: CONTAINER[k] for k in ("startupProbe", "livenessProbe", "readinessProbe") if k in CONTAINER}


def test_kustomization_lists_every_manifest_but_the_secret_example():
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "config.yaml"}
    assert set(KUSTOMIZATION["resources"]) == on_disk - {"secret.example.yaml"}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor",
            "PrometheusRule"} <= set(DOCS)


def test_container_port_service_target_port_and_probe_ports_agree():
    port = container_port("http")
    assert port == 4000 == int(ENV["LLM_PROXY_PORT"]["value"])
    (svc_port,) = SERVICE["spec"]["ports"]
    assert container_port(svc_port["targetPort"]) == port
    for name, probe in probes().items():
        assert container_port(probe["httpGet"]["port"]) == port, name


def test_probe_paths_are_proxy_endpoints():
    p = probes()
    assert p["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert p["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert {pr["httpGet"]["path"] for pr in p.values()} <= ENDPOINTS


def test_probe_paths_are_routes_of_the_real_app():
    cfg = load_config_text(CONFIG_TEXT, env={k: "x" for k in secret_keys()})
    app = create_app(cfg)
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert {pr["httpGet"]["path"] for pr in probes().values()} | {"/metrics"} <= paths


def test_config_map_key_is_mounted_where_the_container_reads_the_config():
    (gen,) = KUSTOMIZATION["configMapGenerator"]
    (key,) = gen["files"]
    volumes = {v["name"]: v for v in POD["volumes"]}
    (mount,) = [m for m in CONTAINER["volumeMounts"] if volumes[m["name"]].get("configMap")]
    assert volumes[mount["name"]]["configMap"]["name"] == gen["name"]
    assert mount["subPath"] == key and mount["readOnly"]
    assert mount["mountPath"] == ENV["LLM_PROXY_CONFIG"]["value"] == "/etc/llm-proxy/config.yaml"
    assert CONTAINER["args"] == ["serve"]  # the entrypoint's serve reads $LLM_PROXY_CONFIG


def secret_keys() -> set[str]:
    return set(SECRET_EXAMPLE["stringData"])


def test_secret_references_exist_in_the_documented_example():
    refs = [e["valueFrom"]["secretKeyRef"] for e in CONTAINER["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    assert refs
    for ref in refs:
        assert ref["name"] == SECRET_EXAMPLE["metadata"]["name"]
        assert ref["key"] in secret_keys()
    assert SECRET_EXAMPLE["metadata"]["namespace"] == KUSTOMIZATION["namespace"]
    docs = (DEPLOY.parent / "docs" / "DEPLOY.md").read_text()
    assert SECRET_EXAMPLE["metadata"]["name"] in docs and all(k in docs for k in secret_keys())


def test_every_config_variable_comes_from_the_pod_env_and_the_proxy_accepts_it():
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", str(yaml.safe_load(CONFIG_TEXT))))  # values only
    assert used and used <= set(ENV)
    cfg = load_config_text(CONFIG_TEXT, env={k: f"value-of-{k}" for k in used})
    assert cfg.server.host == "0.0.0.0" and cfg.server.port == 4000
    assert cfg.auth.keys == ["value-of-PROXY_KEY"]
    # the drain must fit in the grace period after the preStop sleep
    sleep = int(CONTAINER["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert POD["terminationGracePeriodSeconds"] > sleep + cfg.server.drain_timeout


def test_selectors_match_the_pod_labels():
    pod_labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    for selector in (
        DEPLOYMENT["spec"]["selector"]["matchLabels"],
        SERVICE["spec"]["selector"],
        DOCS["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    target = DOCS["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", DEPLOYMENT["metadata"]["name"])


def test_service_monitor_selects_the_service_and_its_metrics_port():
    sm = DOCS["ServiceMonitor"]["spec"]
    assert sm["selector"]["matchLabels"].items() <= SERVICE["metadata"]["labels"].items()
    (ep,) = sm["endpoints"]
    assert ep["port"] in {p["name"] for p in SERVICE["spec"]["ports"]}
    assert ep["path"] == "/metrics"


def test_resources_workers_and_security():
    res = CONTAINER["resources"]
    assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"])
    workers = ENV["LLM_PROXY_WORKERS"]["valueFrom"]["resourceFieldRef"]
    assert workers["resource"] == "limits.cpu"
    assert POD["securityContext"]["runAsNonRoot"] and POD["securityContext"]["runAsUser"] == 10001
    # the image's USER, so file ownership inside the image and the pod agree
    assert "USER 10001:10001" in (DEPLOY / "Dockerfile").read_text()
    assert CONTAINER["securityContext"]["readOnlyRootFilesystem"]
    # read-only root: the metrics dir must be on a writable volume
    writable = [m["mountPath"] for m in CONTAINER["volumeMounts"] if not m.get("readOnly")]
    assert any(ENV["PROMETHEUS_MULTIPROC_DIR"]["value"].startswith(w + "/") for w in writable)
    assert DOCS["PodDisruptionBudget"]["spec"]["minAvailable"] < DOCS["HorizontalPodAutoscaler"]["spec"]["minReplicas"]


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: kustomize rendering not checked")
    out = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return list(yaml.safe_load_all(out.stdout))


def test_kustomize_renders_a_hashed_config_map_the_deployment_uses(rendered):
    by_kind = {d["kind"]: d for d in rendered}
    cm = by_kind["ConfigMap"]
    assert cm["metadata"]["name"].startswith("llm-proxy-config-")  # content hash: config change = rollout
    assert yaml.safe_load(cm["data"]["config.yaml"]) == yaml.safe_load(CONFIG_TEXT)
    vols = by_kind["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert cm["metadata"]["name"] in [v.get("configMap", {}).get("name") for v in vols]
    assert all(d["metadata"].get("namespace", "llm-proxy") == "llm-proxy" for d in rendered)


def test_manifests_validate_against_kubernetes_schemas(rendered):
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate not installed (pip install kubernetes-validate)"
    )
    checked = set()
    for doc in rendered:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: its schema is not bundled
        kv.validate(doc, "1.30.0", strict=True)
        checked.add(doc["kind"])
    assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget", "StatefulSet",
            "NetworkPolicy"} <= checked
    broken = yaml.safe_load(yaml.safe_dump(DEPLOYMENT))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, "1.30.0", strict=True)


def test_replicas_share_one_redis_state_store():
    # Several replicas (Deployment, HPA) with per-key limits need one shared store: state.url names the
    # Redis Service, on its port, with the password every Redis client here gets from the same Secret.
    assert DEPLOYMENT["spec"]["replicas"] > 1
    state_url = yaml.safe_load(CONFIG_TEXT)["state"]["url"]
    cfg = load_config_text(CONFIG_TEXT, env={k: "pw" for k in secret_keys()})
    url = urlsplit(cfg.state.url)
    assert url.scheme == "redis" and url.password == "pw" and "${REDIS_PASSWORD}" in state_url
    svc = REDIS["Service"]
    assert url.hostname == svc["metadata"]["name"]
    (port,) = svc["spec"]["ports"]
    assert url.port == port["port"]
    sts = REDIS["StatefulSet"]
    pod = sts["spec"]["template"]
    (redis,) = pod["spec"]["containers"]
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert port["targetPort"] in {p["name"] for p in redis["ports"]}
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    password = {e["name"]: e for e in redis["env"]}["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password == ENV["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password["key"] in secret_keys() and not password.get("optional")
    args = redis["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"  # kubelet expands it from env


def test_redis_keeps_its_data_and_admits_only_the_proxy():
    sts = REDIS["StatefulSet"]
    (redis,) = sts["spec"]["template"]["spec"]["containers"]
    args = redis["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"  # never drop counters silently
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in redis["volumeMounts"]
    assert redis["securityContext"]["readOnlyRootFilesystem"] and sts["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
    np = REDIS["NetworkPolicy"]["spec"]
    assert np["podSelector"]["matchLabels"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    (rule,) = np["ingress"]
    (source,) = rule["from"]
    assert source["podSelector"]["matchLabels"].items() <= DEPLOYMENT["spec"]["template"]["metadata"]["labels"].items()
