"""Latency profiles of emulated backends: `llm-proxy emulate FORMAT --profile NAME` and `llm-proxy bench`.

Each profile is a `LatencyProfile` (first-byte delay drawn from a log-normal fitted to p50/p95; a token
rate for streams) plus the number of content chunks a benchmark stream carries.  p50 == p95 is a fixed
delay.  The p95 values reproduce the published comparison table (time to the first byte of a short
completion as seen from a client next to the backend); the p50 values and token rates are typical for
those deployments and only shape the distribution -- the proxy's added latency does not depend on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadtest.emulators.behaviour import LatencyProfile


@dataclass(frozen=True)
class BenchProfile(LatencyProfile):
    chunks: int = 32  # content chunks per benchmark stream (the emulator's `chunks=` scenario key)
    description: str = ""


PROFILES: dict[str, BenchProfile] = {
    p.name: p
    for p in (
        BenchProfile("zero", description="no upstream delay: isolates the proxy's own cost"),
        BenchProfile(
            "vllm-llama3-8b", p50=0.150, p95=0.220, tokens_per_s=90.0,
            description="Llama 3 8B Instruct on a local vLLM server",
        ),
        BenchProfile(
            "mistral-medium", p50=0.210, p95=0.310, tokens_per_s=60.0,
            description="Mistral Medium on La Plateforme",
        ),
        BenchProfile(
            "together-qwen2.5-32b", p50=0.350, p95=0.520, tokens_per_s=45.0,
            description="Qwen 2.5 32B Instruct on Together AI",
        ),
        BenchProfile(
            "relay", tokens_per_s=1000.0, chunks=128,
            description="no first-byte delay, 128 chunks 1 ms apart: CPU per relayed chunk, one chunk per read",
        ),
        BenchProfile(
            "fixed-50ms", p50=0.050, p95=0.050, tokens_per_s=10.0, chunks=30,
            description="a fixed 50 ms first byte and 10 tokens/s: long-lived streams for the memory test",
        ),
    )
}  # fmt: skip
