"""The container image, built from deploy/Dockerfile and run for real wherever a Docker daemon answers.

The image is built once per session (base image from $PYTHON_IMAGE, else python:3.11-slim-bookworm;
`.ci/run` gets a local stand-in from ../shared/ci/offline-base-image.sh).  All containers start up front
on one user-defined network, so their start-up and the first health checks overlap:

    emulator-openai, emulator-anthropic   `emulate ...` with no --host: reachable only if the image
                                          makes every command listen on LLM_PROXY_HOST
    proxy         the default `serve` with the image's own config, --read-only with a tmpfs /tmp
    proxy-1cpu    --cpus 1 (one worker), restarted to show the metrics start from zero again
    proxy-stop    a config with a slow stream model, stopped with `docker stop` mid-stream
    demo          `demo`, reached through -p

Everything this run makes carries the label below and a per-run name; containers, the network and the
image tag are removed by fixture finalizers even when a test fails.  Where no daemon answers, the tests
skip and say why.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import openai
import pytest
import yaml
from deploy_support import DEPLOY, REPO

pytestmark = pytest.mark.timeout(600)  # the first build installs the dependencies from PyPI

DOCKER = os.environ.get("DOCKER") or shutil.which("docker") or "docker"
BASE_IMAGE = os.environ.get("PYTHON_IMAGE") or "python:3.11-slim-bookworm"
RUN_ID = f"llm-proxy-test-{os.getpid()}-{secrets.token_hex(3)}"
LABEL = f"org.opencode.llm-proxy.test-run={RUN_ID}"
BUILD_STAGE_LABEL = "org.opencode.llm-proxy.stage=build"  # deploy/Dockerfile's first stage
KEY = f"sk-{secrets.token_hex(8)}"
UID = "10001"
READY_BUDGET = 60.0  # container start to /health/ready, on a loaded 2-core machine
HEALTH_BUDGET = 60.0  # the image's HEALTHCHECK runs every 10 s; healthy after the first pass
LONG_CHUNKS = 25  # proxy-stop's slow stream: 25 chunks, 0.1 s apart


def docker(*args: str, timeout: float = 60, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and res.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} ... failed ({res.returncode}): {res.stderr[-2000:]}")
    return res


def _daemon_version() -> str | None:
    try:
        res = docker("version", "--format", "{{.Server.Version}}", timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else None


def _build_env() -> dict[str, str]:
    # The Dockerfile builds with either builder.  Docker CLIs from 23 on reach BuildKit only through the
    # buildx plugin and refuse DOCKER_BUILDKIT=1 without it, so use BuildKit exactly when buildx is there.
    buildx = docker("buildx", "version", timeout=15, check=False).returncode == 0
    return {**os.environ, "DOCKER_BUILDKIT": "1" if buildx else "0"}


def _remove_image(tag: str) -> None:
    docker("rmi", "-f", tag, timeout=120, check=False)
    # The legacy builder leaves each build's first stage as an untagged image: keep the newest (the next
    # build's cache), remove older ones, so repeated runs do not fill the disk.
    stale = docker("images", "-q", "--filter", "dangling=true", "--filter", f"label={BUILD_STAGE_LABEL}",
                   check=False).stdout.split()[1:]  # fmt: skip
    if stale:
        docker("rmi", *stale, timeout=120, check=False)


@pytest.fixture(scope="session")
def image(request) -> str:
    if shutil.which(DOCKER) is None:
        pytest.skip(f"no Docker client ({DOCKER}); `bash ../shared/ci/offline-base-image.sh` installs one")
    if _daemon_version() is None:
        pytest.skip(f"no Docker daemon answers to `{DOCKER} version`; `bash ../shared/ci/offline-base-image.sh` starts one")
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        pull = docker("pull", BASE_IMAGE, timeout=300, check=False)
        if pull.returncode != 0:
            pytest.skip(f"base image {BASE_IMAGE} is not here and cannot be pulled ({pull.stderr.strip()[-200:]}); "
                        "set PYTHON_IMAGE, e.g. from `bash ../shared/ci/offline-base-image.sh`")  # fmt: skip
    tag = f"{RUN_ID}:latest"
    request.addfinalizer(lambda: _remove_image(tag))
    res = docker("build", "-f", str(DEPLOY / "Dockerfile"), "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}",
                 "--label", LABEL, "-t", tag, str(REPO), timeout=540, check=False, env=_build_env())  # fmt: skip
    if res.returncode != 0:
        pytest.fail(f"docker build failed (base image {BASE_IMAGE}; set PYTHON_IMAGE for a local one):\n"
                    f"{(res.stdout + res.stderr)[-4000:]}")  # fmt: skip
    return tag


@dataclass
class Stack:
    image: str
    network: str
    names: dict[str, str] = field(default_factory=dict)  # role -> container name

    def run(self, role: str, *args: str, network: bool = True) -> str:
        name = f"{RUN_ID}-{role}"
        self.names[role] = name  # recorded before the run, so a half-made container is removed too
        net = ["--network", self.network, "--network-alias", role] if network else []
        docker("run", "-d", "--name", name, "--label", LABEL, *net, *args, timeout=120)
        return name

    def url(self, role: str, port: int = 4000) -> str:
        out = docker("port", self.names[role], f"{port}/tcp").stdout.split()
        (hostport,) = [hp for hp in out if hp.startswith("127.0.0.1:")]
        return f"http://{hostport}"

    def inspect(self, role: str, fmt: str) -> str:
        return docker("inspect", "-f", fmt, self.names[role]).stdout.strip()

    def exec(self, role: str, *argv: str) -> str:
        return docker("exec", self.names[role], *argv).stdout

    def processes(self, role: str) -> dict[int, list[str]]:
        """PID -> argv of every process in the container (slim images have no ps)."""
        script = ("import json, os\nout = {}\nfor p in filter(str.isdigit, os.listdir('/proc')):\n"
                  "    try: out[p] = open(f'/proc/{p}/cmdline', 'rb').read().decode().split('\\0')[:-1]\n"
                  "    except OSError: pass\nprint(json.dumps(out))")  # fmt: skip
        procs = json.loads(self.exec(role, "python", "-c", script))
        return {int(pid): argv for pid, argv in procs.items() if argv and "import json, os" not in argv[-1]}

    def logs(self, role: str) -> str:
        res = docker("logs", self.names[role], check=False)
        return res.stdout + res.stderr


def _stop_config() -> Path:
    """The image's own config plus a model whose stream lasts a few seconds, readable by uid 10001."""
    cfg = yaml.safe_load((DEPLOY / "config.yaml").read_text())
    cfg["models"].append({"name": "demo-llama-long", "backend": "emu-openai",
                          "model": f"llama-3.1-8b::chunks={LONG_CHUNKS},chunk_delay=0.1"})  # fmt: skip
    d = Path(tempfile.mkdtemp(prefix="llm-proxy-image-test-"))
    d.chmod(0o755)
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "config.yaml").chmod(0o644)
    return d


