"""deploy/Dockerfile, checked statically: multi-stage slim Python 3.11, non-root, exec-form entrypoint,
the HEALTHCHECK script, the documented config path and metrics dir, nothing that needs BuildKit or a
registry-hosted frontend.  test_image.py builds and runs it for real where a Docker daemon answers."""

from __future__ import annotations

import fnmatch
import json

import pytest
from deploy_support import DEPLOY, REPO

DOCKERFILE = DEPLOY / "Dockerfile"


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, backslash continuations joined."""
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        full = (buf + line).strip()
        buf = ""
        instr, _, args = full.partition(" ")
        out.append((instr.upper(), args.strip()))
    return out


INSTR = parse_dockerfile(DOCKERFILE.read_text())
STAGES: list[list[tuple[str, str]]] = []
for _i, _a in INSTR:
    if _i == "FROM":
        STAGES.append([])
    if STAGES:
        STAGES[-1].append((_i, _a))
FINAL = STAGES[-1]


def one(instr: str, stage=FINAL) -> str:
    (args,) = [a for i, a in stage if i == instr]
    return args


def env(stage=FINAL) -> dict[str, str]:
    out = {}
    for i, a in stage:
        if i == "ENV":
            for pair in a.split():
                k, _, v = pair.partition("=")
                out[k] = v
    return out


def test_parser_joins_continuations_and_drops_comments():
    assert parse_dockerfile("# c\nFROM x AS y\nRUN a \\\n    && b\n\nUSER 1\n") == [
        ("FROM", "x AS y"), ("RUN", "a      && b"), ("USER", "1")
    ]


def test_multi_stage_on_slim_python_311():
    args = dict(a.split("=", 1) for i, a in INSTR if i == "ARG" and "=" in a)
    bases = [a.split()[0].replace("${PYTHON_IMAGE}", args.get("PYTHON_IMAGE", "")) for i, a in INSTR if i == "FROM"]
    assert len(bases) >= 2
    assert all(b.startswith("python:3.11-slim") for b in bases)
    build_name = [i for i in INSTR if i[0] == "FROM"][0][1].split()[-1]
    assert any(i == "COPY" and f"--from={build_name}" in a for i, a in FINAL)
    # the runtime stage installs nothing: no compiler or pip run there
    assert not any(i == "RUN" and "pip" in a for i, a in FINAL)


def test_baked_extras_are_runtime_extras_of_the_package():
    import tomllib

    (extras,) = [a.split("=", 1)[1] for i, a in STAGES[0] if i == "ARG" and a.startswith("EXTRAS=")]
    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = extras.split(",")
    assert names and set(names) <= set(optional)
    assert not {"test", "bench"} & set(names)  # no test tools or plotting in the image


def test_runs_as_non_root():
    user = one("USER").split(":")[0]
    assert user not in ("0", "root")
    assert any(i == "RUN" and f"--uid {user}" in a for i, a in FINAL)
    # USER comes after every RUN of the final stage (so nothing later runs as root by mistake)
    last_run = max(n for n, (i, _) in enumerate(FINAL) if i == "RUN")
    assert [n for n, (i, _) in enumerate(FINAL) if i == "USER"][0] > last_run


def test_exec_form_entrypoint_and_serve_default():
    entry = json.loads(one("ENTRYPOINT"))
    assert entry == ["/usr/local/bin/llm-proxy-entrypoint"]
    assert json.loads(one("CMD")) == ["serve"]
    assert one("STOPSIGNAL") == "SIGTERM"
    copy = [a for i, a in FINAL if i == "COPY" and a.endswith(entry[0])]
    assert copy and "deploy/entrypoint.sh" in copy[0]
    assert any(i == "RUN" and f"chmod 0755 {entry[0]}" in a for i, a in FINAL)


def test_builds_without_buildkit_or_a_registry_frontend():
    # A `# syntax=` line makes BuildKit pull a frontend image; --chmod / --mount / heredocs need BuildKit,
    # which the Docker CLI only offers with the buildx plugin.
    assert not DOCKERFILE.read_text().startswith("# syntax")
    for instr, args in INSTR:
        assert not any(flag in args for flag in ("--chmod", "--mount", "--link", "<<")), (instr, args)


def test_config_path_port_and_metrics_dir():
    e = env()
    assert e["LLM_PROXY_CONFIG"] == "/etc/llm-proxy/config.yaml"
    assert e["LLM_PROXY_PORT"] == "4000" and one("EXPOSE") == "4000"
    assert e["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    assert e["PATH"].startswith("/opt/venv/bin:")
    assert "LLM_PROXY_WORKERS" not in e  # unset: the entrypoint uses the CPU count


def _copy_sources() -> list[str]:
    srcs = []
    for i, a in INSTR:
        if i == "COPY" and "--from=" not in a:
            parts = [p for p in a.split() if not p.startswith("--")]
            srcs += parts[:-1]
    return srcs


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pat in patterns:  # last match wins, `!` re-includes (Docker's rules, enough for our file)
        neg = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat + "/*") or path.startswith(pat + "/"):
            ignored = not neg
    return ignored


def test_copied_files_exist_and_are_not_dockerignored():
    # At the context root: the legacy builder reads only that one (BuildKit also <Dockerfile>.dockerignore).
    assert not (DEPLOY / "Dockerfile.dockerignore").exists()
    patterns = [
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for src in _copy_sources():
        if src == "README.md" and not (REPO / src).exists():
            pytest.fail("README.md is needed by pyproject.toml's readme and copied into the image")
        assert (REPO / src).exists(), src
        assert not _ignored(src, patterns), f"{src} is excluded by .dockerignore"
    assert _ignored(".venv", patterns) and _ignored("tests", patterns) and _ignored(".git", patterns)


def test_healthcheck_runs_the_shipped_script():
    args = one("HEALTHCHECK")
    assert "--interval=" in args and "--timeout=3s" in args
    argv = json.loads(args.split("CMD", 1)[1])
    assert argv == ["python", "/opt/llm-proxy/healthcheck.py"]  # its behaviour: test_healthcheck.py
    assert any(i == "COPY" and "deploy/healthcheck.py" in a and a.endswith("/opt/llm-proxy/") for i, a in FINAL)
