"""`llm-proxy bench`: the latency benchmarking harness (see docs/PERFORMANCE.md)."""