@pytest.fixture(scope="session")
def stack(image, request) -> Stack:
    network = f"{RUN_ID}-net"
    s = Stack(image, network)
    cfg_dir = _stop_config()

    def cleanup():
        if s.names:
            docker("rm", "-f", "-v", *s.names.values(), timeout=120, check=False)
        # Anything else this run labelled (a container whose name was never recorded).
        left = docker("ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split()
        if left:
            docker("rm", "-f", "-v", *left, timeout=120, check=False)
        docker("network", "rm", network, timeout=60, check=False)
        shutil.rmtree(cfg_dir, ignore_errors=True)

    request.addfinalizer(cleanup)
    docker("network", "create", "--label", LABEL, network)
    publish = ("-p", "127.0.0.1::4000")
    # No --host anywhere: every command must listen on the image's LLM_PROXY_HOST.
    s.run("emulator-openai", "-p", "127.0.0.1::8000", image, "emulate", "openai", "--port", "8000")
    s.run("emulator-anthropic", image, "emulate", "anthropic", "--port", "8001")
    s.run("proxy", *publish, "--read-only", "--tmpfs", "/tmp", "-e", f"PROXY_KEY={KEY}", image)
    s.run("proxy-1cpu", *publish, "--cpus", "1", "-e", f"PROXY_KEY={KEY}", image)
    s.run("proxy-stop", *publish, "-e", f"PROXY_KEY={KEY}", "-v", f"{cfg_dir / 'config.yaml'}:/etc/llm-proxy/config.yaml:ro",
          image)  # fmt: skip
    s.run("demo", *publish, image, "demo", network=False)
    for role in ("proxy", "proxy-1cpu", "proxy-stop", "demo"):
        wait_ready(s, role)
    return s


def wait_ready(s: Stack, role: str, budget: float = READY_BUDGET) -> str:
    deadline = time.monotonic() + budget
    url = s.url(role)
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health/ready", timeout=2) as r:
                if r.status == 200:
                    return url
        except (OSError, http.client.HTTPException):
            pass
        if s.inspect(role, "{{.State.Running}}") != "true":
            break
        time.sleep(0.25)
    raise AssertionError(f"{role} not ready within {budget:.0f} s; its log:\n{s.logs(role)[-3000:]}")


def metric_sum(url: str, name: str, **labels: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for m in re.finditer(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M):
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def worker_count(s: Stack, role: str) -> int:
    """Processes serving the port: the spawned workers, or PID 1 itself when it runs the only one."""
    procs = s.processes(role)
    assert "llm-proxy" in procs[1][1] and procs[1][2] == "serve", procs
    spawned = [p for p, argv in procs.items() if any("multiprocessing.spawn" in a for a in argv)]
    return len(spawned) or 1


def openai_client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=20)


# --------------------------------------------------------------------------------------------------


def test_chat_through_emulator_containers_on_a_user_defined_network(stack):
    url = stack.url("proxy")
    reply = openai_client(url).chat.completions.create(
        model="demo-llama", messages=[{"role": "user", "content": "hello from the image test"}])
    assert "hello from the image test" in reply.choices[0].message.content
    # OpenAI format in, Anthropic-format emulator container behind.
    reply = openai_client(url).chat.completions.create(
        model="demo-claude", messages=[{"role": "user", "content": "and to claude"}])
    assert "and to claude" in reply.choices[0].message.content
    msg = anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0, timeout=20).messages.create(
        model="demo-llama", max_tokens=64, messages=[{"role": "user", "content": "anthropic client"}])
    assert "anthropic client" in msg.content[0].text
    with pytest.raises(openai.AuthenticationError):  # the key came from the container's environment
        openai_client(url, "sk-wrong").chat.completions.create(model="demo-llama", messages=[{"role": "user", "content": "x"}])


