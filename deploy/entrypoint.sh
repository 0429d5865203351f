#!/bin/sh
# Container entrypoint.  `serve` (the default) starts the proxy with the config at $LLM_PROXY_CONFIG and
# $LLM_PROXY_WORKERS workers, by default `auto`: one per CPU the container may use (the cgroup v1 or v2
# quota of `docker run --cpus` / Kubernetes limits.cpu, rounded up).  Anything else is passed to
# `llm-proxy` as is (`emulate openai --port 8000`, `check-config FILE`, `demo`).  Every command listens
# on $LLM_PROXY_HOST and serve/demo on $LLM_PROXY_PORT (the CLI's defaults).  `exec` keeps the proxy as
# PID 1 so it receives SIGTERM and drains in-flight streams.
set -eu

if [ "$#" -eq 0 ] || [ "$1" = "serve" ]; then
    [ "$#" -gt 0 ] && shift
    exec llm-proxy serve \
        --config "${LLM_PROXY_CONFIG:-/etc/llm-proxy/config.yaml}" \
        --workers "${LLM_PROXY_WORKERS:-auto}" \
        "$@"
fi
exec llm-proxy "$@"
