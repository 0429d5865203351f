#!/bin/sh
# Container entrypoint.  `serve` (the default) starts the proxy with the config at $LLM_PROXY_CONFIG and
# one worker per CPU the container may use; anything else is passed to `llm-proxy` as is
# (`emulate openai --port 8000`, `check-config FILE`, `demo`).  `exec` keeps the proxy as PID 1 so it
# receives SIGTERM and drains in-flight streams.
set -eu

# CPUs this container may use: the cgroup v2 quota (docker --cpus, Kubernetes limits.cpu) rounded up,
# else nproc (which honours cpusets but not quotas).
cpu_count() {
    if [ -r /sys/fs/cgroup/cpu.max ]; then
        read -r quota period < /sys/fs/cgroup/cpu.max || true
        if [ "${quota:-max}" != "max" ] && [ "${period:-0}" -gt 0 ]; then
            echo $(( (quota + period - 1) / period ))
            return
        fi
    fi
    nproc
}

if [ "$#" -eq 0 ] || [ "$1" = "serve" ]; then
    [ "$#" -gt 0 ] && shift
    workers="${LLM_PROXY_WORKERS:-}"
    [ -n "$workers" ] || workers="$(cpu_count)"
    mkdir -p "${PROMETHEUS_MULTIPROC_DIR:-/tmp/llm-proxy-metrics}"
    exec llm-proxy serve \
        --config "${LLM_PROXY_CONFIG:-/etc/llm-proxy/config.yaml}" \
        --host "${LLM_PROXY_HOST:-0.0.0.0}" \
        --port "${LLM_PROXY_PORT:-4000}" \
        --workers "$workers" \
        "$@"
fi
exec llm-proxy "$@"