def test_runs_as_non_root_and_the_proxy_is_pid_1(stack):
    status = stack.exec("proxy", "cat", "/proc/1/status")
    uids = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()
    gids = re.search(r"^Gid:\s+(.*)$", status, re.M).group(1).split()
    assert set(uids) == {UID} and set(gids) == {UID}
    argv = stack.processes("proxy")[1]
    assert argv[1] == "/opt/venv/bin/llm-proxy" and argv[2:] == [
        "serve", "--config", "/etc/llm-proxy/config.yaml", "--workers", "auto"]
    assert stack.exec("proxy", "id", "-u").strip() == UID  # docker exec, too, is not root


def test_the_image_carries_the_runtime_extras_and_no_test_tools(stack):
    # Bedrock (botocore), Vertex (google-auth) and tracing (OpenTelemetry) work without a rebuild.
    probe = ("import importlib.util as u; "
             "print([m for m in ('botocore', 'google.auth', 'opentelemetry.sdk', 'pytest', 'openai') if u.find_spec(m)])")
    assert stack.exec("proxy", "python", "-c", probe).strip() == "['botocore', 'google.auth', 'opentelemetry.sdk']"


def test_healthcheck_turns_healthy_for_the_proxy_and_for_emulators(stack):
    roles = ("proxy", "emulator-openai", "emulator-anthropic", "demo")
    deadline = time.monotonic() + HEALTH_BUDGET
    status = {}
    while time.monotonic() < deadline:
        status = {r: stack.inspect(r, "{{.State.Health.Status}}") for r in roles}
        sick = {r: json.loads(stack.inspect(r, "{{json .State.Health.Log}}")) for r, st in status.items() if st == "unhealthy"}
        assert not sick, (status, sick, {r: stack.logs(r)[-1500:] for r in sick})
        if set(status.values()) == {"healthy"}:
            break
        time.sleep(1)
    assert set(status.values()) == {"healthy"}, status
    log = json.loads(stack.inspect("emulator-openai", "{{json .State.Health.Log}}"))
    assert "port 8000" in log[-1]["Output"]  # checked on its own port, not the gateway's 4000


def test_emulator_container_is_reachable_from_the_host(stack):
    reply = openai_client(stack.url("emulator-openai", 8000), "any").chat.completions.create(
        model="llama-3.1-8b", messages=[{"role": "user", "content": "straight to the emulator"}])
    assert "straight to the emulator" in reply.choices[0].message.content


def test_demo_is_reachable_through_a_published_port(stack):
    url = stack.url("demo")
    for model in ("demo-openai", "demo-anthropic"):
        reply = openai_client(url, "demo").chat.completions.create(
            model=model, messages=[{"role": "user", "content": "demo in a container"}])
        assert "demo in a container" in reply.choices[0].message.content
    # PROMETHEUS_MULTIPROC_DIR is set for every command: demo must have made the dir to count at all.
    assert metric_sum(url, "llm_proxy_requests_total", status="200") >= 2
    assert "Traceback" not in stack.logs("demo")


def test_read_only_root_filesystem(stack):
    assert stack.inspect("proxy", "{{.HostConfig.ReadonlyRootfs}}") == "true"
    res = docker("exec", stack.names["proxy"], "touch", "/opt/venv/probe", check=False)
    assert res.returncode != 0 and "Read-only file system" in res.stderr
    url = stack.url("proxy")
    before = metric_sum(url, "llm_proxy_requests_total", model="demo-llama", status="200")
    openai_client(url).chat.completions.create(model="demo-llama", messages=[{"role": "user", "content": "x"}])
    # Metrics still count: the workers' files live on the tmpfs.
    assert metric_sum(url, "llm_proxy_requests_total", model="demo-llama", status="200") == before + 1


def test_cpus_1_gives_one_worker_and_a_restart_starts_the_metrics_from_zero(stack):
    assert worker_count(stack, "proxy-1cpu") == 1
    cpus = len(os.sched_getaffinity(0))
    if cpus > 1:  # the same image without --cpus: one worker per CPU, so the count above is the quota's
        assert worker_count(stack, "proxy") == cpus
    url = stack.url("proxy-1cpu")
    openai_client(url).chat.completions.create(model="demo-llama", messages=[{"role": "user", "content": "x"}])
    assert metric_sum(url, "llm_proxy_requests_total", status="200") == 1
    docker("restart", "-t", "20", stack.names["proxy-1cpu"], timeout=60)
    url = wait_ready(stack, "proxy-1cpu")
    # Same container, same /tmp: the previous run's counter files must be gone.
    assert metric_sum(url, "llm_proxy_requests_total", status="200") == 0
    assert worker_count(stack, "proxy-1cpu") == 1


def _not_ready_at(url: str, deadline: float) -> float | None:
    """When /health/ready stops answering 200 (draining, or the port closed), polling until deadline."""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health/ready", timeout=1):
                pass
        except (OSError, http.client.HTTPException):  # HTTPError (503) is an OSError too
            return time.monotonic()
        time.sleep(0.05)
    return None


def test_a_stream_survives_docker_stop(stack):
    name, url = stack.names["proxy-stop"], stack.url("proxy-stop")
    words = " ".join(f"w{i}" for i in range(2 * LONG_CHUNKS))
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=20)
    body = json.dumps({"model": "demo-llama-long", "stream": True, "messages": [{"role": "user", "content": words}]})
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"content-type": "application/json", "authorization": f"Bearer {KEY}"})  # fmt: skip
    resp = conn.getresponse()
    assert resp.status == 200
    events, threads, not_ready = [], [], []
    for raw in resp:  # incremental: one SSE line at a time
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        events.append(line.removeprefix("data: "))
        if not threads and len(events) == 2:  # mid-stream: SIGTERM to PID 1, and watch readiness drop
            threads = [
                threading.Thread(target=docker, args=("stop", "-t", "40", name), kwargs={"timeout": 60}),
                threading.Thread(target=lambda: not_ready.append(_not_ready_at(url, time.monotonic() + 10))),
            ]
            for t in threads:
                t.start()
        if events[-1] == "[DONE]":
            break
    stream_end = time.monotonic()
    conn.close()
    assert threads, events
    for t in threads:
        t.join(60)
    # The stop took effect while the stream was still running, and the stream still ended whole.
    assert not_ready[0] is not None and not_ready[0] < stream_end
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert words in text
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert stack.inspect("proxy-stop", "{{.State.Running}}") == "false"
    assert stack.inspect("proxy-stop", "{{.State.ExitCode}}") == "0"
    logs = stack.logs("proxy-stop")
    assert "Traceback" not in logs, logs[-3000:]
